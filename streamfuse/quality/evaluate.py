"""`streamfuse eval`: the standard fusion measures over folders of pairs, flicker over clips.

A *set* is a folder holding ir/NAME.ext and vis/NAME.ext, one registered pair per NAME (as
in ../shared/data/pairs/<set>); a folder of sets is expanded into its sets. A *clip* has the
same layout with frames named in time order (0000.png, 0001.png, ... as in
../shared/data/video/m3svd_frames/<clip>).

Methods: each fusion mode asked for (MODES, default settings), each folder of fused
images already made (FOLDER/<set>/NAME.* or, for a single set, FOLDER/NAME.*), and the two
sources passed off as the result ("IR only", "visible only"), which show how far a measure
can be fooled. The measures are `measures.MEASURES` with their conventions; a pooled
row is the mean over every pair of every set.

From Python, e.g. to score a model:

    groups = find_groups(Path("../shared/data/pairs"))
    scores = score_pairs([p for ps in groups.values() for p in ps], {"mine": fuser_method(fuser)})
    means = summarize(scores)["mine"]["pooled"]          # {"EN": .., ..., "SSIM": ..}
"""
from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamfuse.capture.images import read_image, read_raw
from streamfuse.capture.replay import IMAGE_SUFFIXES, to_pixel_format
from streamfuse.errors import SourceError, UsageError
from streamfuse.fuse import FusionConfig, make_fuser
from streamfuse.quality.flicker import FlickerMeter
from streamfuse.quality.measures import MEASURES, MIN_SIDE, SourcePair, to_gray
from streamfuse.quality.targets import (
    USER_MEASURES,
    TargetScore,
    degrade_ir,
    summarize_targets,
    target_score,
)
from streamfuse.thermal import ir_to_u8

IR_ONLY, VIS_ONLY = "IR only", "visible only"
POOLED = "pooled"
#: Measures where smaller is better (the flat-region noise ratio); larger is better for the rest.
LOWER_IS_BETTER = frozenset({"noise"})
#: Rows never marked best: a source passed off as the result fools some measures (MI, VIF).
NOT_RANKED = (IR_ONLY, VIS_ONLY)
#: The mark of the best value per column in the printed tables.
BEST = "*"
#: Decimals per measure in tables, as the literature prints them.
_DECIMALS = {"EN": 3, "SD": 2, "SF": 2, "AG": 3, "MI": 3, "SCD": 3, "VIF": 3, "Qabf": 3, "SSIM": 3}


@dataclass(frozen=True)
class Pair:
    """One registered IR/visible pair (or one frame of a clip): group is the set or clip."""

    group: str
    name: str
    ir: Path
    vis: Path


@dataclass(frozen=True)
class Loaded:
    """A pair as the fusers take it (`ir` gray8/gray16, `vis` bgr24) and its measured greys."""

    ir: np.ndarray
    vis: np.ndarray
    ir_grey: np.ndarray
    vis_grey: np.ndarray


#: A method turns a loaded pair into its fused image (HxW or HxWx3 BGR uint8).
Method = Callable[[Pair, Loaded], np.ndarray]


@dataclass(frozen=True)
class Score:
    """The measures of one method's fused image of one pair; `targets`: the user-facing
    measures of `quality.targets` (`TargetScore`)."""

    group: str
    name: str
    method: str
    values: dict[str, float]
    targets: TargetScore | None = None


def find_groups(root: Path) -> dict[str, list[Pair]]:
    """{set or clip name: its pairs in name order}: `root` itself, or each folder in it."""
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    if (root / "ir").is_dir() or (root / "vis").is_dir():
        return {root.resolve().name: _pairs_in(root)}
    groups = {d.name: _pairs_in(d) for d in sorted(root.iterdir()) if (d / "ir").is_dir() or (d / "vis").is_dir()}
    if not groups:
        raise UsageError(f"{root}: expected ir/ and vis/ folders of images, or folders that hold them "
                         "(like ../shared/data/pairs)")
    return groups


def _pairs_in(folder: Path) -> list[Pair]:
    ir, vis = _images_by_stem(folder / "ir"), _images_by_stem(folder / "vis")
    for here, there, other in ((ir, vis, "vis"), (vis, ir, "ir")):
        missing = sorted(set(here) - set(there))
        if missing:
            raise UsageError(f"{here[missing[0]]} has no partner {folder / other}/{missing[0]}.* "
                             f"({len(missing)} unmatched); pairs are matched by file name without suffix")
    return [Pair(folder.resolve().name, stem, ir[stem], vis[stem]) for stem in sorted(ir)]


def _images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; a set holds ir/ and vis/ folders of images")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise UsageError(f"{path} and {found[path.stem].name}: two images named {path.stem}; keep one")
            found[path.stem] = path
    if not found:
        raise UsageError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def load_pair(pair: Pair) -> Loaded:
    """Read a pair; UsageError/SourceError (one line) if unreadable, unequal or too small."""
    ir, ir_grey = _read_ir(pair.ir)
    vis = read_image(pair.vis, "vis")
    if ir.shape[:2] != vis.shape[:2]:
        raise UsageError(f"{pair.ir} is {_size(ir)} but {pair.vis} is {_size(vis)}; eval needs registered "
                         "pairs of one size (fuse them with --calibration first)")
    if min(ir.shape[:2]) < MIN_SIDE:
        raise UsageError(f"{pair.ir} is {_size(ir)}; the measures need at least {MIN_SIDE}x{MIN_SIDE}")
    return Loaded(ir, vis, ir_grey, to_gray(vis))


def _read_ir(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(IR as the fusers take it, as in `capture.images.read_image`; the grey the measures use).

    The measures' grey of a colour file is MATLAB's rgb2gray (OpenCV's BGR2GRAY, used for
    fusing, rounds differently); of 16-bit IR, the fusers' display mapping `ir_to_u8`.
    """
    raw = read_raw(path)
    ir = to_pixel_format(raw, "gray16" if raw.dtype == np.uint16 else "gray8", str(path))
    colour = raw.ndim == 3 and raw.dtype == np.uint8
    return ir, to_gray(raw[..., :3]) if colour else ir_to_u8(ir)


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def fuser_method(fuser, *, video: bool = False) -> Method:
    """A method from any object with `fuse(ir, vis)` (a `streamfuse.fuse.Fuser`). Pairs are
    unrelated stills (the fuser is reset before each) unless `video`: frames of one clip."""
    if video:
        return lambda pair, loaded: fuser.fuse(loaded.ir, loaded.vis)

    def still(pair, loaded):
        if hasattr(fuser, "reset"):
            fuser.reset()
        return fuser.fuse(loaded.ir, loaded.vis)
    return still


def mode_method(mode: str, palette: str = "ironbow", *, video: bool = False, weights: Path | None = None) -> Method:
    """A fresh fuser of fuser_class(mode) with default settings (ValueError if unknown);
    `weights` is the weights file of a mode that takes one (the others ignore it)."""
    return fuser_method(make_fuser(FusionConfig(mode=mode, palette=palette, weights=weights)), video=video)


def folder_method(folder: Path, groups: Sequence[str]) -> Method:
    """Fused images already made: FOLDER/<group>/NAME.*, or FOLDER/NAME.* for a single group."""
    if not folder.is_dir():
        raise UsageError(f"--fused {folder}: no such folder")
    per_group = {g: folder / g if (folder / g).is_dir() else folder for g in groups}
    if len(groups) > 1 and any(path == folder for path in per_group.values()):
        missing = next(g for g, path in per_group.items() if path == folder)
        raise UsageError(f"--fused {folder}: expected a folder per set ({folder / missing}/NAME.png ...) "
                         "when several sets are evaluated")
    index = {g: _images_by_stem(path) for g, path in per_group.items()}

    def fused(pair: Pair, loaded: Loaded) -> np.ndarray:
        path = index[pair.group].get(pair.name)
        if path is None:
            raise UsageError(f"--fused {folder}: no image {per_group[pair.group] / pair.name}.* for the pair "
                             f"{pair.name}")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"{path}: cannot read it as an image (corrupt, or not PNG/JPG/TIFF)")
        if image.shape[:2] != loaded.vis.shape[:2]:
            raise UsageError(f"{path} is {_size(image)} but its pair is {_size(loaded.vis)}")
        return image

    return fused


def score_pairs(pairs: Sequence[Pair], methods: dict[str, Method], *, sources: bool = True,
                degrade: Collection[str] = (), on_pair: Callable[[int, Pair], None] | None = None) -> list[Score]:
    """Every measure of every method's fused image, pair by pair, and the user-facing ones.

    Args:
        methods: {label: Method}; with `sources`, "IR only" and "visible only" rows are added.
        degrade: the labels of methods that fuse what they are given (modes, references, not
            folders of fused images): they also fuse the pair with its IR degraded
            (`quality.targets.degrade_ir`), for the degraded TCR.
        on_pair: called with (index, pair) after each pair, for progress.
    """
    scores = []
    for index, pair in enumerate(pairs):
        loaded = load_pair(pair)
        reference = SourcePair(loaded.ir_grey, loaded.vis_grey)
        outputs = {IR_ONLY: loaded.ir_grey, VIS_ONLY: loaded.vis_grey} if sources else {}
        outputs.update({label: method(pair, loaded) for label, method in methods.items()})
        poor = degraded_loaded(loaded, pair.name) if degrade else None
        for label, fused in outputs.items():
            degraded = methods[label](pair, poor) if label in degrade else None
            targets = target_score(loaded.ir_grey, loaded.vis_grey, to_gray(fused),
                                   None if degraded is None else to_gray(degraded))
            scores.append(Score(pair.group, pair.name, label, reference.score(fused), targets))
        if on_pair:
            on_pair(index, pair)
    return scores


def degraded_loaded(loaded: Loaded, name: str) -> Loaded:
    """The pair with its IR degraded (`quality.targets.degrade_ir`, seeded by the pair's name, so
    every method and every run sees the same poor image), as an 8-bit IR."""
    poor = degrade_ir(loaded.ir_grey, zlib.crc32(name.encode()))
    return Loaded(poor, loaded.vis, poor, loaded.vis_grey)


def summarize_user(scores: Sequence[Score]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {group or POOLED: `quality.targets.summarize_targets`}} of the scores that have them."""
    table = _grouped([s for s in scores if s.targets is not None], pooled=len({s.group for s in scores}) > 1)
    return {method: {group: summarize_targets([r.targets for r in rows]) for group, rows in groups.items()}
            for method, groups in table.items()}


def format_user_table(user: dict, group: str) -> str:
    """The user-facing measures of one group: a row per method (`quality.targets`)."""
    rows = [(method, groups[group]) for method, groups in user.items() if group in groups]
    width = max(len(method) for method, _ in rows) + 2
    lines = [(f"{group}: target contrast retention (night pairs, {rows[0][1]['targets']} targets; day; night "
              "with the IR degraded) and flat-region noise ratio"),
             "  " + "method".ljust(width) + "".join(m.rjust(14) + " " for m in USER_MEASURES)]
    best = best_methods(dict(rows), USER_MEASURES)
    for method, values in rows:
        cells = [_cell(values[m], f"{values[m]:.3f}", method in best.get(m, ())) for m in USER_MEASURES]
        lines.append("  " + method.ljust(width) + "".join(c.rjust(15) for c in cells))
    lines.append(f"  {BEST} best of the methods per column (TCR: higher is better; noise: lower is better)")
    return "\n".join(lines)


def _grouped(scores: Sequence[Score], pooled: bool | None = None) -> dict[str, dict[str, list[Score]]]:
    """{method: {group (and POOLED, by default when there are several groups): its scores}}."""
    pooled = len({s.group for s in scores}) > 1 if pooled is None else pooled
    table: dict[str, dict[str, list[Score]]] = {}
    for s in scores:
        rows = table.setdefault(s.method, {})
        rows.setdefault(s.group, []).append(s)
        if pooled:
            rows.setdefault(POOLED, []).append(s)
    return table


def summarize(scores: Sequence[Score]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {group or POOLED: {measure: mean over pairs, "n": pairs}}}; NaNs stay NaN."""
    return {method: {group: {"n": len(rows), **{m: float(np.mean([r.values[m] for r in rows])) for m in MEASURES}}
                     for group, rows in groups.items()} for method, groups in _grouped(scores).items()}


def spread(scores: Sequence[Score]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {group or POOLED: {measure: standard deviation over the pairs}}} (sample std,
    ddof 1; 0 for a single pair; NaN where the measure is n/a), the spread behind each mean."""
    def std(values: list[float]) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 * values[0]

    return {method: {group: {m: std([r.values[m] for r in rows]) for m in MEASURES} for group, rows in groups.items()}
            for method, groups in _grouped(scores).items()}


def best_methods(rows: dict[str, dict[str, float]], measures: Sequence[str]) -> dict[str, set[str]]:
    """{measure: the methods with its best value} among `rows` ({method: {measure: value}}):
    the largest, or the smallest for LOWER_IS_BETTER; NOT_RANKED rows and NaN left out."""
    best = {}
    for m in measures:
        values = {method: v[m] for method, v in rows.items() if method not in NOT_RANKED and not math.isnan(v[m])}
        if values:
            top = (min if m in LOWER_IS_BETTER else max)(values.values())
            best[m] = {method for method, v in values.items() if v == top}
    return best


def _cell(value: float, text: str, best: bool) -> str:
    return "n/a " if math.isnan(value) else text + (BEST if best else " ")


def format_table(summary: dict, group: str) -> str:
    """One text table: a row per method, a column per measure ("n/a" for NaN)."""
    rows = [(method, groups[group]) for method, groups in summary.items() if group in groups]
    n = rows[0][1]["n"]
    width = max(len(method) for method, _ in rows) + 2
    lines = [f"{group} ({n} pair{'s' if n != 1 else ''})",
             "  " + "method".ljust(width) + "".join(m.rjust(8) + " " for m in MEASURES)]
    best = best_methods(dict(rows), MEASURES)
    for method, values in rows:
        cells = [_cell(values[m], f"{values[m]:.{_DECIMALS[m]}f}", method in best.get(m, ())) for m in MEASURES]
        lines.append("  " + method.ljust(width) + "".join(c.rjust(9) for c in cells))
    lines.append(f"  {BEST} best of the methods per column (higher is better; the sources are not ranked)")
    return "\n".join(lines)


def write_scores(scores: Sequence[Score], summary: dict, out: Path, user: dict | None = None) -> None:
    """scores.csv (a row per pair and method) and summary.json (the means, their standard
    deviations over the pairs, and `user`, the user-facing measures of `summarize_user`) in `out`."""
    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "name", "method", *MEASURES])
        for s in scores:
            writer.writerow([s.group, s.name, s.method, *(json_number(s.values[m]) for m in MEASURES)])
    report = {"measures": list(MEASURES),
              "conventions": "streamfuse/quality/measures.py (Linfeng-Tang/Evaluation-for-Image-Fusion)",
              "means": {method: {g: {k: json_number(v) for k, v in vals.items()} for g, vals in groups.items()}
                        for method, groups in summary.items()},
              "std": {method: {g: {k: json_number(v) for k, v in vals.items()} for g, vals in groups.items()}
                      for method, groups in spread(scores).items()},
              "user": {method: {g: {k: json_number(v) for k, v in vals.items()} for g, vals in groups.items()}
                       for method, groups in (user or {}).items()}}
    (out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")


def json_number(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def clip_flicker(pairs: Sequence[Pair], methods: dict[str, Method]) -> dict[str, float]:
    """{"IR": .., "visible": .., label: ..}: flicker of a clip's sources and fused videos.

    Give each clip fresh methods: a fuser with state must not carry it from another clip.
    """
    if len(pairs) < 2:
        raise UsageError(f"clip {pairs[0].group}: {len(pairs)} frame; flicker needs at least 2")
    meter = FlickerMeter()
    for pair in pairs:
        frame = load_pair(pair)
        meter.add(frame.ir_grey, frame.vis_grey, {label: method(pair, frame) for label, method in methods.items()})
    return meter.result()


def format_flicker(results: dict[str, dict[str, float]]) -> str:
    """A row per clip; each fused video also as a multiple of its more flickering source."""
    labels = list(next(iter(results.values())))
    width = max(len(c) for c in results) + 2
    lines = ["flicker (grey levels per pixel per frame, motion removed; x = fused / more flickering source)",
             "  " + "clip".ljust(width) + "".join(label.rjust(16) for label in labels)]
    for clip, values in results.items():
        worst = max(values["IR"], values["visible"])
        cells = [f"{v:.2f}" if label in ("IR", "visible") else f"{v:.2f} ({v / worst:.2f}x)"
                 for label, v in values.items()]
        lines.append("  " + clip.ljust(width) + "".join(c.rjust(16) for c in cells))
    return "\n".join(lines)

"""`streamfuse eval`: the standard fusion measures over folders of pairs, flicker over clips.

The scoring is `streamfuse.quality.evaluate`; this module turns arguments into methods and
prints and writes what it returns.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from streamfuse.errors import UsageError
from streamfuse.fuse import MODES, NEEDS_WEIGHTS, FusionConfig
from streamfuse.quality.evaluate import (
    POOLED,
    Method,
    Pair,
    clip_flicker,
    find_groups,
    folder_method,
    format_flicker,
    format_table,
    format_user_table,
    fuser_method,
    json_number,
    load_pair,
    mode_method,
    score_pairs,
    summarize,
    summarize_user,
    write_scores,
)
from streamfuse.quality.references import REFERENCES


def add_parser(sub) -> None:
    """The `eval` subcommand, registered on the CLI's subparsers."""
    modes = ", ".join(MODES)
    e = sub.add_parser(
        "eval", help="standard fusion measures over folders of pairs; flicker over clips",
        description="Score fusion modes and/or folders of fused images on registered IR/visible pairs "
                    "with EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM (conventions in README.md), beside the "
                    "sources passed off as the result; or measure the flicker of fused clips (--video).")
    e.add_argument("pairs", type=Path, nargs="*", metavar="PAIRS",
                   help="a set (ir/ + vis/ folders, pairs matched by name) or a folder of sets")
    e.add_argument("--video", type=Path, nargs="+", default=[], metavar="CLIP",
                   help="clips (ir/ + vis/ folders of frames in name order) or folders of clips")
    e.add_argument("--modes", metavar="A,B",
                   help=f"fusion modes to score ({modes}); default: all, or none when --fused is given")
    e.add_argument("--fused", action="append", default=[], metavar="[LABEL=]DIR",
                   help="a folder of fused images named like the pairs (DIR/<set>/NAME.png for several "
                        "sets); repeatable")
    e.add_argument("--references", default="gff,max", metavar="A,B",
                   help="reference fusions scored beside the modes: gff (guided-filter fusion), max; "
                        "'none' for none (default: gff,max)")
    e.add_argument("--palette", default="ironbow", help="IR palette of the modes that colour it (ironbow)")
    e.add_argument("--weights", type=Path, metavar="FILE",
                   help="weights file for the learned modes that take one (spg: `streamfuse train --model spg`)")
    e.add_argument("-o", "--out", type=Path, default=Path("eval-results"),
                   help="folder for scores.csv, summary.json, montage.*, bars/*.*, flicker.json "
                        "(default: eval-results)")
    e.add_argument("--montage", type=int, default=6, metavar="N", help="pairs in the montage (6; 0 for none)")
    e.add_argument("--figures", default="auto", metavar="png,pdf,svg",
                   help="formats of the montage and bar charts (matplotlib, the figures extra); 'none' for "
                        "none; default auto: png,pdf when matplotlib is installed, none otherwise")
    e.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (default: only when stderr is a terminal)")
    e.set_defaults(handler=run_eval)


def run_eval(args) -> int:
    """The `eval` command: tables on stdout, files in --out."""
    if not args.pairs and not args.video:
        raise UsageError("eval: give folders of pairs, or --video CLIP")
    if args.montage < 0:
        raise UsageError(f"--montage: expected 0 or more pairs, got {args.montage}")
    fused_dirs = [_parse_fused(text) for text in args.fused]
    modes = _parse_modes(args.modes, args.palette, default_all=not fused_dirs)
    references = _parse_references(args.references)
    formats = _parse_figures(args.figures)
    pair_groups = _merge([find_groups(root) for root in args.pairs])
    clip_groups = _merge([find_groups(root) for root in args.video])
    _make_folder(args.out)

    def methods(groups: Sequence[str], video: bool = False) -> dict[str, Method]:
        made = {mode: mode_method(mode, args.palette, video=video, weights=args.weights) for mode in modes}
        made.update({name: fuser_method(REFERENCES[name](), video=video) for name in references})
        made.update({label: folder_method(folder, groups) for label, folder in fused_dirs})
        return made

    if pair_groups:
        pairs = [p for ps in pair_groups.values() for p in ps]
        chosen = methods(list(pair_groups))
        with _bar(args, len(pairs), "scoring", "pair") as bar:
            scores = score_pairs(pairs, chosen, degrade=[*modes, *references], on_pair=lambda i, p: bar.update())
        summary, user = summarize(scores), summarize_user(scores)
        groups = list(pair_groups) + ([POOLED] if len(pair_groups) > 1 else [])
        print("\n\n".join(format_table(summary, g) for g in groups))
        print("\n" + "\n\n".join(format_user_table(user, g) for g in groups))
        write_scores(scores, summary, args.out, user)
        if formats:
            _figures(args, formats, scores, groups, _spread(pair_groups, args.montage) if chosen else [], chosen)
    if clip_groups:
        with _bar(args, len(clip_groups), "flicker", "clip") as bar:
            results = {}
            for clip, frames in clip_groups.items():
                results[clip] = clip_flicker(frames, methods([clip], video=True))
                bar.update()
        print(("\n\n" if pair_groups else "") + format_flicker(results))
        rows = {clip: {label: json_number(v) for label, v in values.items()} for clip, values in results.items()}
        (args.out / "flicker.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\nwrote {args.out}/")
    return 0


def _parse_fused(text: str) -> tuple[str, Path]:
    label, sep, folder = text.rpartition("=")
    path = Path(folder)
    return (label if sep and label else path.resolve().name), path


def _parse_modes(text: str | None, palette: str, *, default_all: bool) -> list[str]:
    """The --modes list, each name and the palette checked before any work starts."""
    modes = [m for m in MODES if m not in NEEDS_WEIGHTS] if text is None and default_all else [
        m.strip() for m in (text or "").split(",") if m.strip()]
    if text is not None and not modes:
        raise UsageError(f"--modes: name at least one of {', '.join(MODES)}")
    for mode in modes:
        try:
            FusionConfig(mode=mode, palette=palette)
        except ValueError as exc:
            field, _, message = str(exc).partition(":")
            raise UsageError(f"--{'modes' if field == 'mode' else field}: {message.strip()}") from None
    return modes


def _parse_references(text: str) -> list[str]:
    names = [] if text.strip() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in REFERENCES]
    if unknown:
        raise UsageError(f"--references: unknown {', '.join(unknown)}; expected some of {', '.join(REFERENCES)}, "
                         "or none")
    return names


def _merge(found: list[dict[str, list[Pair]]]) -> dict[str, list[Pair]]:
    merged: dict[str, list[Pair]] = {}
    for groups in found:
        for name, pairs in groups.items():
            if name in merged:
                raise UsageError(f"two sets named {name}; evaluate them in separate runs")
            merged[name] = pairs
    return merged


def _make_folder(folder: Path) -> None:
    try:
        (folder / "bars").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {folder}: cannot create it ({exc.strerror or exc})") from None


def _spread(groups: dict[str, list[Pair]], count: int) -> list[Pair]:
    """`count` pairs taken round-robin over the groups (first of each, then second, ...)."""
    chosen: list[Pair] = []
    for rank in range(max(len(ps) for ps in groups.values())):
        chosen += [ps[rank] for ps in groups.values() if rank < len(ps)]
    return chosen[:count]


def _parse_figures(text: str) -> tuple[str, ...]:
    """The --figures formats; with matplotlib missing, () for auto and a one-line error otherwise."""
    from streamfuse.quality.figures import FIGURES_EXTRA, FORMATS, require_matplotlib

    if text.strip() in ("none", ""):
        return ()
    if text.strip() == "auto":
        try:
            require_matplotlib()
        except UsageError:
            print(f"eval: no figures (they need matplotlib: {FIGURES_EXTRA})", file=sys.stderr)
            return ()
        return ("png", "pdf")
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"--figures: unknown {', '.join(unknown)}; expected some of {', '.join(FORMATS)}, "
                         "auto or none")
    require_matplotlib()
    return formats


def _figures(args, formats: tuple[str, ...], scores, groups: list[str], montage_pairs: list[Pair],
             chosen: dict[str, Method]) -> None:
    """The bar charts and the montage, in each of `formats`."""
    from streamfuse.quality.figures import bar_charts, montage_figure, save

    bar_charts(scores, groups, args.out / "bars", formats)
    if montage_pairs:
        with _bar(args, len(montage_pairs), "montage", "pair") as bar:
            save(montage_figure(montage_pairs, chosen, load_pair, progress=bar.update), args.out / "montage", formats)


def _bar(args, total: int, what: str, unit: str):
    """A tqdm progress bar on stderr: when asked (--progress), else only on a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit=unit, file=sys.stderr, leave=True,
                disable=None if args.progress is None else not args.progress)

"""Figures for `streamfuse eval`, drawn with matplotlib (the `figures` extra), in PNG, PDF or SVG.

- The montage: a row per pair (IR | visible | each method's fused image), each with a box around
  the pair's most distinct warm target, and under it the same box enlarged (`crop_box`).
- A bar chart per measure: a bar per method per set (and pooled), the mean over the pairs, with
  error bars of one standard deviation over the pairs (`evaluate.spread`).

matplotlib is imported inside the functions that draw (`require_matplotlib`), and only its
object-oriented `Figure`: no pyplot, so no backend is chosen, no window opens and no global
figure state is left behind in a program that calls these.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import UsageError
from streamfuse.quality.evaluate import spread, summarize
from streamfuse.quality.measures import MEASURES
from streamfuse.quality.targets import hot_targets, target_contrasts

FIGURES_EXTRA = "pip install -e '.[figures]' (or pip install 'streamfuse[figures]')"
FORMATS = ("png", "pdf", "svg")
#: Montage images are scaled to this width (px) before drawing: vector files stay small.
TILE_WIDTH = 320
#: The crop is a square this many times the target's larger side, at least CROP_MIN of the image's shorter side.
CROP_SCALE, CROP_MIN = 3.0, 0.2
PNG_DPI = 150
_BOX = "#00e5ff"


def require_matplotlib():
    """matplotlib's `Figure` class; UsageError (one line naming the extra) without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"figures: need matplotlib, from the figures extra: {FIGURES_EXTRA}") from None
    return Figure


def crop_box(ir_grey: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end exclusive: a square around the IR's most distinct warm target
    (`quality.targets.hot_targets`, the largest contrast to its ring), or around its hottest
    region (the maximum of the blurred IR) where it has none; inside the image."""
    h, w = ir_grey.shape
    targets = hot_targets(ir_grey)
    if targets:
        window, mask, _ = targets[int(np.argmax(target_contrasts(ir_grey, targets)))]
        ys, xs = np.nonzero(mask)
        y0, x0 = window[0].start + ys.min(), window[1].start + xs.min()
        y1, x1 = window[0].start + ys.max() + 1, window[1].start + xs.max() + 1
        cy, cx, extent = (y0 + y1) / 2, (x0 + x1) / 2, max(y1 - y0, x1 - x0)
    else:
        blurred = cv2.GaussianBlur(ir_grey.astype(np.float32), (0, 0), max(1.0, min(h, w) / 40))
        cy, cx = np.unravel_index(int(np.argmax(blurred)), blurred.shape)
        extent = 0
    side = min(h, w, max(round(CROP_SCALE * extent), round(CROP_MIN * min(h, w)), 8))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, x0 + side, y0 + side


def _rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)


def montage_figure(pairs: Sequence, methods: dict[str, Callable], load: Callable, progress=None):
    """The montage as a matplotlib Figure: per pair a row of full images with the crop box and
    a row of the crops enlarged.

    Args:
        pairs: `evaluate.Pair`s; load(pair) gives the `evaluate.Loaded` the methods take.
        methods: {label: method(pair, loaded) -> fused image}.
        progress: called after each pair (a progress bar's update), or None.
    """
    figure = require_matplotlib()
    columns = 2 + len(methods)
    first = load(pairs[0]).ir_grey.shape
    aspect = first[0] / first[1]
    fig = figure(figsize=(1.9 * columns, 1.9 * len(pairs) * (aspect + 1) + 0.3))
    axes = fig.subplots(2 * len(pairs), columns, squeeze=False,
                        gridspec_kw={"height_ratios": [aspect, 1] * len(pairs)})
    for row, pair in enumerate(pairs):
        loaded = load(pair)
        box = crop_box(loaded.ir_grey)
        images = {"IR": loaded.ir_grey, "visible": loaded.vis}
        images.update({label: method(pair, loaded) for label, method in methods.items()})
        for col, (label, image) in enumerate(images.items()):
            _show_full(axes[2 * row, col], image, box, label if row == 0 else None)
            _show_crop(axes[2 * row + 1, col], image, box)
        axes[2 * row, 0].set_ylabel(f"{pair.group}/{pair.name}", fontsize=7)
        if progress:
            progress()
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2)
    return fig


def _show_full(ax, image: np.ndarray, box: tuple[int, int, int, int], title: str | None) -> None:
    from matplotlib.patches import Rectangle

    scale = min(1.0, TILE_WIDTH / image.shape[1])
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    ax.imshow(_rgb(small), extent=(0, image.shape[1], image.shape[0], 0), interpolation="antialiased")
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=_BOX, linewidth=1.0))
    _bare(ax)
    if title:
        ax.set_title(title, fontsize=8)


def _show_crop(ax, image: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    ax.imshow(_rgb(np.ascontiguousarray(image[y0:y1, x0:x1])), interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_edgecolor(_BOX)
    _bare(ax, keep_frame=True)


def _bare(ax, keep_frame: bool = False) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if not keep_frame:
        for spine in ax.spines.values():
            spine.set_visible(False)


def bar_figure(scores: Sequence, groups: Sequence[str], measure: str):
    """A Figure of one measure: x = groups, a bar per method (the mean over the pairs) with an
    error bar of one standard deviation over the pairs; n/a bars left out."""
    figure = require_matplotlib()
    means, stds = summarize(scores), spread(scores)
    methods = list(means)
    fig = figure(figsize=(max(4.0, 1.1 * len(groups) * max(1, len(methods)) / 3 + 2), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(methods)
    x = np.arange(len(groups))
    for i, method in enumerate(methods):
        values = np.array([means[method].get(g, {}).get(measure, math.nan) for g in groups])
        errors = np.array([stds[method].get(g, {}).get(measure, math.nan) for g in groups])
        shown = ~np.isnan(values)
        if shown.any():
            ax.bar(x[shown] + (i - (len(methods) - 1) / 2) * width, values[shown], width, label=method,
                   yerr=np.nan_to_num(errors[shown]), capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, groups)
    ax.set_ylabel(measure)
    ax.set_title(f"{measure} (higher is better; bars: mean, lines: ±1 std over the pairs)", fontsize=9)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=7, ncol=min(len(methods), 4), frameon=False, loc="upper center",
              bbox_to_anchor=(0.5, -0.12))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def save(fig, stem: Path, formats: Iterable[str]) -> list[Path]:
    """Write `fig` as stem.<format> for each format (PNG at PNG_DPI); the paths written."""
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=PNG_DPI if fmt == "png" else "figure", bbox_inches="tight")
        paths.append(path)
    return paths


def bar_charts(scores: Sequence, groups: Sequence[str], folder: Path, formats: Iterable[str]) -> list[Path]:
    """A bar chart per measure in `folder` (folder/EN.png, ...), in each format."""
    return [p for m in MEASURES for p in save(bar_figure(scores, groups, m), folder / m, tuple(formats))]

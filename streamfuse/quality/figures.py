"""Pictures for `streamfuse eval`: a side-by-side montage and a bar chart per measure.

Drawn with OpenCV, so evaluation needs no plotting library.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from streamfuse.quality.measures import MEASURES

#: Montage tiles are scaled to this height (px), keeping their aspect ratio.
TILE_HEIGHT = 200
_GAP = 4
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (40, 40, 40)
#: Bar colours (BGR), one per method in order: the "tab10" colours.
_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
            (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]


def montage(pairs: Sequence, methods: dict[str, Callable], load: Callable) -> np.ndarray:
    """A BGR image, a row per pair: IR | visible | each method's fused image.

    Args:
        pairs: `evaluate.Pair`s; load(pair) gives the `evaluate.Loaded` the methods take.
        methods: {label: method(pair, loaded) -> fused image}.
    """
    rows = []
    for pair in pairs:
        loaded = load(pair)
        images = {f"{pair.group}/{pair.name} IR": loaded.ir_grey, "visible": loaded.vis}
        images.update({label: method(pair, loaded) for label, method in methods.items()})
        tiles = [_tile(image, label) for label, image in images.items()]
        rows.append(_join(tiles, axis=1))
    return _join(rows, axis=0)


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    width = max(1, round(image.shape[1] * TILE_HEIGHT / image.shape[0]))
    tile = cv2.resize(image, (width, TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    (w, h), _ = cv2.getTextSize(label, _FONT, 0.45, 1)
    cv2.rectangle(tile, (0, 0), (w + 8, h + 10), (0, 0, 0), -1)
    cv2.putText(tile, label, (4, h + 4), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _join(images: list[np.ndarray], axis: int) -> np.ndarray:
    """Images side by side (axis=1) or stacked (axis=0), padded and separated by _GAP."""
    across = 1 - axis
    size = max(image.shape[across] for image in images)
    parts = []
    for image in images:
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[across] = (0, size - image.shape[across])
        parts.append(np.pad(image, pad, constant_values=_BACKGROUND[0]))
        gap_shape = [0, 0, 3]
        gap_shape[axis], gap_shape[across] = _GAP, size
        parts.append(np.full(gap_shape, _BACKGROUND[0], np.uint8))
    return np.concatenate(parts[:-1], axis=axis)


def bar_charts(summary: dict, groups: Sequence[str], folder: Path) -> None:
    """One PNG per measure in `folder`: bars per method, grouped by set (and pooled)."""
    for measure in MEASURES:
        cv2.imwrite(str(folder / f"{measure}.png"), bar_chart(summary, groups, measure))


def bar_chart(summary: dict, groups: Sequence[str], measure: str, size: tuple[int, int] = (960, 440)) -> np.ndarray:
    """A bar chart (BGR image) of one measure: x = groups, a bar per method; n/a bars left out."""
    width, height = size
    left, right, top, bottom = 64, 16, 70, 36
    image = np.full((height, width, 3), 255, np.uint8)
    methods = list(summary)
    values = [[summary[m].get(g, {}).get(measure, math.nan) for m in methods] for g in groups]
    finite = [v for row in values for v in row if not math.isnan(v)] or [0.0]
    low, high, step = _axis_range(min(0.0, *finite), max(0.0, *finite))

    def y_of(v: float) -> int:
        return round(top + (high - v) / (high - low) * (height - top - bottom))

    cv2.putText(image, f"{measure} (higher is better)", (left, 24), _FONT, 0.65, (0, 0, 0), 1, cv2.LINE_AA)
    for tick in np.arange(low, high + step / 2, step):
        y = y_of(tick)
        cv2.line(image, (left, y), (width - right, y), (225, 225, 225), 1)
        cv2.putText(image, f"{tick:.3g}", (4, y + 4), _FONT, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    x = left + 8
    for i, method in enumerate(methods):
        colour = _COLOURS[i % len(_COLOURS)]
        cv2.rectangle(image, (x, 40), (x + 12, 52), colour, -1)
        cv2.putText(image, method, (x + 16, 51), _FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        x += 16 + cv2.getTextSize(method, _FONT, 0.42, 1)[0][0] + 14
    slot = (width - left - right) / len(groups)
    bar = max(2, int(slot * 0.8 / len(methods)))
    zero = y_of(0.0)
    for g, (group, row) in enumerate(zip(groups, values)):
        x0 = round(left + g * slot + (slot - bar * len(methods)) / 2)
        for i, v in enumerate(row):
            if math.isnan(v):
                continue
            cv2.rectangle(image, (x0 + i * bar, min(zero, y_of(v))), (x0 + (i + 1) * bar - 1, max(zero, y_of(v))),
                          _COLOURS[i % len(_COLOURS)], -1)
            label = f"{v:.3g}"
            (w, _), _ = cv2.getTextSize(label, _FONT, 0.35, 1)
            if w <= bar:  # values only where they fit above their bar
                cv2.putText(image, label, (x0 + i * bar + (bar - w) // 2, min(zero, y_of(v)) - 4), _FONT, 0.35,
                            (60, 60, 60), 1, cv2.LINE_AA)
        (w, _), _ = cv2.getTextSize(group, _FONT, 0.45, 1)
        cv2.putText(image, group, (round(left + g * slot + (slot - w) / 2), height - 12), _FONT, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.line(image, (left, zero), (width - right, zero), (0, 0, 0), 1)
    return image


def _axis_range(low: float, high: float) -> tuple[float, float, float]:
    """(low, high, step): covers [low, high] plus 10% headroom in at most ~6 readable steps."""
    span = ((high - low) or 1.0) * 1.1
    step = 10 ** math.floor(math.log10(span / 6))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if span / (step * m) <= 6)
    return math.floor(low / step) * step, math.ceil(high * 1.1 / step) * step, step

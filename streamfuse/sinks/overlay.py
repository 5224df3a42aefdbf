"""The temperature overlay: spot meter, min/max markers, colour scale bar and isotherm tint.

One function, `draw_temperatures`, draws it for every viewer (the display window, the
monitor's picture and both snapshots) over any view, from a fused frame's
`radiometry.SceneTemperatures`. It is drawn by the viewers, never into the pipeline's output:
a recording or a stream stays clean (the raw IR archive keeps the counts to measure later).

The palette picks the overlay's colours, so it matters in the luma fusion modes too (lite and
pyramid ignore it otherwise): the isotherm tints the pixels at or above `isotherm_c` with a
ramp of the palette (ironbow: its own orange to yellow; white-hot: red to yellow; black-hot: red to
dark red, hotter is darker as in the palette), hotter pixels further along it; the max marker
takes the ramp's middle colour, the scale bar the palette itself.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.fuse.palettes import ISOTHERM_RAMPS, get_palette
from streamfuse.fuse.views import frame_region
from streamfuse.radiometry import SceneTemperatures

FONT = cv2.FONT_HERSHEY_SIMPLEX
#: The min marker's colour (BGR), a cold blue in every palette.
COLD_BGR = (255, 170, 60)
#: The spot crosshair's colour (BGR).
SPOT_BGR = (255, 255, 255)
#: How much of the isotherm colour covers a tinted pixel (the rest is the picture).
ISOTHERM_OPACITY = 0.7
#: The scale bar: its width and the share of the picture's height it spans, right edge.
BAR_W, BAR_SHARE = 12, 0.6


#: The same as 256x1x3 tables for cv2.applyColorMap.
ISOTHERM_LUTS = {name: np.ascontiguousarray(ramp[:, None, :]) for name, ramp in ISOTHERM_RAMPS.items()}


def hot_bgr(palette: str) -> tuple[int, int, int]:
    """The max marker's colour for `palette`."""
    return tuple(int(v) for v in ISOTHERM_RAMPS[palette][128])


def frame_from_picture(view: str, x: float, y: float) -> tuple[float, float]:
    """A point of the picture of `view` (fractions 0..1 of its width and height) as fractions
    of the visible frame; in side-by-side, either half. Clamped to 0..1."""
    if view == "side-by-side":
        _, top, half_w, half_h = frame_region(view, (1000, 1000))
        x, y = (x * 1000 % half_w) / half_w, (y * 1000 - top) / half_h
    return min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)


def draw_temperatures(image: np.ndarray, t: SceneTemperatures, palette: str, view: str = "fused") -> np.ndarray:
    """`image` (HxWx3 BGR, the picture of `view`) with the temperature overlay, as a new array."""
    out = image.copy()
    h, w = out.shape[:2]
    rx, ry, rw, rh = frame_region(view, (w, h))
    if t.counts is None:
        sx = sy = 1.0
    else:
        sx, sy = rw / t.counts.shape[1], rh / t.counts.shape[0]
    region = out[ry:ry + rh, rx:rx + rw]
    _isotherm(region, t, palette)

    def at(xy):
        return int(round(rx + xy[0] * sx)), int(round(ry + xy[1] * sy))

    size = max(5, round(w / 100))
    if t.max_xy is not None:
        _marker(out, at(t.max_xy), size, hot_bgr(palette), up=True)
        _label(out, f"max {t.max_c:.1f}", at(t.max_xy), size)
    if t.min_xy is not None:
        _marker(out, at(t.min_xy), size, COLD_BGR, up=False)
        _label(out, f"min {t.min_c:.1f}", at(t.min_xy), size)
    _crosshair(out, at(t.spot_xy), 2 * size)
    _label(out, "--" if t.spot_c is None else f"{t.spot_c:.1f} C", at(t.spot_xy), 2 * size)
    if t.scale_c is not None:
        _scale_bar(out, t, palette)
    return out


def _isotherm(region: np.ndarray, t: SceneTemperatures, palette: str) -> None:
    """Tint the pixels of `region` (the frame's place in the picture) at or above the isotherm.
    All in OpenCV over the whole frame (about 0.5 ms at 640x480): no per-pixel Python."""
    if t.isotherm_counts is None or t.counts is None:
        return
    counts, threshold = t.counts, t.isotherm_counts
    hot = cv2.compare(counts, np.ceil(threshold), cv2.CMP_GE)
    top = float(counts.max())
    if top < threshold:
        return
    # Saturating: below the threshold is 0, and convertScaleAbs rounds and clips to 0..255.
    index = cv2.convertScaleAbs(cv2.subtract(counts, int(np.ceil(threshold))),
                                alpha=255.0 / max(top - threshold, 1.0))
    tint = cv2.applyColorMap(index, ISOTHERM_LUTS[palette])
    if tint.shape[:2] != region.shape[:2]:
        size = (region.shape[1], region.shape[0])
        tint = cv2.resize(tint, size, interpolation=cv2.INTER_NEAREST)
        hot = cv2.resize(hot, size, interpolation=cv2.INTER_NEAREST)
    blended = cv2.addWeighted(tint, ISOTHERM_OPACITY, region, 1 - ISOTHERM_OPACITY, 0.0)
    cv2.copyTo(blended, hot, region)


def _marker(image, xy, size, colour, up: bool) -> None:
    """A triangle with its tip on `xy`, pointing at it from below (max) or above (min)."""
    x, y = xy
    if up and y + 2 * size >= image.shape[0] or not up and y < 2 * size:
        up = not up  # at an edge of the picture: point at it from the side that is shown
    d = size if up else -size
    pts = np.array([[x, y], [x - size, y + 2 * d], [x + size, y + 2 * d]], np.int32)
    cv2.fillPoly(image, [pts], colour)
    cv2.polylines(image, [pts], True, (0, 0, 0), 1, cv2.LINE_AA)


def _crosshair(image, xy, size) -> None:
    x, y = xy
    for thickness, colour in ((3, (0, 0, 0)), (1, SPOT_BGR)):
        cv2.line(image, (x - size, y), (x - 3, y), colour, thickness)
        cv2.line(image, (x + 3, y), (x + size, y), colour, thickness)
        cv2.line(image, (x, y - size), (x, y - 3), colour, thickness)
        cv2.line(image, (x, y + 3), (x, y + size), colour, thickness)


def _text(image, text: str, org) -> None:
    """White text with a black outline: it reads on any picture."""
    scale = max(0.4, image.shape[1] / 1400)
    cv2.putText(image, text, org, FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _label(image, text: str, xy, offset: int) -> None:
    """`text` beside the point `xy`, kept inside the picture."""
    h, w = image.shape[:2]
    scale = max(0.4, w / 1400)
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, 3)
    x = xy[0] + offset + 2 if xy[0] + offset + 2 + tw < w - BAR_W - 40 else xy[0] - offset - 2 - tw
    y = min(max(xy[1] - offset, th + 2), h - 4)
    _text(image, text, (max(x, 2), y))


def scale_bar_rect(shape) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the scale bar in a picture of `shape`."""
    h, w = shape[:2]
    bar_h = max(32, round(h * BAR_SHARE))
    return w - BAR_W - 6, (h - bar_h) // 2, BAR_W, bar_h


def _scale_bar(image: np.ndarray, t: SceneTemperatures, palette: str) -> None:
    """The palette from cold (bottom) to hot (top), labelled with the temperatures of its bottom,
    middle and top; the isotherm's part in its ramp, above a tick at the threshold."""
    x, y, bw, bh = scale_bar_rect(image.shape)
    levels = np.linspace(255, 0, bh).round().astype(np.uint8)
    bar = np.repeat(get_palette(palette)[levels, 0][:, None, :], bw, axis=1)
    low, mid, high = t.scale_c
    if t.isotherm_c is not None and None not in (low, mid, high):
        # The row of the threshold, between the three labelled temperatures (the mapping between
        # them need not be straight, e.g. plateau equalisation: this is where it is shown).
        level = float(np.interp(t.isotherm_c, [low, mid, high], [0.0, 127.5, 255.0]))
        row = int(round((255 - level) / 255 * (bh - 1)))
        if 0 < row:
            bar[:row] = ISOTHERM_RAMPS[palette][np.linspace(255, 0, row).round().astype(int)][:, None, :]
        cv2.line(bar, (0, row), (bw - 1, row), (255, 255, 255), 1)
    image[y:y + bh, x:x + bw] = bar
    cv2.rectangle(image, (x - 1, y - 1), (x + bw, y + bh), (0, 0, 0), 1)
    scale = max(0.4, image.shape[1] / 1400)
    for value, ty in ((high, y + 4), (mid, y + bh // 2 + 4), (low, y + bh + 4)):
        if value is None:
            continue
        text = f"{value:.1f}"
        (tw, _), _ = cv2.getTextSize(text, FONT, scale, 3)
        _text(image, text, (x - tw - 4, ty))

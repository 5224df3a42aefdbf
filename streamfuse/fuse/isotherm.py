"""The palette in the modes that keep the visible colour (lite, pyramid): hot targets tinted.

Those modes fuse the IR into the visible luma and keep the visible chroma, so without this a
palette would change nothing. Here the palette colours what the IR shows as hot, like a
camera's isotherm, but relative to the scene (no temperatures needed): pixels whose IR stands
above its large-scale background (`lite_targets.background`) by more than HOT_SPREADS of the
scene's spread, and at least MIN_EXCESS grey levels, take the chroma of the palette's
isotherm ramp (`palettes.ISOTHERM_RAMPS`), hotter pixels further along it. Only the chroma
changes: the fused luma, which every quality measure reads, stays as the fusion made it. A
rig turns it off with `fusion.hot_tint: false`; with an absolute isotherm in degrees
(`thermal.isotherm_c`) the viewers draw that one instead (`sinks.overlay`).
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.fuse.lite_targets import BACKGROUND_SIGMA, background
from streamfuse.fuse.palettes import ISOTHERM_RAMPS

#: How far above the scene's mean excess (in its standard deviations) a pixel is hot.
HOT_SPREADS = 2.5
#: ... and never less than this (0..1 luma: 12 grey levels), so sensor grain is never tinted.
MIN_EXCESS = 12.0 / 255.0
#: The tint's soft edge (0..1 luma) above the threshold: fully tinted from there on.
EDGE = 6.0 / 255.0
#: How much of the palette's chroma replaces the picture's at a fully hot pixel.
OPACITY = 0.8
#: Palette -> 256x2 float32 (Cr, Cb) of its ramp, as cv2's YCrCb has them.
RAMP_CHROMA = {name: cv2.cvtColor(np.ascontiguousarray(ramp[:, None, :]), cv2.COLOR_BGR2YCrCb)[:, 0, 1:]
               .astype(np.float32) for name, ramp in ISOTHERM_RAMPS.items()}


def hot_regions(ir8: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight 0..1, ramp index uint8) of the hot pixels of `ir8` (HxW uint8) at half size
    (the picture's chroma is halved by the encoder anyway), or None when nothing is hot."""
    h, w = ir8.shape
    half = cv2.resize(ir8, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    half *= 1.0 / 255.0
    return hot_regions_of(half - background(half, sigma=BACKGROUND_SIGMA / 2))


def hot_regions_of(excess: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`hot_regions` from the IR's excess over its background at half size (0..1 luma; lite
    has it from its target lift, `lite_targets.lift_targets`)."""
    mean, spread = cv2.meanStdDev(excess)
    low = max(float(mean[0, 0]) + HOT_SPREADS * float(spread[0, 0]), MIN_EXCESS)
    peak = float(excess.max())
    if peak <= low:
        return None
    weight = np.clip((excess - low) * (1.0 / EDGE), 0.0, 1.0)
    weight = cv2.morphologyEx(weight, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # lone pixels: grain
    index = np.clip((excess - low) * (255.0 / (peak - low)), 0.0, 255.0).astype(np.uint8)
    return weight, index


def hot_tint(bgr: np.ndarray, palette: str, found: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """`bgr` (the fused HxWx3 uint8 frame) with the hot regions `found` (`hot_regions` of the
    frame's IR, half size) in the chroma of `palette`'s ramp, each half-size pixel tinting its
    2x2 block; the same array when nothing is hot."""
    if found is None:
        return bgr
    weight, index = found
    points = cv2.findNonZero((weight > 0).view(np.uint8))  # ~10x faster than np.nonzero here
    if points is None:
        return bgr
    points = points.reshape(-1, 2)  # (x, y) rows; older OpenCV gives Nx1x2
    hx, hy = points[:, 0], points[:, 1]
    alpha_half = OPACITY * weight[hy, hx]
    colour_half = RAMP_CHROMA[palette][index[hy, hx]]
    h, w = bgr.shape[:2]
    ys = np.minimum(2 * hy[:, None] + _DY, h - 1).ravel()  # the 2x2 block of each (clipped at an odd edge)
    xs = np.minimum(2 * hx[:, None] + _DX, w - 1).ravel()
    # Flat pixel indices: numpy's two-array indexing of a 3-channel image is ~8x slower.
    flat = ys * w + xs
    ycc = cv2.cvtColor(np.take(bgr.reshape(-1, 3), flat, axis=0)[:, None, :], cv2.COLOR_BGR2YCrCb)[:, 0]
    ycc = ycc.astype(np.float32)
    alpha = np.repeat(alpha_half, 4)[:, None]
    ycc[:, 1:] += alpha * (np.repeat(colour_half, 4, axis=0) - ycc[:, 1:])
    ycc[:, 1:] = 128.0 + _in_gamut(ycc[:, 0], ycc[:, 1:] - 128.0)
    out = bgr.copy()
    out.reshape(-1, 3)[flat] = cv2.cvtColor(np.clip(ycc + 0.5, 0, 255).astype(np.uint8)[:, None, :], cv2.COLOR_YCrCb2BGR)[:, 0]
    return out


#: Offsets of a half-size pixel's 2x2 block at full size.
_DY, _DX = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])


#: cv2's YCrCb -> BGR (BT.601, full range): B = Y + 1.773 Cb, G = Y - 0.714 Cr - 0.344 Cb,
#: R = Y + 1.403 Cr (Cr, Cb less 128), as `_in_gamut` uses it.


def _in_gamut(y: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """`chroma` (N x 2 float32, Cr and Cb less 128) scaled down per pixel as far as needed for
    B, G and R to stay within 0..255 at luma `y` (N): the brightness the fusion chose is kept,
    and a pixel near white or black takes less colour rather than a different brightness."""
    cr, cb = chroma[:, 0], chroma[:, 1]
    limit = np.ones_like(y)
    for move in (1.773 * cb, -0.714 * cr - 0.344 * cb, 1.403 * cr):  # what it adds to B, G, R
        room = np.where(move > 0, 255.0 - y, y)
        np.minimum(limit, room / np.maximum(np.abs(move), 1e-6), out=limit)
    return chroma * limit[:, None]

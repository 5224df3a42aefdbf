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
    """(weight HxW float32 0..1, ramp index HxW uint8) of the hot pixels of `ir8` (HxW uint8),
    or None when nothing in the frame is hot. Found at half size (a tint needs no finer edge)."""
    h, w = ir8.shape
    half = cv2.resize(ir8, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    half *= 1.0 / 255.0
    excess = half - background(half, sigma=BACKGROUND_SIGMA / 2)
    mean, spread = cv2.meanStdDev(excess)
    low = max(float(mean[0, 0]) + HOT_SPREADS * float(spread[0, 0]), MIN_EXCESS)
    if float(excess.max()) <= low:
        return None
    weight = np.clip((excess - low) * (1.0 / EDGE), 0.0, 1.0)
    return regions(excess, weight, ir8.shape)


def regions(excess: np.ndarray, weight: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """`hot_regions` at full `shape` from a half-size excess over the background and a 0..1
    weight of it (lite passes those of its target lift, `lite_targets.warm_targets`)."""
    weight = cv2.morphologyEx(weight, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # lone pixels: grain
    hot = weight > 0
    if not hot.any():
        return None
    low, peak = float(excess[hot].min()), float(excess[hot].max())
    index = np.clip((excess - low) * (255.0 / max(peak - low, 1e-3)), 0.0, 255.0)
    h, w = shape
    up = [cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in (weight, index)]
    return up[0], up[1].astype(np.uint8)


def hot_tint(bgr: np.ndarray, palette: str, found: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """`bgr` (the fused HxWx3 uint8 frame) with the hot regions `found` (`hot_regions`, the same
    size) in the chroma of `palette`'s ramp; the same array when nothing is hot."""
    if found is None:
        return bgr
    weight, index = found
    points = cv2.findNonZero((weight > 0).view(np.uint8))  # ~10x faster than np.nonzero here
    if points is None:
        return bgr
    points = points.reshape(-1, 2)  # (x, y) rows; older OpenCV gives Nx1x2
    where = (points[:, 1], points[:, 0])  # a few percent of the frame: work on those only
    ycc = cv2.cvtColor(bgr[where][:, None, :], cv2.COLOR_BGR2YCrCb)[:, 0].astype(np.float32)
    alpha = (OPACITY * weight[where])[:, None]
    ycc[:, 1:] += alpha * (RAMP_CHROMA[palette][index[where]] - ycc[:, 1:])
    ycc[:, 1:] = 128.0 + _in_gamut(ycc[:, 0], ycc[:, 1:] - 128.0)
    out = bgr.copy()
    out[where] = cv2.cvtColor(np.clip(ycc + 0.5, 0, 255).astype(np.uint8)[:, None, :], cv2.COLOR_YCrCb2BGR)[:, 0]
    return out


#: How a unit of (Cr, Cb) moves B, G and R in cv2's YCrCb -> BGR (BT.601, full range).
_CHROMA_TO_BGR = np.array([[0.0, 1.773], [-0.714, -0.344], [1.403, 0.0]], np.float32)


def _in_gamut(y: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """`chroma` (N x 2, Cr and Cb less 128) scaled down per pixel as far as needed for B, G and
    R to stay within 0..255 at luma `y` (N): the brightness the fusion chose is kept, and a
    pixel near white or black takes less colour rather than a different brightness."""
    moves = chroma @ _CHROMA_TO_BGR.T  # N x 3: what the chroma adds to B, G, R
    room = np.where(moves > 0, 255.0 - y[:, None], y[:, None])
    size = np.abs(moves)
    limits = np.divide(room, size, out=np.full_like(size, np.inf), where=size > 1e-6)
    scale = np.clip(limits.min(axis=1), 0.0, 1.0)
    return chroma * scale[:, None]

"""What `lite` does around its learned maps so that warm targets stay warm (numpy/OpenCV).

The learned maps choose, per region, which camera's detail and base to keep; on their own they
let a warm body fade wherever the visible camera has more texture, and vanish when the thermal
image is poor. Three steps around them, all from the IR alone:

    destripe     column offsets (fixed-pattern stripes of uncooled sensors) are estimated as
                 the per-column median of the IR less its horizontal blur, and removed
    field of view  outside the IR's field of view (0 in 16-bit frames) the IR is filled from
                 its neighbourhood, and the fused luma fades to the visible one over a few
                 pixels, so the border leaves no edge
    targets      warm targets are where the IR stands above its large-scale background (a
                 Gaussian of BACKGROUND_SIGMA px, which also removes FFC-like offsets and
                 slow gradients) by more than the scene's spread and the IR's own noise; there
                 the fused luma is raised until its own excess over its background is at least
                 TARGET_GAIN times the IR's (`lift_targets`); nowhere is it lowered.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.models.lite import shrink

#: Background of the target detector (px, full resolution), computed at 1/4 size.
BACKGROUND_SIGMA = 15.0
#: A pixel starts to count as a target HOT_LOW spreads above the excess's mean and fully at HOT_HIGH.
HOT_LOW, HOT_HIGH = 1.5, 2.5
#: ... and never below this many of the IR's noise sigmas.
HOT_NOISE = 4.0
#: The fused target's excess over its background, as a multiple of the IR's.
TARGET_GAIN = 1.1
#: Horizontal blur (sigma, px) that separates stripes from the image.
STRIPE_SIGMA = 2.0
#: Column offsets within this (0..1 luma: 2 grey levels) are taken for image content, not stripes.
STRIPE_FLOOR = 2.0 / 255.0
#: ... and a column's high-pass counts at most this much (0..1 luma: 16 grey levels) per row.
STRIPE_CLIP = 16.0 / 255.0
#: Feather (px) of the field-of-view border.
FOV_FEATHER = 6
#: Reach (px) of the fill outside the field of view.
FILL_RADIUS = 64


def destripe(a: np.ndarray) -> np.ndarray:
    """The IR luma (HxW float32) less its column offsets (module docstring)."""
    rows = np.ascontiguousarray(a[::4])  # every 4th row: plenty for a column's offset, 4x cheaper
    high = rows - cv2.GaussianBlur(rows, (0, 0), sigmaX=STRIPE_SIGMA, sigmaY=0.01)
    # A mean of the high-pass clipped to a few stripe amplitudes: robust to the edges of
    # objects in the column like a median, at a fraction of its cost.
    offsets = np.clip(high, -STRIPE_CLIP, STRIPE_CLIP).mean(axis=0)
    offsets -= np.clip(offsets, -STRIPE_FLOOR, STRIPE_FLOOR)  # leave a clean image as it is
    return a - offsets[None, :].astype(np.float32)


def background(x: np.ndarray, sigma: float = BACKGROUND_SIGMA) -> np.ndarray:
    """The Gaussian background of `sigma` px, computed at 1/4 size (HxW float32)."""
    h, w = x.shape
    small = shrink(x, (max(1, h // 4), max(1, w // 4)))
    small = cv2.GaussianBlur(small, (0, 0), sigma / 4, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def hot_weight(excess: np.ndarray, noise: float) -> np.ndarray:
    """0..1 per pixel (at half size): how surely the IR shows a warm target there, from the
    IR's excess over its background (half size, module docstring)."""
    mean, spread = float(excess.mean()), float(excess.std())
    low = max(mean + HOT_LOW * spread, HOT_NOISE * noise)
    high = max(mean + HOT_HIGH * spread, low + 1e-3)
    weight = np.clip((excess - low) * (1.0 / (high - low)), 0.0, 1.0)
    return cv2.dilate(weight, np.ones((3, 3), np.uint8))


def lift_targets(fused: np.ndarray, a: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(`fused` (HxW float32, 0..1) raised on the warm targets of the IR luma `a` (module
    docstring), the IR's excess over its background at half size (for the palette's tint))."""
    h, w = a.shape
    excess = a - background(a)
    half = cv2.resize(excess, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    weight = hot_weight(half, noise)
    if not weight.any():
        return fused, half
    own = fused - background(fused)
    shortfall = TARGET_GAIN * excess
    shortfall -= own
    np.maximum(shortfall, 0.0, out=shortfall)
    shortfall *= cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.add(fused, shortfall, out=shortfall), half


def fov_mask(ir: np.ndarray) -> np.ndarray | None:
    """HxW float32 0..1, 1 inside the IR's field of view, feathered; None when all of it is inside
    (8-bit IR, or a 16-bit frame with no 0 pixels)."""
    if ir.dtype != np.uint16:
        return None
    inside = (ir > 0).astype(np.uint8)
    if inside.all():
        return None
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8))
    size = 2 * FOV_FEATHER + 1
    return cv2.blur(cv2.erode(inside.astype(np.float32), np.ones((FOV_FEATHER, FOV_FEATHER), np.uint8)),
                    (size, size))


class FieldOfView:
    """`fov_mask` and the fill weights of `fill_outside`, kept while the IR's field of view (its
    0 pixels, fixed by the registration) stays the same: recomputed only when it changes."""

    def __init__(self):
        self._key = None
        self.inside: np.ndarray | None = None

    def update(self, ir: np.ndarray) -> np.ndarray | None:
        """The feathered mask for this frame (None: all of the frame is inside)."""
        if ir.dtype != np.uint16:
            self._key, self.inside = None, None
            return None
        zero = ir == 0
        key = (ir.shape, int(np.count_nonzero(zero)), int(zero[0].sum()), int(zero[-1].sum()),
               int(zero[:, 0].sum()), int(zero[:, -1].sum()))
        if key != self._key:
            self._key, self.inside = key, fov_mask(ir)
        return self.inside


def fill_outside(a: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The IR luma with what lies outside its field of view replaced by the mean of the IR
    nearby (a normalised box of FILL_RADIUS px at 1/4 size), so there is no edge to keep."""
    hard = inside > 0.5
    h, w = a.shape
    size = (max(1, h // 4), max(1, w // 4))
    k = 2 * (FILL_RADIUS // 4) + 1
    weight = hard.astype(np.float32)
    num = cv2.blur(shrink(a * weight, size), (k, k))
    den = cv2.blur(shrink(weight, size), (k, k))
    level = float(a[hard].mean()) if hard.any() else 0.5
    fill = np.where(den > 1e-3, num / np.maximum(den, 1e-3), level).astype(np.float32)
    out = a.copy()
    outside = ~hard
    out[outside] = cv2.resize(fill, (w, h), interpolation=cv2.INTER_LINEAR)[outside]
    return out

"""The three user-facing measures beside the nine standard ones (docs/evaluation.md).

What a night-vision user sees, which the standard measures do not say directly:

- **Target contrast retention (TCR)**: does a warm object stay as distinct as in the IR? Hot
  targets are found in the IR grey (`hot_targets`): the IR minus its Gaussian background
  (sigma BACKGROUND_SIGMA px), above its mean + HOT_STD standard deviations, opened 3x3,
  connected components of TARGET_AREA of the frame. Each target's ring is its 15x15
  dilation minus its 5x5 dilation; a target's contrast is the mean inside less the mean of
  its ring, and it counts where the IR's contrast exceeds MIN_CONTRAST grey levels. TCR =
  fused contrast / IR contrast, the median over the targets of a set of pairs: of the night
  pairs (`is_night`) for "TCR", of the day pairs for "TCR day".
- **Degraded TCR**: the same, for the fusion of a degraded IR image (`degrade_ir`: blurred,
  striped, offset, noisy) with the clean visible one, measured against the *clean* IR's
  targets and contrasts: do targets survive a poor thermal image?
- **Flat-region noise ratio** (`flat_noise_ratio`): where both sources are flat (each below
  its own 30th percentile of gradient magnitude after a sigma 1.5 blur), the standard
  deviation of image minus its sigma-2 blur, fused over the noisier source; the median over
  pairs. Above 1: the fusion adds noise no source has.

The third, the flicker ratio (fused over the more flickering source), is `quality.flicker`.
All work on grey uint8 images (the measures' `to_gray`), in grey levels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

BACKGROUND_SIGMA = 15.0
HOT_STD = 2.5
#: Smallest and largest target, as shares of the frame.
TARGET_AREA = (0.0002, 0.05)
#: The ring: OUTER x OUTER dilation less INNER x INNER dilation of the target.
RING_OUTER, RING_INNER = 15, 5
MIN_CONTRAST = 8.0
#: A pair is a night pair when its visible grey's mean is below this (MSRS's "N" pairs and
#: LLVIP are; MSRS's "D" pairs and RoadScene mostly are not).
NIGHT_MEAN = 70.0
#: Flat regions: both sources under this percentile of their gradient magnitude.
FLAT_PERCENTILE = 30.0
FLAT_BLUR, NOISE_BLUR = 1.5, 2.0


def is_night(vis_grey: np.ndarray) -> bool:
    """True when the visible grey image is dark enough to count as a night pair (NIGHT_MEAN)."""
    return float(vis_grey.mean()) < NIGHT_MEAN


def hot_targets(ir_grey: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(window, target mask, ring mask)] of the warm objects of an HxW uint8 IR grey image: the
    masks are of the window (a pair of slices) around the target."""
    ir = ir_grey.astype(np.float32)
    excess = ir - cv2.GaussianBlur(ir, (0, 0), BACKGROUND_SIGMA)
    hot = (excess > excess.mean() + HOT_STD * excess.std()).astype(np.uint8)
    hot = cv2.morphologyEx(hot, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    low, high = (share * ir.size for share in TARGET_AREA)
    found = []
    for k in range(1, count):
        if not low <= stats[k, cv2.CC_STAT_AREA] <= high:
            continue
        x, y, w, h = (int(stats[k, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                 cv2.CC_STAT_HEIGHT))
        pad = RING_OUTER // 2 + 1
        window = (slice(max(y - pad, 0), y + h + pad), slice(max(x - pad, 0), x + w + pad))
        mask = (labels[window] == k).astype(np.uint8)
        found.append((window, mask.astype(bool), ring_of(mask)))
    return found


def ring_of(mask: np.ndarray) -> np.ndarray:
    """The ring a target's contrast is measured against: its RING_OUTER x RING_OUTER dilation
    less its RING_INNER x RING_INNER one (bool, of a uint8 0/1 mask)."""
    return _dilate(mask, RING_OUTER) & ~_dilate(mask, RING_INNER)


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.dilate(mask, np.ones((size, size), np.uint8)).astype(bool)


def target_contrasts(image: np.ndarray, targets) -> np.ndarray:
    """Mean inside less mean in the ring, per target of `hot_targets`, on an HxW uint8 image."""
    out = []
    for window, mask, ring in targets:
        patch = image[window].astype(np.float64)
        out.append(patch[mask].mean() - patch[ring].mean())
    return np.array(out)


def contrast_pairs(ir_grey: np.ndarray, fused_grey: np.ndarray, targets=None) -> np.ndarray:
    """N x 2 (IR contrast, fused contrast) of the targets whose IR contrast exceeds
    MIN_CONTRAST; the targets of `ir_grey` unless given."""
    targets = hot_targets(ir_grey) if targets is None else targets
    ir_c = target_contrasts(ir_grey, targets)
    if not len(ir_c):
        return np.zeros((0, 2))
    keep = ir_c > MIN_CONTRAST
    return np.stack([ir_c[keep], target_contrasts(fused_grey, targets)[keep]], axis=1)


def retention(pairs: list[np.ndarray]) -> float:
    """TCR: the median of fused / IR contrast over the targets of all `contrast_pairs`; NaN without any."""
    rows = [p for p in pairs if len(p)]
    if not rows:
        return float("nan")
    both = np.concatenate(rows)
    return float(np.median(both[:, 1] / both[:, 0]))


def flat_noise_ratio(ir_grey: np.ndarray, vis_grey: np.ndarray, fused_grey: np.ndarray) -> float:
    """Fine-scale noise of the fused image over the noisier source's, where both are flat."""
    flat = np.ones(ir_grey.shape, bool)
    for source in (ir_grey, vis_grey):
        smooth = cv2.GaussianBlur(source.astype(np.float32), (0, 0), FLAT_BLUR)
        gradient = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
        flat &= gradient <= np.percentile(gradient, FLAT_PERCENTILE)
    if flat.sum() < 100:
        return float("nan")
    noise = [_fine(x)[flat].std() for x in (ir_grey, vis_grey, fused_grey)]
    return float(noise[2] / max(noise[0], noise[1], 1e-6))


def _fine(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float32)
    return x - cv2.GaussianBlur(x, (0, 0), NOISE_BLUR)


#: `degrade_ir`: optics blur (sigma, px), column stripes (std of the per-column offsets, grey
#: levels), an FFC-like offset (a ramp from 0 to this many grey levels, top to bottom) and
#: pixel noise (std, grey levels).
DEGRADE_BLUR, DEGRADE_STRIPES, DEGRADE_RAMP, DEGRADE_NOISE = 2.0, 6.0, 24.0, 2.0


def degrade_ir(ir_grey: np.ndarray, seed: int = 0) -> np.ndarray:
    """A poor thermal image of the same scene (HxW uint8): blurred, with column stripes, a
    slow offset ramp and pixel noise (DEGRADE_*). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    h, w = ir_grey.shape
    x = cv2.GaussianBlur(ir_grey.astype(np.float32), (0, 0), DEGRADE_BLUR)
    x += rng.normal(0.0, DEGRADE_STRIPES, (1, w)).astype(np.float32)
    x += np.linspace(0.0, DEGRADE_RAMP, h, dtype=np.float32)[:, None]
    x += rng.normal(0.0, DEGRADE_NOISE, (h, w)).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class TargetScore:
    """The user-facing measures of one fused image of one pair.

    Attributes:
        night: the pair is a night pair (`is_night`).
        contrasts: N x 2 (IR contrast, fused contrast) of its targets (`contrast_pairs`).
        degraded: N x 2 (clean IR contrast, contrast in the fusion of the degraded pair) of the
            same targets, or None when not measured.
        noise: `flat_noise_ratio`.
    """

    night: bool
    contrasts: np.ndarray
    degraded: np.ndarray | None
    noise: float


def target_score(ir_grey: np.ndarray, vis_grey: np.ndarray, fused_grey: np.ndarray,
                 degraded_grey: np.ndarray | None = None) -> TargetScore:
    """The TargetScore of `fused_grey` (and of `degraded_grey`, the fusion of the same pair
    with its IR degraded, if given); all HxW uint8 greys of one pair."""
    targets = hot_targets(ir_grey)
    degraded = None if degraded_grey is None else contrast_pairs(ir_grey, degraded_grey, targets)
    return TargetScore(is_night(vis_grey), contrast_pairs(ir_grey, fused_grey, targets), degraded,
                       flat_noise_ratio(ir_grey, vis_grey, fused_grey))


#: The names `summarize_targets` gives, in the order tables print them.
USER_MEASURES = ("TCR", "TCR day", "TCR degraded", "noise")


def summarize_targets(scores: Sequence[TargetScore]) -> dict[str, float]:
    """{"TCR": night pairs, "TCR day", "TCR degraded": night pairs with the IR degraded,
    "noise": median flat-region noise ratio, "targets": how many targets the night TCR counts}."""
    night = [s for s in scores if s.night]
    degraded = [s.degraded for s in night if s.degraded is not None]
    noise = [s.noise for s in scores if not np.isnan(s.noise)]
    return {"TCR": retention([s.contrasts for s in night]),
            "TCR day": retention([s.contrasts for s in scores if not s.night]),
            "TCR degraded": retention(degraded) if degraded else float("nan"),
            "noise": float(np.median(noise)) if noise else float("nan"),
            "targets": int(sum(len(s.contrasts) for s in night))}

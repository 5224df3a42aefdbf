"""Classical CPU fusion modes: alpha blend, MSX-style edge overlay, Laplacian pyramid.

All three run per frame on 2 CPU cores in a few milliseconds at 640x480, so they use
OpenCV's SIMD integer kernels (uint8/int16) and never loop over pixels in Python. Every
intermediate array is a fresh temporary; nothing is cached between frames, except the weight
maps derived from a semantic prior (`prior=`), which are built once per prior refresh.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.fuse.base import Fuser, check_inputs
from streamfuse.fuse.isotherm import hot_regions, hot_tint
from streamfuse.fuse.palettes import apply_palette
from streamfuse.priors.prior import EmphasisTrack, upsample
from streamfuse.thermal import ir_to_u8

#: MSX detail gain at strength 1.0. Night-time visible frames are dark and their edges
#: weak, so a gain of 1 at the default strength 0.5 is what makes outlines readable
#: over the palette without turning sensor noise into speckle.
_MSX_MAX_GAIN = 2.0
#: With a prior, the pyramid's IR detail counts up to (1 + this) times its size where the
#: emphasis is 1 when it competes with the visible detail (choose-max).
_PRIOR_DETAIL_BOOST = 2.0


def _ir_weight(strength: float, emphasis: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """strength + (1 - strength) * emphasis, stretched over an (h, w) image: float32."""
    return strength + (1.0 - strength) * upsample(emphasis, (shape[1], shape[0]))


class AlphaFuser(Fuser):
    """out = (1 - strength) * vis + strength * palette(ir). The cheapest mode.

    With a prior the IR weight is per pixel: strength + (1 - strength) * emphasis.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self._emphasis = EmphasisTrack(self._weights)

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        coloured = apply_palette(ir_to_u8(ir), self.cfg.palette)
        maps = self._emphasis.maps(prior, ir.shape)
        if maps is not None:
            return cv2.blendLinear(coloured, _as_bgr(vis), *maps)
        strength = self.cfg.strength
        return cv2.addWeighted(_as_bgr(vis), 1.0 - strength, coloured, strength, 0.0, dst=coloured)

    def _weights(self, emphasis: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
        ir_w = _ir_weight(self.cfg.strength, emphasis, shape)
        return ir_w, 1.0 - ir_w


class MsxFuser(Fuser):
    """FLIR MSX style: the palette-coloured IR with the visible image's edges embossed on it.

    The visible detail is its luma minus a (2 * detail_radius + 1)^2 box blur of it, added
    to all three channels (so to the luma, keeping the palette's hue) with gain
    `strength * 2`. Where the IR is flat the output shows the visible outlines.

    With a prior the palette gets the emphasised regions to itself: the visible detail
    there is scaled by (1 - emphasis), so a target shows its thermal signature unmarked.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self._emphasis = EmphasisTrack(_detail_weights)

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        coloured = apply_palette(ir_to_u8(ir), self.cfg.palette)
        detail = _offset_detail(_luma(vis), self.cfg.detail_radius, self.cfg.strength * _MSX_MAX_GAIN)
        maps = self._emphasis.maps(prior, ir.shape)
        if maps is not None:
            keep, drop, mid_grey = maps
            detail = cv2.blendLinear(detail, mid_grey, keep, drop)
        # coloured + (detail - 128), saturated once at the end.
        detail_bgr = cv2.cvtColor(detail, cv2.COLOR_GRAY2BGR)
        return cv2.addWeighted(coloured, 1.0, detail_bgr, 1.0, -128.0, dst=coloured)


class PyramidFuser(Fuser):
    """Laplacian-pyramid fusion of the visible luma with the (grey, not palettised) IR.

    Both images are split into `levels` detail levels and a base at 1/2**levels size.
    Each detail coefficient comes from whichever image has the larger magnitude there
    (choose-max keeps the sharper edge of the two); the base is
    strength * IR + (1 - strength) * visible. The result replaces the visible luma (Y of
    YCrCb) and the visible chroma is kept, so colours stay; a grey visible frame gives a
    grey result. Any size works, odd ones included.

    With a prior the base's IR weight is per pixel, strength + (1 - strength) * emphasis,
    and the IR detail counts up to 3x its size against the visible detail where the
    emphasis is 1.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self._emphasis = EmphasisTrack(self._weights)

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        ir8 = ir_to_u8(ir)
        maps = self._emphasis.maps(prior, ir.shape)
        out = on_luma(vis, lambda luma: self._fuse_luma(ir8, luma, maps))
        return hot_tint(out, self.cfg.palette, hot_regions(ir8)) if self.cfg.hot_tint else out

    def _fuse_luma(self, ir8: np.ndarray, luma: np.ndarray, maps=None) -> np.ndarray:
        """Fuse two HxW uint8 images into one HxW uint8 image (`maps`: from `_weights`)."""
        ir_details, ir_base = _laplacian_pyramid(ir8, self.cfg.levels)
        vis_details, vis_base = _laplacian_pyramid(luma, self.cfg.levels)
        if maps is None:
            details = [_choose_max(a, b) for a, b in zip(ir_details, vis_details)]
            strength = self.cfg.strength
            base = cv2.addWeighted(ir_base, strength, vis_base, 1.0 - strength, 0.0, dtype=cv2.CV_16S)
        else:
            ir_w, vis_w, *gains = maps
            details = [_choose_max(a, b, g) for a, b, g in zip(ir_details, vis_details, gains)]
            base = cv2.blendLinear(ir_base, vis_base, ir_w, vis_w).astype(np.int16)
        return _collapse(details, base)

    def _weights(self, emphasis: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """Base IR and visible weights (float32) at the base's size, then per detail level an
        int16 gain in 1/256 units for the IR detail's magnitude."""
        sizes = _level_shapes(shape, self.cfg.levels)
        ir_w = _ir_weight(self.cfg.strength, emphasis, sizes[-1])
        gains = [np.rint(256.0 * (1.0 + _PRIOR_DETAIL_BOOST * upsample(emphasis, (w, h)))).astype(np.int16)
                 for h, w in sizes[:-1]]
        return (ir_w, 1.0 - ir_w, *gains)


def on_luma(vis: np.ndarray, fuse_luma) -> np.ndarray:
    """BGR: `fuse_luma(visible luma)` (HxW uint8 -> HxW uint8) with the visible chroma kept
    (Y of YCrCb replaced); a grey visible frame gives a grey BGR result."""
    if vis.ndim == 2:
        return cv2.cvtColor(fuse_luma(vis), cv2.COLOR_GRAY2BGR)
    ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)
    cv2.insertChannel(fuse_luma(cv2.extractChannel(ycrcb, 0)), ycrcb, 0)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def _as_bgr(vis: np.ndarray) -> np.ndarray:
    """HxWx3 BGR view of a visible frame: itself if colour, a grey-to-BGR copy if HxW."""
    return vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)


def _detail_weights(emphasis: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """MSX with a prior: how much visible detail to keep (1 - emphasis), how much to drop,
    and the mid-grey (no detail) image to drop it towards."""
    drop = upsample(emphasis, (shape[1], shape[0]))
    return 1.0 - drop, drop, np.full(shape, 128, np.uint8)


def _luma(vis: np.ndarray) -> np.ndarray:
    """HxW uint8 luma (Rec. 601 Y) of a visible frame: itself if already grey."""
    return vis if vis.ndim == 2 else cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)


def _offset_detail(luma: np.ndarray, radius: int, gain: float) -> np.ndarray:
    """gain * (luma - box_blur(luma)) + 128 as HxW uint8, i.e. detail in -128..127.

    Kept in uint8 with an offset because the int16 path measured ~3x slower here and the
    detail of a real frame is far inside +-127 at the gains used.
    """
    size = 2 * radius + 1
    blurred = cv2.blur(luma, (size, size), borderType=cv2.BORDER_REFLECT)
    return cv2.addWeighted(luma, gain, blurred, -gain, 128.0)


def _laplacian_pyramid(image: np.ndarray, levels: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Split an HxW uint8 image into `levels` int16 detail images (finest first) and a
    uint8 base; level k has size ceil(H / 2**k) x ceil(W / 2**k)."""
    details = []
    current = image
    for _ in range(levels):
        height, width = current.shape
        down = cv2.pyrDown(current, dstsize=((width + 1) // 2, (height + 1) // 2))
        up = cv2.pyrUp(down, dstsize=(width, height))
        details.append(cv2.subtract(current, up, dtype=cv2.CV_16S))
        current = down
    return details, current


def _level_shapes(shape: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """(h, w) of each detail level of `_laplacian_pyramid`, finest first, then of the base."""
    sizes = [shape]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _choose_max(a: np.ndarray, b: np.ndarray, a_gain: np.ndarray | None = None) -> np.ndarray:
    """Per pixel, the int16 coefficient of larger magnitude (a on ties). Overwrites b.

    `a_gain` (int16, 1/256 units, a's shape) scales a's magnitude in the comparison only.
    """
    # np.abs, not cv2.absdiff(a, 0): OpenCV 5 reads a 1x1 array beside a scalar as a scalar
    # itself, and the mask then comes out 4x1.
    a_size = np.abs(a)
    if a_gain is not None:
        a_size = cv2.multiply(a_size, a_gain, scale=1.0 / 256.0)
    a_wins = cv2.compare(a_size, np.abs(b), cv2.CMP_GE)
    return cv2.copyTo(a, a_wins, b)


def _collapse(details: list[np.ndarray], base: np.ndarray) -> np.ndarray:
    """Rebuild an HxW uint8 image from int16 detail levels (finest first) and an int16 base.

    Intermediate levels stay int16 so overshoot is not clipped until the final level.
    """
    current = base
    for detail in reversed(details[1:]):
        current = cv2.add(cv2.pyrUp(current, dstsize=detail.shape[::-1]), detail, dst=detail)
    finest = details[0]
    return cv2.add(cv2.pyrUp(current, dstsize=finest.shape[::-1]), finest, dtype=cv2.CV_8U)

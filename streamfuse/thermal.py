"""Thermal frames to 8-bit display levels: per frame (`ir_to_u8`) or steadily (`Agc`).

A thermal core's 14-16 bit counts span far more than 256 display levels, and where they
sit moves with the scene.

`ir_to_u8` (agc `frame`, the default of a rig without a `thermal:` section, and what the
fusers use on raw frames) stretches each frame on its own between two robust percentiles,
so the whole picture darkens the moment a hot object walks in. `Agc` keeps the mapping steady:

- `plateau`: plateau histogram equalisation, the method of thermal camera cores. The
  histogram of the counts (over an optional region of interest, without the `tail_reject`
  share of pixels at each end) is clipped at `plateau` (a share of the pixels) so that a
  large uniform area (sky, a wall) cannot take most of the grey levels, and its cumulative
  sum is the mapping. Counts between populated bins get no grey levels, so a hot object far
  above the background takes little range from it. `max_gain` caps the grey levels per
  count, so a nearly uniform scene is not stretched into full-range sensor noise.
- `linear`: a straight line between the tail-rejected minimum and maximum (same cap).
- `manual`: a straight line between two fixed counts, `range: [low, high]`; no adaptation.

The temporal filter: the mapping (a lookup table over every possible count) moves towards
each new frame's target by `1 - exp(-dt / smoothing_s)`, dt being the time between frames,
so brightness changes are spread over about `smoothing_s` seconds at any frame rate.

The AGC only makes the picture shown and fused by the classical modes; `Frame.image` keeps
the raw counts for recording and for fusers that want them. Costs about 1.5 ms per 640x512
frame on these machines (`_SAMPLES` bounds the statistics; the table look-up is the rest).

Convention: in a uint16 frame that has been warped into the visible camera's frame,
pixels outside the IR camera's field of view are exactly 0. They are left out of the
statistics and come out as 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from streamfuse.config import check_range
from streamfuse.radiometry import RadiometryConfig

#: Sample every n-th row and column for the percentiles: 1/16 of a 640x480 frame is 19,200
#: pixels, enough for 1st/99th percentiles stable to a few counts, and costs ~0.15 ms.
_SUBSAMPLE = 4


def ir_to_u8(ir: np.ndarray, *, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Map an IR frame to 8-bit levels, 0 = coldest, 255 = hottest.

    Args:
        ir: HxW uint8 (returned as is, not copied) or HxW uint16 raw thermal counts
            (e.g. a FLIR Boson, ~20000-35000), 0 meaning "no data".
        low_pct: percentile (0..100) of the non-zero pixels mapped to 0.
        high_pct: percentile (low_pct..100) of the non-zero pixels mapped to 255.

    Returns:
        HxW uint8. Zero (no-data) pixels map to 0; a frame with a single non-zero level maps
        that level to 0; an all-zero frame maps to all zeros.
    """
    if not isinstance(ir, np.ndarray):
        raise ValueError(f"ir_to_u8: expected an HxW uint8 or uint16 array, got a {type(ir).__name__}")
    if ir.ndim != 2 or ir.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"ir_to_u8: expected an HxW uint8 or uint16 IR frame, got shape {ir.shape} dtype {ir.dtype}"
        )
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"ir_to_u8: expected 0 <= low_pct < high_pct <= 100, got {low_pct}, {high_pct}")
    if ir.dtype == np.uint8:
        return ir
    low, high = _robust_range(ir, low_pct, high_pct)
    # The saturating subtract sends everything below `low` (the zero border included) to 0,
    # so convertScaleAbs's absolute value never sees a negative; together ~0.1 ms.
    shifted = cv2.subtract(ir, low)
    return cv2.convertScaleAbs(shifted, alpha=255.0 / max(high - low, 1))


def robust_range(ir: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> tuple[int, int]:
    """The counts `ir_to_u8` maps to 0 and 255 for this frame (uint16; (0, 0) when all zero)."""
    return _robust_range(ir, low_pct, high_pct)


def _robust_range(ir: np.ndarray, low_pct: float, high_pct: float) -> tuple[int, int]:
    """(low, high) percentiles of the non-zero pixels of a uint16 frame, on a subsample.

    Falls back to every pixel when the subsample has no non-zero pixel (a tiny image, or a
    sliver of IR inside the frame); returns (0, 0) for an all-zero frame.
    """
    values = _nonzero(ir[::_SUBSAMPLE, ::_SUBSAMPLE])
    if values.size == 0:
        values = _nonzero(ir)
        if values.size == 0:
            return 0, 0
    last = values.size - 1
    k_low = int(round(low_pct / 100.0 * last))
    k_high = int(round(high_pct / 100.0 * last))
    ordered = np.partition(values, (k_low, k_high))
    return int(ordered[k_low]), int(ordered[k_high])


def _nonzero(pixels: np.ndarray) -> np.ndarray:
    """The non-zero values of `pixels` as a 1-D array (a copy)."""
    return pixels[pixels > 0]

#: Pixels sampled (on a regular grid) for the histogram: enough for stable 0.5% tails.
_SAMPLES = 40_000
#: Histogram bins across the tail-rejected range (fewer when the range has fewer counts).
_BINS = 512


@dataclass(frozen=True)
class ThermalConfig:
    """The display mapping of the thermal camera (rig key `thermal`)."""

    #: frame: each frame stretched on its own (1st-99th percentile; pumps); plateau, linear, manual.
    agc: Literal["frame", "plateau", "linear", "manual"] = "frame"
    #: plateau: the largest share of the sampled pixels one histogram bin may count for.
    plateau: float = 0.01
    #: plateau, linear: at most this many grey levels per count.
    max_gain: float = 4.0
    #: plateau, linear: share of the pixels ignored at each end (dead or saturated pixels, specks).
    tail_reject: float = 0.005
    #: plateau, linear: [left, top, right, bottom] as fractions of the frame; statistics only.
    roi: tuple[float, float, float, float] | None = None
    #: plateau, linear: time constant of the temporal filter in seconds; 0 turns it off.
    smoothing_s: float = 1.0
    #: manual: [low, high] counts shown as black and white.
    range: tuple[int, int] | None = None
    #: Temperatures (streamfuse.radiometry, README "Temperatures"): none (the default: counts
    #: only), tlinear (kelvin x 100 counts, or x 10 with tlinear_resolution 0.1), linear.
    radiometry: Literal["none", "tlinear", "linear"] = "none"
    tlinear_resolution: float = 0.01
    linear_gain: float | None = None
    linear_offset_c: float | None = None
    emissivity: float = 1.0
    reflected_c: float = 20.0
    isotherm_c: float | None = None

    def __post_init__(self):
        check_range("plateau", self.plateau, 0.0001, 1.0)
        check_range("max_gain", self.max_gain, 0.01, 255.0)
        check_range("tail_reject", self.tail_reject, 0.0, 0.2)
        check_range("smoothing_s", self.smoothing_s, 0.0, 60.0)
        if self.roi is not None:
            left, top, right, bottom = self.roi
            if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
                raise ValueError(f"roi: expected [left, top, right, bottom] fractions with left < right and "
                                 f"top < bottom, all from 0 to 1, got {list(self.roi)}")
        radiometry = self.radiometry_config  # building it checks those keys (ValueError naming one)
        if self.isotherm_c is not None and not radiometry.on:
            raise ValueError("isotherm_c: needs temperatures; set radiometry: tlinear or linear too")
        if self.agc == "manual":
            if self.range is None:
                raise ValueError("range: agc manual needs range: [low, high] in raw counts")
            if not 0 <= self.range[0] < self.range[1] <= 65535:
                raise ValueError(f"range: expected 0 <= low < high <= 65535, got {list(self.range)}")

    @property
    def radiometry_config(self) -> RadiometryConfig:
        """The radiometric keys of this section as a `RadiometryConfig`."""
        return RadiometryConfig(self.radiometry, self.tlinear_resolution, self.linear_gain, self.linear_offset_c,
                                self.emissivity, self.reflected_c, self.isotherm_c)


class Agc:
    """The stateful display mapping of one thermal camera; main thread only.

    `update(raw, t_ns)` feeds a new frame (HxW uint16 or uint8) and its capture time;
    `apply(image)` maps any frame of the same dtype (the raw one, or it warped) to HxW uint8.
    `__call__(raw, t_ns)` does both.
    """

    def __init__(self, cfg: ThermalConfig):
        if cfg.agc == "frame":
            raise ValueError("agc: 'frame' is the stateless thermal.ir_to_u8, not an Agc")
        self.cfg = cfg
        self._lut_f: np.ndarray | None = None   # float32 mapping over every count
        self._lut: np.ndarray | None = None     # the same rounded to uint8
        self._t_ns: int | None = None

    def __call__(self, raw: np.ndarray, t_ns: int) -> np.ndarray:
        self.update(raw, t_ns)
        return self.apply(raw)

    def update(self, raw: np.ndarray, t_ns: int) -> None:
        """Move the mapping towards `raw`'s; a frame at the time already seen is ignored."""
        if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"agc: expected an HxW uint8 or uint16 IR frame, got shape {raw.shape} dtype {raw.dtype}")
        levels = 65536 if raw.dtype == np.uint16 else 256
        if self._lut_f is not None and self._lut_f.size != levels:
            self._lut_f = None  # the camera changed bit depth: start afresh
        if self._lut_f is not None and t_ns == self._t_ns:
            return
        target = self._target(raw, levels)
        if self._lut_f is None or self.cfg.smoothing_s == 0:
            self._lut_f = target
        else:
            dt_s = min(max((t_ns - self._t_ns) / 1e9, 0.0), 10 * self.cfg.smoothing_s)
            k = 1.0 - math.exp(-dt_s / self.cfg.smoothing_s)
            self._lut_f += k * (target - self._lut_f)
        self._t_ns = t_ns
        self._lut = np.rint(self._lut_f).astype(np.uint8)

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self._lut is None:
            raise RuntimeError("Agc.apply before any update")
        if image.dtype == np.uint8 and self._lut.size != 256 or image.dtype == np.uint16 and self._lut.size != 65536:
            raise ValueError(f"agc: frame dtype {image.dtype} differs from the frames the mapping was made for")
        return np.take(self._lut, image)

    def counts_at(self, levels) -> np.ndarray:
        """The lowest counts shown at (or above) each of the display `levels` (0..255): the
        inverse of the mapping, which is non-decreasing."""
        if self._lut_f is None:
            raise RuntimeError("Agc.counts_at before any update")
        return np.searchsorted(self._lut_f, np.asarray(levels, np.float32)).astype(np.float64)

    def _target(self, raw: np.ndarray, levels: int) -> np.ndarray:
        """This frame's mapping alone: float32 grey level for each of `levels` counts."""
        cfg = self.cfg
        if cfg.agc == "manual":
            return _line(levels, cfg.range[0], cfg.range[1], 255.0)
        sample = _sample(raw, cfg.roi)
        n = sample.size
        k_lo = int(cfg.tail_reject * (n - 1))
        ordered = np.partition(sample, (k_lo, n - 1 - k_lo))
        lo, hi = int(ordered[k_lo]), int(ordered[n - 1 - k_lo])
        if cfg.agc == "linear":
            return _line(levels, lo, hi, min(255.0, cfg.max_gain * max(hi - lo, 1)))
        return _plateau(sample, lo, hi, levels, cfg.plateau, cfg.max_gain)


def _sample(raw: np.ndarray, roi: tuple[float, float, float, float] | None) -> np.ndarray:
    """A regular-grid sample of about `_SAMPLES` pixels of `raw` (inside `roi`), flattened."""
    h, w = raw.shape
    if roi is not None:
        left, top, right, bottom = roi
        raw = raw[int(top * h):max(int(bottom * h), int(top * h) + 1), int(left * w):max(int(right * w), int(left * w) + 1)]
        h, w = raw.shape
    step = max(1, int(math.sqrt(h * w / _SAMPLES)))
    return raw[::step, ::step].ravel()


def _line(levels: int, lo: int, hi: int, span: float) -> np.ndarray:
    """Counts lo..hi onto `span` grey levels centred in 0..255; clipped outside."""
    counts = np.arange(levels, dtype=np.float32)
    mid = 127.5 - span / 2
    return np.clip(mid + (counts - lo) * (span / max(hi - lo, 1)), 0, 255).astype(np.float32)


def _plateau(sample: np.ndarray, lo: int, hi: int, levels: int, plateau: float, max_gain: float) -> np.ndarray:
    """Plateau-equalised mapping of the counts lo..hi of `sample` (see the module docstring)."""
    width = hi - lo + 1
    bins = min(_BINS, width)
    index = ((np.clip(sample, lo, hi).astype(np.int64) - lo) * bins) // width
    hist = np.bincount(index, minlength=bins).astype(np.float64)
    np.minimum(hist, max(plateau * sample.size, 1.0), out=hist)
    cdf = np.concatenate(([0.0], np.cumsum(hist)))
    span = min(255.0, max_gain * width)
    edges = lo + np.arange(bins + 1) * (width / bins)
    grey = 127.5 - span / 2 + span * cdf / cdf[-1]
    return np.interp(np.arange(levels, dtype=np.float32), edges, grey).astype(np.float32)


def make_agc(cfg: ThermalConfig) -> Agc | None:
    """The rig's AGC, or None for `agc: frame` (the fusers' stateless per-frame stretch)."""
    return None if cfg.agc == "frame" else Agc(cfg)


def display_counts(ir: np.ndarray, agc: Agc | None) -> tuple[float, float, float]:
    """The counts shown at display levels 0, 127.5 and 255 (the ends and the middle of a colour
    scale): through the rig's AGC, or `ir_to_u8`'s stretch of `ir` (the frame the fusers get)."""
    if agc is not None:
        return tuple(float(c) for c in agc.counts_at((0.5, 127.5, 254.5)))
    low, high = robust_range(ir) if ir.dtype == np.uint16 else (0, 255)
    return float(low), (low + high) / 2.0, float(max(high, low + 1))

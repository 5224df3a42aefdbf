"""Thermal counts to temperatures, and the scene's minimum, maximum and spot temperature.

What is measured. A radiometric core (FLIR Boson R, Lepton 3.5 in T-linear mode) delivers
counts that its own factory calibration has already made proportional to the apparent
(blackbody) temperature of the scene: kelvin x 100 (`tlinear`, resolution 0.01 K; 0.1 K in
the low-gain mode of some cores). Another camera can be mapped with a straight line from a
calibration against a reference (`linear`: kelvin = gain x counts + offset). This module does
not calibrate anything: without one of those the counts are not temperatures (`none`).

Emissivity. A surface of emissivity eps < 1 emits less than a blackbody and reflects the rest
from its surroundings (at the reflected apparent temperature T_refl). With the graybody
model and the radiance of the whole band approximated by the Stefan-Boltzmann law (W ~ T^4):

    W_meas = eps W_obj + (1 - eps) W_refl   =>   T_obj = ((T_meas^4 - (1 - eps) T_refl^4) / eps)^(1/4)

A long-wave camera sees 8-14 um only, where radiance grows more slowly than T^4 near room
temperature (about T^4..T^5 is a closer local fit), so this overstates the correction a
little for low emissivities; for eps >= 0.9 the difference is a few tenths of a kelvin.
Atmosphere (humidity, distance), window transmission and the camera's own drift are not
modelled.

Statistics are taken on counts (the mapping is increasing), so only the three values are
converted: `measure` costs about 0.3 ms per 640x480 frame. Counts of 0 mean "no data" (the
part of the visible frame the IR camera does not see) and are never measured; neither is
the one-pixel rim around that area, where the warp blended real counts with the zeros.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from streamfuse.config import check_range

#: 0 degrees Celsius in kelvin.
ZERO_C_K = 273.15
#: The spot meter averages this many pixels square (cameras' spot: a few pixels, not one).
SPOT_PX = 3


@dataclass(frozen=True)
class RadiometryConfig:
    """How counts map to temperatures (flat keys of the rig's `thermal` section)."""

    #: none: counts only, no temperatures shown; tlinear: counts = kelvin / tlinear_resolution
    #: (Boson R, Lepton 3.5); linear: kelvin = linear_gain x counts + linear_offset_c + 273.15.
    radiometry: Literal["none", "tlinear", "linear"] = "none"
    #: tlinear: kelvin per count, 0.01 (high gain) or 0.1 (low gain).
    tlinear_resolution: float = 0.01
    #: linear: kelvin per count and the temperature (Celsius) of count 0, from a calibration.
    linear_gain: float | None = None
    linear_offset_c: float | None = None
    #: Emissivity of the surfaces measured (1: a blackbody; skin about 0.98).
    emissivity: float = 1.0
    #: Reflected apparent temperature (Celsius): what the surfaces mirror (usually the room).
    reflected_c: float = 20.0
    #: Pixels at or above this temperature (Celsius) are tinted; None: no isotherm.
    isotherm_c: float | None = None

    def __post_init__(self):
        if self.tlinear_resolution not in (0.01, 0.1):
            raise ValueError(f"tlinear_resolution: expected 0.01 or 0.1 (kelvin per count), "
                             f"got {self.tlinear_resolution}")
        if self.radiometry == "linear":
            if self.linear_gain is None or self.linear_offset_c is None:
                raise ValueError("radiometry: linear needs linear_gain (kelvin per count) and linear_offset_c "
                                 "(Celsius at count 0) from a calibration")
            check_range("linear_gain", self.linear_gain, 1e-6, 100.0)
            # A line fitted over the working range may well start below 0 K at count 0.
            check_range("linear_offset_c", self.linear_offset_c, -10_000.0, 10_000.0)
        check_range("emissivity", self.emissivity, 0.1, 1.0)
        check_range("reflected_c", self.reflected_c, -100.0, 1000.0)
        if self.isotherm_c is not None:
            check_range("isotherm_c", self.isotherm_c, -100.0, 2000.0)

    @property
    def on(self) -> bool:
        return self.radiometry != "none"

    def _line(self) -> tuple[float, float]:
        """(kelvin per count, kelvin at count 0) of the apparent temperature."""
        if self.radiometry == "tlinear":
            return self.tlinear_resolution, 0.0
        if self.radiometry == "linear":
            return self.linear_gain, self.linear_offset_c + ZERO_C_K
        raise ValueError("radiometry: none; set thermal.radiometry to tlinear or linear to measure temperatures")


def object_kelvin(apparent_k, emissivity: float, reflected_k: float):
    """The graybody correction (module docstring): apparent kelvin -> object kelvin; NaN where
    the reading is below what the reflection alone would give."""
    if emissivity == 1.0:
        return apparent_k
    w = (np.power(np.asarray(apparent_k, np.float64), 4) - (1.0 - emissivity) * reflected_k ** 4) / emissivity
    return np.where(w > 0, np.power(np.maximum(w, 0), 0.25), np.nan)


def apparent_kelvin(object_k, emissivity: float, reflected_k: float):
    """The inverse of `object_kelvin`: what the camera reads for a surface at `object_k`."""
    if emissivity == 1.0:
        return object_k
    w = emissivity * np.power(np.asarray(object_k, np.float64), 4) + (1.0 - emissivity) * reflected_k ** 4
    return np.power(w, 0.25)


def celsius_from_counts(counts: np.ndarray, cfg: RadiometryConfig) -> np.ndarray:
    """HxW float32 object temperatures in Celsius of raw counts (any shape); NaN where counts are 0."""
    gain, offset_k = cfg._line()
    counts = np.asarray(counts)
    kelvin = counts.astype(np.float64) * gain + offset_k
    kelvin = object_kelvin(kelvin, cfg.emissivity, cfg.reflected_c + ZERO_C_K)
    return np.where(counts > 0, kelvin - ZERO_C_K, np.nan).astype(np.float32)


def counts_from_celsius(celsius: float, cfg: RadiometryConfig) -> float:
    """The (fractional) count a surface at `celsius` gives: the inverse of `celsius_from_counts`."""
    gain, offset_k = cfg._line()
    apparent = float(apparent_kelvin(celsius + ZERO_C_K, cfg.emissivity, cfg.reflected_c + ZERO_C_K))
    return (apparent - offset_k) / gain


def _celsius(count: float, cfg: RadiometryConfig) -> float | None:
    value = float(celsius_from_counts(np.array([count], np.float64), cfg)[0])
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class SceneTemperatures:
    """The temperatures of one registered IR frame, for the overlay, /metrics and snapshots.

    Positions are pixels of the visible frame (the fused picture's), (x, y). Temperatures are
    Celsius; None where there is nothing to measure (no IR data there, or none at all).

    Attributes:
        counts: the registered raw counts the values come from (HxW, read only), for the
            isotherm tint; None once dropped.
        scale_c: temperatures of display levels 0, 127.5 and 255 of the IR picture (the
            colour scale bar's bottom, middle and top); None without a display mapping.
        isotherm_counts: the count of `isotherm_c`, or None without an isotherm.
    """

    min_c: float | None
    min_xy: tuple[int, int] | None
    max_c: float | None
    max_xy: tuple[int, int] | None
    spot_c: float | None
    spot_xy: tuple[int, int]
    scale_c: tuple[float, float, float] | None = None
    isotherm_c: float | None = None
    isotherm_counts: float | None = None
    counts: np.ndarray | None = None

    def as_dict(self) -> dict:
        """Plain JSON values (no counts)."""
        def r(v):
            return None if v is None else round(v, 3)
        return {"min_c": r(self.min_c), "min_xy": self.min_xy, "max_c": r(self.max_c), "max_xy": self.max_xy,
                "spot_c": r(self.spot_c), "spot_xy": self.spot_xy, "isotherm_c": self.isotherm_c,
                "scale_c": None if self.scale_c is None else [r(v) for v in self.scale_c]}


_RIM = np.ones((3, 3), np.uint8)


def measure(counts: np.ndarray, cfg: RadiometryConfig, spot_xy: tuple[float, float],
            display_counts: tuple[float, float, float] | None = None) -> SceneTemperatures:
    """Minimum, maximum and spot temperature of registered counts.

    Args:
        counts: HxW uint16 (or uint8) raw counts in the visible frame, 0 = no data.
        cfg: the radiometric mapping (on).
        spot_xy: the spot meter as fractions 0..1 of the frame's width and height.
        display_counts: counts shown at display levels 0, 127.5 and 255, for the scale bar.
    """
    h, w = counts.shape
    valid = cv2.erode((counts > 0).view(np.uint8), _RIM, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    # Fractions of the width and height, pixel x covering [x, x + 1) / w (a click anywhere on it).
    sx = min(max(int(spot_xy[0] * w), 0), w - 1)
    sy = min(max(int(spot_xy[1] * h), 0), h - 1)
    r = SPOT_PX // 2
    box, box_valid = counts[max(sy - r, 0):sy + r + 1, max(sx - r, 0):sx + r + 1], \
        valid[max(sy - r, 0):sy + r + 1, max(sx - r, 0):sx + r + 1]
    spot_c = _celsius(float(box[box_valid > 0].mean()), cfg) if box_valid.any() else None
    scale = None if display_counts is None else tuple(_celsius(max(c, 1.0), cfg) for c in display_counts)
    iso = cfg.isotherm_c
    iso_counts = None if iso is None else counts_from_celsius(iso, cfg)
    if not valid.any():
        return SceneTemperatures(None, None, None, None, spot_c, (sx, sy), scale, iso, iso_counts, counts)
    lo, hi, lo_xy, hi_xy = cv2.minMaxLoc(counts, mask=valid)
    return SceneTemperatures(_celsius(lo, cfg), tuple(lo_xy), _celsius(hi, cfg), tuple(hi_xy), spot_c, (sx, sy),
                             scale, iso, iso_counts, counts)

"""False-colour palettes for 8-bit thermal images.

Each palette is a 256x1x3 uint8 BGR lookup table: entry i is the colour of IR level i
(0 = coldest, 255 = hottest after `thermal.ir_to_u8`). Tables are built once at import
and never modified.
"""
from __future__ import annotations

import cv2
import numpy as np

#: Key colours of the ironbow palette as (position 0..1, (R, G, B)), interpolated linearly
#: between keys. Chosen by eye to match the look of FLIR's ironbow: black, deep blue-purple,
#: magenta, red-orange, orange, yellow, white.
_IRONBOW_KEYS_RGB = (
    (0.00, (0, 0, 0)),
    (0.12, (28, 0, 96)),
    (0.30, (112, 0, 152)),
    (0.45, (184, 20, 128)),
    (0.60, (228, 68, 44)),
    (0.75, (250, 140, 0)),
    (0.90, (255, 218, 40)),
    (1.00, (255, 255, 255)),
)


def _ramp_lut(values: np.ndarray) -> np.ndarray:
    """A 256x1x3 BGR table with the same 256 grey levels in all three channels."""
    return np.repeat(values.astype(np.uint8).reshape(256, 1, 1), 3, axis=2)


def _keyed_lut(keys_rgb) -> np.ndarray:
    """A 256x1x3 BGR table interpolated linearly between (position, RGB) key colours."""
    positions = np.array([p for p, _ in keys_rgb]) * 255.0
    colours_rgb = np.array([c for _, c in keys_rgb], dtype=np.float64)
    levels = np.arange(256)
    rgb = np.stack([np.interp(levels, positions, colours_rgb[:, ch]) for ch in range(3)], axis=1)
    return np.rint(rgb[:, ::-1]).astype(np.uint8).reshape(256, 1, 3)


def _read_only(lut: np.ndarray) -> np.ndarray:
    lut.setflags(write=False)
    return lut


#: Name -> 256x1x3 uint8 BGR table (read-only).
PALETTES: dict[str, np.ndarray] = {
    "white-hot": _read_only(_ramp_lut(np.arange(256))),
    "black-hot": _read_only(_ramp_lut(255 - np.arange(256))),
    "ironbow": _read_only(_keyed_lut(_IRONBOW_KEYS_RGB)),
}


def _ramp(start_bgr, end_bgr) -> np.ndarray:
    t = np.linspace(0.0, 1.0, 256)[:, None]
    return np.rint((1 - t) * np.array(start_bgr) + t * np.array(end_bgr)).astype(np.uint8)


#: Palette -> 256x3 BGR isotherm ramp (0: at the threshold, 255: the scene's maximum): what
#: the palette paints its hot regions with in the modes that keep the visible colour and in
#: the temperature overlay (ironbow: its own orange to yellow; white-hot: red to yellow;
#: black-hot: red to dark red, hotter is darker as in the palette).
ISOTHERM_RAMPS: dict[str, np.ndarray] = {
    "white-hot": _read_only(_ramp((0, 0, 220), (0, 255, 255))),
    "black-hot": _read_only(_ramp((0, 0, 255), (0, 0, 110))),
    "ironbow": _read_only(np.ascontiguousarray(PALETTES["ironbow"][np.linspace(140, 228, 256).round().astype(int), 0])),
}


def apply_palette(ir8: np.ndarray, name: str) -> np.ndarray:
    """Colour an 8-bit thermal image with a named palette.

    Args:
        ir8: HxW uint8 IR image, 0 = coldest, 255 = hottest.
        name: a key of PALETTES.

    Returns:
        HxWx3 uint8 BGR image.
    """
    lut = get_palette(name)
    if ir8.ndim != 2 or ir8.dtype != np.uint8:
        raise ValueError(
            f"apply_palette: expected an HxW uint8 IR image, got shape {ir8.shape} dtype {ir8.dtype}"
        )
    # applyColorMap with a user table measured ~4x faster than cv2.LUT on a 3-channel copy
    # (0.2 ms vs 0.4-1.3 ms at 640x480 on 2 cores).
    return cv2.applyColorMap(ir8, lut)


def get_palette(name: str) -> np.ndarray:
    """The 256x1x3 BGR table called `name`; ValueError listing the known names otherwise."""
    try:
        return PALETTES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown palette {name!r}; expected one of {sorted(PALETTES)}") from None

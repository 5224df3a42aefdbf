"""Live controls: what a viewer changes while the rig runs (fusion mode, view, palette,
strength, parallax distance), and the main loop's side that applies it.

Threads. Viewers (the display window's thread, the browser monitor's request threads) call
`Controls.update`; the main loop reads `Controls.settings` once per frame. `Settings` is
immutable and replaced whole under a lock, so the main loop's read is a single attribute
read and never sees half a change. Only the main loop touches the fusers and the registrar
(`LiveFusion`), as everywhere else in the pipeline.

Changes apply to the pipeline's output, so every sink (the recording included) gets the
picture the operator chose, as with a camera's own mode switch.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from streamfuse.fuse import MODES, NEEDS_WEIGHTS, Fuser, FusionConfig, make_fuser
from streamfuse.fuse.palettes import PALETTES, apply_palette
from streamfuse.thermal import ir_to_u8

#: What the output shows: the fused picture, one camera, both side by side, or the fused
#: picture with the thermal view inset ("pip", picture in picture).
VIEWS = ("fused", "ir", "visible", "side-by-side", "pip")
#: Parallax distances a viewer may set, in metres (a hand-held target to the horizon).
DISTANCE_RANGE_M = (0.3, 10_000.0)
#: The inset of the "pip" view, as a fraction of the frame's width.
PIP_FRACTION = 0.33


@dataclass(frozen=True)
class Settings:
    """One consistent set of live settings; replaced whole on every change."""

    mode: str
    palette: str
    strength: float
    view: str = "fused"
    #: Registration's working distance in metres; None when registration has no parallax model.
    distance_m: float | None = None


class Controls:
    """Thread-safe live settings, seeded from the rig's fusion section.

    Args:
        fusion: the rig's FusionConfig (mode, palette and strength to start with).
        distance_m: registration's working distance, or None if it cannot be changed
            (the key and the browser control then say so).
    """

    def __init__(self, fusion: FusionConfig, distance_m: float | None = None):
        self._lock = threading.Lock()
        self.settings = Settings(fusion.mode, fusion.palette, fusion.strength, "fused", distance_m)
        #: The modes a viewer may switch to: those that need a weights file only if the rig gave one.
        self.modes = tuple(m for m in MODES if m not in NEEDS_WEIGHTS or fusion.weights is not None)

    @property
    def parallax(self) -> bool:
        """Whether the parallax distance can be adjusted."""
        return self.settings.distance_m is not None

    def update(self, **changes: Any) -> Settings:
        """Apply `changes` (mode, palette, strength, view, distance_m) all or nothing;
        ValueError("key: message") naming the first bad one."""
        with self._lock:
            current = self.settings
            for key, value in changes.items():
                _check(key, value, current, self.modes)
            self.settings = dataclasses.replace(current, **changes)
            return self.settings

    def cycle(self, key: str) -> Settings:
        """Step `mode`, `palette` or `view` to the next choice (a key press)."""
        choices = {"mode": self.modes, "palette": tuple(PALETTES), "view": VIEWS}[key]
        with self._lock:
            current = getattr(self.settings, key)
            nxt = choices[(choices.index(current) + 1) % len(choices)]
            self.settings = dataclasses.replace(self.settings, **{key: nxt})
            return self.settings

    def nudge_strength(self, delta: float) -> Settings:
        with self._lock:
            value = round(min(1.0, max(0.0, self.settings.strength + delta)), 2)
            self.settings = dataclasses.replace(self.settings, strength=value)
            return self.settings

    def scale_distance(self, factor: float) -> Settings:
        """Multiply the parallax distance (nearer < 1 < farther); ValueError without parallax."""
        with self._lock:
            if self.settings.distance_m is None:
                raise ValueError(_NO_PARALLAX)
            low, high = DISTANCE_RANGE_M
            value = round(min(high, max(low, self.settings.distance_m * factor)), 2)
            self.settings = dataclasses.replace(self.settings, distance_m=value)
            return self.settings

    def describe(self) -> dict[str, Any]:
        """The settings and their choices as JSON values, for the browser page (a distance
        "at infinity" is null there: JSON has no infinity)."""
        out = dataclasses.asdict(self.settings)
        if out["distance_m"] is not None and not math.isfinite(out["distance_m"]):
            out["distance_m"] = None
        return {**out, "parallax": self.parallax,
                "choices": {"mode": list(self.modes), "palette": list(PALETTES), "view": list(VIEWS)}}


_NO_PARALLAX = ("distance_m: this registration has no parallax model (a fixed homography); "
                "calibrate both cameras' intrinsics and extrinsics to adjust the distance")


def _check(key: str, value: Any, current: Settings, modes: tuple[str, ...]) -> None:
    choices = {"mode": modes, "palette": PALETTES, "view": VIEWS}
    if key in choices:
        if not isinstance(value, str) or value not in choices[key]:
            raise ValueError(f"{key}: expected one of {', '.join(choices[key])}, got {value!r}")
    elif key == "strength":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"strength: expected a number from 0 to 1, got {value!r}")
    elif key == "distance_m":
        if current.distance_m is None:
            raise ValueError(_NO_PARALLAX)
        low, high = DISTANCE_RANGE_M
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"distance_m: expected metres from {low} to {high:g}, got {value!r}")
    else:
        raise ValueError(f"{key}: not a live setting; expected mode, palette, strength, view or distance_m")


class LiveFusion:
    """The main loop's side of the controls: the fuser and view for the current settings.

    Keeps one fuser per mode, rebuilt only when that mode's palette or strength changed, and
    forwards a new distance to `registrar.set_distance` when registration offers it.
    """

    def __init__(self, controls: Controls, base: FusionConfig, registrar):
        self.controls = controls
        self._base = base
        self._registrar = registrar
        self._fusers: dict[str, Fuser] = {}
        self._applied: Settings | None = None
        self._fuser: Fuser | None = None
        self._distance_m = controls.settings.distance_m  # what the registrar already uses

    def current(self) -> tuple[Fuser, str]:
        """(fuser, view) for this frame; called once per frame on the main thread."""
        settings = self.controls.settings
        if settings is not self._applied:
            self._apply(settings)
        return self._fuser, settings.view

    def _apply(self, settings: Settings) -> None:
        cfg = dataclasses.replace(self._base, mode=settings.mode, palette=settings.palette,
                                  strength=settings.strength)
        fuser = self._fusers.get(cfg.mode)
        if fuser is None or fuser.cfg != cfg:
            fuser = self._fusers[cfg.mode] = make_fuser(cfg)
        self._fuser = fuser
        if settings.distance_m is not None and settings.distance_m != self._distance_m:
            self._registrar.set_distance(settings.distance_m)
            self._distance_m = settings.distance_m
        self._applied = settings


def render_view(view: str, fuser: Fuser, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """The output picture for `view` (one of VIEWS) from a registered IR frame and a visible
    frame (the Fuser input contract); HxWx3 BGR uint8 of the visible size."""
    if view == "fused":
        return fuser.fuse(ir, vis)
    vis_bgr = vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
    if view == "visible":
        return vis_bgr.copy()
    thermal = apply_palette(ir_to_u8(ir), fuser.cfg.palette)
    if view == "ir":
        return thermal
    if view == "side-by-side":
        return _side_by_side(thermal, vis_bgr)
    if view == "pip":
        return _inset(fuser.fuse(ir, vis), thermal)
    raise ValueError(f"view: expected one of {', '.join(VIEWS)}, got {view!r}")


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Both images at half width, centred vertically on black, in a frame of the same size."""
    h, w = left.shape[:2]
    half_w, half_h = w // 2, max(1, round(h / 2))
    out = np.zeros_like(left)
    top = (h - half_h) // 2
    out[top:top + half_h, :half_w] = cv2.resize(left, (half_w, half_h), interpolation=cv2.INTER_AREA)
    out[top:top + half_h, half_w:2 * half_w] = cv2.resize(right, (half_w, half_h), interpolation=cv2.INTER_AREA)
    return out


def _inset(main: np.ndarray, inset: np.ndarray) -> np.ndarray:
    """`inset` scaled to PIP_FRACTION of the width in the top-right corner of `main`, framed."""
    h, w = main.shape[:2]
    iw, ih = max(1, round(w * PIP_FRACTION)), max(1, round(h * PIP_FRACTION))
    margin = max(2, w // 80)
    x0, y0 = w - iw - margin, margin
    main[y0:y0 + ih, x0:x0 + iw] = cv2.resize(inset, (iw, ih), interpolation=cv2.INTER_AREA)
    cv2.rectangle(main, (x0 - 1, y0 - 1), (x0 + iw, y0 + ih), (255, 255, 255), 1)
    return main

"""Live controls: what a viewer changes while the rig runs (fusion mode, view, palette,
strength, parallax distance, the spot meter), and the main loop's side that applies it.

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

from streamfuse.fuse import MODES, NEEDS_WEIGHTS, Fuser, FusionConfig, make_fuser, palette_use
from streamfuse.fuse.palettes import PALETTES
from streamfuse.fuse.views import VIEWS

#: Parallax distances a viewer may set, in metres (a hand-held target to the horizon).
DISTANCE_RANGE_M = (0.3, 10_000.0)


@dataclass(frozen=True)
class Settings:
    """One consistent set of live settings; replaced whole on every change."""

    mode: str
    palette: str
    strength: float
    view: str = "fused"
    #: Registration's working distance in metres; None when registration has no parallax model.
    distance_m: float | None = None
    #: The spot meter (radiometric rigs): (x, y) as fractions 0..1 of the visible frame.
    spot: tuple[float, float] = (0.5, 0.5)


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
        #: The modes a viewer may switch to: a mode that needs a weights file only when it is the
        #: rig's own mode with its file (`fusion.weights` holds one network's weights).
        self.modes = tuple(m for m in MODES if m not in NEEDS_WEIGHTS
                           or (m == fusion.mode and fusion.weights is not None))
        self._hot_tint = fusion.hot_tint

    def palette_use(self) -> str:
        """What the palette does in the current mode, in words (`fuse.palette_use`)."""
        return palette_use(self.settings.mode, self._hot_tint)

    @property
    def parallax(self) -> bool:
        """Whether the parallax distance can be adjusted."""
        return self.settings.distance_m is not None

    def update(self, **changes: Any) -> Settings:
        """Apply `changes` (mode, palette, strength, view, distance_m, spot) all or nothing;
        ValueError("key: message") naming the first bad one."""
        with self._lock:
            current = self.settings
            for key, value in changes.items():
                _check(key, value, current, self.modes)
            if "spot" in changes:
                changes = {**changes, "spot": (float(changes["spot"][0]), float(changes["spot"][1]))}
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
        return {**out, "parallax": self.parallax, "palette_use": self.palette_use(),
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
    elif key == "spot":
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value)):
            raise ValueError(f"spot: expected [x, y], fractions from 0 to 1 of the picture, got {value!r}")
    else:
        raise ValueError(f"{key}: not a live setting; expected mode, palette, strength, view, distance_m or spot")


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

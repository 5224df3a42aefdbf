"""The built-in synthetic rig: two cameras looking at one procedurally rendered scene.

Both sources of a synthetic rig share one `SyntheticScene` (seed, day or night), so the IR
and visible frames show the same bodies at the same scene time. The IR camera's pixels map
to the visible camera's through the scene's known `H_vis_from_ir`, and each camera can be
given a clock offset, to exercise registration and sync against ground truth.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from streamfuse.capture.base import Source
from streamfuse.capture.scene import DEMO_H_VIS_FROM_IR, SyntheticScene
from streamfuse.config import check_range
from streamfuse.frames import Frame, now_ns

#: The sizes DEMO_H_VIS_FROM_IR was written for; other sizes scale it.
DEMO_IR_SIZE = (640, 512)
DEMO_VIS_SIZE = (640, 480)


@dataclass(frozen=True)
class SceneConfig:
    """The synthetic scene both synthetic sources look at (rig key `scene`)."""

    seed: int = 0
    night: bool = False
    people: int = 4
    vehicles: int = 2
    #: The IR camera's noise (noise-equivalent temperature difference, mK); 0: none.
    netd_mk: float = 40.0
    #: A scene of known temperatures (Celsius) for radiometry: a uniform IR background and
    #: every warm body at one temperature; None: the street's own temperatures.
    background_c: float | None = None
    body_c: float | None = None

    def __post_init__(self):
        check_range("seed", self.seed, 0, 2 ** 31 - 1)
        check_range("people", self.people, 0, 50)
        check_range("vehicles", self.vehicles, 0, 20)
        check_range("netd_mk", self.netd_mk, 0, 1000)
        for key in ("background_c", "body_c"):
            if getattr(self, key) is not None:
                check_range(key, getattr(self, key), -70, 120)


@dataclass(frozen=True)
class SyntheticConfig:
    """A simulated camera (rig `sources.ir` or `sources.vis` with `type: synthetic`)."""

    type: Literal["synthetic"] = "synthetic"
    size: tuple[int, int] = (640, 480)
    fps: float = 25.0
    #: IR only: gray16 (raw counts like a FLIR Boson) or gray8. The visible camera is bgr24.
    pixel_format: Literal["auto", "gray8", "gray16", "bgr24"] = "auto"
    #: fast: frames as quickly as the pipeline takes them, on a simulated timeline;
    #: realtime: frames at the camera's rate on the wall clock, like a live camera.
    pace: Literal["fast", "realtime"] = "fast"
    #: Simulated error of this camera's clock: its timestamps run this much late.
    clock_offset_ms: float = 0.0
    #: Known capture latency, subtracted from every timestamp (corrects clock_offset_ms).
    latency_ms: float = 0.0

    def __post_init__(self):
        check_range("fps", self.fps, 0.1, 1000)
        check_range("clock_offset_ms", self.clock_offset_ms, -3_600_000, 3_600_000)
        check_range("latency_ms", self.latency_ms, 0, 60_000)
        if min(self.size) < 16 or max(self.size) > 8192:
            raise ValueError(f"size: expected [width, height] from 16 to 8192, got {list(self.size)}")


def synthetic_H_vis_from_ir(ir_size: tuple[int, int], vis_size: tuple[int, int]) -> np.ndarray:
    """The true homography of the synthetic rig for these sizes (the demo one, rescaled)."""
    vis_from_demo = np.diag([vis_size[0] / DEMO_VIS_SIZE[0], vis_size[1] / DEMO_VIS_SIZE[1], 1.0])
    demo_from_ir = np.diag([DEMO_IR_SIZE[0] / ir_size[0], DEMO_IR_SIZE[1] / ir_size[1], 1.0])
    return vis_from_demo @ DEMO_H_VIS_FROM_IR @ demo_from_ir


def make_scene(scene: SceneConfig, ir: SyntheticConfig, vis: SyntheticConfig) -> SyntheticScene:
    """One scene for the two synthetic cameras of a rig."""
    return SyntheticScene(
        seed=scene.seed, night=scene.night, vis_size=vis.size, ir_size=ir.size,
        H_vis_from_ir=synthetic_H_vis_from_ir(ir.size, vis.size),
        ir_bits=8 if ir.pixel_format == "gray8" else 16,
        n_people=scene.people, n_vehicles=scene.vehicles, netd_mk=scene.netd_mk,
        background_k=None if scene.background_c is None else scene.background_c + 273.15,
        body_k=None if scene.body_c is None else scene.body_c + 273.15)


class SyntheticSource(Source):
    """One camera of the synthetic rig; `scene` is shared with the other camera."""

    def __init__(self, name: str, cfg: SyntheticConfig, scene: SyntheticScene):
        super().__init__(name)
        self.cfg = cfg
        self.scene = scene
        self.realtime = cfg.pace == "realtime"
        self._seq = 0
        self._period_ns = round(1e9 / cfg.fps)

    def open(self) -> None:
        self.size = self.cfg.size
        self.fps = Fraction(self.cfg.fps).limit_denominator(1001)
        if self.name == "ir":
            self.pixel_format = "gray8" if self.cfg.pixel_format == "gray8" else "gray16"
        else:
            self.pixel_format = "bgr24"

    def scene_time_s(self, seq: int) -> float:
        """Scene time at which frame `seq` is exposed (the same clock for both cameras)."""
        return seq * self._period_ns / 1e9

    def read(self) -> Frame:
        seq = self._seq
        self._seq += 1
        exposure_ns = self.t0_ns + seq * self._period_ns
        if self.realtime:
            delay = (exposure_ns - now_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
        t_s = self.scene_time_s(seq)
        image = self.scene.render_ir(t_s, seq) if self.name == "ir" else self.scene.render_vis(t_s, seq)
        stamp_ns = exposure_ns + round(1e6 * (self.cfg.clock_offset_ms - self.cfg.latency_ms))
        return Frame(image, stamp_ns, seq, self.name, self.pixel_format, now_ns())

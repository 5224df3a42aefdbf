"""The one data type that crosses every stage: `Frame`, and `FramePair` after sync.

Time convention: every timestamp is an integer count of nanoseconds on the pipeline
clock, `now_ns()` (CLOCK_MONOTONIC). Sources map their own clocks (stream pts, sensor
counters) onto it once, at capture; only the MP4 sink turns nanoseconds into pts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

#: Pixel formats a Frame may carry, with the array shape and dtype each implies.
PIXEL_FORMATS = {
    "gray8": (2, np.uint8),    # HxW, 0..255
    "gray16": (2, np.uint16),  # HxW, raw sensor counts (e.g. Boson RAW16, Lepton Y16)
    "bgr24": (3, np.uint8),    # HxWx3, OpenCV channel order
}


def now_ns() -> int:
    """The pipeline clock: monotonic nanoseconds, shared by every thread."""
    return time.monotonic_ns()


@dataclass(frozen=True, slots=True)
class Frame:
    """One image from one camera.

    Attributes:
        image: HxW (gray8, gray16) or HxWx3 (bgr24) array; never modified after capture.
        t_ns: capture time on the pipeline clock, corrected for the camera's known latency.
        seq: the source's frame counter, from 0, without gaps unless the source dropped frames.
        camera: the rig's name for the source, "ir" or "vis".
        pixel_format: one of PIXEL_FORMATS.
        recv_ns: when the frame entered the pipeline (pipeline clock); latency is measured
            from here, because t_ns of a file replayed as fast as possible is not wall time.
        pair: on a fused frame, the pair it was made from (the raw IR frame before display
            mapping, and the visible frame), for sinks that keep the inputs; None otherwise.
        temperatures: on a fused frame of a radiometric rig, its
            `radiometry.SceneTemperatures` (min, max, spot, in this frame's pixels); None otherwise.
    """

    image: np.ndarray
    t_ns: int
    seq: int
    camera: str
    pixel_format: str
    recv_ns: int
    pair: FramePair | None = None
    temperatures: object | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


@dataclass(frozen=True, slots=True)
class FramePair:
    """An IR frame and the visible frame nearest to it in time."""

    ir: Frame
    vis: Frame

    @property
    def skew_ns(self) -> int:
        """IR capture time minus visible capture time."""
        return self.ir.t_ns - self.vis.t_ns

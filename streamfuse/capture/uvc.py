"""UVC / V4L2 cameras through OpenCV, including 16-bit thermal cores (Boson RAW16, Lepton Y16).

A 16-bit thermal camera only delivers raw counts if OpenCV is asked, in this order, for the
Y16 FOURCC, the size and rate, and then for no RGB conversion; otherwise the driver's 8-bit
AGC'd picture arrives. `open()` reads one frame and checks that 16-bit values really came.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from streamfuse.capture.base import Source
from streamfuse.config import check_range
from streamfuse.errors import RuntimeFailure, SourceError
from streamfuse.frames import Frame, now_ns

#: Frames the driver may buffer; 1 so that a read returns the newest frame, not a stale one.
DRIVER_BUFFER_FRAMES = 1


@dataclass(frozen=True)
class UvcConfig:
    """A camera on this machine (rig `sources.ir` or `sources.vis` with `type: uvc`)."""

    #: Index (0), device path (/dev/video0) or stable id (/dev/v4l/by-id/usb-...-video-index0).
    device: int | str
    type: Literal["uvc"] = "uvc"
    size: tuple[int, int] = (640, 480)
    fps: float = 30.0
    #: gray16 for radiometric thermal cores, gray8 for AGC'd thermal video, bgr24 for colour.
    pixel_format: Literal["auto", "gray8", "gray16", "bgr24"] = "auto"
    #: Known delay between exposure and the frame reaching this process, subtracted from t_ns.
    latency_ms: float = 0.0
    #: A live camera always runs at its own rate.
    pace: Literal["realtime"] = "realtime"

    def __post_init__(self):
        check_range("fps", self.fps, 0.1, 1000)
        check_range("latency_ms", self.latency_ms, 0, 5000)
        if min(self.size) < 16 or max(self.size) > 8192:
            raise ValueError(f"size: expected [width, height] from 16 to 8192, got {list(self.size)}")


class UvcSource(Source):
    realtime = True

    def __init__(self, name: str, cfg: UvcConfig):
        super().__init__(name)
        self.cfg = cfg
        self._cap = None
        self._seq = 0
        if cfg.pixel_format != "auto":
            self.pixel_format = cfg.pixel_format
        else:
            self.pixel_format = "gray16" if name == "ir" else "bgr24"

    def open(self) -> None:
        import cv2

        cfg = self.cfg
        cap = cv2.VideoCapture(cfg.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(f"{self.name} camera {cfg.device}: cannot open it; check that it is plugged in "
                              "and that `ls /dev/v4l/by-id/` lists it")
        if self.pixel_format == "gray16":
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"Y16 "))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.size[1])
        cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, DRIVER_BUFFER_FRAMES)
        if self.pixel_format != "bgr24":
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        self._cap = cap
        first = self._grab()
        if first is None:
            self.close()
            raise SourceError(f"{self.name} camera {cfg.device}: opened but delivered no frame; "
                              "check the requested size, rate and format with `v4l2-ctl --list-formats-ext`")
        if self.pixel_format == "gray16" and first.dtype != np.uint16:
            self.close()
            raise SourceError(f"{self.name} camera {cfg.device}: asked for 16-bit Y16 but the driver delivers "
                              f"8-bit {first.shape}; enable the camera's raw 16-bit mode (Boson: RAW16 via its SDK)")
        self.size = (first.shape[1], first.shape[0])
        self.fps = Fraction(cap.get(cv2.CAP_PROP_FPS) or cfg.fps).limit_denominator(1001)

    def _grab(self) -> np.ndarray | None:
        import cv2

        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        if self.pixel_format == "gray16" and image.ndim == 2 and image.shape[0] == 1:
            w, h = self.cfg.size  # some drivers hand over the raw buffer as one row
            image = image.view(np.uint16).reshape(h, w) if image.size == w * h * 2 // image.itemsize else image
        if self.pixel_format == "gray8" and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return image

    def read(self) -> Frame:
        image = self._grab()
        if image is None:
            raise RuntimeFailure(f"{self.name} camera {self.cfg.device} stopped delivering frames (unplugged?)")
        t_ns = now_ns() - round(self.cfg.latency_ms * 1e6)
        frame = Frame(image, t_ns, self._seq, self.name, self.pixel_format, now_ns())
        self._seq += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

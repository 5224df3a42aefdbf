"""UVC / V4L2 cameras through OpenCV, including 16-bit thermal cores (Boson RAW16, Lepton Y16).

A 16-bit thermal camera only delivers raw counts if OpenCV is asked, in this order, for the
Y16 FOURCC, the size and rate, and then for no RGB conversion; otherwise the driver's 8-bit
AGC'd picture arrives. `open()` reads one frame and checks that 16-bit values and the
requested size really came. The driver keeps one buffer, so a read returns the newest frame.

Frames are stamped with the V4L2 buffer timestamp, which the driver takes on the same
monotonic clock as the pipeline, when OpenCV reports one; otherwise on arrival. A camera
that is unplugged is reopened by its path (use a stable `/dev/v4l/by-id/...` path: an index
may change when a camera is plugged in again); see `capture/live.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from streamfuse.capture.live import LiveOptions, LiveSource
from streamfuse.config import check_range
from streamfuse.errors import SourceError
from streamfuse.frames import now_ns

#: Frames the driver may buffer; 1 so that a read returns the newest frame, not a stale one.
DRIVER_BUFFER_FRAMES = 1
#: A device timestamp further in the past than this is not on our clock: stamp on arrival.
DEVICE_CLOCK_MAX_AGE_NS = 1_000_000_000


@dataclass(frozen=True)
class UvcConfig(LiveOptions):
    """A camera on this machine (rig `sources.ir` or `sources.vis` with `type: uvc`); the
    settings all live sources share are in `LiveOptions`."""

    #: Index (0), device path (/dev/video0) or stable id (/dev/v4l/by-id/usb-...-video-index0).
    device: int | str
    type: Literal["uvc"] = "uvc"
    size: tuple[int, int] = (640, 480)
    fps: float = 30.0
    #: gray16 for radiometric thermal cores, gray8 for AGC'd thermal video, bgr24 for colour.
    pixel_format: Literal["auto", "gray8", "gray16", "bgr24"] = "auto"
    #: FOURCC to request, e.g. MJPG for a colour camera at high resolution; gray16 asks for Y16.
    fourcc: str | None = None

    def __post_init__(self):
        super().__post_init__()
        check_range("fps", self.fps, 0.1, 1000)
        if min(self.size) < 16 or max(self.size) > 8192:
            raise ValueError(f"size: expected [width, height] from 16 to 8192, got {list(self.size)}")
        if self.fourcc is not None and len(self.fourcc) not in (3, 4):
            raise ValueError(f"fourcc: expected 4 characters such as MJPG, YUYV or 'Y16 ', got {self.fourcc!r}")


class UvcSource(LiveSource):
    def __init__(self, name: str, cfg: UvcConfig):
        super().__init__(name, cfg)
        self._cap = None
        if cfg.pixel_format != "auto":
            self.pixel_format = cfg.pixel_format
        else:
            self.pixel_format = "gray16" if name == "ir" else "bgr24"

    def where(self) -> str:
        return f"{self.name} camera {self.cfg.device}"

    def _connect(self) -> None:
        import cv2

        cfg = self.cfg
        # OpenCV would print its own warning lines beside our one-line error.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        cap = cv2.VideoCapture(cfg.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(f"{self.where()}: cannot open it; check that it is plugged in and that "
                              "`streamfuse devices` lists it")
        fourcc = cfg.fourcc or ("Y16" if self.pixel_format == "gray16" else None)
        if fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc.ljust(4)))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.size[1])
        cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, DRIVER_BUFFER_FRAMES)
        if self.pixel_format != "bgr24":
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        self._cap = cap
        self.fps = Fraction(cap.get(cv2.CAP_PROP_FPS) or cfg.fps).limit_denominator(1001)

    def _check_first(self, image: np.ndarray) -> None:
        cfg = self.cfg
        if self.pixel_format == "gray16" and image.dtype != np.uint16:
            raise SourceError(f"{self.where()}: asked for 16-bit Y16 but the driver delivers 8-bit "
                              f"{image.shape}; enable the camera's raw 16-bit mode (Boson: RAW16 via its SDK)")
        got = (image.shape[1], image.shape[0])
        if got != tuple(cfg.size):
            raise SourceError(f"{self.where()}: asked for {cfg.size[0]}x{cfg.size[1]} but it delivers "
                              f"{got[0]}x{got[1]}; set `size:` to one it offers (`streamfuse devices`)")

    def _grab(self) -> tuple[np.ndarray, int] | None:
        import cv2

        cap = self._cap
        if cap is None:
            return None
        ok, image = cap.read()
        arrival = now_ns()
        if not ok or image is None:
            return None
        if self.pixel_format == "gray16" and image.ndim == 2 and image.shape[0] == 1:
            w, h = self.cfg.size  # some drivers hand over the raw buffer as one row
            image = image.view(np.uint16).reshape(h, w) if image.size == w * h * 2 // image.itemsize else image
        if self.pixel_format == "gray8" and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        # V4L2 stamps buffers on CLOCK_MONOTONIC, the pipeline clock; OpenCV reports it in ms.
        device_ns = round(cap.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
        t_ns = device_ns if 0 <= arrival - device_ns <= DEVICE_CLOCK_MAX_AGE_NS else arrival
        return image, t_ns

    def _disconnect(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

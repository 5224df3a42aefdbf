"""Replay a recorded stream: a video file (anything PyAV opens) or a folder of images.

Timestamps come from the recording itself: a video's presentation times, or `index / fps`
for a folder. Both are counted from the pipeline's start time, so two files recorded
together stay paired. `pace: fast` delivers frames as quickly as the pipeline takes them;
`pace: recorded` holds each frame until its recorded time has come on the wall clock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from streamfuse import threads
from streamfuse.capture.base import Source
from streamfuse.config import check_range
from streamfuse.errors import RuntimeFailure, SourceError
from streamfuse.frames import Frame, now_ns

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class ReplayConfig:
    """A recorded stream (rig `sources.ir` or `sources.vis` with `type: replay`)."""

    path: Path
    type: Literal["replay"] = "replay"
    #: fast: as quickly as the pipeline takes frames; recorded: at the recorded rate.
    pace: Literal["fast", "recorded"] = "fast"
    #: Frame rate of a folder of images (a video file carries its own).
    fps: float = 30.0
    #: gray8/gray16 for IR (auto: gray16 when the file holds 16-bit data), bgr24 for visible.
    pixel_format: Literal["auto", "gray8", "gray16", "bgr24"] = "auto"
    #: Known capture latency of the recording camera, subtracted from every timestamp.
    latency_ms: float = 0.0

    def __post_init__(self):
        check_range("fps", self.fps, 0.1, 1000)


def open_replay(name: str, cfg: ReplayConfig) -> Source:
    """A `VideoFileSource` or a `FolderSource`, by what `cfg.path` is."""
    if cfg.path.is_dir():
        return FolderSource(name, cfg)
    return VideoFileSource(name, cfg)


class _Replay(Source):
    """Pacing and stamping shared by the two replay sources."""

    def __init__(self, name: str, cfg: ReplayConfig):
        super().__init__(name)
        self.cfg = cfg
        self.realtime = cfg.pace == "recorded"
        self._seq = 0

    def _stamp(self, image: np.ndarray, offset_ns: int) -> Frame:
        """Wrap `image`, recorded `offset_ns` after the stream's start, as the next Frame."""
        t_ns = self.t0_ns + offset_ns
        if self.realtime:
            delay = (t_ns - now_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
        frame = Frame(image, t_ns - round(self.cfg.latency_ms * 1e6), self._seq, self.name,
                      self.pixel_format, now_ns())
        self._seq += 1
        return frame


class VideoFileSource(_Replay):
    """Decodes a video file with PyAV on the capture thread."""

    def __init__(self, name: str, cfg: ReplayConfig):
        super().__init__(name, cfg)
        self._container = None
        self._frames = None
        self._expected: int | None = None

    def open(self) -> None:
        import av  # PyAV: the only reader of files and network streams

        path = self.cfg.path
        if not path.exists():
            raise SourceError(f"{self.name} source: {path} does not exist; fix the path in the rig file")
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise SourceError(f"{self.name} source: cannot read {path} as video ({_reason(exc)}); "
                              "check that the file is a complete video") from None
        stream.thread_type = "AUTO"
        stream.thread_count = threads.current().decoder  # FFmpeg's own default: every core
        cc = stream.codec_context
        self.size = (cc.width, cc.height)
        self.fps = Fraction(stream.average_rate or stream.guessed_rate or self.cfg.fps)
        self.pixel_format = self._choose_format(cc.pix_fmt or "")
        self._time_base = stream.time_base
        self._start_pts = stream.start_time
        self._expected = stream.frames or None
        self._frames = self._container.decode(stream)

    def _choose_format(self, pix_fmt: str) -> str:
        if self.cfg.pixel_format != "auto":
            return self.cfg.pixel_format
        if self.name == "vis":
            return "bgr24"
        return "gray16" if ("16" in pix_fmt or "12" in pix_fmt or "10" in pix_fmt) else "gray8"

    def read(self) -> Frame | None:
        import av

        try:
            frame = next(self._frames)
        except StopIteration:
            self._check_complete()
            return None
        except av.FFmpegError as exc:
            raise RuntimeFailure(f"{self.name} source: {self.cfg.path} is corrupt after frame "
                                 f"{self._seq} ({_reason(exc)})") from None
        image = frame.to_ndarray(format=_AV_FORMATS[self.pixel_format])
        if frame.pts is None:
            offset_ns = round(self._seq * 1e9 / self.fps)
        else:
            ticks = frame.pts - (self._start_pts or 0)
            offset_ns = round(ticks * self._time_base * 1_000_000_000)
        return self._stamp(image, offset_ns)

    def _check_complete(self) -> None:
        # A truncated MP4 decodes without an error and just ends early: compare with the header.
        if self._expected and self._seq < self._expected * 0.98:
            raise RuntimeFailure(f"{self.name} source: {self.cfg.path} ended after {self._seq} of "
                                 f"{self._expected} frames; the file is truncated or corrupt")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class FolderSource(_Replay):
    """Reads a folder of images, in file-name order, at `cfg.fps`."""

    def open(self) -> None:
        files = sorted(p for p in self.cfg.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{self.name} source: no images ({', '.join(IMAGE_SUFFIXES)}) in "
                              f"{self.cfg.path}; point the rig at a folder of frames")
        self._files = files
        first = self._load(files[0])
        self.size = (first.shape[1], first.shape[0])
        self.fps = Fraction(self.cfg.fps).limit_denominator(1001)
        if self.cfg.pixel_format != "auto":
            self.pixel_format = self.cfg.pixel_format
        elif self.name == "vis":
            self.pixel_format = "bgr24"
        else:
            self.pixel_format = "gray16" if first.dtype == np.uint16 else "gray8"

    def _load(self, path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise RuntimeFailure(f"{self.name} source: cannot read image {path}; it is corrupt or not an image")
        return image

    def read(self) -> Frame | None:
        if self._seq >= len(self._files):
            return None
        path = self._files[self._seq]
        image = to_pixel_format(self._load(path), self.pixel_format, str(path))
        if (image.shape[1], image.shape[0]) != self.size:
            raise RuntimeFailure(f"{self.name} source: {path} is {image.shape[1]}x{image.shape[0]}, "
                                 f"the folder's first image is {self.size[0]}x{self.size[1]}")
        return self._stamp(image, round(self._seq * 1e9 / self.fps))


_AV_FORMATS = {"gray8": "gray", "gray16": "gray16le", "bgr24": "bgr24"}


def to_pixel_format(image: np.ndarray, pixel_format: str, what: str) -> np.ndarray:
    """Convert an image read by OpenCV (grey, BGR or BGRA; 8 or 16 bit) to `pixel_format`."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if pixel_format == "bgr24":
        if image.dtype != np.uint8:
            raise SourceError(f"{what}: a visible image must be 8-bit, got {image.dtype}")
        return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if pixel_format == "gray16":
        return image if image.dtype == np.uint16 else image.astype(np.uint16) << 8
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return image


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[-1].strip() or type(exc).__name__

"""Sinks: where fused frames go. Each runs on its own thread behind a bounded queue.

A sink receives fused `Frame`s (bgr24, stamped with the visible frame's capture time) in
order. `SinkRunner` owns the thread and the queue; the queue's full-queue policy is chosen
per sink in the rig (`queue: block | drop_oldest | drop_newest`), so that a slow viewer can
skip frames while a recording either holds the pipeline back (`block`) or drops and counts.
"""
from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from streamfuse.config import check_range
from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.frames import Frame, now_ns
from streamfuse.queues import BoundedQueue, Closed, EndOfStream, Policy
from streamfuse.stats import StageTimer

#: Fused frames a sink may lag behind the main loop (8 x 640x480 BGR ~ 7 MB).
SINK_QUEUE_DEPTH = 8


@dataclass(frozen=True)
class StreamInfo:
    """What a sink is told before the first frame."""

    size: tuple[int, int]  # (width, height)
    fps: Fraction          # the visible camera's rate: the output's nominal rate


@dataclass(frozen=True)
class Mp4SinkConfig:
    """An H.264 MP4 recording (rig `sinks: - type: mp4`)."""

    path: Path
    type: Literal["mp4"] = "mp4"
    codec: Literal["libx264", "h264_nvenc"] = "libx264"
    #: libx264 speed/size trade-off: ultrafast ... medium.
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    #: Constant rate factor: 0 lossless, 18 visually lossless, 23 default, 28 small.
    crf: int = 23
    queue: Policy = "block"

    def __post_init__(self):
        check_range("crf", self.crf, 0, 51)


@dataclass(frozen=True)
class NullSinkConfig:
    """Discards frames; for benchmarks and dry runs (rig `sinks: - type: "null"`)."""

    type: Literal["null"] = "null"
    queue: Policy = "drop_oldest"


SINK_TYPES = {"mp4": Mp4SinkConfig, "null": NullSinkConfig}
SinkConfig = Mp4SinkConfig | NullSinkConfig


class Sink(abc.ABC):
    """Contract:
        - `open(info)` prepares the output or raises `UsageError` (one line) if it cannot;
          it is called before the pipeline starts, so a bad path fails at start-up.
        - `write(frame)` takes the next fused frame; frames arrive in capture-time order.
        - `close()` finishes the output (flushes an encoder, closes the file). It is called on
          every exit path, once, also after a failed `write`; it must not raise for a sink
          that never opened.
    """

    name = "sink"

    @abc.abstractmethod
    def open(self, info: StreamInfo) -> None: ...

    @abc.abstractmethod
    def write(self, frame: Frame) -> None: ...

    def close(self) -> None:
        """Optional: nothing to finish by default."""


class NullSink(Sink):
    name = "null"

    def open(self, info: StreamInfo) -> None:
        self.frames = 0

    def write(self, frame: Frame) -> None:
        self.frames += 1


class Mp4Sink(Sink):
    """H.264 in MP4 through PyAV; presentation times are the frames' capture times."""

    #: The output clock is at least this fine (90 kHz, the usual video clock).
    MIN_CLOCK_HZ = 90_000

    def __init__(self, cfg: Mp4SinkConfig):
        self.cfg = cfg
        self.name = "mp4"
        self.frames = 0
        self._container = None

    def open(self, info: StreamInfo) -> None:
        import av  # PyAV: encoder and muxer

        path = self.cfg.path
        if not path.parent.is_dir():
            raise UsageError(f"recording {path}: folder {path.parent} does not exist; create it or change the path")
        try:
            self._container = av.open(str(path), mode="w", format="mp4")
        except (av.FFmpegError, OSError) as exc:
            raise UsageError(f"recording {path}: cannot write ({exc}); check the path and permissions") from None
        stream = self._container.add_stream(self.cfg.codec, rate=info.fps)
        stream.width, stream.height = info.size[0] - info.size[0] % 2, info.size[1] - info.size[1] % 2
        stream.pix_fmt = "yuv420p"
        self._time_base = output_time_base(info.fps, self.MIN_CLOCK_HZ)
        stream.codec_context.time_base = self._time_base
        if self.cfg.codec == "libx264":
            stream.options = {"preset": self.cfg.preset, "crf": str(self.cfg.crf)}
        self._stream = stream
        self._t0_ns: int | None = None
        self._last_pts = -1

    def write(self, frame: Frame) -> None:
        import av

        image = frame.image
        w, h = self._stream.width, self._stream.height
        if image.shape[1] != w or image.shape[0] != h:
            image = image[:h, :w]  # yuv420p needs even sizes: drop an odd last row/column
        video = av.VideoFrame.from_ndarray(image, format="bgr24")
        if self._t0_ns is None:
            self._t0_ns = frame.t_ns
        pts = round((frame.t_ns - self._t0_ns) / self._time_base / 1_000_000_000)
        video.pts = max(pts, self._last_pts + 1)  # timestamps must strictly increase
        video.time_base = self._time_base
        self._last_pts = video.pts
        try:
            for packet in self._stream.encode(video):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise RuntimeFailure(f"recording {self.cfg.path}: write failed after {self.frames} frames ({exc})") from None
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode():
                container.mux(packet)
        finally:
            container.close()


def output_time_base(fps: Fraction, min_hz: int) -> Fraction:
    """A clock of at least `min_hz` ticks per second in which one frame at `fps` is a whole
    number of ticks, so that a steady camera gives a file of exactly its rate (a 22 fps frame
    is 4090.9 ticks of 90 kHz but exactly 4091 ticks of 90.002 kHz)."""
    fps = Fraction(fps)
    multiple = -(-min_hz // fps.numerator)  # ceiling division
    return Fraction(1, fps.numerator * multiple)


def make_sink(cfg: SinkConfig) -> Sink:
    if isinstance(cfg, Mp4SinkConfig):
        return Mp4Sink(cfg)
    return NullSink()


class SinkRunner:
    """One sink on its own thread, fed through a bounded queue with the sink's policy."""

    def __init__(self, sink: Sink, policy: Policy):
        self.sink = sink
        self.queue: BoundedQueue[Frame] = BoundedQueue(SINK_QUEUE_DEPTH, policy)
        self.write_time = StageTimer(f"sink {sink.name}")
        self.latency = StageTimer("latency")
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, frame: Frame) -> None:
        """Hand a fused frame over; raises the sink's error if the sink thread has died."""
        if self.error is not None:
            raise self.error
        try:
            self.queue.put(frame)
        except Closed:
            raise self.error or RuntimeFailure(f"{self.sink.name} sink stopped") from None

    def _run(self) -> None:
        try:
            while True:
                try:
                    frame = self.queue.get()
                except EndOfStream:
                    return
                start = time.perf_counter()
                self.sink.write(frame)
                self.write_time.add(time.perf_counter() - start)
                self.latency.add((now_ns() - frame.recv_ns) / 1e9)
        except BaseException as exc:
            self.error = exc
            self.queue.abandon()

    def finish(self, timeout: float = 30.0) -> None:
        """Drain the queue, close the sink (on every path) and join the thread."""
        self.queue.close()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # A stuck write: stop feeding it and give it a moment, then finish the file anyway
            # so that what was recorded stays playable.
            self.queue.abandon()
            self._thread.join(2.0)
        try:
            self.sink.close()
        except Exception as exc:  # report a failing close; the caller decides the exit code
            self.error = self.error or RuntimeFailure(f"{self.sink.name} sink: closing failed ({exc})")
        if self._thread.is_alive():
            self.error = self.error or RuntimeFailure(f"{self.sink.name} sink did not finish within {timeout:.0f} s")

"""The sink contract (`Sink`) and the thread that runs each sink (`SinkRunner`).

A sink receives fused `Frame`s (bgr24, stamped with the visible frame's capture time) in
order. `SinkRunner` owns the thread and the queue; the queue's full-queue policy is chosen
per sink in the rig (`queue: block | drop_oldest | drop_newest`), so that a slow viewer can
skip frames while a recording either holds the pipeline back (`block`) or drops and counts.
A sink that fails stops alone: it takes no more frames, its error is logged at once and
raised at the end of the run, and the other sinks and the pipeline go on.

The sink types live in their own modules, imported only when a rig uses them (the factory,
`streamfuse.sinks.make_sink`): `mp4.py`, `display.py` (a window), `monitor.py` (the browser
monitor); their configs are in `config.py`.
"""
from __future__ import annotations

import abc
import logging
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from streamfuse.errors import RuntimeFailure
from streamfuse.frames import Frame, now_ns
from streamfuse.queues import BoundedQueue, Closed, EndOfStream, Policy
from streamfuse.stats import StageTimer

log = logging.getLogger("streamfuse")

#: Fused frames a sink may lag behind the main loop (8 x 640x480 BGR ~ 7 MB).
SINK_QUEUE_DEPTH = 8
#: A sink thread that waited this long for a frame calls `Sink.idle()`.
SINK_IDLE_S = 0.1


@dataclass(frozen=True)
class StreamInfo:
    """What a sink is told before the first frame."""

    size: tuple[int, int]  # (width, height)
    fps: Fraction          # the visible camera's rate: the output's nominal rate
    #: For interactive sinks (display, monitor): the live `controls.Controls` (None when the
    #: rig has no viewer), the run's `RunReport` to read statistics from (written by the
    #: pipeline; a slightly stale read is fine) and the event that stops the run.
    controls: Any = None
    report: Any = None
    stop: threading.Event | None = None
    #: Whether IR counts map to temperatures (rig `thermal.radiometry` other than none), and
    #: how (a `radiometry.RadiometryConfig`; None without radiometry).
    radiometric: bool = False
    radiometry: Any = None
    #: What a raw archive keeps about the rig (`rig.recording_metadata`: calibration, camera
    #: settings, sync and fusion settings), as plain JSON-able data; empty when not known.
    rig_metadata: dict = field(default_factory=dict)


class Sink(abc.ABC):
    """Contract:
        - `open(info)` prepares the output or raises `UsageError` (one line) if it cannot;
          it is called on the main thread before the pipeline starts, so a bad path fails at
          start-up.
        - `write(frame)` takes the next fused frame, on the sink's own thread; frames arrive
          in capture-time order. An exception stops this sink only (raise RuntimeFailure
          with one line naming the output).
        - `close()` finishes the output (flushes an encoder, closes the file). It is called on
          every exit path, once, also after a failed `write`, on the sink's thread (on the
          main thread only if that thread is stuck or never started); it must not raise for
          a sink that never opened.
    """

    name = "sink"

    @abc.abstractmethod
    def open(self, info: StreamInfo) -> None: ...

    @abc.abstractmethod
    def write(self, frame: Frame) -> None: ...

    def close(self) -> None:
        """Optional: nothing to finish by default."""

    def state(self) -> dict[str, float]:
        """Optional: numbers for /metrics (e.g. recording, bytes, segments); read from
        another thread, so return a fresh dict of plain values."""
        return {}

    def idle(self) -> None:
        """Optional: called on the sink's thread when no frame came for `SINK_IDLE_S`
        (a window keeps answering keys while the pipeline waits)."""


class NullSink(Sink):
    name = "null"

    def __init__(self, delay_ms: float = 0.0):
        self.delay_s = delay_ms / 1000

    def open(self, info: StreamInfo) -> None:
        self.frames = 0

    def write(self, frame: Frame) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.frames += 1


@dataclass(frozen=True)
class SinkState:
    """One sink's counters, for the summary and /metrics."""

    name: str
    policy: str
    written: int
    dropped: int
    #: The error that stopped the sink (one line), None while it works.
    error: str | None
    #: The sink's own numbers (`Sink.state()`), e.g. recording, bytes, segments.
    extra: dict
    #: Latency of its recent frames (p50, ms; see `SinkRunner`); None once it stopped or before a frame.
    latency_ms: float | None = None
    #: The same latency's p50, p95 and p99 (ms); None like latency_ms.
    latency: dict[str, float] | None = None


class SinkRunner:
    """One sink on its own thread, fed through a bounded queue with the sink's policy.

    The sink is opened by the caller and closed here, on the sink's own thread when it ends
    (a window must be closed by the thread that made it), or by `finish` if that thread is
    stuck. A failed write stops this sink only: `failed` turns True, `put` discards frames
    from then on, and `error` is kept for the end of the run.

    `latency` times each frame from its exposure (`Frame.t_ns`) to the end of its write when
    the rig is `paced` (cameras, paced replay: t_ns is wall time), and from its arrival in the
    pipeline (`Frame.recv_ns`) otherwise, where t_ns is a simulated or recorded timeline.
    """

    def __init__(self, sink: Sink, policy: Policy, name: str | None = None, paced: bool = False):
        self.sink = sink
        self.name = name or sink.name
        self.queue: BoundedQueue[Frame] = BoundedQueue(SINK_QUEUE_DEPTH, policy)
        self.write_time = StageTimer(f"sink {self.name}")
        self.latency = StageTimer("latency")
        self.paced = paced
        self.error: BaseException | None = None
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def start(self) -> None:
        self._thread.start()

    def put(self, frame: Frame) -> None:
        """Hand a fused frame over (blocking, or dropping, by the queue's policy); a frame
        for a failed sink is discarded."""
        if self.error is not None:
            return
        try:
            self.queue.put(frame)
        except Closed:
            pass  # the sink thread failed just now; its error is set

    def state(self) -> SinkState:
        try:
            extra = self.sink.state()
        except Exception:  # a sink's statistics must never break the monitor
            extra = {}
        working = self.error is None and self.latency.count > 0
        lat = self.latency.summary_ms()
        return SinkState(self.name, self.queue.policy, self.write_time.count, self.queue.dropped,
                         None if self.error is None else str(self.error), extra,
                         lat["p50"] if working else None,
                         {k: lat[k] for k in ("p50", "p95", "p99")} if working else None)

    def _run(self) -> None:
        try:
            while True:
                try:
                    frame = self.queue.get(timeout=SINK_IDLE_S)
                except EndOfStream:
                    return
                if frame is None:
                    self.sink.idle()
                    continue
                start = time.perf_counter()
                self.sink.write(frame)
                self.write_time.add(time.perf_counter() - start)
                self.latency.add((now_ns() - (frame.t_ns if self.paced else frame.recv_ns)) / 1e9)
        except BaseException as exc:
            self.error = exc
            self.queue.abandon()
            log.warning("%s sink stopped: %s; the pipeline and the other sinks go on", self.name, exc)
        finally:
            self._close()

    def _close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.sink.close()
        except Exception as exc:  # report a failing close; the caller decides the exit code
            self.error = self.error or RuntimeFailure(f"{self.name} sink: closing failed ({exc})")

    def finish(self, timeout: float = 30.0) -> None:
        """Drain the queue, let the sink thread close the sink, and join it."""
        self.queue.close()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._thread.is_alive():
            # A stuck write: stop feeding it and give it a moment, then finish the file anyway
            # so that what was recorded stays playable.
            self.queue.abandon()
            self._thread.join(2.0)
        self._close()  # a no-op unless the thread never ran or is stuck
        if self._thread.is_alive():
            self.error = self.error or RuntimeFailure(f"{self.name} sink did not finish within {timeout:.0f} s")

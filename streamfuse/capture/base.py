"""The Source contract and the capture thread that runs one source.

Threads: each source gets one `CaptureThread`, which calls `Source.read()` in a loop and
hands frames to the main loop through a `BoundedQueue`:

- a realtime source (a live camera, a paced replay) publishes into a latest-frame slot of
  `LIVE_SLOT_DEPTH` frames that drops the oldest: a slow main loop skips frames (counted as
  drops) instead of falling behind the camera;
- a file replayed as fast as possible publishes into a blocking queue of
  `REPLAY_QUEUE_DEPTH` frames: nothing is dropped, the decoder waits for the pipeline.

The main loop takes a live source's frames in order with `CaptureThread.take(now,
max_age_ns, max_lag_ns)`: each frame once, never one captured longer ago than the age limit
(counted as `stale` and skipped, not shown), and, when the loop has fallen behind, none older
than the lag bound while a newer frame waits (counted as `skipped`): the loop then jumps to
the newest frame instead of working through a backlog. `CaptureThread.is_down()` says when a live
source is reconnecting, frozen, or has sent nothing for a while, so that the main loop stops
waiting for it.
"""
from __future__ import annotations

import abc
import math
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

from streamfuse.frames import Frame, now_ns
from streamfuse.queues import BoundedQueue, Closed
from streamfuse.stats import StageTimer

#: Frames a live source keeps for the main loop. Two, not one, so that a frame arriving while
#: the loop is taking the previous one does not count as a drop; `live_slot_depth` adds room
#: for the frames that arrive while the loop holds one back for the other camera.
LIVE_SLOT_DEPTH = 2
#: Decoded frames a fast replay may run ahead of the pipeline (8 frames ~ 7 MB at 640x480 BGR).
REPLAY_QUEUE_DEPTH = 8


def live_slot_depth(fps: float, wait_ns: int) -> int:
    """Slot depth for a live source at `fps` whose frames the main loop may hold back for up
    to `wait_ns` waiting for the other camera (a 30 Hz camera beside a 9 Hz one waits most)."""
    return LIVE_SLOT_DEPTH + math.ceil(wait_ns * fps / 1e9)


@dataclass
class CaptureStats:
    """What happened to one source; plain attributes for the summary and the monitor.

    Written by the capture thread (the source) except `stale` and `skipped`, which the main loop counts;
    each field has one writer, so no lock.
    """

    up: bool = True            # False while a live source is lost and reconnecting
    stalled: bool = False      # True while a thermal camera repeats one frame (FFC)
    frames: int = 0            # frames published
    stale: int = 0             # frames older than the age limit when taken: skipped
    skipped: int = 0           # frames past the lag bound with a newer one waiting (loop behind)
    duplicates: int = 0        # repeated frames (Lepton repeats, FFC freezes): not published
    ffc_stalls: int = 0        # runs of repeated frames longer than the stall limit
    outages: int = 0           # times the source was lost
    reconnects: int = 0        # times it came back
    resized: int = 0           # frames resized because the stream came back at another size
    backlog: int = 0           # frames that had waited in network buffers (at start, reconnect): skipped
    last_frame_ns: int = 0     # pipeline-clock arrival of the last published frame
    last_error: str = ""       # why the source was last lost (one line)


class Source(abc.ABC):
    """A camera, network stream or file that delivers `Frame`s for one role ("ir" or "vis").

    Contract:
        - The constructor stores configuration only; it never touches a device or file.
        - `open()` opens it and learns `size`, `fps` and `pixel_format`, or raises
          `SourceError` with one line naming the source, what failed and how to fix it.
        - `read()` blocks until the next frame and returns it, or None at the end of the
          stream. It raises `RuntimeFailure` when the stream breaks after it started.
        - `close()` releases everything; safe after a failed `open()` and when called twice.
        - `realtime` is True when `t_ns` follows the wall clock (live cameras, paced replay);
          the main loop then waits for a late frame no longer than the sync tolerance.
        - `start_clock(t0_ns)` is called once before the first `read()` with the pipeline's
          start time; sources that make up their own timeline (replay, synthetic) count from it.
        - A live source that loses its camera or stream after `open()` may, instead of
          raising, set `stats.up = False`, reconnect with backoff inside `read()`, and return
          the next frame once it is back. `interrupt()` (any thread) makes a blocked or
          reconnecting `read()` return None soon; optional for sources whose reads are short.
        - `stats` (a `CaptureStats`) counts what the source saw: duplicates, outages, ...
    """

    realtime: bool = False

    def __init__(self, name: str):
        self.name = name
        self.size: tuple[int, int] = (0, 0)
        self.fps: Fraction = Fraction(0)
        self.pixel_format: str = ""
        self.t0_ns = 0
        self.stats = CaptureStats()

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> Frame | None: ...

    def close(self) -> None:
        """Release the device or file. Optional: the default holds nothing."""

    def interrupt(self) -> None:
        """Ask a blocked `read()` to return None soon. Optional: reads of files are short."""

    def start_clock(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns

    def describe(self) -> str:
        """One line for logs: role, size, rate and format."""
        w, h = self.size
        return f"{self.name}: {w}x{h} {self.pixel_format} at {float(self.fps):.3g} fps"


class CaptureThread:
    """Runs `source.read()` on its own thread and publishes into `self.queue`."""

    def __init__(self, source: Source, wakeup: threading.Event | None = None, depth: int = LIVE_SLOT_DEPTH):
        self.source = source
        if source.realtime:
            self.queue: BoundedQueue[Frame] = BoundedQueue(depth, "drop_oldest", wakeup)
        else:
            self.queue = BoundedQueue(REPLAY_QUEUE_DEPTH, "block", wakeup)
        self.read_time = StageTimer(f"capture {source.name}")
        self.stats = source.stats
        self._started_ns = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{source.name}", daemon=True)

    def start(self) -> None:
        self._started_ns = now_ns()
        self._thread.start()

    def take(self, now: int, max_age_ns: int | None = None, max_lag_ns: int | None = None) -> Frame | None:
        """The oldest waiting frame, skipping (and counting as stale) any captured more than
        `max_age_ns` before `now`, and (counted as skipped) any captured more than
        `max_lag_ns` before it while a newer frame waits; None when none waits; EndOfStream
        (or the source's error) once the stream has ended. Main thread only."""
        while True:
            frame = self.queue.get(timeout=0)
            if frame is None:
                return None
            age = now - frame.t_ns
            if max_age_ns is not None and age > max_age_ns:
                self.stats.stale += 1
            elif max_lag_ns is not None and age > max_lag_ns and len(self.queue):
                self.stats.skipped += 1
            else:
                return frame

    def is_down(self, now: int, silent_ns: int) -> bool:
        """True while a live source is lost, frozen, or has published nothing for `silent_ns`."""
        if not self.source.realtime:
            return False
        s = self.stats
        return not s.up or s.stalled or now - max(s.last_frame_ns, self._started_ns) > silent_ns

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                frame = self.source.read()
                self.read_time.add(time.perf_counter() - start)
                if frame is None:
                    break
                self.queue.put(frame)
                self.stats.frames += 1
                self.stats.last_frame_ns = frame.recv_ns
            self.queue.close()
        except Closed:
            pass
        except BaseException as exc:  # handed to the main thread, which reports it
            self.queue.fail(exc)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading, release the source; returns False if the thread did not end in time."""
        self._stop.set()
        self.queue.abandon()
        self.source.interrupt()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Stuck inside read() on a device: closing it is what wakes such a read up.
            self.source.close()
            self._thread.join(timeout)
            return not self._thread.is_alive()
        self.source.close()
        return True

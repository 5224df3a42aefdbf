"""The Source contract and the capture thread that runs one source.

Threads: each source gets one `CaptureThread`, which calls `Source.read()` in a loop and
hands frames to the main loop through a `BoundedQueue`:

- a realtime source (a live camera, a paced replay) publishes into a latest-frame slot of
  `LIVE_SLOT_DEPTH` frames that drops the oldest: a slow main loop skips frames (counted as
  drops) instead of falling behind the camera;
- a file replayed as fast as possible publishes into a blocking queue of
  `REPLAY_QUEUE_DEPTH` frames: nothing is dropped, the decoder waits for the pipeline.
"""
from __future__ import annotations

import abc
import threading
import time
from fractions import Fraction

from streamfuse.frames import Frame
from streamfuse.queues import BoundedQueue, Closed
from streamfuse.stats import StageTimer

#: Frames a live source keeps for the main loop. Two, not one, so that a frame arriving while
#: the loop is taking the previous one does not count as a drop.
LIVE_SLOT_DEPTH = 2
#: Decoded frames a fast replay may run ahead of the pipeline (8 frames ~ 7 MB at 640x480 BGR).
REPLAY_QUEUE_DEPTH = 8


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
    """

    realtime: bool = False

    def __init__(self, name: str):
        self.name = name
        self.size: tuple[int, int] = (0, 0)
        self.fps: Fraction = Fraction(0)
        self.pixel_format: str = ""
        self.t0_ns = 0

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> Frame | None: ...

    def close(self) -> None:
        """Release the device or file. Optional: the default holds nothing."""

    def start_clock(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns

    def describe(self) -> str:
        """One line for logs: role, size, rate and format."""
        w, h = self.size
        return f"{self.name}: {w}x{h} {self.pixel_format} at {float(self.fps):.3g} fps"


class CaptureThread:
    """Runs `source.read()` on its own thread and publishes into `self.queue`."""

    def __init__(self, source: Source, wakeup: threading.Event | None = None):
        self.source = source
        if source.realtime:
            self.queue: BoundedQueue[Frame] = BoundedQueue(LIVE_SLOT_DEPTH, "drop_oldest", wakeup)
        else:
            self.queue = BoundedQueue(REPLAY_QUEUE_DEPTH, "block", wakeup)
        self.read_time = StageTimer(f"capture {source.name}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{source.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                frame = self.source.read()
                self.read_time.add(time.perf_counter() - start)
                if frame is None:
                    break
                self.queue.put(frame)
            self.queue.close()
        except Closed:
            pass
        except BaseException as exc:  # handed to the main thread, which reports it
            self.queue.fail(exc)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading, release the source; returns False if the thread did not end in time."""
        self._stop.set()
        self.queue.abandon()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Stuck inside read() on a device: closing it is what wakes such a read up.
            self.source.close()
            self._thread.join(timeout)
            return not self._thread.is_alive()
        self.source.close()
        return True

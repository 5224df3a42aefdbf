"""The monitor's shared picture: the newest JPEG, which every viewer thread sends as it is."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

#: A viewer counts as watching for this long after its last picture request.
VIEWER_IDLE_S = 3.0


class Feed:
    """The newest JPEG and its sequence number, shared by every viewer thread."""

    def __init__(self):
        self._cond = threading.Condition()
        self.jpeg: bytes | None = None
        self.seq = -1
        #: Wall-clock time (ns since the epoch) the newest picture was captured at.
        self.t_wall_ns = 0
        self.closed = False
        self._viewers: dict[str, float] = {}
        self.streams = 0

    def publish(self, jpeg: bytes, t_wall_ns: int = 0) -> None:
        with self._cond:
            self.jpeg, self.seq, self.t_wall_ns = jpeg, self.seq + 1, t_wall_ns
            self._cond.notify_all()

    def wait_newer(self, after: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest JPEG once its seq is above `after`; (None, after) on timeout or close.
        (`t_wall_ns` read just after may belong to a picture one newer: fine for a clock.)"""
        with self._cond:
            if after > self.seq:
                after = -1  # a page still open from an earlier run: start it again
            self._cond.wait_for(lambda: self.seq > after or self.closed, timeout)
            if self.seq > after and not self.closed:
                return self.jpeg, self.seq
            return None, after

    def touch(self, viewer: str) -> None:
        with self._cond:
            self._viewers[viewer] = time.monotonic()

    def viewers(self) -> int:
        """Open MJPEG streams plus pages that asked for a picture recently."""
        now = time.monotonic()
        with self._cond:
            for viewer, seen in list(self._viewers.items()):
                if now - seen > VIEWER_IDLE_S:
                    del self._viewers[viewer]
            return len(self._viewers) + self.streams

    @contextmanager
    def streaming(self):
        """Counts an open MJPEG stream as a viewer while inside."""
        with self._cond:
            self.streams += 1
        try:
            yield
        finally:
            with self._cond:
                self.streams -= 1

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

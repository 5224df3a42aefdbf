"""A bounded hand-over between two threads with a named full-queue policy.

Used between a capture thread and the main loop, and between the main loop and each
sink thread. Every instance is bounded; its capacity is a named constant where it is
created. Policies when the queue is full:

- ``block``: the producer waits (file replay, recording that must not lose frames).
- ``drop_oldest``: the oldest item is discarded and counted; the consumer always sees the
  newest items in order. With capacity 1 this is a latest-frame slot (live cameras, viewers).
- ``drop_newest``: the incoming item is discarded and counted (drop-and-count recording).

The producer ends the stream with `close()` or `fail(exc)`; the consumer then drains what is
left and gets `EndOfStream` (or the producer's exception, re-raised in the consumer thread).
"""
from __future__ import annotations

import collections
import threading
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Policy = Literal["block", "drop_oldest", "drop_newest"]
POLICIES = ("block", "drop_oldest", "drop_newest")


class EndOfStream(Exception):
    """The producer closed the queue and every item has been taken."""


class Closed(Exception):
    """`put` on a queue the consumer has abandoned (`abandon()`)."""


class BoundedQueue(Generic[T]):
    def __init__(self, capacity: int, policy: Policy, wakeup: threading.Event | None = None):
        """`wakeup`, if given, is set whenever an item arrives or the stream ends, so that one
        consumer can wait on several queues at once."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._abandoned = False
        self._error: BaseException | None = None
        self._wakeup = wakeup

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Hand over `item`; returns False if it was dropped (or timed out while blocking)."""
        with self._cond:
            if self._abandoned:
                raise Closed("the consumer stopped reading")
            if len(self._items) >= self.capacity:
                if self.policy == "drop_newest":
                    self.dropped += 1
                    return False
                if self.policy == "drop_oldest":
                    self._items.popleft()
                    self.dropped += 1
                else:
                    ok = self._cond.wait_for(
                        lambda: len(self._items) < self.capacity or self._abandoned, timeout)
                    if self._abandoned:
                        raise Closed("the consumer stopped reading")
                    if not ok:
                        return False
            self._items.append(item)
            self._cond.notify_all()
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    def get(self, timeout: float | None = None) -> T | None:
        """Take the oldest item; None on timeout; EndOfStream (or the producer's error) at the end."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise EndOfStream
            return None

    def close(self) -> None:
        """Producer: no more items will come."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._wakeup is not None:
            self._wakeup.set()

    def fail(self, exc: BaseException) -> None:
        """Producer: the stream ended with `exc`; the consumer gets it after the queued items."""
        with self._cond:
            self._error = exc
            self._closed = True
            self._cond.notify_all()
        if self._wakeup is not None:
            self._wakeup.set()

    def abandon(self) -> None:
        """Consumer: stop reading; a blocked or later `put` raises Closed so the producer can exit."""
        with self._cond:
            self._abandoned = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

"""Sync: the two capture streams merged in capture-time order (`Merger`), then paired (`Pairer`).

Pairing: each visible frame with the IR frame nearest to it in capture time.

The output follows the visible camera (one fused frame per visible frame), so a 9 Hz thermal
core paired with a 30 Hz visible camera reuses each IR frame for about three visible frames,
and the extra frames of a 30 Hz IR camera beside a 25 Hz visible one are skipped.

`Pairer` has no threads and no clock of its own. It must be fed frames of both cameras in
capture-time order (the main loop merges the two streams). A visible frame is decided as
soon as no later IR frame can be nearer to it: when an IR frame at or after it arrives, or
when time has moved on (a later frame of either camera, or `advance(t_ns)`) by more than the
distance to the best IR frame so far, or by more than the tolerance. A visible frame whose
nearest IR frame is further than the tolerance is dropped and counted.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from streamfuse.capture.base import CaptureThread
from streamfuse.capture.liveness import Liveness
from streamfuse.frames import Frame, FramePair, now_ns
from streamfuse.queues import EndOfStream

#: Skews kept for the distribution in the summary (the most recent ones).
SKEW_HISTORY = 4096
#: The whole run's skew distribution is counted in bins this wide, over +-SKEW_RANGE_NS
#: (the largest sync tolerance); 4001 counters, whatever the length of the run.
SKEW_BIN_NS = 500_000
SKEW_RANGE_NS = 1_000_000_000


@dataclass
class SyncStats:
    """Counters for the progress line and the summary."""

    pairs: int = 0
    unmatched_vis: int = 0   # visible frames with no IR frame within the tolerance
    ir_frames: int = 0       # IR frames seen
    paired_ir: int = 0       # distinct IR frames used in a pair
    reused_ir: int = 0       # pairs whose IR frame had already been paired (slow IR camera)
    late: int = 0            # frames that arrived after later frames had been paired
    skews_ns: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SKEW_HISTORY))
    #: pairs per SKEW_BIN_NS bin of skew (IR minus visible), bin k centred on (k - K) * SKEW_BIN_NS
    skew_hist: np.ndarray = field(default_factory=lambda: np.zeros(2 * (SKEW_RANGE_NS // SKEW_BIN_NS) + 1, np.int64))

    def add_skew(self, skew_ns: int) -> None:
        self.skews_ns.append(skew_ns)
        k = SKEW_RANGE_NS // SKEW_BIN_NS
        self.skew_hist[min(max(round(skew_ns / SKEW_BIN_NS), -k), k) + k] += 1

    def write_skew_csv(self, path) -> None:
        """The run's skew distribution as CSV: skew_ms (bin centre), pairs; empty bins left out."""
        k = SKEW_RANGE_NS // SKEW_BIN_NS
        rows = [f"{(i - k) * SKEW_BIN_NS / 1e6:g},{n}" for i, n in enumerate(self.skew_hist.tolist()) if n]
        with open(path, "w") as f:
            f.write("skew_ms,pairs\n" + "".join(row + "\n" for row in rows))

    @property
    def unused_ir(self) -> int:
        """IR frames never paired (a faster IR camera, or IR frames around a visible stall)."""
        return self.ir_frames - self.paired_ir

    def skew_summary_ms(self) -> dict[str, float]:
        """Mean, median, 95th percentile and maximum of |skew| in milliseconds."""
        if not self.skews_ns:
            return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
        a = np.abs(np.fromiter(self.skews_ns, dtype=np.int64)) / 1e6
        return {"mean": float(a.mean()), "p50": float(np.median(a)),
                "p95": float(np.percentile(a, 95)), "max": float(a.max())}


class Pairer:
    def __init__(self, tolerance_ns: int, ir_gap_ns: int | None = None):
        if tolerance_ns <= 0:
            raise ValueError(f"tolerance must be positive, got {tolerance_ns} ns")
        self.tolerance_ns = tolerance_ns
        #: Live rigs: the least time between IR frames (`min_frame_gap_ns`); a visible frame is
        #: then decided as soon as the next IR frame could only be further from it.
        self.ir_gap_ns = ir_gap_ns
        self.stats = SyncStats()
        self._last_ir: Frame | None = None
        self._last_paired_ir: Frame | None = None
        self._pending: collections.deque[tuple[Frame, Frame | None]] = collections.deque()
        self._now_ns: int | None = None

    def push(self, frame: Frame) -> list[FramePair]:
        """Add the next frame in capture-time order; returns the pairs it decided."""
        if self._now_ns is not None and frame.t_ns < self._now_ns:
            # A live frame that arrived after time had moved past it: too late to pair.
            self.stats.late += 1
            return []
        self._now_ns = frame.t_ns
        if frame.camera == "vis":
            self._pending.append((frame, self._last_ir))
            return self._decide_elapsed()
        self.stats.ir_frames += 1
        pairs = []
        while self._pending:  # every pending visible frame is at or before this IR frame
            vis, before = self._pending.popleft()
            pairs += self._decide(vis, before, frame)
        self._last_ir = frame
        return pairs

    def advance(self, t_ns: int) -> list[FramePair]:
        """Time has reached `t_ns` with no new frame (a live camera is late); decide what can be."""
        if self._now_ns is None or t_ns > self._now_ns:
            self._now_ns = t_ns
        return self._decide_elapsed()

    def flush(self) -> list[FramePair]:
        """End of both streams: decide every pending visible frame with what has arrived."""
        pairs = []
        while self._pending:
            vis, before = self._pending.popleft()
            pairs += self._decide(vis, before, None)
        return pairs

    def _decide_elapsed(self) -> list[FramePair]:
        pairs = []
        while self._pending:
            vis, before = self._pending[0]
            reach = self.tolerance_ns if before is None else min(vis.t_ns - before.t_ns, self.tolerance_ns)
            no_nearer = (before is not None and self.ir_gap_ns is not None
                         and before.t_ns + self.ir_gap_ns - vis.t_ns >= vis.t_ns - before.t_ns)
            if self._now_ns - vis.t_ns <= reach and not no_nearer:
                break
            self._pending.popleft()
            pairs += self._decide(vis, before, None)
        return pairs

    def _decide(self, vis: Frame, before: Frame | None, after: Frame | None) -> list[FramePair]:
        candidates = [f for f in (before, after) if f is not None]
        best = min(candidates, key=lambda f: abs(f.t_ns - vis.t_ns), default=None)
        if best is None or abs(best.t_ns - vis.t_ns) > self.tolerance_ns:
            self.stats.unmatched_vis += 1
            return []
        if best is self._last_paired_ir:
            self.stats.reused_ir += 1
        else:
            self.stats.paired_ir += 1
            self._last_paired_ir = best
        self.stats.pairs += 1
        pair = FramePair(best, vis)
        self.stats.add_skew(pair.skew_ns)
        return [pair]


class Merger:
    """Takes frames from the two capture queues in capture-time order.

    With `liveness` (live rigs), a frame older than its age limit is skipped as stale and a
    source it calls down is not waited for; with `max_lag_ns[camera]`, a frame older than that
    while a newer one of the same camera waits is skipped (the loop fell behind: jump to the
    newest). `clock` is the pipeline clock (tests speed it up).

    Live rigs release a frame the moment no earlier frame can still come from the other
    camera: that camera's next frame is captured at least `min_gap_ns[camera]` (its frame
    period less a jitter margin, `min_frame_gap_ns`) after its newest one, so a frame captured
    before that need not wait for it. Fast replay always waits for both heads (exact order).
    """

    def __init__(self, captures: list[CaptureThread], wakeup: threading.Event, wait_ns: int | None,
                 liveness: Liveness | None = None, clock: Callable[[], int] = now_ns,
                 min_gap_ns: dict[str, int] | None = None, max_lag_ns: dict[str, int] | None = None):
        self._captures = captures
        self._wakeup = wakeup
        self._wait_ns = wait_ns  # None: never skip ahead of a silent source (fast replay)
        self._liveness = liveness
        self._clock = clock
        self._heads: dict[str, Frame | None] = {c.source.name: None for c in captures}
        #: Capture time of the newest frame taken from each camera (the cameras that delivered).
        self.latest_t_ns: dict[str, int] = {}
        self._ended: set[str] = set()
        self._min_gap_ns = min_gap_ns or {}
        self._max_lag_ns = max_lag_ns or {}

    def next(self, timeout: float) -> Frame | None:
        """The earliest frame that can no longer be preceded by one of the other camera's;
        None after `timeout` s; EndOfStream when both streams have ended."""
        deadline = time.monotonic() + timeout
        while True:
            self._wakeup.clear()
            self._fill()
            frame = self._pick()
            if frame is not None:
                return frame
            if len(self._ended) == len(self._captures):
                raise EndOfStream
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._wakeup.wait(min(remaining, 0.02) if self._wait_ns else remaining)

    def _fill(self) -> None:
        now = self._clock()
        max_age_ns = self._liveness.max_age_ns if self._liveness is not None else None
        for capture in self._captures:
            name = capture.source.name
            if self._heads[name] is None and name not in self._ended:
                try:
                    self._heads[name] = capture.take(now, max_age_ns, self._max_lag_ns.get(name))
                except EndOfStream:
                    self._ended.add(name)
                if self._heads[name] is not None:
                    self.latest_t_ns[name] = self._heads[name].t_ns

    def _pick(self) -> Frame | None:
        ready = [f for f in self._heads.values() if f is not None]
        if not ready:
            return None
        first = min(ready, key=lambda f: f.t_ns)
        waiting = [n for n, f in self._heads.items() if f is None and n not in self._ended
                   and not (self._liveness is not None and self._liveness.is_down(n))
                   and not self._cannot_precede(n, first.t_ns)]
        if waiting and (self._wait_ns is None or self._clock() - first.t_ns <= self._wait_ns):
            return None
        self._heads[first.camera] = None
        return first


    def _cannot_precede(self, camera: str, t_ns: int) -> bool:
        """Whether `camera`'s next frame is surely captured after `t_ns` (live rigs only)."""
        gap, last = self._min_gap_ns.get(camera), self.latest_t_ns.get(camera)
        return self._wait_ns is not None and gap is not None and last is not None and last + gap > t_ns


#: Share of a frame period that capture stamps may come early by (USB and network jitter).
FRAME_JITTER = 0.25


def min_frame_gap_ns(fps: float) -> int:
    """The least time between two frames of a camera at `fps`, jitter allowed for."""
    return round(1e9 / fps * (1 - FRAME_JITTER))


#: Both cameras delivering and no pair for this long: warn (a clock offset, a tight tolerance).
NO_PAIR_WARN_S = 5.0


class PairingWatch:
    """Notices a run that makes no progress: both cameras deliver, yet nothing pairs.

    `check` is called by the main loop now and then with the merger's newest capture times
    per camera and the pairs so far; it returns a one-line warning (once per stall, with the
    stamps' distance and the fix) when there was no new pair for `after_s` seconds since both
    cameras were first seen, and None otherwise. `clock` is wall time in seconds (tests).
    """

    def __init__(self, tolerance_ns: int, after_s: float = NO_PAIR_WARN_S, clock: Callable[[], float] = time.monotonic):
        self.tolerance_ns = tolerance_ns
        self.after_s = after_s
        self._clock = clock
        self._pairs = 0
        self._since: float | None = None   # when the wait for the next pair began
        self.warning: str | None = None    # the current stall's warning, None while pairs come

    def check(self, latest_t_ns: dict[str, int], pairs: int) -> str | None:
        """The warning to log now (a new stall), or None."""
        now = self._clock()
        if pairs != self._pairs or len(latest_t_ns) < 2:
            self._pairs = pairs
            self._since = now if len(latest_t_ns) == 2 else None
            self.warning = None
            return None
        if self._since is None:
            self._since = now
        if self.warning is not None or now - self._since < self.after_s:
            return None
        skew_ms = (latest_t_ns["ir"] - latest_t_ns["vis"]) / 1e6
        self.warning = (f"no IR/visible pair for {now - self._since:.0f} s although both cameras deliver: their "
                        f"newest frames are stamped {skew_ms:+.0f} ms apart (IR minus visible), against a tolerance "
                        f"of {self.tolerance_ns / 1e6:g} ms; fix the sources' clock_offset_ms / latency_ms, or "
                        f"raise sync.tolerance_ms")
        return self.warning

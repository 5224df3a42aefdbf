"""Per-stage timing and the numbers on the progress line and in the summary.

Each `StageTimer` is written by exactly one thread (the main loop, or one sink thread) and
read by the main thread for display, so it needs no lock: a slightly stale read is fine.
"""
from __future__ import annotations

import collections
import time
from contextlib import contextmanager

import numpy as np

#: Samples kept per stage for percentiles (the most recent ones).
TIMING_HISTORY = 2048


class StageTimer:
    """Durations of one stage, in seconds."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.total_s = 0.0
        self.recent = collections.deque(maxlen=TIMING_HISTORY)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.recent.append(seconds)

    @contextmanager
    def time(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(time.perf_counter() - start)

    def summary_ms(self) -> dict[str, float]:
        """count, mean, p50, p95 and max in milliseconds (over the recent window for percentiles)."""
        if not self.count:
            return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
        a = np.fromiter(self.recent, dtype=np.float64) * 1e3
        return {"count": self.count, "mean": 1e3 * self.total_s / self.count,
                "p50": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


class RateMeter:
    """Frames per second over a sliding window of the last `window_s` seconds."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._times = collections.deque()

    def tick(self, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
        self._times.append(t)
        while self._times and t - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A fixed-width table of stage summaries (ms) for the end-of-run report."""
    lines = [f"  {'stage':<14}{'frames':>8}{'mean':>9}{'p50':>9}{'p95':>9}{'max':>9}  (ms)"]
    for name, s in rows.items():
        lines.append(f"  {name:<14}{s['count']:>8}{s['mean']:>9.2f}{s['p50']:>9.2f}{s['p95']:>9.2f}{s['max']:>9.2f}")
    return "\n".join(lines)

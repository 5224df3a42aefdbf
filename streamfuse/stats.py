"""Per-stage timing and the numbers on the progress line and in the summary.

Each `StageTimer` is written by exactly one thread (the main loop, or one sink thread) and
read by the main thread for display, so it needs no lock: a slightly stale read is fine.
"""
from __future__ import annotations

import bisect
import collections
import time
from contextlib import contextmanager

import numpy as np

#: Samples kept per stage for percentiles (the most recent ones).
TIMING_HISTORY = 2048
#: Upper bounds (s) of the cumulative histogram every stage keeps since the start, exported on
#: the monitor's /metrics: 1 ms (a warp) to 5 s (a stuck write), about 2.5x apart.
HISTOGRAM_BOUNDS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class StageTimer:
    """Durations of one stage, in seconds."""

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self.recent = collections.deque(maxlen=TIMING_HISTORY)
        #: Samples per HISTOGRAM_BOUNDS_S bucket (<= bound), the last one for larger samples.
        self.buckets = [0] * (len(HISTOGRAM_BOUNDS_S) + 1)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        self.recent.append(seconds)
        self.buckets[bisect.bisect_left(HISTOGRAM_BOUNDS_S, seconds)] += 1

    @contextmanager
    def time(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(time.perf_counter() - start)

    def summary_ms(self) -> dict[str, float]:
        """count, mean, p50, p95, p99 and max in milliseconds: count, mean and max over the
        whole run, the percentiles over the last TIMING_HISTORY samples (a subset, so p99 <= max)."""
        if not self.count:
            return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        a = np.fromiter(self.recent, dtype=np.float64) * 1e3
        p50, p95, p99 = np.percentile(a, (50, 95, 99))
        return {"count": self.count, "mean": 1e3 * self.total_s / self.count,
                "p50": float(p50), "p95": float(p95), "p99": float(p99), "max": 1e3 * self.max_s}


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
    lines = [f"  {'stage':<22}{'frames':>8}{'mean':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  "
             f"(ms; percentiles of the last {TIMING_HISTORY} frames)"]
    for name, s in rows.items():
        lines.append(f"  {name:<22}{s['count']:>8}{s['mean']:>9.2f}{s['p50']:>9.2f}{s['p95']:>9.2f}"
                     f"{s['p99']:>9.2f}{s['max']:>9.2f}")
    return "\n".join(lines)

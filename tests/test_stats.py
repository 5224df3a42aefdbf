"""Stage timers: mean, percentiles and max that agree with each other; sink latency readouts."""
from __future__ import annotations

import time

import numpy as np

from streamfuse.errors import RuntimeFailure
from streamfuse.frames import Frame, now_ns
from streamfuse.sinks import NullSink, SinkRunner
from streamfuse.stats import TIMING_HISTORY, StageTimer


def test_mean_percentiles_and_max_are_consistent_past_the_window():
    timer = StageTimer("fuse")
    timer.add(0.5)                              # one slow frame early on ...
    for _ in range(TIMING_HISTORY + 10):        # ... then a long run of fast ones pushes it out of the window
        timer.add(0.010)
    s = timer.summary_ms()
    assert s["count"] == TIMING_HISTORY + 11
    assert s["max"] == 500.0                    # the run's max, not the window's
    assert s["p50"] == s["p95"] == 10.0 <= s["mean"] <= s["max"]
    assert np.isclose(s["mean"], (500 + 10 * (TIMING_HISTORY + 10)) / s["count"])


class _Breaks(NullSink):
    name = "breaks"

    def write(self, frame):
        if self.frames >= 3:
            raise RuntimeFailure("breaks sink: gone")
        super().write(frame)


def test_a_stopped_sink_shows_no_latency():
    good, bad = SinkRunner(NullSink(), "block"), SinkRunner(_Breaks(), "block")
    for runner in (good, bad):
        runner.sink.open(None)
        runner.start()
    image = np.zeros((4, 4, 3), np.uint8)
    for seq in range(10):
        frame = Frame(image, now_ns(), seq, "fused", "bgr24", now_ns())
        good.put(frame)
        bad.put(frame)
        time.sleep(0.01)
    deadline = time.monotonic() + 5
    while not bad.failed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bad.failed and bad.state().latency_ms is None and bad.state().error
    assert good.state().latency_ms is not None and good.state().latency_ms >= 0
    for runner in (good, bad):
        runner.finish()

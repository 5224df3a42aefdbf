"""Live latency: a late loop skips to the newest frame, the thread budget, and the latency the
summary reports (exposure to each sink when paced, said to be a backlog when not)."""
from __future__ import annotations

import dataclasses
import os
import threading

import cv2
import numpy as np
import pytest
from helpers import REPO, streamfuse, write_demo_rig

from streamfuse import pipeline, threads
from streamfuse.capture.base import CaptureThread
from streamfuse.capture.liveness import LiveConfig, lag_bound_ns
from streamfuse.capture.synthetic import SyntheticConfig, SyntheticSource
from streamfuse.frames import Frame, now_ns
from streamfuse.rig import load_rig

MS = 1_000_000


def _live_capture() -> CaptureThread:
    source = SyntheticSource("vis", SyntheticConfig(pace="realtime", fps=30), scene=None)
    return CaptureThread(source, depth=8)  # not started: the test publishes the frames itself


def _publish(capture: CaptureThread, ages_ms: list[float], now: int) -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    for seq, age in enumerate(ages_ms):
        capture.queue.put(Frame(image, now - round(age * MS), seq, "vis", "bgr24", now))


def test_a_late_loop_skips_to_the_newest_frame_and_counts_what_it_skipped():
    capture, now = _live_capture(), now_ns()
    _publish(capture, [200, 167, 133, 100, 67, 33], now)  # the loop stalled for 200 ms
    frame = capture.take(now, max_age_ns=500 * MS, max_lag_ns=80 * MS)
    assert frame.seq == 4, "frames older than the bound with a newer one waiting are skipped"
    assert capture.stats.skipped == 4 and capture.stats.stale == 0
    assert capture.take(now, 500 * MS, 10 * MS).seq == 5  # the newest is taken however old


def test_the_last_waiting_frame_is_never_skipped_for_lag():
    capture, now = _live_capture(), now_ns()
    _publish(capture, [120], now)
    assert capture.take(now, 500 * MS, 50 * MS).seq == 0 and capture.stats.skipped == 0


def test_without_a_lag_bound_the_backlog_is_worked_through():
    capture, now = _live_capture(), now_ns()
    _publish(capture, [200, 167, 133], now)
    assert [capture.take(now, 500 * MS).seq for _ in range(3)] == [0, 1, 2]


def test_the_lag_bound_is_a_period_and_a_half_plus_the_latency_unless_set():
    assert lag_bound_ns(LiveConfig(), 30, 15) == round(1.5e9 / 30) + 15 * MS
    assert lag_bound_ns(LiveConfig(max_lag_ms=80), 30, 15) == 80 * MS


@pytest.mark.parametrize("max_lag_ms", [0, 60_000], ids=["skips", "no-bound"])
def test_a_pipeline_slower_than_the_cameras_shows_the_newest_frames(tmp_path, monkeypatch, max_lag_ms):
    """Each pair takes 55 ms (a fuse stage too slow for the 25 fps camera): skipping keeps every
    fused frame fresh; without the bound each one waits behind a full slot of older frames."""
    real = pipeline.process_pair

    def slow_pair(*args):
        threading.Event().wait(0.055)
        return real(*args)

    monkeypatch.setattr(pipeline, "process_pair", slow_pair)
    rig = load_rig(write_demo_rig(tmp_path / "rig.yaml"))
    rig = dataclasses.replace(rig, live=LiveConfig(max_lag_ms=max_lag_ms),
                              fusion=dataclasses.replace(rig.fusion, mode="pyramid"))
    report = pipeline.run(rig, duration_s=3)
    p50_ms = report.fused_latency.summary_ms()["p50"]
    if max_lag_ms == 0:
        assert report.skipped > 0 and report.drops >= report.skipped
        assert p50_ms < 140, f"exposure to fused p50 {p50_ms:.0f} ms although the loop skips to the newest"
    else:
        assert report.skipped == 0
        assert p50_ms > 160, f"p50 {p50_ms:.0f} ms: expected the backlog of a full slot"


def test_the_budget_gives_every_pool_one_thread_on_two_cores():
    b = threads.plan(2)
    assert (b.opencv, b.torch, b.decoder, b.encoder, b.prior_threads) == (2, 1, 1, 1, 1)
    big = threads.plan(16)
    assert big.torch == 8 and big.encoder == 4 and big.opencv == 16


def test_apply_sets_opencvs_pool():
    before = cv2.getNumThreads()
    try:
        threads.apply(threads.plan(1))
        assert cv2.getNumThreads() == 1 and threads.current().cores == 1
    finally:
        threads.apply(threads.plan())
        cv2.setNumThreads(before)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux only")
def test_the_prior_workers_thread_runs_in_the_idle_class_and_only_it():
    seen = {}

    def worker():
        seen["applied"] = threads.lower_this_thread("idle", 10)
        seen["policy"] = os.sched_getscheduler(threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"applied": "SCHED_IDLE", "policy": os.SCHED_IDLE}
    assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_IDLE


def test_a_paced_run_reports_exposure_to_each_sink(tmp_path):
    out = tmp_path / "out.mp4"
    result = streamfuse("run", "rigs/demo.yaml", "--frames", 40, "--record", out, "--mode", "pyramid")
    assert result.returncode == 0, result.stderr
    assert "exposure->mp4" in result.stderr and "exposure->fused" in result.stderr
    assert "unpaced" not in result.stderr
    assert "queued age bound (live.max_lag_ms)" in result.stderr and "threads: 2 cores" in result.stderr.replace(
        f"threads: {threads.available_cores()} cores", "threads: 2 cores")


def test_an_unpaced_run_says_its_latency_is_a_backlog(tmp_path):
    result = streamfuse("run", "rigs/demo-fast.yaml", "--frames", 20, "--record", tmp_path / "o.mp4",
                        "--mode", "pyramid")
    assert result.returncode == 0, result.stderr
    assert "unpaced:" in result.stderr and "arrival->mp4" in result.stderr
    assert "exposure->" not in result.stderr


def test_the_latency_round_prints_medians_over_interleaved_paced_rounds():
    from streamfuse.bench.latency import latency_round

    rig = load_rig(REPO / "rigs" / "demo-fast.yaml")  # paced by the round itself
    table = latency_round(rig, "alpha", 1.5, priors=False, rounds=2)
    assert "medians over 2 interleaved round(s)" in table and "30 fps" in table
    row = next(line for line in table.splitlines() if line.startswith("  no priors"))
    fps, p50, p95, p99 = (float(v) for v in row.split()[2:6])
    assert 20 < fps <= 31, row  # paced at 30 fps: never faster than the cameras
    assert 0 < p50 <= p95 <= p99, row
    assert "against a goal of 66.7 ms" in table


def test_the_latency_verdict_judges_the_quiet_runs_a_rig_runs_and_names_no_empty_comparison():
    from streamfuse.bench.latency import latency_round

    rig = load_rig(REPO / "rigs" / "demo-fast.yaml")
    table = latency_round(rig, "alpha", 1.0, priors=False, busy=True)
    assert any(line.startswith("  no priors +busy") for line in table.splitlines()), table
    verdict = next(line for line in table.splitlines() if "exposure-to-mp4 p99, worst of" in line)
    assert "worst of no priors on a quiet machine" in verdict and "comparison" not in verdict, verdict
    assert verdict.endswith(("met", "MISSED")), verdict

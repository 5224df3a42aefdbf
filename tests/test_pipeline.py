"""End to end: rigs through the real pipeline into real MP4 files."""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from helpers import REPO, data_path, read_video, streamfuse, write_video

from streamfuse.capture import open_sources
from streamfuse.capture.replay import ReplayConfig
from streamfuse.capture.synthetic import make_scene
from streamfuse.errors import RuntimeFailure
from streamfuse.pipeline import run
from streamfuse.rig import load_rig
from streamfuse.sinks import Mp4SinkConfig, NullSinkConfig
from streamfuse.sync import Pairer


def test_demo_records_exactly_n_frames_at_the_visible_rate(tmp_path):
    out = tmp_path / "out.mp4"
    result = streamfuse("run", "rigs/demo-fast.yaml", "--frames", 300, "--record", out)
    assert result.returncode == 0, result.stderr
    frames, rate, duration = read_video(out)
    assert len(frames) == 300
    assert rate == 25
    assert abs(duration - 300 / 25) <= 1 / 25
    assert "300 fused frames" in result.stderr and "Traceback" not in result.stderr


def test_several_sinks_get_every_frame(tmp_path):
    rig = load_rig(REPO / "rigs/demo.yaml")
    rig = dataclasses.replace(rig, sinks=(Mp4SinkConfig(path=tmp_path / "a.mp4"), NullSinkConfig(queue="block"),
                                          Mp4SinkConfig(path=tmp_path / "b.mp4", preset="ultrafast", crf=30)))
    report = run(rig, max_frames=40)
    a, _, _ = read_video(tmp_path / "a.mp4")
    b, _, _ = read_video(tmp_path / "b.mp4")
    assert report.frames == len(a) == len(b) == 40
    assert report.sink_drops == 0
    # Same pictures, different encoder settings: close but not identical.
    assert np.abs(a[20].astype(int) - b[20].astype(int)).mean() < 6


def test_hot_bodies_stand_out_at_night(tmp_path):
    # Unpaced: output frame k is visible frame k (a paced run on a busy machine skips frames).
    rig = load_rig(REPO / "rigs/demo-fast.yaml").with_recording(tmp_path / "night.mp4")
    assert rig.scene.night
    run(rig, max_frames=60)
    fused, _, _ = read_video(tmp_path / "night.mp4")
    scene = make_scene(rig.scene, rig.ir, rig.vis)
    gains = []
    for k in (10, 30, 59):
        t_s = k / rig.vis.fps  # output frame k is visible frame k
        body = scene.body_mask_vis(t_s)
        ring = cv2.dilate(body.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool) & ~body
        vis_y = cv2.cvtColor(scene.render_vis(t_s, k), cv2.COLOR_BGR2GRAY).astype(float)
        fused_y = cv2.cvtColor(fused[k], cv2.COLOR_BGR2GRAY).astype(float)
        vis_contrast = vis_y[body].mean() - vis_y[ring].mean()
        fused_contrast = fused_y[body].mean() - fused_y[ring].mean()
        assert fused_contrast > 20, f"frame {k}: bodies only {fused_contrast:.1f} grey levels above surroundings"
        gains.append(fused_contrast - vis_contrast)
    assert min(gains) > 10, f"fusion adds too little thermal contrast over the visible image: {gains}"


def _true_pairs(rig, n_vis):
    """Pair the synthetic cameras' first frames; return (ir seq, vis seq) per pair."""
    ir, vis = open_sources(rig.ir, rig.vis, rig.scene)
    frames = []
    for source, count in ((ir, n_vis * 2), (vis, n_vis)):
        source.open()
        source.start_clock(0)
        frames += [source.read() for _ in range(count)]
    pairer = Pairer(round(rig.sync.tolerance_ms * 1e6))
    pairs = [p for f in sorted(frames, key=lambda f: f.t_ns) for p in pairer.push(f)] + pairer.flush()
    return [(p.ir.seq, p.vis.seq) for p in pairs]


def test_pairs_follow_the_clock_offset_correction():
    rig = load_rig(REPO / "rigs/demo.yaml")
    assert rig.vis.clock_offset_ms == rig.vis.latency_ms != 0
    # Scene time of IR frame i is i/30 s, of visible frame j is j/25 s: the right partner of
    # visible frame j is the IR frame nearest in scene time.
    nearest = {j: round(j * 30 / 25) for j in range(100)}
    corrected = _true_pairs(rig, 100)
    assert len(corrected) == 100
    assert all(i == nearest[j] for i, j in corrected)
    uncorrected = _true_pairs(dataclasses.replace(rig, vis=dataclasses.replace(rig.vis, latency_ms=0)), 100)
    assert sum(i != nearest[j] for i, j in uncorrected) > 20


def test_replay_m3svd_gives_every_frame(tmp_path):
    clip = data_path("video", "m3svd_mp4", "0111_1716")
    rig = _replay_rig(clip, tmp_path / "fused.mp4")
    report = run(rig)
    frames, rate, _ = read_video(tmp_path / "fused.mp4")
    assert report.frames == len(frames) == 151
    assert rate == 30
    assert report.sync.skew_summary_ms()["max"] == 0


def test_replay_keeps_the_recorded_rate_of_22_fps(tmp_path):
    clip = data_path("video", "m3svd_mp4", "1230_1202")
    run(_replay_rig(clip, tmp_path / "fused.mp4"))
    frames, rate, duration = read_video(tmp_path / "fused.mp4")
    assert len(frames) == 205
    assert rate == 22
    assert abs(duration - 205 / 22) <= 1 / 22


def _replay_rig(clip, out):
    rig = load_rig(REPO / "rigs/replay.yaml")
    return dataclasses.replace(rig, ir=ReplayConfig(path=clip / "ir.mp4"), vis=ReplayConfig(path=clip / "vis.mp4"),
                               sinks=(Mp4SinkConfig(path=out),))


def test_truncated_input_is_reported_and_the_fused_frames_are_kept(tmp_path):
    frames = [np.full((120, 160), 20 + 2 * i, np.uint8) for i in range(60)]
    for name in ("ir", "vis"):
        write_video(tmp_path / f"{name}.mp4", frames if name == "ir" else [cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in frames],
                    options={"movflags": "faststart"})
    data = (tmp_path / "ir.mp4").read_bytes()
    (tmp_path / "ir.mp4").write_bytes(data[: len(data) * 6 // 10])
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(
        "sources:\n  ir: {type: replay, path: ir.mp4}\n  vis: {type: replay, path: vis.mp4}\n"
        "calibration: null\nsinks: [{type: mp4, path: fused.mp4}]\n")
    result = streamfuse("run", rig_file, "--quiet")
    assert result.returncode == 1
    errors = [l for l in result.stderr.splitlines() if l.startswith("streamfuse: error:")]
    assert len(errors) == 1 and "ir.mp4" in errors[0] and "truncated" in errors[0]
    assert "Traceback" not in result.stderr
    fused, _, _ = read_video(tmp_path / "fused.mp4")
    assert 10 <= len(fused) < 60


def test_a_file_that_is_not_a_video_fails_at_start_up(tmp_path):
    (tmp_path / "ir.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    write_video(tmp_path / "vis.mp4", [np.zeros((64, 64, 3), np.uint8)] * 5)
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text("sources:\n  ir: {type: replay, path: ir.mp4}\n  vis: {type: replay, path: vis.mp4}\n"
                        "calibration: null\n")
    result = streamfuse("run", rig_file)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "ir.mp4" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly_and_finalizes_the_recording(tmp_path, signum):
    out = tmp_path / "stopped.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "streamfuse", "run", "rigs/demo-fast.yaml", "--record", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not out.exists() or out.stat().st_size < 20_000) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "fused frames" in stderr and "Traceback" not in stderr
    frames, rate, _ = read_video(out)
    assert len(frames) > 10 and rate == 25


def test_a_failing_stage_leaves_no_thread_running(tmp_path, monkeypatch):
    rig = load_rig(REPO / "rigs/demo.yaml").with_mode("pyramid").with_recording(tmp_path / "partial.mp4")

    calls = []

    def broken_fuse(self, ir, vis):
        calls.append(1)
        if len(calls) > 20:
            raise RuntimeFailure("fusion broke")
        return vis

    from streamfuse.fuse import classical
    monkeypatch.setattr(classical.PyramidFuser, "fuse", broken_fuse)
    with pytest.raises(RuntimeFailure, match="fusion broke"):
        run(rig)
    alive = [t.name for t in threading.enumerate() if t.name.startswith(("capture-", "sink-"))]
    assert alive == []
    frames, _, _ = read_video(tmp_path / "partial.mp4")
    assert len(frames) == 20


def test_realtime_pacing_follows_the_camera_rate():
    rig = load_rig(REPO / "rigs/demo.yaml")
    live = dataclasses.replace(rig, ir=dataclasses.replace(rig.ir, pace="realtime"),
                               vis=dataclasses.replace(rig.vis, pace="realtime"))
    report = run(live, duration_s=2.0)
    # 25 fps for 2 s: about 50 fused frames, not the hundreds a fast run makes.
    assert 35 <= report.frames <= 52
    # Every visible frame found its IR partner, unless the loop fell behind and skipped some.
    assert report.sync.unmatched_vis == 0 or report.skipped > 0


def test_a_sink_that_cannot_open_releases_the_sources(tmp_path, monkeypatch):
    from streamfuse.capture.synthetic import SyntheticSource
    from streamfuse.errors import UsageError

    closed = []
    monkeypatch.setattr(SyntheticSource, "close", lambda self: closed.append(self.name))
    rig = load_rig(REPO / "rigs/demo.yaml").with_recording(tmp_path / "missing-folder" / "x.mp4")
    with pytest.raises(UsageError, match="missing-folder"):
        run(rig, max_frames=5)
    assert sorted(closed) == ["ir", "vis"]

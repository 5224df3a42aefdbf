"""The recording sink: crash-safe fragments, full disks, segments and retention, the raw IR
archive and the encoder choice, on real files through PyAV."""
from __future__ import annotations

import dataclasses
import errno
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from fractions import Fraction

import av
import numpy as np
import pytest
from helpers import REPO, free_port, get, write_demo_rig

from streamfuse.capture import open_sources
from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.pipeline import run
from streamfuse.rig import load_rig
from streamfuse.sinks import (
    MonitorSinkConfig,
    Mp4SinkConfig,
    NullSinkConfig,
    containers,
)
from streamfuse.sinks import mp4 as recording
from streamfuse.sinks.containers import HW_ENCODERS, choose_encoder
from streamfuse.sinks.mp4 import prune_segments, segment_path


def _decode(path):
    """(frames, pts in seconds) of every frame PyAV can decode, failing on a decode error."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(stream)]
        return frames, [float(f.pts * stream.time_base) for f in frames]


def _metric(text: str, name: str, **labels: str) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(f"{name}{{{label}}}" if labels else name) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def test_kill_9_leaves_every_frame_but_about_the_last_second(tmp_path):
    rig = write_demo_rig(tmp_path / "rig.yaml", pace="realtime")
    out, port = tmp_path / "evidence.mp4", free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamfuse", "run", str(rig), "--record", str(out),
                             "--serve", f"127.0.0.1:{port}", "--quiet"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        written, deadline = 0.0, time.monotonic() + 60
        while written < 75 and time.monotonic() < deadline:  # about 3 s of video at 25 fps
            time.sleep(0.1)
            try:
                written = _metric(get(f"http://127.0.0.1:{port}/metrics", timeout=2)[1].decode(),
                                  "streamfuse_sink_frames_total", sink="mp4")
            except OSError:
                continue  # not listening yet
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        stderr = proc.stderr.read().decode()
    assert written >= 75, stderr
    frames, pts = _decode(out)
    # Lost: the fragment being written (at most one keyframe interval, 1 s = 25 frames) and
    # what the encoder holds back (0.2 s + 1 frame = 6 frames).
    assert written - 25 - 6 <= len(frames) <= written + 10
    assert len(frames) >= 50
    _assert_no_hole(pts)


def test_kill_9_at_random_moments_of_segment_rotation_leaves_only_playable_files(tmp_path):
    """Segments of 1 s of video with the IR archive, flat out, so files rotate several times a
    second; killed at random moments, every file under a recording name opens and decodes."""
    rng = random.Random(17)
    sinks = "[{type: mp4, path: seg.mp4, segment_s: 1, ir_archive: true}]"
    checked = 0
    for kill in range(6):
        folder = tmp_path / f"run{kill}"
        folder.mkdir()
        rig = write_demo_rig(folder / "rig.yaml", pace="fast", sinks=sinks)
        proc = subprocess.Popen([sys.executable, "-m", "streamfuse", "run", str(rig), "--quiet"], cwd=folder,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not list(folder.glob("seg-*.mp4")) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)  # recording has begun
            time.sleep(rng.uniform(0.0, 2.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            proc.kill()
            stderr = proc.stderr.read().decode()
        files = sorted(p for p in folder.iterdir() if p.name.startswith("seg-"))
        assert files, stderr
        for path in files:
            frames, pts = _decode(path)
            assert frames, f"{path.name} ({path.stat().st_size} bytes) holds no frame"
            checked += 1
        videos = [p for p in files if p.suffix == ".mp4"]
        assert all(p.with_name(p.stem + ".ir.mkv") in files for p in videos[:-1])  # each finished one has its IR
    assert checked >= 12


def _bt601_limited_to_bgr(i420: np.ndarray) -> np.ndarray:
    """What a correct player shows for a yuv420p frame tagged BT.601 limited range (float)."""
    h, w = i420.shape[0] * 2 // 3, i420.shape[1]
    y = (i420[:h].astype(float) - 16) * 255 / 219
    u, v = ((np.kron(p.reshape(h // 2, w // 2).astype(float), np.ones((2, 2))) - 128) * 255 / 224
            for p in (i420[h:h + h // 4], i420[h + h // 4:]))
    return np.stack([y + 1.772 * u, y - 0.344136 * u - 0.714136 * v, y + 1.402 * v], -1)


def test_the_recording_keeps_the_colours_it_was_given(tmp_path):
    rng = np.random.default_rng(3)
    image = np.zeros((480, 640, 3), np.uint8)
    for y in range(0, 480, 60):
        for x in range(0, 640, 80):
            image[y:y + 60, x:x + 80] = rng.integers(16, 240, 3)
    path = tmp_path / "colours.mp4"
    video = containers.VideoFile(path, "libx264", (640, 480), Fraction(25), Mp4SinkConfig(path=path, crf=0))
    for i in range(5):
        video.write(image, i * 40_000_000)
    video.close()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.colorspace, stream.codec_context.color_range) == (6, 1)  # smpte170m, tv
        shown = _bt601_limited_to_bgr(next(c.decode(stream)).to_ndarray(format="yuv420p"))
    worst = max(np.abs(shown[y + 4:y + 56, x + 4:x + 76].mean((0, 1)) - image[y + 4:y + 56, x + 4:x + 76].mean((0, 1))).max()
                for y in range(0, 480, 60) for x in range(0, 640, 80))
    assert worst <= 2.0, worst


def _assert_no_hole(pts):
    """Frames 40 ms apart, in order; a live rig may skip a frame under load, but a lost
    fragment would leave a hole of a second."""
    steps = np.diff(pts)
    assert np.all(steps > 0.03) and np.all(steps < 0.2), f"frames missing or out of order: {steps}"


def _failing_writes(monkeypatch, budget: int):
    """A disk that fills up: it takes `budget` bytes, the write that crosses that writes
    what fits and fails with ENOSPC, as write(2) does, and so does every write after it."""
    original = containers.CommittedOutput._write_at
    used = [0]

    def write_at(self, offset, data):
        room = budget - used[0]
        if len(data) > room:
            original(self, offset, data[:max(room, 0)])
            used[0] = budget
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        used[0] += len(data)
        original(self, offset, data)

    monkeypatch.setattr(containers.CommittedOutput, "_write_at", write_at)


def test_a_full_disk_stops_only_the_recording(tmp_path, monkeypatch):
    _failing_writes(monkeypatch, budget=180_000)  # the first 1 s fragment (~110 kB) fits, not the second
    port = free_port()
    rig = load_rig(write_demo_rig(tmp_path / "rig.yaml", pace="realtime")).with_mode("pyramid")  # budget sized for it
    rig = dataclasses.replace(rig, sinks=(Mp4SinkConfig(path=tmp_path / "full.mp4"), NullSinkConfig(queue="block"),
                                          MonitorSinkConfig(port=port)))
    result = {}

    def go():
        try:
            run(rig, duration_s=4.0)
        except RuntimeFailure as exc:
            result["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    seen_down_at = None
    while thread.is_alive():
        time.sleep(0.2)
        try:
            text = get(f"http://127.0.0.1:{port}/metrics", timeout=2)[1].decode()
        except OSError:
            continue
        if seen_down_at is None and _metric(text, "streamfuse_sink_up", sink="mp4") == 0:
            seen_down_at = _metric(text, "streamfuse_frames_total")
            assert _metric(text, "streamfuse_recording", sink="mp4") == 0
        last = _metric(text, "streamfuse_frames_total")
    thread.join()
    assert seen_down_at is not None, "the monitor never showed the recording stopped"
    assert last > seen_down_at + 10, "the pipeline and the monitor did not go on"
    error = result["error"]
    assert "disk full" in str(error) and "full.mp4" in str(error) and "\n" not in str(error)
    report = error.report
    states = {s.name: s for s in report.sinks}
    assert states["null"].written == report.frames > 80
    assert states["mp4"].error and states["mp4"].written < report.frames
    frames, pts = _decode(tmp_path / "full.mp4")  # cut back to the last whole fragment: no decode error
    assert len(frames) >= 20
    _assert_no_hole(pts)


def test_with_no_sink_left_the_run_stops(tmp_path, monkeypatch):
    _failing_writes(monkeypatch, budget=180_000)
    rig = dataclasses.replace(load_rig(REPO / "rigs/demo.yaml").with_mode("pyramid"),  # budget sized for it
                              sinks=(Mp4SinkConfig(path=tmp_path / "only.mp4"),))
    with pytest.raises(RuntimeFailure, match="only.mp4: disk full after") as caught:
        run(rig, max_frames=1000)
    assert caught.value.report.frames < 200  # it did not fuse on for nobody
    kept = len(_decode(tmp_path / "only.mp4")[0])
    assert 20 <= kept < 100
    assert f"only.mp4 keeps its first {kept} frames" in str(caught.value)  # the line says what the file holds


def test_segments_rotate_by_time_and_keep_the_newest(tmp_path):
    older = segment_path(tmp_path / "cam.mp4", datetime(2020, 1, 1))
    older.write_bytes(b"an earlier run's segment")
    unrelated = tmp_path / "cam-notes.mp4"
    unrelated.write_bytes(b"not a segment")
    rig = load_rig(REPO / "rigs/demo.yaml")
    sink = Mp4SinkConfig(path=tmp_path / "cam.mp4", segment_s=1.0, keep=2, preset="ultrafast")
    report = run(dataclasses.replace(rig, sinks=(sink,)), max_frames=100)  # 4 s of video at 25 fps
    assert report.sinks[0].extra["segments"] == 4
    kept = sorted(tmp_path.glob("cam-2*.mp4"))
    assert len(kept) == 2 and not older.exists() and unrelated.exists()
    for path in kept:
        frames, pts = _decode(path)
        assert len(frames) == 25 and pts[0] == 0.0
        assert frames[0].key_frame  # every segment plays on its own


def test_segments_rotate_by_size(tmp_path):
    rig = load_rig(REPO / "rigs/demo.yaml")
    sink = Mp4SinkConfig(path=tmp_path / "big.mp4", segment_mb=1, crf=12, preset="ultrafast")
    run(dataclasses.replace(rig, sinks=(sink,)), max_frames=80)  # ~2.5 MB per 1 s fragment
    files = sorted(tmp_path.glob("big-*.mp4"))
    counts = [len(_decode(f)[0]) for f in files]
    assert sum(counts) == 80 and len(files) >= 3
    sizes = [f.stat().st_size for f in files]
    # Each file but the last is cut at the first frame that takes it past 1 MB.
    assert all(1_000_000 <= size < 1_000_000 + 300_000 for size in sizes[:-1]), sizes


def test_prune_keeps_only_the_pattern(tmp_path):
    names = [segment_path(tmp_path / "a.mp4", datetime(2026, 1, 1, 0, 0, s)) for s in range(5)]
    for n in names:
        n.write_bytes(b"x")
        recording.archive_path(n).write_bytes(b"ir")
    (tmp_path / "a.mp4").write_bytes(b"the unsegmented one")
    deleted = prune_segments(tmp_path / "a.mp4", keep=2)
    assert len(deleted) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.mp4"] + [n.name for n in names[3:]] + [recording.archive_path(n).name for n in names[3:]])


def test_ir_archive_keeps_the_raw_16_bit_frames_exactly(tmp_path):
    rig = load_rig(REPO / "rigs/demo.yaml")
    sink = Mp4SinkConfig(path=tmp_path / "fused.mp4", ir_archive=True)
    run(dataclasses.replace(rig, sinks=(sink,)), max_frames=20)
    with av.open(str(tmp_path / "fused.ir.mkv")) as c:
        archived = [f.to_ndarray() for f in c.decode(video=0)]
    ir, _ = open_sources(rig.ir, rig.vis, rig.scene)
    ir.open()
    ir.start_clock(0)
    raw = [ir.read().image for _ in range(40)]
    assert archived[0].dtype == np.uint16 and archived[0].shape == (512, 640)
    matches = [next(k for k, r in enumerate(raw) if np.array_equal(a, r)) for a in archived]
    assert matches == sorted(set(matches)), "each IR frame once, in order"
    assert len(archived) >= 20  # a 30 fps IR camera beside a 25 fps visible one: no reuse


def test_auto_encoder_is_hardware_or_says_why_not():
    codec, why = choose_encoder(Mp4SinkConfig(path="x.mp4"), (640, 480), 25)
    if codec == "libx264":
        assert "no hardware H.264 encoder" in why and "h264_nvenc" in why
    else:
        assert codec in HW_ENCODERS
    if codec != "h264_nvenc":
        with pytest.raises(UsageError, match="h264_nvenc cannot be used here.*codec: auto or libx264"):
            choose_encoder(Mp4SinkConfig(path="x.mp4", codec="h264_nvenc"), (640, 480), 25)


def test_a_folder_that_cannot_be_written_fails_at_start_up(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "out.mp4").mkdir()  # a folder where the file should go: cannot be opened for writing
    rig = load_rig(REPO / "rigs/demo.yaml")
    with pytest.raises(UsageError, match="out.mp4: cannot write"):
        run(dataclasses.replace(rig, sinks=(Mp4SinkConfig(path=locked / "out.mp4"),)), max_frames=5)


def test_rig_keys_of_the_watch_and_record_sinks(tmp_path):
    from streamfuse.errors import RigError
    from streamfuse.sinks import DisplaySinkConfig

    def rig(sinks: str):
        return load_rig(write_demo_rig(tmp_path / "rig.yaml", pace="fast", sinks=sinks))

    loaded = rig("[{type: mp4, path: out.mp4, segment_s: 600, keep: 3, ir_archive: true, codec: libx264},"
                 " {type: display, scale: 0.5}, {type: monitor, port: 0, max_fps: 5}]")
    mp4, display, monitor = loaded.sinks
    assert mp4.path == tmp_path / "out.mp4" and mp4.keep == 3 and mp4.ir_archive and mp4.queue == "block"
    assert display == DisplaySinkConfig(scale=0.5) and display.queue == "drop_oldest"
    assert (monitor.host, monitor.port, monitor.max_fps, monitor.queue) == ("127.0.0.1", 0, 5.0, "drop_oldest")
    for sinks, message in (("[{type: mp4, path: a.mp4, keep: 3}]", "sinks\\[0\\].keep: only applies to segments"),
                           ("[{type: mp4, path: a.mp4, codec: h264_vaapi}]", "sinks\\[0\\].codec: expected one of"),
                           ("[{type: monitor, token: short}]", "sinks\\[0\\].token: expected at least 8"),
                           ("[{type: display, fullscreen: true}]", "sinks\\[0\\].fullscreen: unknown key")):
        with pytest.raises(RigError, match=message):
            rig(sinks)

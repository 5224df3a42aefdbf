"""The raw archive (`raw_archive: true`) and the archive source that reads it back: both raw
streams exactly, capture times to the nanosecond, the rig's description, crash safety,
segments; on real files through PyAV."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO
from refuse_helpers import SIZE, write_small_rig

from streamfuse.capture import open_sources
from streamfuse.capture.archive import ArchiveConfig, ArchiveSource, read_metadata
from streamfuse.errors import SourceError
from streamfuse.pipeline import run
from streamfuse.rig import load_rig


def _read_all(path, camera):
    source = ArchiveSource(camera, ArchiveConfig(path=path))
    source.open()
    source.start_clock(1_000)
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    return source, frames


def test_the_archive_holds_both_raw_streams_with_their_exact_capture_times(tmp_path):
    rig = load_rig(write_small_rig(tmp_path, "[{type: mp4, path: rec.mp4, raw_archive: true}]"))
    report = run(rig, max_frames=20)
    archive = tmp_path / "rec.raw.mkv"
    ir_src, ir = _read_all(archive, "ir")
    vis_src, vis = _read_all(archive, "vis")
    assert len(vis) == report.frames == 20
    assert (ir_src.pixel_format, vis_src.pixel_format) == ("gray16", "bgr24")
    assert ir_src.size == vis_src.size == SIZE and vis_src.fps == 25 and ir_src.fps == 30

    truth_ir, truth_vis = open_sources(rig.ir, rig.vis, rig.scene)
    for s in (truth_ir, truth_vis):
        s.open()
        s.start_clock(1_000)
    raw_ir = [truth_ir.read() for _ in range(30)]
    raw_vis = [truth_vis.read() for _ in range(20)]
    for got, want in zip(vis, raw_vis):
        assert np.array_equal(got.image, want.image) and got.t_ns - vis[0].t_ns == want.t_ns - raw_vis[0].t_ns
    by_time = {f.t_ns - raw_vis[0].t_ns: f for f in raw_ir}
    for got in ir:  # each archived IR frame is a camera frame, exactly, at its exact time
        want = by_time[got.t_ns - vis[0].t_ns]
        assert got.image.dtype == np.uint16 and np.array_equal(got.image, want.image)

    meta = read_metadata(archive)
    assert meta["calibration"] == (tmp_path / "small-cal.yaml").read_text()
    assert meta["fusion"]["mode"] == "alpha" and meta["sync"]["tolerance_ms"] == 20
    assert meta["cameras"]["vis"]["source"]["latency_ms"] == 15


def test_a_file_that_is_not_an_archive_is_one_line(tmp_path):
    bad = tmp_path / "bad.raw.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 not really matroska" * 50)
    with pytest.raises(SourceError, match="bad.raw.mkv: cannot read it as a raw archive"):
        ArchiveSource("ir", ArchiveConfig(path=bad)).open()


def test_the_archive_is_segmented_with_the_recording(tmp_path):
    rig = load_rig(write_small_rig(tmp_path, "[{type: mp4, path: seg.mp4, segment_s: 1, raw_archive: true}]"))
    run(rig, max_frames=60)  # 2.4 s of video at 25 fps
    videos = sorted(tmp_path.glob("seg-*.mp4"))
    assert len(videos) == 3
    counts = [len(_read_all(v.with_name(v.stem + ".raw.mkv"), "vis")[1]) for v in videos]
    assert sum(counts) == 60 and counts[0] == 25


def test_a_killed_recording_leaves_an_archive_readable_to_its_last_frames(tmp_path):
    rig = write_small_rig(tmp_path, "[{type: mp4, path: rec.mp4, raw_archive: true}]")
    proc = subprocess.Popen([sys.executable, "-m", "streamfuse", "run", str(rig), "--quiet"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    archive = tmp_path / "rec.raw.mkv"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and \
                not (archive.exists() and archive.stat().st_size > 3_000_000):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        stderr = proc.stderr.read().decode()
    assert archive.exists(), stderr
    _, vis = _read_all(archive, "vis")
    _, ir = _read_all(archive, "ir")
    assert len(vis) >= 20 and len(ir) >= 20  # ~60 KB a pair: 3 MB is about 50 pairs
    assert all(b.t_ns > a.t_ns for a, b in zip(vis, vis[1:]))

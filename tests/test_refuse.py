"""`streamfuse refuse` without Ray: the round trip from a recording, resume, a corrupt input
among good ones, what the inputs may be, and the missing cluster extra; real files, the real
command line, local worker processes."""
from __future__ import annotations

import json
import shutil

import pytest
from helpers import data_path, streamfuse
from refuse_helpers import (
    LONG_FRAMES,
    assert_as_if_uninterrupted,
    decode,
    long_job,
    write_small_rig,
)

from streamfuse.errors import UsageError
from streamfuse.refuse.inputs import discover


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 20-frame recording of the small synthetic rig (alpha), with its raw archive, by `streamfuse run`."""
    folder = tmp_path_factory.mktemp("recording")
    rig = write_small_rig(folder, "[{type: mp4, path: street.mp4, raw_archive: true}]", mode="alpha")
    done = streamfuse("run", rig, "--frames", "20", "--quiet")
    assert done.returncode == 0, done.stderr
    return folder


def test_round_trip_another_mode_keeps_the_frame_count_and_timestamps(recording, tmp_path):
    done = streamfuse("refuse", recording / "street.raw.mkv", "-o", tmp_path / "out", "--mode", "pyramid", "--quiet")
    assert done.returncode == 0, done.stderr
    original, original_pts = decode(recording / "street.mp4")
    refused, refused_pts = decode(tmp_path / "out" / "street.mp4")
    assert len(refused) == len(original) == 20
    assert refused_pts == original_pts
    assert any(abs(a.astype(int) - b).mean() > 1 for a, b in zip(original, refused))  # another mode: other pictures
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(r["name"], r["status"], r["frames"], r["drops"]) for r in summary["inputs"]] == [("street", "done", 20, 0)]


def test_a_rerun_skips_complete_outputs_and_redoes_a_damaged_one(recording, tmp_path):
    for name in ("a", "b"):
        shutil.copy(recording / "street.raw.mkv", tmp_path / f"{name}.raw.mkv")
    out = tmp_path / "out"
    first = streamfuse("refuse", tmp_path, "-o", out, "--mode", "alpha", "--workers", "2", "--quiet")
    assert first.returncode == 0, first.stderr
    kept = (out / "a.mp4").stat().st_mtime_ns
    with open(out / "b.mp4", "ab") as f:  # no longer what its marker says
        f.write(b"junk")
    again = streamfuse("refuse", tmp_path, "-o", out, "--mode", "alpha", "--quiet")
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    statuses = {r["name"]: (r["status"], r["frames"]) for r in summary["inputs"]}
    assert statuses == {"a": ("skipped", 20), "b": ("done", 20)}
    assert (out / "a.mp4").stat().st_mtime_ns == kept
    assert decode(out / "b.mp4")[1] == decode(out / "a.mp4")[1]
    assert not (out / ".refuse-work").exists()


def test_a_corrupt_archive_fails_alone_and_sets_the_exit_code(recording, tmp_path):
    shutil.copy(recording / "street.raw.mkv", tmp_path / "good.raw.mkv")
    (tmp_path / "bad.raw.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40)
    truncated = (recording / "street.raw.mkv").read_bytes()
    (tmp_path / "cut.raw.mkv").write_bytes(truncated[:len(truncated) // 2])  # a recording cut by a crash
    done = streamfuse("refuse", tmp_path, "-o", tmp_path / "out", "--workers", "2")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("streamfuse: error: 1 of 3 inputs failed: bad (")
    summary = {r["name"]: r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"]}
    assert summary["bad"]["status"] == "failed" and "bad.raw.mkv" in summary["bad"]["errors"][0]
    assert summary["good"]["status"] == "done" and summary["good"]["frames"] == 20
    assert summary["cut"]["status"] == "done" and 5 <= summary["cut"]["frames"] < 20
    assert "bad" in done.stdout and "failed" in done.stdout  # the final table
    assert not (tmp_path / "out" / "bad.mp4").exists()


def test_clip_folders_are_inputs_named_after_the_clip(tmp_path):
    frames = data_path("video", "m3svd_frames")
    items = discover([frames])
    assert [i.name for i in items] == sorted(p.name for p in frames.iterdir() if p.is_dir())
    assert all(i.kind == "clip" and i.ir.name == "ir" and i.vis.name == "vis" for i in items)
    mp4 = data_path("video", "m3svd_mp4", "0111_1716")
    (clip,) = discover([mp4])
    assert (clip.name, clip.ir.name, clip.vis.name) == ("0111_1716", "ir.mp4", "vis.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty: no raw archives"):
        discover([tmp_path / "empty"])
    with pytest.raises(UsageError, match="both be written as 0111_1716.mp4"):
        discover([mp4, frames / "0111_1716"])


def test_ray_without_the_cluster_extra_is_one_line_naming_it(recording, tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    code = ("import sys; sys.modules['ray'] = None; from streamfuse.cli import main; "
            f"sys.exit(main(['refuse', {str(recording / 'street.raw.mkv')!r}, '-o', {str(tmp_path)!r}, '--ray']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("streamfuse: error: --ray: needs ray, from the cluster extra: "
                                   "pip install -e '.[cluster]' (or pip install 'streamfuse[cluster]')")


def test_a_local_worker_that_dies_is_replaced_and_its_job_run_again(tmp_path):
    import os
    import signal

    from streamfuse.refuse.runner import refuse_all

    spec = long_job(tmp_path / "killed")  # long enough that the kill lands while it runs
    pids = []

    def kill_first_worker(name, frames, pid):
        if not pids:
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)
        elif pid not in pids:
            pids.append(pid)

    summary = refuse_all([spec], workers=1, show_progress=False, on_progress=kill_first_worker)
    assert len(pids) == 2  # the job started in a second worker after the first was killed
    assert (summary.results[0].status, summary.results[0].frames) == ("done", LONG_FRAMES)
    assert_as_if_uninterrupted(spec, tmp_path / "whole")


def test_a_rig_file_gives_the_jobs_its_settings(tmp_path):
    from helpers import REPO

    clip = data_path("video", "m3svd_mp4", "0111_1716")
    done = streamfuse("refuse", clip, "-o", tmp_path, "--rig", REPO / "rigs" / "replay.yaml", "--mode", "msx",
                      "--max-frames", "5", "--quiet")
    assert done.returncode == 0, done.stderr
    assert len(decode(tmp_path / "0111_1716.mp4")[0]) == 5
    wrong = streamfuse("refuse", clip, "-o", tmp_path / "again", "--calibration", REPO / "calibration" / "demo.yaml",
                       "--quiet")
    assert wrong.returncode == 1  # 640x480 cameras against a calibration for 640x512: that job fails, and says why
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert "calibrate for these cameras or fix the sizes" in summary["inputs"][0]["errors"][0]


def test_work_folders_survive_other_jobs_ending_beside_them(tmp_path):
    """Jobs in several workers share OUT_DIR/.refuse-work; one that ends removes it when empty,
    which once happened between another job creating it and creating its own folder in it."""
    import threading

    from streamfuse.refuse.inputs import Input
    from streamfuse.refuse.job import JobSpec, make_work_folder, remove_work_folder

    errors: list[str] = []

    def jobs(name: str) -> None:
        spec = JobSpec(Input(name=name, kind="clip", path=tmp_path, ir=tmp_path, vis=tmp_path), tmp_path)
        for _ in range(2000):
            try:
                work = make_work_folder(spec)
                assert work.is_dir() and work.parent.name == ".refuse-work"
                remove_work_folder(work)
            except (OSError, AssertionError) as exc:
                errors.append(repr(exc))
                return

    threads = [threading.Thread(target=jobs, args=(name,)) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert not (tmp_path / ".refuse-work").exists()

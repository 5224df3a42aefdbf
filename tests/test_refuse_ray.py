"""`streamfuse refuse --ray`: a real Ray cluster of 2 CPUs on 127.0.0.1 (one per module),
raw archives recorded by the pipeline and M3SVD clip pairs re-fused as Ray tasks, each output
equal to the local path's, a worker killed mid-job, a corrupt archive among good ones."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from helpers import data_path, streamfuse
from refuse_helpers import (
    LONG_FRAMES,
    assert_as_if_uninterrupted,
    decode,
    long_job,
    write_small_rig,
)

from streamfuse.refuse.runner import refuse_all

try:
    import ray
except ImportError:
    if os.environ.get("CI") == "true":
        raise AssertionError("ray is missing on CI; tests/run installs the cluster extra") from None
    pytest.skip("ray is not installed: pip install -e '.[cluster]' (tests/run installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster in this process, bound to loopback, kept light; its address for other drivers."""
    ray.init(_node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
             log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three 20-frame raw archives of the small synthetic rig and a corrupt one, in one folder."""
    from streamfuse.pipeline import run
    from streamfuse.rig import load_rig

    folder = tmp_path_factory.mktemp("archives")
    for i in range(3):
        rig = load_rig(write_small_rig(folder, f"[{{type: mp4, path: take{i}.mp4, raw_archive: true}}]",
                                       name=f"rig{i}.yaml"))
        run(rig, max_frames=20)
        (folder / f"take{i}.mp4").unlink()
    (folder / "broken.raw.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(4000))
    return folder


def _summary(out):
    return {r["name"]: r for r in json.loads((out / "summary.json").read_text())["inputs"]}


def test_ray_outputs_equal_the_local_path_and_a_corrupt_archive_fails_alone(cluster, inputs, tmp_path):
    clips = data_path("video", "m3svd_frames")
    args = ["refuse", inputs, clips, "--mode", "pyramid", "--max-frames", "8", "--quiet"]
    local = streamfuse(*args, "-o", tmp_path / "local", "--workers", "2")
    on_ray = streamfuse(*args, "-o", tmp_path / "ray", "--ray", cluster)
    assert local.returncode == on_ray.returncode == 1, on_ray.stderr
    assert "1 of 8 inputs failed: broken" in on_ray.stderr
    want, got = _summary(tmp_path / "local"), _summary(tmp_path / "ray")
    assert got["broken"]["status"] == "failed" and "broken.raw.mkv" in got["broken"]["errors"][0]
    names = [f"take{i}" for i in range(3)] + sorted(p.name for p in clips.iterdir() if p.is_dir())
    assert sorted(got) == sorted(names + ["broken"])
    for name in names:
        assert got[name]["status"] == want[name]["status"] == "done"
        assert got[name]["frames"] == want[name]["frames"] == 8
        frames, pts = decode(tmp_path / "ray" / f"{name}.mp4")
        local_frames, local_pts = decode(tmp_path / "local" / f"{name}.mp4")
        assert pts == local_pts and all(np.array_equal(a, b) for a, b in zip(frames, local_frames)), name
    assert sorted(p.name for p in (tmp_path / "ray").iterdir() if not p.name.startswith(".")) == \
        sorted([f"{n}.mp4" for n in names] + ["summary.json"])


def test_a_worker_killed_mid_job_is_retried_and_writes_the_same_file(cluster, tmp_path):
    spec = long_job(tmp_path / "ray")  # long enough that a progress report comes while it runs
    killed = []

    def kill_once(name, frames, pid):
        if frames > 0 and not killed:  # the job is under way: some frames are fused
            killed.append((frames, pid))
            os.kill(pid, signal.SIGKILL)

    summary = refuse_all([spec], use_ray=True, show_progress=False, on_progress=kill_once)
    assert killed, "the job ended before a progress report came"
    (result,) = summary.results
    assert (result.status, result.frames) == ("done", LONG_FRAMES), result.errors
    assert_as_if_uninterrupted(spec, tmp_path / "local")
    assert not (spec.out_dir / ".refuse-work").exists()

"""What the raw-archive and refuse tests share: a tiny synthetic rig that records raw archives."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from helpers import REPO, data_path

#: Frame size of the tests' synthetic rig: small, so that recording and re-fusing take little time.
SIZE = (160, 128)


def write_small_rig(folder: Path, sinks: str = "[]", mode: str = "alpha", name: str = "rig.yaml") -> Path:
    """rigs/demo-fast.yaml at SIZE for both cameras, with its own calibration file (a small
    shift, so that registration does something) and `sinks` (YAML text)."""
    w, h = SIZE
    (folder / "small-cal.yaml").write_text(
        "# the tests' calibration\nH_vis_from_ir:\n  - [1, 0, 2]\n  - [0, 1, -1]\n  - [0, 0, 1]\n"
        f"ir_size: [{w}, {h}]\nvis_size: [{w}, {h}]\nprovenance:\n  method: test\n")
    text = (REPO / "rigs" / "demo-fast.yaml").read_text()
    text = text.replace("size: [640, 512]", f"size: [{w}, {h}]").replace("size: [640, 480]", f"size: [{w}, {h}]")
    text = text.replace("calibration: ../calibration/demo.yaml", "calibration: small-cal.yaml")
    text = text.replace("mode: lite", f"mode: {mode}").replace("sinks: []", f"sinks: {sinks}")
    path = folder / name
    path.write_text(text)
    return path


def decode(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """(frames as yuv420p planes, pts) of an MP4."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
        return [f.to_ndarray(format="yuv420p") for f in frames], [f.pts for f in frames]


#: A re-fusing job long enough to be killed mid-way on a fast machine: 400 of the 407 frames of
#: an M3SVD clip. Progress comes every 0.2-0.5 s; 90 frames of pyramid took under 0.5 s.
LONG_FRAMES = 400


def long_job(out_dir: Path):
    """The JobSpec of that job (pyramid) into `out_dir` (created)."""
    from streamfuse.refuse.inputs import discover
    from streamfuse.refuse.job import JobSpec

    (item,) = discover([data_path("video", "m3svd_mp4", "0117_1605")])
    out_dir.mkdir()
    return JobSpec(item, out_dir, mode="pyramid", max_frames=LONG_FRAMES)


def assert_as_if_uninterrupted(spec, out_dir: Path) -> None:
    """`spec`'s output has the frames and timestamps of the same job run whole into `out_dir`."""
    import dataclasses

    from streamfuse.refuse.job import run_job

    out_dir.mkdir()
    whole = dataclasses.replace(spec, out_dir=out_dir)
    assert run_job(whole).status == "done"
    got, want = decode(spec.output), decode(whole.output)
    assert got[1] == want[1] and all(np.array_equal(a, b) for a, b in zip(got[0], want[0]))

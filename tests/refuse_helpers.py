"""What the raw-archive and refuse tests share: a tiny synthetic rig that records raw archives."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from helpers import REPO

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

"""`streamfuse calibrate`: find the IR-to-visible mapping and write `calibration/<rig>.yaml`.

Methods, one module each: `board.py` (a checkerboard or circle grid seen by both cameras),
`points.py` and `click.py` (point pairs from a file or clicked), `targetfree.py` (an ordinary
scene, by cross-modal edge alignment). `refine.py` runs the target-free estimator in the
background of a running rig; `report.py` prints the accuracy figures of docs/benchmarks.md.

Every method ends in `write_calibration`, which refuses an unusable mapping, writes the file
atomically and reads it back with the loader the rigs use, so a file that exists is a file a
rig can load. Nothing is written when anything fails.
"""
from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

from streamfuse.errors import UsageError
from streamfuse.geometry import homography_problem
from streamfuse.register import Calibration, load_calibration


def write_calibration(path: Path, H_vis_from_ir: np.ndarray, ir_size: tuple[int, int], vis_size: tuple[int, int],
                      provenance: dict, comment: str) -> Calibration:
    """Write a calibration file (see calibration/README.md); `provenance` gets today's date.
    UsageError, and no file, if the mapping is unusable or the folder does not exist."""
    problem = homography_problem(H_vis_from_ir, ir_size)
    if problem:
        raise UsageError(f"the mapping found is unusable ({problem}); no calibration written")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: folder {path.parent} does not exist; create it or give another -o")
    H = np.asarray(H_vis_from_ir, np.float64) / H_vis_from_ir[2, 2]
    rows = "\n".join(f"  - [{', '.join(f'{v:.10g}' for v in row)}]" for row in H)
    provenance = {"date": datetime.date.today().isoformat(), **provenance}
    text = (f"# {comment}\n" f"H_vis_from_ir:\n{rows}\n"
            f"ir_size: [{ir_size[0]}, {ir_size[1]}]\nvis_size: [{vis_size[0]}, {vis_size[1]}]\n"
            + yaml.safe_dump({"provenance": _plain(provenance)}, sort_keys=False, default_flow_style=None))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        calibration = load_calibration(Path(tmp))   # what a rig will read, or RigError
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return calibration


def _plain(value):
    """Provenance as YAML-friendly built-ins (numpy scalars rounded to 4 decimals)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value

"""Calibration files (`calibration/<rig>.yaml`, see calibration/README.md): `Calibration`, reading, writing.

`load_calibration` is what a rig reads. Every calibration method (`streamfuse calibrate`)
ends in `write_calibration`, which refuses an unusable mapping, writes the file
atomically and reads it back with the loader the rigs use, so a file that exists is a file a
rig can load. Nothing is written when anything fails.
"""
from __future__ import annotations

import datetime
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from streamfuse.config import YamlError, read_yaml
from streamfuse.errors import RigError, UsageError
from streamfuse.register.geometry import (
    DISTANCE_PRESETS,
    ParallaxModel,
    homography_problem,
    normalized,
)


@dataclass(frozen=True)
class Calibration:
    """The content of a `calibration/<name>.yaml` file.

    `H_vis_from_ir` is always set: read from the file, or (for a file with only a parallax
    model) the model's pinhole mapping at its `distance_m`.
    """

    H_vis_from_ir: np.ndarray
    ir_size: tuple[int, int]
    vis_size: tuple[int, int]
    provenance: dict = field(default_factory=dict)
    parallax: ParallaxModel | None = None

    @classmethod
    def identity(cls, size: tuple[int, int]) -> "Calibration":
        return cls(np.eye(3), size, size, {"method": "identity"})


CALIBRATION_KEYS = {"H_vis_from_ir", "ir_size", "vis_size", "provenance", "parallax"}
PARALLAX_KEYS = {"K_ir", "K_vis", "R_vis_from_ir", "t_vis_from_ir", "dist_ir", "dist_vis", "distance_m"}


def load_calibration(path: Path) -> Calibration:
    """Read and check a calibration file; RigError (one line) on anything wrong."""
    if not path.exists():
        raise RigError(f"{path}: calibration file not found; fix `calibration:` in the rig "
                       "or create it (see calibration/README.md)")
    try:
        data = read_yaml(path)
    except YamlError as exc:
        raise RigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise RigError(f"{path}: expected a mapping with keys {sorted(CALIBRATION_KEYS)}")
    unknown = set(data) - CALIBRATION_KEYS
    if unknown:
        raise RigError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(CALIBRATION_KEYS))}")
    try:
        sizes = [tuple(int(v) for v in data[k]) for k in ("ir_size", "vis_size")]
        parallax = _parallax(data["parallax"]) if data.get("parallax") is not None else None
        if "H_vis_from_ir" not in data and parallax is None:
            raise KeyError("H_vis_from_ir")
        H = np.array(data["H_vis_from_ir"], dtype=np.float64) if "H_vis_from_ir" in data else None
    except KeyError as exc:
        raise RigError(f"{path}: missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        detail = str(exc) if str(exc).startswith("parallax") else \
            "H_vis_from_ir must be a 3x3 list of numbers and the sizes [width, height]"
        raise RigError(f"{path}: {detail}") from None
    if H is not None and (H.shape != (3, 3) or not np.all(np.isfinite(H))):
        raise RigError(f"{path}: H_vis_from_ir must be a 3x3 matrix of finite numbers, got shape {H.shape}")
    if any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise RigError(f"{path}: ir_size and vis_size must be [width, height] of positive numbers")
    if H is not None and parallax is not None and parallax.distorted:
        raise RigError(f"{path}: a parallax model with lens distortion cannot be combined with H_vis_from_ir; "
                       "keep one of them")
    if H is None:
        H = parallax.H_vis_from_ir(parallax.distance_m)
    problem = homography_problem(H, sizes[0])
    if problem:
        raise RigError(f"{path}: H_vis_from_ir is unusable: {problem}; recalibrate (see calibration/README.md)")
    return Calibration(normalized(H), sizes[0], sizes[1], dict(data.get("provenance") or {}), parallax)


def _parallax(data: object) -> ParallaxModel:
    """A ParallaxModel from the file's `parallax:` mapping; ValueError('parallax.key: ...')."""
    if not isinstance(data, dict):
        raise ValueError(f"parallax: expected a mapping with keys {', '.join(sorted(PARALLAX_KEYS))}")
    unknown = set(data) - PARALLAX_KEYS
    if unknown:
        raise ValueError(f"parallax.{sorted(unknown)[0]}: unknown key; allowed: {', '.join(sorted(PARALLAX_KEYS))}")

    def array(key: str, shape: tuple, required: bool = True) -> np.ndarray | None:
        if key not in data or data[key] is None:
            if required:
                raise ValueError(f"parallax.{key}: missing")
            return None
        try:
            value = np.array(data[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"parallax.{key}: expected numbers") from None
        if value.shape not in shape or not np.all(np.isfinite(value)):
            raise ValueError(f"parallax.{key}: expected finite numbers of shape {' or '.join(map(str, shape))}, "
                             f"got {value.shape}")
        return value

    K_ir, K_vis = array("K_ir", [(3, 3)]), array("K_vis", [(3, 3)])
    for key, K in (("K_ir", K_ir), ("K_vis", K_vis)):
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1]) and K[1, 0] == 0):
            raise ValueError(f"parallax.{key}: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    R = array("R_vis_from_ir", [(3, 3)])
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise ValueError("parallax.R_vis_from_ir: expected a rotation matrix (orthonormal, determinant +1)")
    u, _, vt = np.linalg.svd(R)   # written with a few decimals: make it exactly orthonormal
    distance = data.get("distance_m", math.inf)
    distance = DISTANCE_PRESETS.get(distance, distance) if isinstance(distance, str) else distance
    if isinstance(distance, bool) or not isinstance(distance, (int, float)) or not distance > 0:
        raise ValueError(f"parallax.distance_m: expected metres > 0, .inf or a preset "
                         f"({', '.join(DISTANCE_PRESETS)}), got {data.get('distance_m')!r}")
    dist_shapes = [(4,), (5,)]   # k1, k2, p1, p2[, k3]
    return ParallaxModel(K_ir, K_vis, u @ vt, array("t_vis_from_ir", [(3,)]),
                         array("dist_ir", dist_shapes, False), array("dist_vis", dist_shapes, False), float(distance))


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

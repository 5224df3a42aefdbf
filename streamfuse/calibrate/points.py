"""Calibration from point pairs: a file of (IR pixel, visible pixel) pairs, or clicked ones.

Any feature both cameras see sharply will do: the corners of a warm window frame, a lamp, a
person's head at the working distance. Four pairs determine the mapping; eight or more spread
over the frame let one mistyped pair be found and dropped (RANSAC, 3 px).

File formats:

    # CSV: one pair per line (a header line and # comments allowed)
    x_ir,y_ir,x_vis,y_vis
    102.5,80,131.25,64

    # YAML: the sizes may come with the points
    ir_size: [640, 512]
    vis_size: [640, 480]
    points: [[102.5, 80, 131.25, 64], ...]
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np
import yaml

from streamfuse.errors import UsageError
from streamfuse.register.geometry import (
    fit_homography,
    homography_problem,
    normalized,
    points_problem,
)

#: Pairs from which on one wrong pair is looked for, and how far (visible px) it must be off.
RANSAC_FROM, RANSAC_PX = 8, 3.0


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray, tuple | None, tuple | None]:
    """(IR points Nx2, visible points Nx2, ir_size or None, vis_size or None); UsageError
    naming the file and line on anything wrong."""
    if not path.is_file():
        raise UsageError(f"{path}: point file not found")
    text = path.read_text(errors="replace")
    if path.suffix.lower() in (".yaml", ".yml"):
        rows, sizes = _yaml_rows(path, text)
    else:
        rows, sizes = _csv_rows(path, text), (None, None)
    pts = np.array(rows, np.float64).reshape(-1, 4)
    return pts[:, :2], pts[:, 2:], sizes[0], sizes[1]


def _csv_rows(path: Path, text: str) -> list[list[float]]:
    rows = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in row]
        except ValueError:
            if not rows and number == 1 or not any(c.isdigit() for c in "".join(row)):
                continue   # the header
            raise UsageError(f"{path}, line {number}: expected four numbers x_ir,y_ir,x_vis,y_vis, "
                             f"got {','.join(row)!r}") from None
        if len(values) != 4 or not np.all(np.isfinite(values)):
            raise UsageError(f"{path}, line {number}: expected four numbers x_ir,y_ir,x_vis,y_vis, got {len(values)}")
        rows.append(values)
    return rows


def _yaml_rows(path: Path, text: str) -> tuple[list, tuple]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise UsageError(f"{path}: not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise UsageError(f"{path}: expected a mapping with `points: [[x_ir, y_ir, x_vis, y_vis], ...]`")
    rows = data["points"]
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4 and all(isinstance(v, (int, float))
                                                               and not isinstance(v, bool) for v in row)):
            raise UsageError(f"{path}: points[{i}]: expected [x_ir, y_ir, x_vis, y_vis], got {row!r}")
    sizes = []
    for key in ("ir_size", "vis_size"):
        size = data.get(key)
        if size is not None and not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0
                                                                                       for v in size)):
            raise UsageError(f"{path}: {key}: expected [width, height], got {size!r}")
        sizes.append(tuple(size) if size else None)
    return rows, tuple(sizes)


def fit_points(ir: np.ndarray, vis: np.ndarray, ir_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H_vis_from_ir, mask of the pairs used); UsageError for too few or collinear points or
    an unusable mapping."""
    for name, points in (("IR", ir), ("visible", vis)):
        problem = points_problem(points)
        if problem:
            raise UsageError(f"cannot calibrate from these points: {problem} ({name} points)")
    used = np.ones(len(ir), bool)
    if len(ir) >= RANSAC_FROM:
        _, inliers = cv2.findHomography(ir, vis, cv2.RANSAC, RANSAC_PX)
        if inliers is not None and inliers.sum() >= RANSAC_FROM - 2:
            used = inliers.ravel().astype(bool)
    H = fit_homography(ir[used], vis[used])
    problem = homography_problem(H, ir_size)
    if problem:
        raise UsageError(f"cannot calibrate from these points: the mapping they give is unusable ({problem}); "
                         "check that each line pairs the same feature, IR first")
    return normalized(H), used

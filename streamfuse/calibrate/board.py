"""Target-based calibration: a checkerboard or circle grid seen by both cameras.

A thermal camera sees a board only through temperature: a board warmed (or cooled) against
the room shows its printed squares or cut-out holes because paint and bare metal emit
differently. The picture is soft, low in contrast, noisy, and its polarity depends on whether
the board is warmer or cooler than the background, so the IR image is tried as it is, inverted,
and contrast-equalised (CLAHE) both ways, until the pattern is found.

Each view gives N corner pairs (IR pixel, visible pixel). Detectors number a symmetric board's
corners from either end, so the IR ordering that maps onto the visible one without a mirror
and with the least rotation is kept (two upright cameras never see each other rotated by 180
degrees). One homography is fitted to all views; a view whose own RMS error is far above the
others' (the board moved between the two exposures, a wrong detection) is rejected and the
fit repeated without it.

A single homography is exact for one plane: hold the board at the distance you care about.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from streamfuse.errors import UsageError
from streamfuse.register.geometry import (
    apply_homography,
    fit_homography,
    homography_problem,
    residuals,
)

PATTERN_KINDS = ("chessboard", "circles", "acircles")
#: Views the guide (calibration/README.md) asks for: fewer fit well only where the board was.
RECOMMENDED_VIEWS = 12
#: A view is rejected when its RMS error against the other views' fit exceeds this many times
#: the median view's, and also OUTLIER_FLOOR_PX (below that, every view is good enough).
OUTLIER_FACTOR, OUTLIER_FLOOR_PX = 3.0, 1.0


@dataclass(frozen=True)
class Pattern:
    """A calibration target: `kind` with `cols` x `rows` inner corners (or circles)."""

    kind: str
    cols: int
    rows: int

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        """'chessboard:9x6' (inner corners), 'circles:7x5' or 'acircles:4x11'; UsageError if not."""
        kind, _, dims = text.partition(":")
        parts = dims.lower().split("x")
        if kind not in PATTERN_KINDS or len(parts) != 2 or not all(p.isdigit() for p in parts) \
                or min(int(p) for p in parts) < 2:
            raise UsageError(f"--pattern: expected KIND:COLSxROWS with KIND one of {', '.join(PATTERN_KINDS)} "
                             f"and at least 2x2 (a 10x7-square checkerboard is chessboard:9x6), got {text!r}")
        return cls(kind, int(parts[0]), int(parts[1]))

    def __str__(self) -> str:
        return f"{self.kind}:{self.cols}x{self.rows}"


@dataclass
class View:
    """One image pair: the pattern's points in each camera, and its error under the fit."""

    name: str
    ir: np.ndarray           # Nx2 IR pixels
    vis: np.ndarray          # Nx2 visible pixels, same order
    rms_px: float = math.nan


@dataclass
class BoardFit:
    """The result: the mapping, the views used and those left out (name -> reason)."""

    H_vis_from_ir: np.ndarray
    used: list[View]
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def rms_px(self) -> float:
        return float(np.sqrt(np.mean(np.concatenate([residuals(self.H_vis_from_ir, v.ir, v.vis) ** 2
                                                     for v in self.used]))))


def to_gray8(image: np.ndarray) -> np.ndarray:
    """8-bit grey of a BGR, gray8 or gray16 image (16-bit stretched between its 0.5th and
    99.5th percentiles, as a thermal board's contrast is a small part of the range)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if gray.dtype == np.uint8:
        return gray
    lo, hi = np.percentile(gray, (0.5, 99.5))
    return np.clip((gray.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)


def detect(image: np.ndarray, pattern: Pattern, thermal: bool = False) -> np.ndarray | None:
    """Nx2 float64 pattern points (detector order), or None if the pattern is not found."""
    gray = to_gray8(image)
    if thermal:   # sensor noise is a large part of a thermal board's contrast
        gray = cv2.GaussianBlur(gray, (0, 0), 1.0)
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(gray)
    variants = [gray, clahe] + ([255 - gray, 255 - clahe] if thermal or pattern.kind != "chessboard" else [])
    for exhaustive in (False, True):   # the thorough search only when the quick one fails
        for variant in variants:
            points = _find(variant, pattern, exhaustive)
            if points is not None:
                return _refine(gray, points, pattern)
    return None


def _find(gray: np.ndarray, pattern: Pattern, exhaustive: bool) -> np.ndarray | None:
    size = (pattern.cols, pattern.rows)
    if pattern.kind == "chessboard":
        # No CALIB_CB_NORMALIZE_IMAGE: its histogram equalisation turns a thermal image's
        # noisy background into speckle that hides the board (the CLAHE variant normalises).
        flags = cv2.CALIB_CB_ACCURACY | (cv2.CALIB_CB_EXHAUSTIVE if exhaustive else 0)
        found, corners = cv2.findChessboardCornersSB(gray, size, flags=flags)
    elif exhaustive:
        return None
    else:
        grid = cv2.CALIB_CB_SYMMETRIC_GRID if pattern.kind == "circles" else cv2.CALIB_CB_ASYMMETRIC_GRID
        found, corners = cv2.findCirclesGrid(gray, size, flags=grid)
    return corners.reshape(-1, 2).astype(np.float64) if found else None


def _refine(gray: np.ndarray, points: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Chessboard corners refined to the saddle point within a quarter square, on the plain
    (not equalised: CLAHE bends edges) image. On a sharp board this takes the sector-based
    detector's ~0.1 px error to a few hundredths; on a soft, noisy thermal board it can do
    worse, so the refinement is kept only if the corners then fit the board's grid (a plane:
    one homography) better. Circle centres are kept as found."""
    if pattern.kind != "chessboard":
        return points
    grid = points.reshape(pattern.rows, pattern.cols, 2)
    spacing = float(np.median(np.linalg.norm(np.diff(grid, axis=1), axis=2)))
    half = int(np.clip(spacing / 4, 2, 10))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
    refined = cv2.cornerSubPix(gray.astype(np.float32), points.astype(np.float32).reshape(-1, 1, 2),
                               (half, half), (-1, -1), criteria).reshape(-1, 2).astype(np.float64)
    return refined if _grid_rms(refined, pattern) < _grid_rms(points, pattern) else points


def _grid_rms(points: np.ndarray, pattern: Pattern) -> float:
    """RMS distance of the points from the best homography image of the ideal grid."""
    j, i = np.meshgrid(np.arange(pattern.cols, dtype=np.float64), np.arange(pattern.rows, dtype=np.float64))
    ideal = np.stack([j.ravel(), i.ravel()], axis=1)
    return float(np.sqrt(np.mean(residuals(fit_homography(ideal, points), ideal, points) ** 2)))


def orient(ir: np.ndarray, vis: np.ndarray, pattern: Pattern) -> np.ndarray:
    """`ir` reordered to correspond point for point with `vis` (see the module docstring):
    of the grid's symmetries, the one mapping onto `vis` without a mirror and with the least
    rotation."""
    grid = np.arange(len(ir)).reshape(pattern.rows, pattern.cols)
    orders = [grid, grid[::-1], grid[:, ::-1], grid[::-1, ::-1]]
    if pattern.cols == pattern.rows:
        orders += [o.T for o in orders]
    best, best_angle = ir, math.inf
    for order in orders:
        candidate = ir[order.ravel()]
        H = fit_homography(candidate, vis)
        c = candidate.mean(axis=0)
        if np.linalg.det(H) * (H[2, :2] @ c + H[2, 2]) <= 0:
            continue   # a mirror: never the true correspondence
        a, b = apply_homography(H, np.array([c, c + [10.0, 0.0]]))
        angle = abs(math.atan2(b[1] - a[1], b[0] - a[0]))
        if angle < best_angle:
            best, best_angle = candidate, angle
    return best


def find_views(pairs: list[tuple[str, np.ndarray, np.ndarray]], pattern: Pattern) -> tuple[list[View], dict]:
    """Detect the pattern in every (name, ir, vis) pair: the views, and name -> reason for the
    pairs where it was not found."""
    views, missing = [], {}
    for name, ir_image, vis_image in pairs:
        ir = detect(ir_image, pattern, thermal=True)
        vis = detect(vis_image, pattern)
        if ir is None or vis is None:
            where = " and ".join(w for w, p in (("IR", ir), ("visible", vis)) if p is None)
            missing[name] = f"board not found in the {where} image"
            continue
        views.append(View(name, orient(ir, vis, pattern), vis))
    return views, missing


def fit_views(views: list[View], ir_size: tuple[int, int], missing: dict | None = None) -> BoardFit:
    """One homography over all views, rejecting outlier views; UsageError if none is usable."""
    rejected = dict(missing or {})
    if not views:
        detail = "; ".join(f"{n}: {r}" for n, r in list(rejected.items())[:3])
        raise UsageError(f"board not found in any of the {len(rejected)} image pairs ({detail}); check "
                         "--pattern (count inner corners), and warm or cool the board against the room")
    # Views are judged against a robust fit (least median of squares over all points), so that
    # a bad view cannot hide by pulling the common fit towards itself.
    H_robust, _ = cv2.findHomography(np.concatenate([v.ir for v in views]), np.concatenate([v.vis for v in views]),
                                     cv2.LMEDS)
    errors = [_rms(H_robust, v) if H_robust is not None else 0.0 for v in views]
    limit = max(OUTLIER_FACTOR * float(np.median(errors)), OUTLIER_FLOOR_PX)
    used = [v for v, e in zip(views, errors) if e <= limit]
    for v, e in zip(views, errors):
        if e > limit:
            rejected[v.name] = f"outlier: {e:.2f} px RMS off the views' consensus (limit {limit:.2f})"
    H = _fit(used)
    for v in used:
        v.rms_px = _rms(H, v)
    problem = homography_problem(H, ir_size)
    if problem:
        raise UsageError(f"the fitted mapping is unusable: {problem}; check that the IR and visible images "
                         "of each pair are of the same moment and not mirrored")
    return BoardFit(H, used, rejected)


def _fit(views: list[View]) -> np.ndarray:
    return fit_homography(np.concatenate([v.ir for v in views]), np.concatenate([v.vis for v in views]))


def _rms(H: np.ndarray, view: View) -> float:
    return float(np.sqrt(np.mean(residuals(H, view.ir, view.vis) ** 2)))

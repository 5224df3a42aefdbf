"""Geometry of a two-camera rig: homographies, the parallax model, and their sanity checks.

Convention: pixel (x, y) is the centre of column x, row y, with (0, 0) the centre of the
top-left pixel (OpenCV's convention); x grows right, y grows down. A transform named
`A_from_B` maps coordinates in frame B to frame A, so `H_vis_from_ir @ [x_ir, y_ir, 1]` is a
visible pixel (up to scale) and transforms compose right to left:
`H_vis_from_ir = H_vis_from_crop @ H_crop_from_ir`. Camera frames are OpenCV's (x right,
y down, z forward along the optical axis), in metres. Sizes are (width, height).

The parallax model. A point X_ir in the IR camera's frame is X_vis = R_vis_from_ir X_ir +
t_vis_from_ir in the visible camera's frame. Points on the fronto-parallel plane z_ir = d
(the working distance) satisfy n^T X_ir = d with n = (0, 0, 1), so
X_vis = (R + t n^T / d) X_ir and the plane-induced homography between the pixel frames is

    H_vis_from_ir(d) = K_vis (R + t n^T / d) K_ir^-1,

which tends to K_vis R K_ir^-1 as d -> infinity. Objects at the working distance line up
exactly; an object at distance z is off by about f_vis * |t| * |1/z - 1/d| pixels.

Everything here is a pure function of numpy arrays (float64), with no state and no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Named working distances in metres (rig key `registration.distance`, keys in the viewer).
DISTANCE_PRESETS = {"near": 3.0, "mid": 10.0, "far": 50.0, "infinity": math.inf}


def apply_homography(H_b_from_a: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Nx2 points of frame a mapped to frame b (Nx2 float64)."""
    p = np.asarray(points_a, np.float64).reshape(-1, 2)
    q = p @ H_b_from_a[:, :2].T + H_b_from_a[:, 2]
    return q[:, :2] / q[:, 2:3]


def frame_corners(size: tuple[int, int]) -> np.ndarray:
    """4x2 centres of the corner pixels of a frame of `size`: TL, TR, BR, BL."""
    w, h = size
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def corner_rms(H_vis_from_ir: np.ndarray, H_true_vis_from_ir: np.ndarray, ir_size: tuple[int, int]) -> float:
    """RMS distance in visible pixels between where two mappings send the IR frame's corners."""
    c = frame_corners(ir_size)
    d = apply_homography(H_vis_from_ir, c) - apply_homography(H_true_vis_from_ir, c)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


def normalized(H: np.ndarray) -> np.ndarray:
    """H scaled so that H[2, 2] == 1 (or its largest entry is 1 when H[2, 2] is 0)."""
    H = np.asarray(H, np.float64)
    s = H[2, 2] if abs(H[2, 2]) > 1e-12 else np.abs(H).max()
    return H / s


def scaling(sx: float, sy: float) -> np.ndarray:
    """H_dst_from_src of resizing an image by (sx, sy) (cv2.resize with fx=sx, fy=sy):
    pixel centres map as x_dst = sx (x_src + 0.5) - 0.5."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def homography_problem(H_vis_from_ir: np.ndarray, ir_size: tuple[int, int]) -> str | None:
    """Why `H_vis_from_ir` cannot be a rig's mapping, or None if it can.

    Refused: non-finite entries, a singular matrix, a mapping that sends part of the IR frame
    to infinity (the horizon line of the homography crosses the frame), and one that mirrors
    the image (negative Jacobian determinant), which two upright cameras never produce.
    """
    H = np.asarray(H_vis_from_ir, np.float64)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        return f"it is not a finite 3x3 matrix (shape {H.shape})"
    sv = np.linalg.svd(H / max(np.abs(H).max(), 1e-300), compute_uv=False)
    if not sv[0] > 0 or sv[-1] < 1e-9 * sv[0]:
        return "it is singular (it squashes the IR frame onto a line or a point)"
    w = frame_corners(ir_size) @ H[2, :2] + H[2, 2]
    if not (np.all(w > 0) or np.all(w < 0)):
        return "it sends part of the IR frame to infinity"
    if np.linalg.det(H) * np.sign(w[0]) < 0:
        return "it mirrors the image (left and right, or top and bottom, swapped)"
    return None


def points_problem(points: np.ndarray) -> str | None:
    """Why Nx2 points cannot determine a homography, or None if they can: fewer than 4,
    or all on (nearly) one line."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    if len(p) < 4:
        return f"{len(p)} point pair{'s' if len(p) != 1 else ''} given; a homography needs at least 4"
    sv = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
    if sv[1] < 1e-3 * sv[0] or sv[1] / math.sqrt(len(p)) < 0.5:
        return "the points lie on one line; spread them over the whole frame"
    return None


def fit_homography(points_ir: np.ndarray, points_vis: np.ndarray) -> np.ndarray:
    """Least-squares H_vis_from_ir (all points, normalised DLT + Levenberg-Marquardt)."""
    H, _ = cv2.findHomography(np.asarray(points_ir, np.float64).reshape(-1, 1, 2),
                              np.asarray(points_vis, np.float64).reshape(-1, 1, 2), 0)
    if H is None:
        raise ValueError("no homography fits these points")
    return normalized(H)


def residuals(H_vis_from_ir: np.ndarray, points_ir: np.ndarray, points_vis: np.ndarray) -> np.ndarray:
    """Per-point distance in visible pixels between the mapped IR points and the visible ones."""
    d = apply_homography(H_vis_from_ir, points_ir) - np.asarray(points_vis, np.float64).reshape(-1, 2)
    return np.hypot(d[:, 0], d[:, 1])


@dataclass(frozen=True)
class ParallaxModel:
    """Both cameras' intrinsics and the rig's extrinsics (see the module docstring).

    Attributes:
        K_ir, K_vis: 3x3 camera matrices in pixels.
        R_vis_from_ir: 3x3 rotation; t_vis_from_ir: translation in metres (3,).
        dist_ir, dist_vis: OpenCV's radial-tangential coefficients (k1, k2, p1, p2[, k3]) or None.
        distance_m: the working distance used when the rig names none (math.inf allowed).
    """

    K_ir: np.ndarray
    K_vis: np.ndarray
    R_vis_from_ir: np.ndarray
    t_vis_from_ir: np.ndarray
    dist_ir: np.ndarray | None = None
    dist_vis: np.ndarray | None = None
    distance_m: float = math.inf

    @property
    def distorted(self) -> bool:
        return any(d is not None and np.any(d != 0) for d in (self.dist_ir, self.dist_vis))

    def H_vis_from_ir(self, distance_m: float) -> np.ndarray:
        """The pinhole mapping for the plane at `distance_m` (distortion left out)."""
        return plane_homography(self.K_ir, self.K_vis, self.R_vis_from_ir, self.t_vis_from_ir, distance_m)


def plane_homography(K_ir: np.ndarray, K_vis: np.ndarray, R_vis_from_ir: np.ndarray,
                     t_vis_from_ir: np.ndarray, distance_m: float) -> np.ndarray:
    """H_vis_from_ir = K_vis (R + t n^T / d) K_ir^-1 for the plane z_ir = distance_m (metres,
    > 0, math.inf for far away)."""
    if not distance_m > 0:
        raise ValueError(f"distance_m: expected a distance > 0 m, got {distance_m}")
    n_over_d = np.array([0.0, 0.0, 0.0 if math.isinf(distance_m) else 1.0 / distance_m])
    M = np.asarray(R_vis_from_ir, np.float64) + np.outer(np.asarray(t_vis_from_ir, np.float64), n_over_d)
    return normalized(np.asarray(K_vis, np.float64) @ M @ np.linalg.inv(np.asarray(K_ir, np.float64)))


def parallax_px(model: ParallaxModel, distance_m: float, object_m: float) -> float:
    """How far (visible px, at the frame centre) an object at `object_m` lands from where the
    mapping for `distance_m` puts it."""
    centre = np.array([[model.K_ir[0, 2], model.K_ir[1, 2]]])
    a = apply_homography(model.H_vis_from_ir(distance_m), centre)
    b = apply_homography(model.H_vis_from_ir(object_m), centre)
    return float(np.hypot(*(a - b)[0]))


def undistorted_rays(K: np.ndarray, dist: np.ndarray | None, size: tuple[int, int],
                     H_pixel_from_grid: np.ndarray | None = None) -> np.ndarray:
    """HxWx2 normalised image coordinates (x/z, y/z) of every pixel of a camera of `size`
    (or of the pixel `H_pixel_from_grid` sends each grid pixel to)."""
    w, h = size
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([xs, ys], axis=-1).reshape(-1, 2)
    if H_pixel_from_grid is not None:
        pix = apply_homography(H_pixel_from_grid, pix)
    if dist is None:
        dist = np.zeros(5)
    rays = cv2.undistortPoints(pix.reshape(-1, 1, 2), K, dist,
                               criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9))
    return rays.reshape(h, w, 2)


def distort(K: np.ndarray, dist: np.ndarray | None, rays: np.ndarray) -> np.ndarray:
    """Pixels (...x2) of normalised coordinates (...x2) through OpenCV's radial-tangential model."""
    x, y = rays[..., 0], rays[..., 1]
    if dist is not None and np.any(dist != 0):
        k1, k2, p1, p2, k3 = (list(np.ravel(dist)) + [0.0] * 5)[:5]
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        x, y = (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
    return np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=-1)


def ir_pixels_of_vis_pixels(model: ParallaxModel, distance_m: float, vis_rays: np.ndarray) -> np.ndarray:
    """HxWx2 IR pixel (x, y) seen at each visible pixel, lens distortion included.

    `vis_rays` is `undistorted_rays(model.K_vis, model.dist_vis, vis_size)`, computed once per
    rig because it does not depend on the distance. Pixels whose ray points behind the IR
    camera get NaN."""
    n_over_d = [0.0, 0.0, 0.0 if math.isinf(distance_m) else 1.0 / distance_m]
    # Not normalised: the sign of the third coordinate tells in front from behind.
    H_ir_from_vis_n = np.linalg.inv(model.R_vis_from_ir + np.outer(model.t_vis_from_ir, n_over_d))
    q = vis_rays @ H_ir_from_vis_n[:, :2].T + H_ir_from_vis_n[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        rays_ir = np.where(q[..., 2:3] > 1e-9, q[..., :2] / q[..., 2:3], np.nan)
    return distort(model.K_ir, model.dist_ir, rays_ir)

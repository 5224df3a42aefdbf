"""Geometry: the pixel convention, the parallax model against real projection, and the checks
that keep an unusable mapping out of a calibration file."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from streamfuse.capture.scene import DEMO_H_VIS_FROM_IR
from streamfuse.register.geometry import (
    DISTANCE_PRESETS,
    ParallaxModel,
    apply_homography,
    corner_rms,
    fit_homography,
    frame_corners,
    homography_problem,
    ir_pixels_of_vis_pixels,
    parallax_px,
    plane_homography,
    points_problem,
    scaling,
    undistorted_rays,
)

K_IR = np.array([[686.2, 0, 319.5], [0, 686.2, 255.5], [0, 0, 1]])
K_VIS = np.array([[453.2, 0, 319.5], [0, 453.2, 239.5], [0, 0, 1]])
ANGLE = math.radians(1.5)
R = np.array([[math.cos(ANGLE), 0, math.sin(ANGLE)], [0, 1, 0], [-math.sin(ANGLE), 0, math.cos(ANGLE)]])
T = np.array([-0.06, 0.01, 0.002])   # the visible camera 6 cm to the IR camera's left


def project(K, R_cam, t_cam, X, dist=None):
    """Pixels of world points X (Nx3, IR camera frame) in a camera at (R_cam, t_cam)."""
    rvec, _ = cv2.Rodrigues(R_cam)
    pts, _ = cv2.projectPoints(X.reshape(-1, 1, 3), rvec, t_cam, K, dist if dist is not None else np.zeros(5))
    return pts.reshape(-1, 2)


def plane_points(distance_m, n=20, seed=0):
    """Points on the plane z = distance in the IR camera's frame, inside its field of view."""
    uv = np.random.default_rng(seed).uniform([20, 20], [620, 490], (n, 2))
    rays = np.c_[(uv - K_IR[:2, 2]) / K_IR[0, 0], np.ones(n)]
    return rays * distance_m, uv


@pytest.mark.parametrize("distance_m", [2.0, 10.0, 300.0])
def test_plane_homography_maps_points_on_that_plane_exactly(distance_m):
    X, uv_ir = plane_points(distance_m)
    uv_vis = project(K_VIS, R, T, X)
    H = plane_homography(K_IR, K_VIS, R, T, distance_m)
    assert np.abs(apply_homography(H, uv_ir) - uv_vis).max() < 1e-6


def test_infinity_is_the_rotation_alone_and_parallax_shrinks_with_distance():
    H_inf = plane_homography(K_IR, K_VIS, R, T, math.inf)
    np.testing.assert_allclose(H_inf, K_VIS @ R @ np.linalg.inv(K_IR) / (K_VIS @ R @ np.linalg.inv(K_IR))[2, 2])
    model = ParallaxModel(K_IR, K_VIS, R, T)
    # An object at 3 m seen with the mapping for 50 m: off by about f * baseline * (1/3 - 1/50).
    expected = 453.2 * np.hypot(0.06, 0.01) * (1 / 3 - 1 / 50)
    assert parallax_px(model, 50.0, 3.0) == pytest.approx(expected, rel=0.05)
    assert parallax_px(model, 10.0, 10.0) < 1e-9
    assert set(DISTANCE_PRESETS) == {"near", "mid", "far", "infinity"} and DISTANCE_PRESETS["infinity"] == math.inf


def test_distance_must_be_positive():
    with pytest.raises(ValueError, match="distance_m"):
        plane_homography(K_IR, K_VIS, R, T, 0.0)


def test_dense_map_with_lens_distortion_matches_projection():
    dist_ir = np.array([-0.30, 0.12, 0.001, -0.0005, 0.0])
    dist_vis = np.array([0.08, -0.05, 0.0, 0.0, 0.0])
    model = ParallaxModel(K_IR, K_VIS, R, T, dist_ir, dist_vis, 10.0)
    X, _ = plane_points(10.0, n=30, seed=3)
    uv_ir, uv_vis = project(K_IR, np.eye(3), np.zeros(3), X, dist_ir), project(K_VIS, R, T, X, dist_vis)
    ir_xy = ir_pixels_of_vis_pixels(model, 10.0, undistorted_rays(K_VIS, dist_vis, (640, 480)))
    # Look the map up at each (sub-pixel) visible point, bilinearly.
    looked_up = np.stack([cv2.remap(ir_xy[..., k].astype(np.float32), uv_vis[:, 0].astype(np.float32)[None],
                                    uv_vis[:, 1].astype(np.float32)[None], cv2.INTER_LINEAR)[0] for k in (0, 1)], -1)
    inside = (uv_vis[:, 0] > 1) & (uv_vis[:, 0] < 638) & (uv_vis[:, 1] > 1) & (uv_vis[:, 1] < 478)
    assert inside.sum() > 15
    assert np.abs(looked_up[inside] - uv_ir[inside]).max() < 0.05


def test_without_distortion_the_dense_map_is_the_homography():
    model = ParallaxModel(K_IR, K_VIS, R, T)
    ir_xy = ir_pixels_of_vis_pixels(model, 5.0, undistorted_rays(K_VIS, None, (64, 48)))
    H_ir_from_vis = np.linalg.inv(plane_homography(K_IR, K_VIS, R, T, 5.0))
    grid = np.stack(np.meshgrid(np.arange(64.0), np.arange(48.0)), -1).reshape(-1, 2)
    np.testing.assert_allclose(ir_xy.reshape(-1, 2), apply_homography(H_ir_from_vis, grid), atol=1e-6)


def test_scaling_follows_cv2_resize_pixel_centres():
    img = np.zeros((60, 80), np.float32)
    img[20, 30] = 1.0
    img = cv2.GaussianBlur(img, (0, 0), 3)
    small = cv2.resize(img, (40, 30), interpolation=cv2.INTER_AREA)
    m = cv2.moments(small)
    centre = apply_homography(scaling(0.5, 0.5), np.array([[30.0, 20.0]]))[0]
    assert np.hypot(m["m10"] / m["m00"] - centre[0], m["m01"] / m["m00"] - centre[1]) < 0.02


def test_corner_rms_is_zero_for_the_same_mapping_and_counts_pixels():
    assert corner_rms(DEMO_H_VIS_FROM_IR, DEMO_H_VIS_FROM_IR, (640, 512)) == 0.0
    shifted = np.array([[1, 0, 3], [0, 1, 4], [0, 0, 1]]) @ DEMO_H_VIS_FROM_IR
    assert corner_rms(shifted, DEMO_H_VIS_FROM_IR, (640, 512)) == pytest.approx(5.0)
    np.testing.assert_array_equal(frame_corners((640, 512))[2], [639, 511])


@pytest.mark.parametrize("H,message", [
    (np.zeros((3, 3)), "singular"),
    (np.array([[1, 0, 0], [2, 0, 0], [0, 0, 1.0]]), "singular"),
    (np.array([[-1, 0, 639], [0, 1, 0], [0, 0, 1.0]]), "mirrors"),
    (np.array([[1, 0, 0], [0, -1, 511], [0, 0, 1.0]]), "mirrors"),
    (np.array([[1, 0, 0], [0, 1, 0], [-0.004, 0, 1.0]]), "infinity"),
    (np.array([[1, 0, 0], [0, 1, np.nan], [0, 0, 1.0]]), "finite"),
])
def test_unusable_mappings_are_named(H, message):
    assert message in homography_problem(H, (640, 512))


def test_usable_mappings_pass():
    assert homography_problem(DEMO_H_VIS_FROM_IR, (640, 512)) is None
    assert homography_problem(-DEMO_H_VIS_FROM_IR, (640, 512)) is None   # the same mapping, scaled by -1


@pytest.mark.parametrize("points,message", [
    ([[0, 0], [10, 0], [0, 10]], "3 point pairs"),
    ([[0, 0], [10, 10], [20, 20], [30, 30], [40, 40.2]], "one line"),
])
def test_points_that_cannot_give_a_homography(points, message):
    assert message in points_problem(np.array(points, float))


def test_fit_recovers_a_homography_from_exact_points():
    ir = np.random.default_rng(1).uniform(0, [640, 512], (12, 2))
    H = fit_homography(ir, apply_homography(DEMO_H_VIS_FROM_IR, ir))
    assert points_problem(ir) is None
    assert corner_rms(H, DEMO_H_VIS_FROM_IR, (640, 512)) < 1e-3

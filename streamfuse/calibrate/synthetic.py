"""Synthetic calibration views: a heated board seen by both cameras of a rig with a known
mapping, for the tests and `streamfuse calibrate report`.

The board (a printed chessboard or circle grid on a metal plate, one square of margin) is
drawn once at high resolution and warped into each camera with the view's pose. The visible
camera sees it as printed, with a little noise. The thermal camera sees a board warmed
against the room: the printed parts emit more, so the polarity is inverted; the contrast is
a few hundred counts of a 16-bit range (a few kelvin), the optics blur it and the sensor adds
noise.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.calibrate.board import Pattern
from streamfuse.register.geometry import apply_homography

#: Board resolution: pixels per square of the drawn board.
SQUARE_PX = 32


def board_image(pattern: Pattern) -> np.ndarray:
    """HxW float32 board, 1.0 paper and 0.0 print, with one square of margin, slightly blurred
    so that warping it down does not alias."""
    far = board_points(pattern).max(axis=0) + 0.5
    cols, rows = (int(np.ceil(v / SQUARE_PX + 1.5)) for v in far)   # squares, margin included
    img = np.ones((rows * SQUARE_PX, cols * SQUARE_PX), np.float32)
    if pattern.kind == "chessboard":
        for r in range(1, rows - 1):
            for c in range(1, cols - 1):
                if (r + c) % 2 == 0:
                    img[r * SQUARE_PX:(r + 1) * SQUARE_PX, c * SQUARE_PX:(c + 1) * SQUARE_PX] = 0.0
    else:
        for x, y in board_points(pattern):
            cv2.circle(img, (round(x * 16), round(y * 16)), round(SQUARE_PX * 0.3 * 16), 0.0, -1, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def board_points(pattern: Pattern) -> np.ndarray:
    """Nx2 positions on the board image of the points a detector reports, row by row."""
    j, i = np.meshgrid(np.arange(pattern.cols), np.arange(pattern.rows))
    if pattern.kind == "chessboard":   # inner corners: between squares, half a pixel before
        x, y = (j + 2) * SQUARE_PX - 0.5, (i + 2) * SQUARE_PX - 0.5
    else:                              # circle centres: middles of squares
        x, y = (j + 1.5) * SQUARE_PX - 0.5, (i + 1.5) * SQUARE_PX - 0.5
        if pattern.kind == "acircles":
            x = x * 2 + (i % 2) * SQUARE_PX - SQUARE_PX
    return np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float64)


def render(board: np.ndarray, H_image_from_board: np.ndarray, size: tuple[int, int], background: float) -> np.ndarray:
    """The board as a camera of `size` sees it, float32, `background` around it."""
    return cv2.warpPerspective(board, H_image_from_board, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=background)


def random_pose(rng: np.random.Generator, board_size: tuple[int, int], vis_size: tuple[int, int],
                inside: list) -> np.ndarray:
    """H_vis_from_board of a board filling 30-55% of the visible width, turned up to 15
    degrees and tilted a little, whose corners lie inside every (H_cam_from_vis, size) given."""
    bw, bh = board_size
    corners = np.array([[0, 0], [bw - 1, 0], [bw - 1, bh - 1], [0, bh - 1]], np.float64)
    for _ in range(1000):
        scale = rng.uniform(0.30, 0.55) * vis_size[0] / bw
        angle = np.radians(rng.uniform(-15, 15))
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        tilt = np.array([[1, 0, 0], [0, 1, 0], [rng.uniform(-3e-4, 3e-4), rng.uniform(-3e-4, 3e-4), 1]])
        centre = np.array([-bw / 2, -bh / 2])
        G = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ tilt @ np.array([[1, 0, centre[0]], [0, 1, centre[1]],
                                                                            [0, 0, 1]])
        G[:2, 2] += rng.uniform(0.2, 0.8, 2) * vis_size
        if all(_within(apply_homography(H @ G, corners), size, 8) for H, size in inside):
            return G
    raise ValueError("no board pose fits inside both frames; the cameras barely overlap")


def _within(points: np.ndarray, size: tuple[int, int], margin: float) -> bool:
    return bool(np.all(points >= margin) and np.all(points[:, 0] <= size[0] - 1 - margin)
                and np.all(points[:, 1] <= size[1] - 1 - margin))


def synthetic_pairs(pattern: Pattern, H_vis_from_ir: np.ndarray, ir_size: tuple[int, int],
                    vis_size: tuple[int, int], views: int = 6, seed: int = 0, ir_blur_px: float = 1.5,
                    ir_contrast: float = 300, ir_noise: float = 6) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`views` (name, IR gray16, visible BGR) pairs of a heated board (see the module docstring):
    `ir_contrast` counts between print and room (300: 3 K for a camera with 10 mK counts),
    `ir_noise` counts of sensor noise (6: 60 mK NETD), `ir_blur_px` optics blur (sigma)."""
    rng = np.random.default_rng(seed)
    board = board_image(pattern)
    plate = np.ones_like(board)
    H_ir_from_vis = np.linalg.inv(H_vis_from_ir)
    pairs = []
    for k in range(views):
        G = random_pose(rng, (board.shape[1], board.shape[0]), vis_size,
                        [(np.eye(3), vis_size), (H_ir_from_vis, ir_size)])
        vis = render(board, G, vis_size, 0.55) * 200 + 30
        vis = np.clip(vis[..., None] * [0.95, 1.0, 1.05] + rng.normal(0, 2.0, vis.shape + (3,)), 0, 255)
        # Print warmer than the plate's paper, the plate warmer than the room.
        H_ir_from_board = H_ir_from_vis @ G
        ir = render(plate, H_ir_from_board, ir_size, 0.0) * (1.0 - 0.65 * render(board, H_ir_from_board, ir_size, 1.0))
        ir = cv2.GaussianBlur(ir, (0, 0), ir_blur_px) * ir_contrast + 29500
        ir = np.clip(ir + rng.normal(0, ir_noise, ir.shape), 0, 65535)
        pairs.append((f"view{k:02d}", ir.astype(np.uint16), vis.astype(np.uint8)))
    return pairs

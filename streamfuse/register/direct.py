"""Direct cross-modal refinement: Gauss-Newton on the correlation of orientation fields.

The mapping is refined so that the IR image's orientation field (crossmodal.orientation_field),
computed *after* warping the IR image into the visible frame, matches the visible one in the
least-squares sense up to a gain (the Lucas-Kanade / ECC idea, on a two-channel polarity-blind
field instead of intensities, which is what makes it work across modalities). Each step
re-warps the IR image, so the field always has the visible grid's footprint.

Coarse to fine with a motion model that grows with the resolution: a similarity (shift,
rotation, scale) on the coarsest level, affine next, a full homography on the finest, so
that a level with few pixels cannot drift into a wild perspective.

Convention: a small correction D (3x3, near the identity) acts in the visible frame:
the IR content that showed at D x shows at x afterwards, i.e. H_new = D^-1 H.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.register.geometry import normalized, scaling

#: Generators of the corrections, in coordinates centred on the image and scaled by its
#: width (so the columns of the Jacobian weigh alike).
_E = np.zeros((8, 3, 3))
for _k, (_r, _c) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]):
    _E[_k, _r, _c] = 1.0
GENERATORS = {
    "similarity": np.stack([_E[0] + _E[4], _E[3] - _E[1], _E[2], _E[5]]),
    "affine": _E[:6],
    "homography": _E,
}
#: Iterations per level and the step (in level pixels) at which a level has converged.
ITERATIONS, CONVERGED_PX = 30, 0.02
#: Pixels at the warp's edge left out (the replicated border is no edge of the scene).
EDGE_MARGIN_PX = 4


def refine_direct(g_ir, ir_valid, g_vis, H_vis_from_ir, plan, field) -> tuple[np.ndarray, float]:
    """(H_vis_from_ir refined, correlation on the finest level in -1..1).

    Args:
        g_ir, g_vis: float32 gray images; ir_valid: HxW bool, IR pixels that are scene.
        plan: (width of the level's visible grid in pixels, motion model name) per level, coarse
            first; a level is never finer than the visible image itself.
        field: image -> HxWxC float32 feature map (the orientation field).
    """
    H, rho = normalized(H_vis_from_ir), -1.0
    for width, model in plan:
        H, rho = _level(g_ir, ir_valid, g_vis, H, min(1.0, width / g_vis.shape[1]), GENERATORS[model], field)
    return H, rho


def _level(g_ir, ir_valid, g_vis, H, factor, generators, field):
    v, S = resize(g_vis, factor)
    vh, vw = v.shape
    s = np.sqrt(abs(np.linalg.det(H[:2, :2])))   # visible px per IR px
    i, S_i = resize(g_ir, min(1.0, factor * s))
    f_vis = field(v)
    vis_energy = float((f_vis * f_vis).sum())
    # Normalised coordinates u = (x - c) / w: the corrections act on them.
    N = np.array([[1 / vw, 0, -(vw - 1) / (2 * vw)], [0, 1 / vw, -(vh - 1) / (2 * vw)], [0, 0, 1]])
    ys, xs = np.mgrid[0:vh, 0:vw].astype(np.float64)
    u, w_ = (xs - (vw - 1) / 2) / vw, (ys - (vh - 1) / 2) / vw
    H_l = S @ H @ np.linalg.inv(S_i)
    valid_i = ir_valid.astype(np.uint8)
    if valid_i.shape != i.shape:
        valid_i = cv2.resize(valid_i, (i.shape[1], i.shape[0]), interpolation=cv2.INTER_NEAREST)
    kernel = np.ones((2 * EDGE_MARGIN_PX + 1,) * 2, np.uint8)

    def evaluate(H_l):
        warped = cv2.warpPerspective(i, H_l, (vw, vh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.erode(cv2.warpPerspective(valid_i, H_l, (vw, vh), flags=cv2.INTER_NEAREST), kernel) > 0
        if valid.sum() < 0.1 * valid.size:
            return -1.0, None, valid
        f_ir = field(warped)
        a, b = f_vis[valid], f_ir[valid]
        # The visible field's energy is taken over the whole frame, not the overlap: a mapping
        # cannot score by shrinking the overlap onto a few strong edges.
        return float((a * b).sum() / max(np.sqrt(vis_energy * (b * b).sum()), 1e-12)), f_ir, valid

    rho, f_ir, valid = evaluate(H_l)
    step = 1.0
    for _ in range(ITERATIONS):
        if f_ir is None:
            break
        p = _step(f_vis, f_ir, valid, u, w_, vw, generators)
        if p is None:
            break
        for _ in range(4):   # a step that lowers the correlation is halved, then given up
            D = np.linalg.inv(N) @ (np.eye(3) + np.tensordot(step * p, generators, 1)) @ N
            candidate = np.linalg.inv(D) @ H_l
            rho_c, f_c, valid_c = evaluate(candidate)
            if rho_c > rho:
                break
            step *= 0.5
        else:
            break
        H_l, rho, f_ir, valid = candidate, rho_c, f_c, valid_c
        moved = np.abs(step * p).max() * vw
        step = min(1.0, step * 2)
        if moved < CONVERGED_PX:
            break
    return normalized(np.linalg.inv(S) @ H_l @ S_i), rho


def _step(f_vis, f_ir, valid, u, w_, vw, generators):
    """The Gauss-Newton correction (one coefficient per generator), or None."""
    a, b = f_vis[valid], f_ir[valid]
    gain = float((a * b).sum() / max((b * b).sum(), 1e-12))
    if gain <= 0:
        return None
    # d/dp of f_ir(D x) at D = I, per generator: grad f_ir . (G x~ projected), in level px.
    gx = cv2.Sobel(f_ir, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)[valid]
    gy = cv2.Sobel(f_ir, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)[valid]
    uu, ww = u[valid], w_[valid]
    cols = []
    for G in generators:
        du = G[0, 0] * uu + G[0, 1] * ww + G[0, 2] - uu * (G[2, 0] * uu + G[2, 1] * ww)
        dw = G[1, 0] * uu + G[1, 1] * ww + G[1, 2] - ww * (G[2, 0] * uu + G[2, 1] * ww)
        cols.append((gx * du[:, None] + gy * dw[:, None]).ravel() * (vw * gain))   # u is in widths
    J = np.stack(cols, 1)
    try:
        return np.linalg.solve(J.T @ J + 1e-6 * np.eye(len(cols)), J.T @ (a - gain * b).ravel())
    except np.linalg.LinAlgError:
        return None


def resize(image: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """`image` resized by about `factor`, and H_resized_from_image for the exact new size."""
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == (w, h):
        return image, np.eye(3)
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scaling(size[0] / w, size[1] / h)

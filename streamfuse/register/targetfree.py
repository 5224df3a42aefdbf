"""Target-free registration: the IR-to-visible homography from an ordinary scene.

Thermal and visible images share almost no intensities (a warm wall is bright in IR and may be
dark in visible light), but they share edges: outlines of objects, the road's border, window
frames. So both images become edge maps (gradient magnitude, blind to polarity), and alignment
maximises the enhanced correlation coefficient (ECC, OpenCV's `findTransformECC`) between
them, coarse to fine over a pyramid: at each level the IR edges are first warped with the
estimate so far and ECC solves only the remaining correction (affine on the coarse levels,
a full homography on the two finest). Each level's edges are computed from that level's
image, so both modalities are compared at the same footprint and smoothness.

Without a starting point, a search over scale, aspect and offset (normalised cross-correlation
of small edge maps) proposes a few candidates; street scenes repeat themselves at other scales,
so each candidate is refined on the coarse levels, the two whose edges then correlate best on
a common grid are refined to the end, and the more confident one wins. Cameras in a rig are
upright, so rotation is not searched.

The last step works on blocks: the visible frame is cut into overlapping blocks, each block's
edges are matched (normalised cross-correlation, sub-pixel peak) against the IR edges warped
with the current estimate within a few pixels, and a homography is fitted to the block
displacements with RANSAC. Blocks whose content differs between the modalities (a lamp's
glow, a shadow, a reflection) fall out as outliers instead of pulling the whole fit.

The confidence is the share of the matched blocks that agree with the fitted homography,
scaled down when fewer than CONFIDENT_BLOCKS blocks agree: a wrong or washed-out alignment
matches blocks that point every which way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from streamfuse.register.geometry import (
    apply_homography,
    frame_corners,
    normalized,
    scaling,
)

#: Width in pixels of the smallest pyramid level and of the global search images.
COARSE_WIDTH = 160
#: Width of the visible grid on which candidates of the global search are compared.
EVAL_WIDTH = 160
#: The IR frame's width in visible frame widths: the range the global search covers.
SEARCH_FRACTIONS = (0.4, 2.5)
SEARCH_ASPECTS = (0.9, 1.0, 1.11)
#: Candidates of the global search refined on the coarse levels, and of those, the best
#: (by edge correlation) refined to the end, the most confident of which wins.
SEARCH_KEEP, FINISH_BEST = 4, 2
#: Share of the visible frame a candidate's IR frame must cover to be compared at all.
MIN_OVERLAP = 0.25
#: Blur (pixels, at every level) before taking gradients.
EDGE_SIGMA = 1.0
#: Block matching: block side and search radius (pixels at the finest level), least edge
#: contrast (std of the edge map) a block needs, least peak correlation, RANSAC threshold.
BLOCK_PX, BLOCK_RADIUS_PX = 48, 6
BLOCK_MIN_STD, BLOCK_MIN_NCC, BLOCK_RANSAC_PX = 0.05, 0.3, 1.0
#: Blocks agreeing with the fit at which the confidence is no longer scaled down.
CONFIDENT_BLOCKS = 30


@dataclass(frozen=True)
class Alignment:
    """A target-free estimate.

    Attributes:
        H_vis_from_ir: the estimated mapping.
        correlation: ECC correlation of the two edge maps after the pyramid (-1..1; NaN
            when the pyramid was skipped).
        confidence: 0..1: the share of matched blocks agreeing with the mapping, scaled down
            below CONFIDENT_BLOCKS agreeing blocks; 0 when block matching found too little.
        blocks: how many blocks agree with the mapping.
    """

    H_vis_from_ir: np.ndarray
    correlation: float
    confidence: float
    blocks: int = 0


def gray_float(image: np.ndarray) -> np.ndarray:
    """HxW float32 in about 0..1 of an IR (gray8/gray16) or visible (BGR) image, stretched
    between its 1st and 99th percentiles so that both modalities weigh alike.

    A black border (exact zeros connected to the frame's edge, as left by an earlier warp or
    a letterboxed recording) is not part of the scene: it is filled with the mean of the rest,
    so that its outline is a weak edge instead of the strongest one."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    blank = _black_border(gray)
    gray = gray.astype(np.float32)
    lo, hi = np.percentile(gray[~blank] if blank.any() else gray[::4, ::4], (1, 99))
    gray = (gray - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))
    if blank.any():
        gray[blank] = gray[~blank].mean()
    return gray


def _black_border(gray: np.ndarray) -> np.ndarray:
    """HxW bool: zero pixels connected to the frame's edge."""
    zeros = (gray == 0).astype(np.uint8)
    if not zeros.any():
        return zeros.astype(bool)
    _, labels = cv2.connectedComponents(zeros, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    blank = np.isin(labels, edge[edge > 0])
    return blank if blank.mean() < 0.9 else np.zeros_like(blank)   # a black frame is a picture of black


def edge_map(gray: np.ndarray) -> np.ndarray:
    """HxW float32 gradient magnitude, square-rooted so that the strongest edges of one
    modality (a sunlit car, a hot engine) do not drown the rest."""
    g = cv2.GaussianBlur(gray, (0, 0), EDGE_SIGMA)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    return np.sqrt(mag * np.float32(1.0 / max(float(np.percentile(mag[::2, ::2], 99)), 1e-6)))


def estimate(ir: np.ndarray, vis: np.ndarray, H_init: np.ndarray | None = None,
             near_px: float | None = None) -> Alignment:
    """H_vis_from_ir aligning `ir` onto `vis`, refined from `H_init` (or found by a search).

    With `near_px`, `H_init` is known to be within about that many visible pixels (live
    refinement of a calibrated rig): the pyramid is skipped and only blocks are matched, which
    also holds on dim night scenes where the coarse levels would wander off."""
    g_ir, g_vis = gray_float(ir), gray_float(vis)
    if H_init is not None and near_px is not None:
        H, agreeing, confidence = _block_stage(g_ir, g_vis, normalized(H_init), 3, near_px)
        return Alignment(H, math.nan, confidence, agreeing)
    if H_init is not None:
        return refine(g_ir, g_vis, normalized(H_init))
    quick = [refine(g_ir, g_vis, H, finest_width=EVAL_WIDTH) for H in search(g_ir, g_vis)]
    quick.sort(key=lambda a: -score(g_ir, g_vis, a.H_vis_from_ir))
    finished = [refine(g_ir, g_vis, a.H_vis_from_ir) for a in quick[:FINISH_BEST]]
    return max(finished, key=lambda a: a.confidence)


def search(g_ir: np.ndarray, g_vis: np.ndarray, keep: int = SEARCH_KEEP) -> list[np.ndarray]:
    """The `keep` most likely coarse H_vis_from_ir (scale, aspect and offset), best first, one
    per scale, by normalised cross-correlation of edge maps about COARSE_WIDTH pixels wide."""
    iw, vw = g_ir.shape[1], g_vis.shape[1]
    v_gray, S_v = _resize(g_vis, COARSE_WIDTH / vw, COARSE_WIDTH / vw)
    v_small = edge_map(v_gray)
    found = []
    for frac in np.geomspace(*SEARCH_FRACTIONS, 24):
        per_scale = []
        for aspect in SEARCH_ASPECTS:
            s = frac * vw / iw  # visible px per IR px
            i_gray, S_i = _resize(g_ir, S_v[0, 0] * s, S_v[1, 1] * s * aspect)
            i_small = edge_map(i_gray)
            H_small = _best_offset(i_small, v_small)
            per_scale.append((_correlation(v_small, i_small, np.linalg.inv(H_small), MIN_OVERLAP),
                              np.linalg.inv(S_v) @ H_small @ S_i))
        found.append(max(per_scale, key=lambda c: c[0]))
    found.sort(key=lambda c: -c[0])
    return [normalized(H) for _, H in found[:keep]]


def score(g_ir: np.ndarray, g_vis: np.ndarray, H_vis_from_ir: np.ndarray) -> float:
    """Edge correlation of a mapping on a visible grid EVAL_WIDTH wide, both edge maps taken
    after resampling (so candidates of any scale compare fairly); -1 under MIN_OVERLAP."""
    v, S_v = _resize(g_vis, EVAL_WIDTH / g_vis.shape[1], EVAL_WIDTH / g_vis.shape[1])
    s = math.sqrt(abs(np.linalg.det(normalized(H_vis_from_ir)[:2, :2]))) * S_v[0, 0]
    i, S_i = _resize(g_ir, min(1.0, s), min(1.0, s))   # no finer than the grid it lands on
    W = S_i @ np.linalg.inv(H_vis_from_ir) @ np.linalg.inv(S_v)
    size = (v.shape[1], v.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(i, W, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.warpPerspective(np.ones(i.shape, np.uint8), W, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    valid = cv2.erode(valid, np.ones((5, 5), np.uint8)) > 0
    return _masked_corr(edge_map(v), edge_map(warped), valid, MIN_OVERLAP)


def refine(g_ir: np.ndarray, g_vis: np.ndarray, H_vis_from_ir: np.ndarray,
           finest_width: int | None = None) -> Alignment:
    """ECC over a pyramid of edge maps starting from `H_vis_from_ir`, then two rounds of block
    matching at the finest level. With `finest_width`, a quick look: ECC only, stopping at the
    level whose visible image is about that wide."""
    s = math.sqrt(abs(np.linalg.det(normalized(H_vis_from_ir)[:2, :2])))  # visible px per IR px
    b0, a0 = min(1.0, 1.0 / s), min(1.0, s)   # finest level: both at the coarser footprint
    levels = max(1, int(math.log2(max(g_vis.shape[1] * b0 / COARSE_WIDTH, 1.0))) + 1)
    last = 0 if finest_width is None else \
        max(0, min(levels - 1, round(math.log2(max(g_vis.shape[1] * b0 / finest_width, 1.0)))))
    H_ir_from_vis = np.linalg.inv(H_vis_from_ir)
    for level in reversed(range(last, levels)):
        f = 0.5 ** level
        (g_ir_l, S_i), (g_vis_l, S_v) = _resize(g_ir, a0 * f, a0 * f), _resize(g_vis, b0 * f, b0 * f)
        i_l, v_l = edge_map(g_ir_l), edge_map(g_vis_l)
        W = S_i @ H_ir_from_vis @ np.linalg.inv(S_v)
        W, rho = _ecc(v_l, i_l, W, cv2.MOTION_HOMOGRAPHY if level <= 1 else cv2.MOTION_AFFINE)
        H_ir_from_vis = np.linalg.inv(S_i) @ W @ S_v
    H = normalized(np.linalg.inv(H_ir_from_vis))
    if finest_width is not None:
        return Alignment(H, rho, 0.0)
    H, agreeing, confidence = _block_stage(g_ir, g_vis, H, 2)
    return Alignment(H, rho, confidence, agreeing)


def _block_stage(g_ir: np.ndarray, g_vis: np.ndarray, H_vis_from_ir: np.ndarray, rounds: int,
                 radius_vis_px: float = 0.0) -> tuple[np.ndarray, int, float]:
    """`rounds` of block matching on the finest level's grids, searching BLOCK_RADIUS_PX or
    `radius_vis_px` (visible pixels) if larger: (H_vis_from_ir, agreeing blocks, confidence)."""
    s = math.sqrt(abs(np.linalg.det(normalized(H_vis_from_ir)[:2, :2])))
    b0, a0 = min(1.0, 1.0 / s), min(1.0, s)
    (g_ir_l, S_i), (g_vis_l, S_v) = _resize(g_ir, a0, a0), _resize(g_vis, b0, b0)
    radius = max(BLOCK_RADIUS_PX, math.ceil(radius_vis_px * b0) + 2)
    H_l = S_v @ H_vis_from_ir @ np.linalg.inv(S_i)   # level-visible from level-IR
    agreeing, confidence = 0, 0.0
    for _ in range(rounds):
        fit = _match_blocks(g_ir_l, g_vis_l, H_l, radius)
        if fit is None:
            break
        H_l, agreeing, confidence = fit
    return normalized(np.linalg.inv(S_v) @ H_l @ S_i), agreeing, confidence


def _match_blocks(g_ir: np.ndarray, g_vis: np.ndarray, H_vis_from_ir: np.ndarray, radius: int
                  ) -> tuple[np.ndarray, int, float] | None:
    """(refitted H_vis_from_ir, agreeing blocks, confidence), or None with too few blocks."""
    vh, vw = g_vis.shape
    warped = cv2.warpPerspective(g_ir, H_vis_from_ir, (vw, vh), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.warpPerspective(np.ones(g_ir.shape, np.uint8), H_vis_from_ir, (vw, vh), flags=cv2.INTER_NEAREST)
    e_vis, e_ir = edge_map(g_vis), edge_map(warped)
    B, R = BLOCK_PX, radius
    at_vis, at_warped = [], []
    for y in range(R, vh - B - R + 1, B // 2):
        for x in range(R, vw - B - R + 1, B // 2):
            block, area = e_vis[y:y + B, x:x + B], e_ir[y - R:y + B + R, x - R:x + B + R]
            if not valid[y - R:y + B + R, x - R:x + B + R].all():
                continue
            if block.std() < BLOCK_MIN_STD or area.std() < BLOCK_MIN_STD:
                continue
            offset = _subpixel_peak(cv2.matchTemplate(area, block, cv2.TM_CCOEFF_NORMED))
            if offset is not None:
                centre = np.array([x + (B - 1) / 2, y + (B - 1) / 2])
                at_vis.append(centre)
                at_warped.append(centre + offset - R)
    if len(at_vis) < 8:
        return None
    # The visible content at c shows in the warped IR at c + d, i.e. at IR pixel H^-1 (c + d).
    at_ir = apply_homography(np.linalg.inv(H_vis_from_ir), np.array(at_warped))
    H, inliers = cv2.findHomography(at_ir, np.array(at_vis), cv2.RANSAC, BLOCK_RANSAC_PX,
                                    maxIters=2000, confidence=0.999)
    if H is None:
        return None
    agreeing = int(inliers.sum())
    confidence = agreeing / len(at_vis) * min(1.0, agreeing / CONFIDENT_BLOCKS)
    return normalized(H), agreeing, confidence


def _subpixel_peak(r: np.ndarray) -> np.ndarray | None:
    """(dx, dy) of the correlation peak, refined by a parabola through its neighbours; None if
    the peak is weak or on the border of the search area."""
    _, peak, _, (px, py) = cv2.minMaxLoc(r)
    if peak < BLOCK_MIN_NCC or not (0 < px < r.shape[1] - 1 and 0 < py < r.shape[0] - 1):
        return None
    cx = r[py, px - 1] - 2 * peak + r[py, px + 1]
    cy = r[py - 1, px] - 2 * peak + r[py + 1, px]
    if cx >= 0 or cy >= 0:
        return None
    return np.array([px + 0.5 * (r[py, px - 1] - r[py, px + 1]) / cx, py + 0.5 * (r[py - 1, px] - r[py + 1, px]) / cy])


def _best_offset(i_small: np.ndarray, v_small: np.ndarray) -> np.ndarray:
    """H_v_from_i: the offset of the normalised cross-correlation peak of the smaller image's
    centre inside the larger."""
    ir_inside = i_small.size <= v_small.size
    small, big = (i_small, v_small) if ir_inside else (v_small, i_small)
    mh, mw = small.shape[0] // 8, small.shape[1] // 8
    templ = small[mh:small.shape[0] - mh, mw:small.shape[1] - mw]
    if templ.shape[0] > big.shape[0] or templ.shape[1] > big.shape[1] or min(templ.shape) < 8:
        return np.eye(3)
    _, _, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(big, templ, cv2.TM_CCOEFF_NORMED))
    # templ pixel (u, v) is small pixel (u + mw, v + mh) and big pixel (u + x, v + y).
    H_big_from_small = np.array([[1, 0, x - mw], [0, 1, y - mh], [0, 0, 1]], np.float64)
    return H_big_from_small if ir_inside else np.linalg.inv(H_big_from_small)


def _ecc(template: np.ndarray, image: np.ndarray, W: np.ndarray, motion: int) -> tuple[np.ndarray, float]:
    """One ECC run; W maps template pixels to image pixels. The image is first warped by W, so
    that ECC only solves a small correction from the identity (an affine one on the coarse
    levels, which cannot drift into a wild perspective). Keeps W if ECC does not converge."""
    W = normalized(W)
    size = (template.shape[1], template.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    pre = cv2.warpPerspective(image, W, size, flags=flags)
    mask = cv2.warpPerspective(np.full(image.shape, 255, np.uint8), W, size,
                               flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))   # the warp's edge is not an edge of the scene
    if np.count_nonzero(mask) < 64:
        return W, -1.0
    delta = np.eye(3, dtype=np.float32)[:2 if motion == cv2.MOTION_AFFINE else 3]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-5)
    try:
        rho, delta = cv2.findTransformECC(template, pre, delta, motion, criteria, mask, 3)
    except cv2.error:   # "the algorithm stopped before its convergence": keep the start
        return W, _correlation(template, image, W)
    D = np.vstack([delta, [0, 0, 1]]) if delta.shape[0] == 2 else delta
    return W @ D.astype(np.float64), float(rho)


def _correlation(template: np.ndarray, image: np.ndarray, W_image_from_template: np.ndarray,
                 min_overlap: float = 0.0) -> float:
    """Correlation coefficient of `template` and `image` warped onto it, over the overlap."""
    size = (template.shape[1], template.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(image, W_image_from_template, size, flags=flags)
    valid = cv2.warpPerspective(np.ones_like(image), W_image_from_template, size, flags=flags) > 0.999
    return _masked_corr(template, warped, valid, min_overlap)


def _masked_corr(a: np.ndarray, b: np.ndarray, valid: np.ndarray, min_overlap: float) -> float:
    """Correlation coefficient of a and b where `valid`; -1 if that is under `min_overlap` of a."""
    if valid.sum() < max(64, min_overlap * valid.size):
        return -1.0
    x, y = a[valid].astype(np.float64), b[valid].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / max(math.sqrt(float((x * x).sum() * (y * y).sum())), 1e-12))


def _resize(image: np.ndarray, fx: float, fy: float) -> tuple[np.ndarray, np.ndarray]:
    """`image` resized by about (fx, fy), and H_resized_from_image for the exact new size."""
    h, w = image.shape[:2]
    size = (max(1, round(w * fx)), max(1, round(h * fy)))
    if size == (w, h):
        return image, np.eye(3)
    interp = cv2.INTER_AREA if fx < 1 and fy < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scaling(size[0] / w, size[1] / h)


def combine(estimates: list[Alignment], ir_size: tuple[int, int]) -> np.ndarray:
    """One H_vis_from_ir from several pairs' estimates: the median of where each sends the IR
    frame's corners (robust to one bad pair), fitted exactly through those four points."""
    corners = frame_corners(ir_size)
    mapped = np.median([apply_homography(e.H_vis_from_ir, corners) for e in estimates], axis=0)
    return normalized(cv2.getPerspectiveTransform(corners.astype(np.float32), mapped.astype(np.float32)))

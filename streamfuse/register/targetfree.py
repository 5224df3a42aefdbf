"""Target-free registration: the IR-to-visible homography from an ordinary scene.

Thermal and visible images share almost no intensities (a warm wall is bright in IR and may be
dark in visible light) and not even edge strengths, but where both show an edge it runs the
same way. The estimator (crossmodal.py, direct.py) compares dense, polarity-blind orientation
fields and refines the mapping directly, coarse to fine, from two starts: the given mapping and
the same moved by the best-correlating shift.

Without a starting point, a search over scale, aspect and offset (normalised cross-correlation
of small edge maps) proposes a few candidates; street scenes repeat themselves at other scales,
so each candidate is refined and the one whose orientation fields then correlate best wins.
Cameras in a rig are upright, so rotation is not searched.

An estimate is *accepted* only when it is better than its start by two similarities the fit did
not optimise (mutual information of intensities, correlation of gradient magnitudes, over the
pixels both mappings cover), the two starts agree, and, from a given start, the edge correlation
rose by more than its noise (MIN_EDGE_GAIN); otherwise it is refused, with the reason, and the
start is kept. So an accepted estimate does not make a pair worse than the mapping it started from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from streamfuse.register import crossmodal
from streamfuse.register.direct import VisibleLevels
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
#: Candidates of the global search refined.
SEARCH_KEEP = 4
#: Share of the visible frame a candidate's IR frame must cover to be compared at all.
MIN_OVERLAP = 0.25
#: Blur (pixels) before taking gradients for the search.
EDGE_SIGMA = 1.0
#: Least edge correlation (held back, after alignment) of an accepted estimate.
MIN_EDGE_CORRELATION = 0.15
#: Least rise of the held-back edge correlation over a given start for an estimate to replace
#: it. Started at the best homography of the shared SuperFusion pairs, the estimator's moves
#: (which made 13 of 22 pairs 0.5-7 px worse) rose it by 0.006-0.035: the measure's noise
#: around a good mapping. Real corrections of those pairs from no correction rose it by
#: 0.108-0.323, and of a 5 px drift mostly by 0.07-0.17 (docs/benchmarks.md).
MIN_EDGE_GAIN = 0.04
#: Search radius (visible pixels) around a given start when none is stated, and around each
#: candidate of the global search.
START_RADIUS_PX, CANDIDATE_RADIUS_PX = 40.0, 12.0
#: Most distance (visible px, mean over the frame) between the results of the two starts.
AGREE_PX = 4.0


@dataclass(frozen=True)
class Alignment:
    """A target-free estimate.

    Attributes:
        H_vis_from_ir: the estimated mapping (the start when refused).
        correlation: of the orientation fields after refinement (-1..1).
        confidence: 0..1: the correlation when accepted, 0 when refused.
        reason: why it was refused and what to try; "" when accepted.
        gain: (mutual information, edge correlation) of the result minus those of the start.
    """

    H_vis_from_ir: np.ndarray
    correlation: float
    confidence: float
    reason: str = ""
    gain: tuple[float, float] = (0.0, 0.0)

    @property
    def accepted(self) -> bool:
        return not self.reason


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


def scene_mask(image: np.ndarray) -> np.ndarray:
    """HxW bool: the pixels that are scene, not a black border (see gray_float)."""
    return ~_black_border(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image)


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

    `near_px`: how far (visible pixels) `H_init` may be off (START_RADIUS_PX if not given);
    live refinement of a calibrated rig gives a few pixels. A refused estimate keeps the start."""
    g_ir, g_vis, valid = gray_float(ir), gray_float(vis), scene_mask(ir)
    levels = VisibleLevels(g_vis, crossmodal.orientation_field)   # shared by every start
    if H_init is not None:
        H0 = normalized(H_init)
        return judge(crossmodal.align(g_ir, valid, g_vis, H0, near_px or START_RADIUS_PX, levels=levels), H0)
    quick = [crossmodal.align(g_ir, valid, g_vis, H, CANDIDATE_RADIUS_PX, crossmodal.QUICK_PLAN, levels)
             for H in search(g_ir, g_vis)]
    best = max(quick, key=lambda f: f.correlation)
    return judge(crossmodal.align(g_ir, valid, g_vis, best.H_vis_from_ir, CANDIDATE_RADIUS_PX, levels=levels), None)


def judge(fit: crossmodal.Fit, H_start: np.ndarray | None) -> Alignment:
    """Accept or refuse a fit (see the module docstring); `H_start` None: there was no start
    to fall back to, and a refused estimate still carries the fit's mapping."""
    gain = (fit.nmi[1] - fit.nmi[0], fit.edges[1] - fit.edges[0])
    reason = ""
    if fit.edges[1] < MIN_EDGE_CORRELATION:
        reason = (f"too little structure both cameras see (edge correlation {fit.edges[1]:.2f} < "
                  f"{MIN_EDGE_CORRELATION}); use a scene with buildings, road edges or people at the working distance")
    elif fit.spread > AGREE_PX:
        reason = (f"ambiguous: two starts ended {fit.spread:.0f} px apart; use a scene with less repetitive "
                  "structure, or give a closer starting mapping (--init)")
    elif gain[0] <= 0 or gain[1] <= 0:
        reason = (f"not better than the start on held-back measures (mutual information {gain[0]:+.3f}, edge "
                  f"correlation {gain[1]:+.3f}); give a closer starting mapping (--init) or calibrate with a board")
    elif H_start is not None and gain[1] < MIN_EDGE_GAIN:
        reason = (f"kept the start: the fit raised the held-back edge correlation only {gain[1]:+.3f} (< "
                  f"{MIN_EDGE_GAIN}), within its noise around a good mapping, so the start is likely right; if the rig "
                  "was knocked, search without it (move the calibration file aside) or calibrate with a board")
    if reason:
        H = fit.H_vis_from_ir if H_start is None else H_start
        return Alignment(H, fit.correlation, 0.0, reason, gain)
    return Alignment(fit.H_vis_from_ir, fit.correlation, float(np.clip(fit.correlation, 0, 1)), "", gain)


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

"""Cross-modal alignment near a starting mapping: dense orientation fields, refined directly.

Thermal and visible images disagree on intensity and even on edge strength (a warm wall is a
strong edge in IR and none in visible light; a painted line the reverse), but where both show
an edge it runs the same way. So each image becomes a dense *orientation field*: the
structure tensor's doubled-angle vector (gx^2 - gy^2, 2 gx gy), smoothed (so nearby edges
reinforce instead of cancelling) and scaled to unit length times a compressed edge strength.
Doubling the angle makes it blind to polarity (dark-to-bright and bright-to-dark edges agree),
which is what differs most between the modalities; it is the idea of RIFT's and HOPC's
orientation descriptors, used densely.

`align` refines from two starts, the given mapping and the same moved by the shift at which the
fields correlate best (`shift_search`, normalised cross-correlation within a radius), each by
direct coarse-to-fine refinement of the field correlation (`direct.refine_direct`: similarity,
then affine, then homography). The two results must agree (`Fit.spread`).

Whether a result is better than the start is judged by *held-back* similarities, ones the fit
did not optimise: the normalised mutual information of the two images' intensities and the
correlation of their gradient magnitudes, taken on the pixels both mappings cover (so neither
wins by covering less).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from streamfuse.register.direct import VisibleLevels, refine_direct, resize
from streamfuse.register.geometry import apply_homography, normalized

#: Blur before gradients and the smoothing of the structure tensor (pixels of the level).
GRADIENT_SIGMA, TENSOR_SIGMA = 1.0, 2.0
#: Width of the grid the start's shift is searched on.
SEARCH_WIDTH = 160
#: The direct refinement's levels: (width of the visible grid, motion model), coarse first.
PLAN = ((80, "similarity"), (160, "similarity"), (160, "affine"), (320, "affine"), (320, "homography"))
#: The levels that rank the candidates of a search without a start.
QUICK_PLAN = PLAN[:3]
#: Width of the grid the held-back similarity is measured on, and its histogram bins.
HELD_BACK_WIDTH, MI_BINS = 320, 32


@dataclass(frozen=True)
class Fit:
    """A refined mapping, and the held-back checks of it.

    Attributes:
        H_vis_from_ir: the mapping found.
        correlation: of the orientation fields on the finest level, -1..1.
        nmi, edges: (start, result) of two held-back similarities (see `held_back`).
        spread: mean distance (visible px) between the results of the two starts.
    """

    H_vis_from_ir: np.ndarray
    correlation: float
    nmi: tuple[float, float]
    edges: tuple[float, float]
    spread: float

    @property
    def improved(self) -> bool:
        """Both held-back similarities rose: the result is better than the start."""
        return self.nmi[1] > self.nmi[0] and self.edges[1] > self.edges[0]


def orientation_field(gray: np.ndarray) -> np.ndarray:
    """HxWx2 float32: unit doubled-angle edge orientation times a strength in 0..1
    (square-rooted, relative to the image's 99th percentile)."""
    g = cv2.GaussianBlur(gray, (0, 0), GRADIENT_SIGMA)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    a = cv2.GaussianBlur(gx * gx - gy * gy, (0, 0), TENSOR_SIGMA)
    b = cv2.GaussianBlur(2 * gx * gy, (0, 0), TENSOR_SIGMA)
    length = cv2.magnitude(a, b)
    top = max(float(np.percentile(length[::2, ::2], 99)), 1e-9)
    strength = np.sqrt(np.minimum(length / np.float32(top), 1.0))
    scale = strength / np.maximum(length, np.float32(1e-12))
    return np.dstack([a * scale, b * scale]).astype(np.float32)


def align(g_ir: np.ndarray, ir_valid: np.ndarray, g_vis: np.ndarray, H_vis_from_ir: np.ndarray,
          radius_px: float, plan=None, levels: VisibleLevels | None = None) -> Fit:
    """Refine `H_vis_from_ir`, known to within about `radius_px` visible pixels.

    Two starts: the given mapping, and the same moved by the shift at which the orientation
    fields correlate best (searched within `radius_px`); each is refined directly
    (direct.refine_direct) and the one whose fields then correlate best wins. The held-back
    similarity then says whether it beats the given mapping.

    Args:
        g_ir, g_vis: float32 gray images in about 0..1 (targetfree.gray_float).
        ir_valid: HxW bool of the IR image: pixels that are scene (not a black border).
        plan: the direct refinement's levels (default PLAN).
        levels: g_vis's VisibleLevels, to share them between calls on the same visible image.
    """
    H0 = normalized(H_vis_from_ir)
    starts = [H0]
    shifted = shift_search(g_ir, ir_valid, g_vis, H0, radius_px)
    if shifted is not None:
        starts.append(shifted)
    levels = levels or VisibleLevels(g_vis, orientation_field)
    fits = [refine_direct(g_ir, ir_valid, levels, H, plan or PLAN) for H in starts]
    (H, rho), other = sorted(fits, key=lambda f: -f[1])[0], sorted(fits, key=lambda f: -f[1])[-1]
    spread = mean_distance(H, other[0], (g_ir.shape[1], g_ir.shape[0]))
    nmis, edges = held_back(g_ir, ir_valid, g_vis, H0, H)
    return Fit(H, rho, nmis, edges, spread)


def mean_distance(H_a: np.ndarray, H_b: np.ndarray, ir_size: tuple[int, int]) -> float:
    """Mean distance (visible px) between where two mappings send a grid over the IR frame."""
    w, h = ir_size
    p = np.stack(np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 9)), -1).reshape(-1, 2)
    return float(np.hypot(*(apply_homography(H_a, p) - apply_homography(H_b, p)).T).mean())


def shift_search(g_ir, ir_valid, g_vis, H_vis_from_ir, radius_px) -> np.ndarray | None:
    """H_vis_from_ir moved by the shift (within `radius_px`) at which the orientation field of
    the IR image's centre correlates best with the visible one, on a grid SEARCH_WIDTH wide."""
    factor = min(1.0, SEARCH_WIDTH / g_vis.shape[1])
    v, S = resize(g_vis, factor)
    vh, vw = v.shape
    scale = math.sqrt(abs(np.linalg.det(H_vis_from_ir[:2, :2])))   # visible px per IR px
    i, S_i = resize(g_ir, min(1.0, factor * scale))
    warped = cv2.warpPerspective(i, S @ H_vis_from_ir @ np.linalg.inv(S_i), (vw, vh), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    R = math.ceil(radius_px * factor)
    if min(vh, vw) <= 2 * R + 16:
        return None
    templ = orientation_field(warped)[R:vh - R, R:vw - R]
    r = cv2.matchTemplate(orientation_field(v), templ, cv2.TM_CCORR_NORMED)
    _, _, _, (x, y) = cv2.minMaxLoc(r)
    # The IR content at level-visible p (in the warped image) matches visible p + (x - R, y - R).
    T = np.array([[1, 0, (x - R) / factor], [0, 1, (y - R) / factor], [0, 0, 1]])
    return normalized(T @ H_vis_from_ir)


def held_back(g_ir, ir_valid, g_vis, H_a, H_b) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two similarities the fit does not optimise, of mapping a and of mapping b, both over the
    visible pixels that both cover (HELD_BACK_WIDTH wide): ((NMI a, NMI b), (edge a, edge b)),
    the normalised mutual information of intensities and the correlation coefficient of
    gradient magnitudes."""
    v, S = resize(g_vis, HELD_BACK_WIDTH / g_vis.shape[1])
    size = (v.shape[1], v.shape[0])
    mask = ir_valid.astype(np.uint8)
    warped, covered = [], np.ones(v.shape, bool)
    for H in (H_a, H_b):
        scale = math.sqrt(abs(np.linalg.det(normalized(H)[:2, :2]))) * S[0, 0]
        i, S_i = resize(g_ir, min(1.0, scale))
        warped.append(cv2.warpPerspective(i, S @ H @ np.linalg.inv(S_i), size, flags=cv2.INTER_LINEAR))
        covered &= cv2.warpPerspective(mask, S @ H, size, flags=cv2.INTER_NEAREST) > 0
    covered = cv2.erode(covered.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    if covered.sum() < 0.1 * covered.size:
        return (1.0, 1.0), (0.0, 0.0)
    e_vis = edge_strength(v)[covered]
    nmis = tuple(nmi(v[covered], w[covered]) for w in warped)
    edges = tuple(_corr(e_vis, edge_strength(w)[covered]) for w in warped)
    return nmis, edges


def edge_strength(gray: np.ndarray) -> np.ndarray:
    """HxW float32 square-rooted gradient magnitude (after GRADIENT_SIGMA blur)."""
    g = cv2.GaussianBlur(gray, (0, 0), GRADIENT_SIGMA)
    return np.sqrt(cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64) - a.mean(), b.astype(np.float64) - b.mean()
    return float((a * b).sum() / max(math.sqrt(float((a * a).sum() * (b * b).sum())), 1e-12))


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """(H(a) + H(b)) / H(a, b) of two samples in about 0..1: 1 when independent, 2 when one
    determines the other."""
    ia = np.clip(a * MI_BINS, 0, MI_BINS - 1).astype(np.int64)
    ib = np.clip(b * MI_BINS, 0, MI_BINS - 1).astype(np.int64)
    joint = np.bincount(ia * MI_BINS + ib, minlength=MI_BINS * MI_BINS).reshape(MI_BINS, MI_BINS)
    p = joint / max(joint.sum(), 1)

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(0)) + entropy(p.sum(1))) / max(entropy(p), 1e-12)

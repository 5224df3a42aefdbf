"""The standard image-fusion measures, as the MATLAB toolbox most papers use computes them.

The toolbox is Linfeng-Tang/Evaluation-for-Image-Fusion (`analysis_Reference.m` and the files
it calls). Every measure here reproduces its published per-image values for SeAFusion on the
121 pairs in ../shared/data/pairs to better than 1e-8 relative (tests/test_measures.py
checks a subset; ../shared/data/peers/README.md states the conventions). Conventions:

- Images are grey uint8. Colour (BGR, OpenCV's order) is converted as MATLAB `rgb2gray`
  does: 0.298936 R + 0.587043 G + 0.114021 B (the rows of inv(NTSC), usually quoted as
  0.2989/0.5870/0.1140), rounded half away from zero.
- EN: Shannon entropy of the 256-bin histogram of F, in bits.
- SD: population standard deviation of F on [0, 255].
- SF: sqrt(mean(row differences^2) + mean(column differences^2)) on [0, 255]; each mean
  is over its own (M-1)N or M(N-1) differences.
- AG: mean of sqrt((gx^2 + gy^2) / 2) with MATLAB `gradient` (central differences inside,
  one-sided at the border) on [0, 255], summed over all MxN pixels and divided by (M-1)(N-1).
- MI: MI(F, IR) + MI(F, VIS), each H(A) + H(F) - H(A, F) in bits over 256 bins. The
  toolbox builds the joint histogram from `uint8 + 1`, which saturates, so levels 254 and
  255 share a joint bin (the marginals keep them apart); reproduced, because it moves MI by
  up to 1.2% on images with many saturated pixels.
- SCD: corr(F - VIS, IR) + corr(F - IR, VIS) (Pearson, MATLAB `corr2`); NaN when F equals
  a source (a difference image is constant).
- VIF: VIF(IR, F) + VIF(VIS, F), each the pixel-domain 4-scale `vifp_mscale` (Gaussian
  windows 17/9/5/3 px with sigma N/5, 'valid' filtering, 2x decimation, sigma_n^2 = 2) on
  [0, 255].
- Qabf: Xydeas-Petrovic with Tg 0.9994, kg -15, Dg 0.5, Ta 0.9879, ka -22, Da 0.8, L 1;
  Sobel by `conv2(..., 'same')` (zero padding) on [0, 255]; orientation atan(gy/gx) with
  pi/2 where gx = 0; where a source's and F's edge strengths are exactly equal the toolbox
  takes F's strength as the ratio (kept).
- SSIM: mean of SSIM(F, IR) and SSIM(F, VIS) as MATLAB `ssim` computes it on doubles in
  [0, 255] with its defaults: 11x11 Gaussian window, sigma 1.5, replicate padding, dynamic
  range 1 (C1 = 1e-4, C2 = 9e-4, so about 0 next to variances of grey levels).

Higher is better for all nine. All nine take ~80-130 ms for a 640x480 pair on one core, ~55 ms
per further fused image of the same pair through `SourcePair`; `measures=(...)` computes only
the ones named (VIF, Qabf and SSIM are the costly ones).
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property

import cv2
import numpy as np

MEASURES = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")

#: MATLAB rgb2gray weights, in OpenCV's B, G, R order.
_BGR2GRAY = np.array([[0.114020904255103, 0.587043074451121, 0.298936021293775]])
#: Smallest side accepted. vifp uses all four scales from 65 px; below that, fewer (as MATLAB does).
MIN_SIDE = 32
#: Qabf model constants (Xydeas and Petrovic, Electronics Letters 2000).
_TG, _KG, _DG, _TA, _KA, _DA = 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8


def to_gray(image: np.ndarray) -> np.ndarray:
    """HxW uint8 as MATLAB `rgb2gray` gives it; a grey image is returned as is.

    Args:
        image: HxW uint8, or HxWx3 uint8 in OpenCV's BGR order.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        what = f"shape {image.shape} dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"metrics: expected an HxW or HxWx3 (BGR) uint8 image, got {what}")
    if image.ndim == 2:
        return image
    luma = cv2.transform(image.astype(np.float64), _BGR2GRAY)
    luma += 0.5  # non-negative, so floor(x + 0.5) is MATLAB's round half away from zero
    return np.floor(luma, out=luma).astype(np.uint8)


def fusion_metrics(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray,
                   measures: Iterable[str] = MEASURES) -> dict[str, float]:
    """The named measures of a fused image against its two sources.

    Scoring several fused images of one pair? `SourcePair(ir, vis).score(fused)` prepares the
    sources once (~55 ms instead of ~80-130 ms per further 640x480 image).

    Args:
        ir, vis, fused: HxW uint8 grey or HxWx3 uint8 BGR (converted with `to_gray`), the
            same HxW, at least MIN_SIDE on each side. 16-bit IR must be mapped to 8 bit first.
        measures: names from MEASURES, in any order.

    Returns:
        {name: value} in the order of `measures`; SCD is NaN when F equals a source.
    """
    return SourcePair(ir, vis).score(fused, measures)


class SourcePair:
    """An IR and a visible image, prepared once for scoring any number of fused images."""

    def __init__(self, ir: np.ndarray, vis: np.ndarray):
        self.ir, self.vis = _Image(to_gray(ir)), _Image(to_gray(vis))
        shape = self.ir.gray.shape
        if self.vis.gray.shape != shape:
            raise ValueError(f"metrics: expected ir and vis of one size, got {_size(shape)} and "
                             f"{_size(self.vis.gray.shape)}")
        if min(shape) < MIN_SIDE:
            raise ValueError(f"metrics: expected images at least {MIN_SIDE}x{MIN_SIDE}, got {_size(shape)}")

    def score(self, fused: np.ndarray, measures: Iterable[str] = MEASURES) -> dict[str, float]:
        """{measure: value} of `fused` (HxW uint8 or HxWx3 BGR, the sources' size)."""
        wanted = list(measures)
        unknown = [m for m in wanted if m not in MEASURES]
        if unknown:
            raise ValueError(f"metrics: unknown measure {unknown[0]!r}; expected some of {', '.join(MEASURES)}")
        f = _Image(to_gray(fused))
        if f.gray.shape != self.ir.gray.shape:
            raise ValueError(f"metrics: expected a fused image of the sources' size {_size(self.ir.gray.shape)}, "
                             f"got {_size(f.gray.shape)}")
        a, b = self.ir, self.vis
        compute = {
            "EN": lambda: f.entropy,
            "SD": lambda: float(f.f64.std()),
            "SF": lambda: spatial_frequency(f.f64),
            "AG": lambda: average_gradient(f.f64),
            "MI": lambda: _mutual_information(a, f) + _mutual_information(b, f),
            "SCD": lambda: scd(a.f64, b.f64, f.f64),
            "VIF": lambda: _vif(a, f) + _vif(b, f),
            "Qabf": lambda: _qabf(a, b, f),
            "SSIM": lambda: (_ssim(f, a) + _ssim(f, b)) / 2,
        }
        return {m: float(compute[m]()) for m in wanted}


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


class _Image:
    """A grey image and what the measures derive from it alone, each computed on first use."""

    def __init__(self, gray: np.ndarray):
        self.gray = gray

    @cached_property
    def f64(self) -> np.ndarray:
        return self.gray.astype(np.float64)

    @cached_property
    def entropy(self) -> float:
        return entropy(self.gray)

    @cached_property
    def joint_levels(self) -> np.ndarray:
        # MATLAB's uint8 + 1 saturates: 254 and 255 land in the same joint-histogram bin.
        return np.minimum(self.gray, 254).ravel().astype(np.intp)

    @cached_property
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        return _edges(self.f64)

    @cached_property
    def vif_scales(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per vifp scale: (window, image at that scale, local mean, local variance)."""
        scales = []
        image = self.f64
        for scale in range(1, 5):
            n = 2 ** (5 - scale) + 1
            win = _gaussian_1d(n, n / 5.0)
            if scale > 1:
                image = _filter_valid(image, win)[::2, ::2]
            if min(image.shape) < n:
                break  # MATLAB's filters return empty arrays from here on: nothing more to add
            mu = _filter_valid(image, win)
            var = np.maximum(_filter_valid(image * image, win) - mu * mu, 0)
            scales.append((win, image, mu, var))
        return scales

    @cached_property
    def ssim_stats(self) -> tuple[np.ndarray, np.ndarray]:
        mu = _ssim_blur(self.f64)
        return mu, _ssim_blur(self.f64 * self.f64) - mu * mu


def entropy(gray: np.ndarray) -> float:
    """Shannon entropy in bits of the 256-bin histogram of an HxW uint8 image."""
    return _entropy_of_counts(np.bincount(gray.ravel(), minlength=256))


def _entropy_of_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _mutual_information(a: _Image, f: _Image) -> float:
    """MI(A, F) in bits, with the toolbox's joint bins (module docstring)."""
    joint = np.bincount(a.joint_levels * 256 + f.joint_levels, minlength=65536)
    return a.entropy + f.entropy - _entropy_of_counts(joint)


def spatial_frequency(f: np.ndarray) -> float:
    """SF of an HxW float64 image on [0, 255]."""
    rows = np.diff(f, axis=0)
    cols = np.diff(f, axis=1)
    return float(np.sqrt(np.mean(rows * rows) + np.mean(cols * cols)))


def average_gradient(f: np.ndarray) -> float:
    """AG of an HxW float64 image on [0, 255], as the toolbox divides it: by (M-1)(N-1)."""
    gy, gx = np.gradient(f)
    m, n = f.shape
    return float(np.sqrt((gx * gx + gy * gy) / 2).sum() / ((m - 1) * (n - 1)))


def scd(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Sum of correlations of differences, of HxW float64 images; NaN if F equals a source."""
    return _corr2(fused - vis, ir) + _corr2(fused - ir, vis)


def _corr2(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def _vif(ref: _Image, dist: _Image) -> float:
    """Pixel-domain multi-scale VIF (`vifp_mscale`) of `dist` against `ref`."""
    sigma_nsq = 2.0
    num = den = 0.0
    for (win, ref_s, mu1, sigma1_sq), (_, dist_s, mu2, sigma2_sq) in zip(ref.vif_scales, dist.vif_scales):
        sigma1_sq = sigma1_sq.copy()
        sigma12 = _filter_valid(ref_s * dist_s, win) - mu1 * mu2
        g = sigma12 / (sigma1_sq + 1e-10)
        sv_sq = sigma2_sq - g * sigma12
        # The toolbox's special cases, in its order.
        flat_ref = sigma1_sq < 1e-10
        g[flat_ref] = 0
        sv_sq[flat_ref] = sigma2_sq[flat_ref]
        sigma1_sq[flat_ref] = 0
        flat_dist = sigma2_sq < 1e-10
        g[flat_dist] = 0
        sv_sq[flat_dist] = 0
        negative = g < 0
        sv_sq[negative] = sigma2_sq[negative]
        g[negative] = 0
        np.maximum(sv_sq, 1e-10, out=sv_sq)
        num += np.log10(1 + g * g * sigma1_sq / (sv_sq + sigma_nsq)).sum()
        den += np.log10(1 + sigma1_sq / sigma_nsq).sum()
    return float(num / den) if den > 0 else float("nan")


def _gaussian_1d(n: int, sigma: float) -> np.ndarray:
    """The 1-D factor of MATLAB's fspecial('gaussian', n, sigma) (separable at these sizes)."""
    x = np.arange(n) - (n - 1) / 2
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _filter_valid(image: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB filter2(k' * k, image, 'valid') for a symmetric 1-D kernel k."""
    r = len(k) // 2
    out = cv2.sepFilter2D(image, cv2.CV_64F, k, k, borderType=cv2.BORDER_CONSTANT)
    return out[r:image.shape[0] - r, r:image.shape[1] - r]


#: conv2 flips its kernel, so these are the toolbox's h3 (x) and h1 (y) Sobel kernels rotated
#: by 180 degrees for OpenCV's correlation.
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)[::-1, ::-1].copy()
_SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64)[::-1, ::-1].copy()


def _edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation atan(gy/gx) (pi/2 where gx = 0), zero padding."""
    gx = cv2.filter2D(image, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    gy = cv2.filter2D(image, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(gx * gx + gy * gy)
    nonzero = gx != 0
    angle = np.full(image.shape, np.pi / 2)
    np.arctan(np.divide(gy, gx, out=np.zeros_like(gy), where=nonzero), out=angle, where=nonzero)
    return strength, angle


def _qabf(a: _Image, b: _Image, f: _Image) -> float:
    """Xydeas-Petrovic edge preservation Q^AB/F of F from sources A and B."""
    (g_a, o_a), (g_b, o_b), (g_f, o_f) = a.edges, b.edges, f.edges
    q_a = _edge_preservation(g_a, o_a, g_f, o_f)
    q_b = _edge_preservation(g_b, o_b, g_f, o_f)
    return float(((q_a * g_a).sum() + (q_b * g_b).sum()) / (g_a.sum() + g_b.sum()))


def _edge_preservation(g_s, o_s, g_f, o_f) -> np.ndarray:
    """Q^SF per pixel: how well F keeps the source's edge strength g and orientation o."""
    weaker_f, weaker_s = g_s > g_f, g_s < g_f
    ratio = np.divide(g_f, g_s, out=g_f.copy(), where=weaker_f)  # equal strengths keep g_f:
    np.divide(g_s, g_f, out=ratio, where=weaker_s)               # the toolbox's rule, kept
    q_g = _TG / (1 + np.exp(_KG * (ratio - _DG)))
    q_o = _TA / (1 + np.exp(_KA * (1 - np.abs(o_s - o_f) / (np.pi / 2) - _DA)))
    return q_g * q_o


def _ssim_blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (11, 11), 1.5, borderType=cv2.BORDER_REPLICATE)


def _ssim(x: _Image, y: _Image) -> float:
    """MATLAB `ssim(x, y)` with its defaults on [0, 255] doubles (module docstring)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    (mu_x, var_x), (mu_y, var_y) = x.ssim_stats, y.ssim_stats
    mu_xy = mu_x * mu_y
    cov = _ssim_blur(x.f64 * y.f64) - mu_xy
    ssim_map = (2 * mu_xy + c1) * (2 * cov + c2) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())

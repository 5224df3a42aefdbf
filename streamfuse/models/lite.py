"""`lite`: learned fusion maps at 1/4 resolution, applied at full resolution on the CPU.

A two-scale fusion (base = box mean over (2 * BASE_RADIUS + 1)^2, detail = the rest) whose
weights a small network predicts from 1/4-size statistics of the lumas a (IR) and b
(visible), both 0..1:

    per 1/4 cell: means and standard deviations of a and b, log saliency of a and b
    (saliency = |3x3 Laplacian| averaged over the cell, less what the camera's own pixel noise
    gives, Gaussian-blurred: guided-filter fusion's, made robust to noise)      ─► a 1x1 skip at 1/4 size + 4 small convs at 1/8 size
                               ─► 4 maps (logits) at 1/4 size:

        z_d    which camera's detail, per cell          w_d   = sigmoid(z_d)       (IR share)
        z_b    which camera's base, per region          w_b   = box(sigmoid(z_b))  (IR share)
        z_k    how additive the base is                 kappa = sigmoid(z_k)
        z_g    contrast boost of faint detail           boost = sigmoid(z_g)

The skip layer starts as the guided-filter-fusion rule (the camera with the larger saliency
wins, z = START_STEEPNESS * (log s_a - log s_b)) with kappa = START_KAPPA and boost =
START_BOOST; the convolutions learn corrections from there.

At full resolution (`apply_numpy`, OpenCV; `apply_torch` is the same formula, differentiable,
for training; tests check that they agree):

    detail weight  w_d brought to full size by fast guided filters (He & Sun 2015), one per
                   camera with that camera as the guide, then normalised: the weight's
                   edges snap to the edges of the camera it selects
    base           (on the 1/4-size cells, box means of BASE_RADIUS px, then upsampled)
                   selected = b_base + w_b * (a_base - b_base)
                   additive = mean + ADDITIVE * (a_base - mean a) + ADDITIVE * (b_base - mean b)
                   base     = selected + kappa * (additive - selected)
                   base    += exposed(b_base) * max(0, b_base - EXPOSED_DROP - base)  (bright
                              visible regions keep their brightness)
                   base     = knee(base)                                     (soft, KNEE)
    detail         d = b_detail + w_d * (a_detail - b_detail)
    fused          base + d + lift * blur(d),  lift = boost * signal / (1 + c / BOOST_CONTRAST)
                   with c the local contrast of d and signal the share of c above the grain
                   of the camera d comes from (`grain_sigma`, BOOST_GRAIN): faint detail is
                   lifted, sensor grain (finer than the blur, BOOST_SIGMA) is not

Around this formula `streamfuse.fuse.lite_targets` destripes the IR, keeps warm targets warm
and feathers out the IR's field-of-view border (not learned: from the IR alone).

Why this shape: choosing each detail from one camera keeps edges as strong and as oriented as
in the camera that has them (what Qabf and VIF measure), and a partly additive base keeps
what each camera adds to the other's large-scale picture (what SCD measures). A semantic
prior's emphasis e (0..1, at 1/4 size) hands marked regions to the IR: w_d, w_b -> w + (1 - w)
e, kappa and boost -> x (1 - e), so where e = 1 the fused luma is the IR luma (through the
base's soft knee, which only touches the darkest and brightest KNEE of the base, and the
exposure guard of bright visible regions).

The network runs in numpy (`forward_numpy`, from the weights file read without torch);
`streamfuse.models.lite_torch` is the same network and formula in torch, for training.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: The maps are predicted at 1/SCALE of the frame size.
SCALE = 4
#: Radius (px, full resolution) of the box mean that splits base from detail.
BASE_RADIUS = 32
#: Radius (1/SCALE cells) of the box that smooths the base weight into regions.
BASE_WEIGHT_RADIUS = 16
#: Saliency blur (sigma, 1/SCALE cells): 10 px at full resolution.
SALIENCY_SIGMA = 2.5
#: Saliency counts only what stands above each camera's own noise: the mean |Laplacian| that
#: pixel noise of the estimated sigma would give (3.57 sigma for the 3x3 Laplacian) times this
#: is taken off (without it a dark, noisy visible image out-scores a clean thermal one).
NOISE_MARGIN = 1.0
#: Blur (sigma, 1/SCALE cells) of the detail's local contrast, for the boost: 5 px.
CONTRAST_SIGMA = 1.25
#: Fast guided filter radius (1/SCALE cells) and regularisation (lumas 0..1).
GUIDE_RADIUS = 1
GUIDE_EPS = 1e-4
#: Weight of each camera in the additive base.
ADDITIVE = 0.85
#: Soft knee of the base: values within KNEE of 0 or 1, and past them, are squeezed (tanh)
#: rather than clipped later, so an additive base over bright IR targets keeps their edges.
#: (It also lifts a pure black base to ~0.036 and lowers a pure white one as much.)
KNEE = 0.15
#: Where the visible base is bright (from EXPOSED[0], fully from EXPOSED[1]; lumas 0..1) the
#: fused base stays within EXPOSED_DROP of it: a lit wall or an overcast sky keeps its
#: brightness however cold the IR sees it.
EXPOSED = (0.5, 0.75)
EXPOSED_DROP = 0.15
#: Local contrast (grey levels) below which faint detail gets most of its boost.
BOOST_CONTRAST = 4.0
#: ... blurred by this sigma (px) first (`_coarse`), and only as far as the detail's local
#: contrast stands above BOOST_GRAIN x the grain of the camera it comes from (a Wiener-like
#: share, `grain_sigma`): the boost must not lift sensor grain.
BOOST_SIGMA = 2.0
BOOST_GRAIN = 2.0
#: Features per 1/SCALE cell fed to the network, hidden channels, maps out.
IN_CHANNELS = 6
HIDDEN = 8
MAPS = 4
#: Start of the skip layer: the saliency rule's steepness, the starting kappa and boost.
START_STEEPNESS = 40.0
START_KAPPA = 0.65
START_BOOST = 0.5


def low_size(shape: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the maps for a frame of `shape` (h, w): ceil(h / SCALE) x ceil(w / SCALE)."""
    return max(1, -(-shape[0] // SCALE)), max(1, -(-shape[1] // SCALE))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


# --------------------------------------------------------------------------- numpy / OpenCV

@dataclass
class Prepared:
    """What `features_numpy` computed at 1/4 size and `apply_numpy` reuses."""

    features: np.ndarray   # IN_CHANNELS x h x w float32
    a_low: np.ndarray      # h x w cell means of a
    b_low: np.ndarray      # h x w cell means of b
    grain: tuple[float, float] = (0.0, 0.0)   # `grain_sigma` of a and b (0..1)


def shrink(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`x` area-averaged down to `size` (h, w). An exact 1/4 goes as two halvings: OpenCV's
    2x area path is ~2.5x faster than its general one (0.07 against 0.16 ms at 640x512), with
    the same means to float rounding."""
    h, w = x.shape[:2]
    if (h, w) == (4 * size[0], 4 * size[1]):
        x = cv2.resize(x, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _up(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(x, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.blur(x, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT_101)


#: The noise estimator: Immerkaer's kernel (1996), which cancels smooth image content, with the
#: median of its response (robust to edges and texture): sigma = median |x * K| / (0.6745 * 6)
#: (6 = the kernel's norm; 0.6745 = the median of |N(0, 1)|).
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
NOISE_SCALE = float(1.0 / (0.6745 * 6.0))
#: Mean |3x3 Laplacian| of white noise of sigma 1: sqrt(20) * sqrt(2 / pi).
LAPLACIAN_OF_NOISE = float(np.sqrt(20) * np.sqrt(2 / np.pi))


def noise_sigma(x: np.ndarray) -> float:
    """The pixel noise sigma of an HxW float32 image (interior pixels; every other row and
    column, which is plenty for a median and four times cheaper)."""
    response = cv2.filter2D(x, cv2.CV_32F, NOISE_KERNEL)[1:-1:2, 1:-1:2]
    return NOISE_SCALE * float(np.median(np.abs(response)))


def grain_sigma(x: np.ndarray) -> float:
    """The fine-scale grain of an HxW float32 image (0..1) where it is flat: the standard
    deviation of x less its sigma-2 blur over the pixels below the 30th percentile of the
    gradient magnitude (after a sigma 1.5 blur). Unlike `noise_sigma` it sees compression
    and fixed-pattern texture, and is not quantised to zero on clean 8-bit images."""
    smooth = cv2.GaussianBlur(x, (0, 0), 1.5)
    gradient = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    flat = gradient <= np.percentile(gradient.ravel()[::4], 30.0)
    fine = x - cv2.GaussianBlur(x, (0, 0), 2.0)
    return float(fine[flat].std()) if flat.any() else 0.0


def features_numpy(a: np.ndarray, b: np.ndarray, noise: tuple[float, float] | None = None,
                   grain: tuple[float, float] | None = None) -> Prepared:
    """The network input (and cell means) from two HxW float32 lumas in 0..1. `noise`, `grain`:
    the cameras' noise sigmas and grains if known (a video fuser re-estimates them every few
    frames only); None estimates them here (`noise_sigma`, `grain_sigma`)."""
    size = low_size(a.shape)
    noise = noise if noise is not None else (noise_sigma(a), noise_sigma(b))
    out, lows = [], []
    for x, sigma in zip((a, b), noise):
        m = shrink(x, size)
        sd = np.sqrt(np.maximum(shrink(x * x, size) - m * m, 0.0) + 1e-6)
        laplacian = cv2.Laplacian(x, cv2.CV_32F)
        sal = shrink(np.abs(laplacian, out=laplacian), size)
        floor = NOISE_MARGIN * LAPLACIAN_OF_NOISE * sigma
        sal = np.sqrt(np.maximum(sal * sal - floor * floor, 0.0))
        sal = cv2.GaussianBlur(sal, (0, 0), SALIENCY_SIGMA, borderType=cv2.BORDER_REFLECT_101)
        out += [m, sd, np.log(sal + 1e-4)]
        lows.append(m)
    ma, sa, la, mb, sb, lb = out
    grain = grain if grain is not None else (grain_sigma(a), grain_sigma(b))
    return Prepared(np.stack([ma, mb, sa, sb, la, lb]).astype(np.float32), lows[0], lows[1], tuple(grain))


def probabilities_numpy(maps: np.ndarray, emphasis: np.ndarray | None = None) -> np.ndarray:
    """(w_d, w_b, kappa, boost) at 1/4 size from the 4 logit maps, emphasis applied."""
    w_d, w_b, kappa, boost = _sigmoid(maps.astype(np.float32))
    w_b = _box(w_b, BASE_WEIGHT_RADIUS)
    if emphasis is not None:
        w_d = w_d + (1.0 - w_d) * emphasis
        w_b = w_b + (1.0 - w_b) * emphasis
        kappa, boost = kappa * (1.0 - emphasis), boost * (1.0 - emphasis)
    return np.stack([w_d, w_b, kappa, boost]).astype(np.float32)


def _guided_up(guide: np.ndarray, guide_low: np.ndarray, p_low: np.ndarray) -> np.ndarray:
    """Fast guided filter: linear coefficients of p on the guide at 1/4 size, applied at full size."""
    r = GUIDE_RADIUS
    mean_i, mean_p = _box(guide_low, r), _box(p_low, r)
    var_i = _box(guide_low * guide_low, r) - mean_i * mean_i
    coef = (_box(guide_low * p_low, r) - mean_i * mean_p) / (var_i + GUIDE_EPS)
    offset = mean_p - coef * mean_i
    out = _up(_box(coef, r), guide.shape)
    cv2.multiply(out, guide, dst=out)
    return cv2.add(out, _up(_box(offset, r), guide.shape), dst=out)


def apply_numpy(a: np.ndarray, b: np.ndarray, probs: np.ndarray, prepared: Prepared) -> np.ndarray:
    """The fused HxW float32 luma (0..1, not clipped) from lumas a, b (HxW float32, 0..1), the
    probabilities of `probabilities_numpy` and the `Prepared` of the same a, b. The bases and
    everything made of them are computed on the 1/4-size cells (they are smooth), so only the
    detail is handled at full size."""
    shape = a.shape
    w_d, w_b, kappa, boost = probs
    # In place where it can be (the same arithmetic, in the same order): each full-size
    # temporary costs a fresh 1.3 MB at 640x512.
    wa = np.clip(_guided_up(a, prepared.a_low, w_d), 0.0, 1.0)
    wb = _guided_up(b, prepared.b_low, 1.0 - w_d)
    np.clip(wb, 0.0, 1.0, out=wb)
    wb += wa
    wb += 1e-6
    detail_w = np.divide(wa, wb, out=wa)
    base_low, base_a, base_b = _bases(prepared.a_low, prepared.b_low, w_b, kappa)
    detail = b - _up(base_b, shape)
    change = a - b
    change -= _up(base_a - base_b, shape)
    change *= detail_w
    detail += change
    size = w_d.shape
    contrast = np.sqrt(cv2.GaussianBlur(shrink(detail * detail, size), (0, 0), CONTRAST_SIGMA,
                                        borderType=cv2.BORDER_REFLECT_101)) * 255.0
    grain = 255.0 * (prepared.grain[1] + w_d * (prepared.grain[0] - prepared.grain[1]))
    signal = np.clip(1.0 - (BOOST_GRAIN * grain) ** 2 / (contrast * contrast + 1e-6), 0.0, 1.0)
    lift = boost * signal / (1.0 + contrast / BOOST_CONTRAST)
    fused = _up(base_low, shape)
    fused += detail
    lifted = _up(lift, shape)
    lifted *= _coarse(detail)
    fused += lifted
    return fused


def _bases(a_low: np.ndarray, b_low: np.ndarray, w_b: np.ndarray, kappa: np.ndarray):
    """(fused base, base of a, base of b) on the 1/4-size cells: box means of BASE_RADIUS px,
    the selected and additive mix, the exposure guard and the soft knee."""
    r = BASE_RADIUS // SCALE
    base_a, base_b = _box(a_low, r), _box(b_low, r)
    mean_a, mean_b = float(a_low.mean()), float(b_low.mean())
    selected = base_b + w_b * (base_a - base_b)
    additive = ADDITIVE * (base_a + base_b) + (0.5 - ADDITIVE) * (mean_a + mean_b)
    base = selected + kappa * (additive - selected)
    base = _knee_numpy(base + _exposed(base_b) * np.maximum(base_b - EXPOSED_DROP - base, 0.0))
    return base, base_a, base_b


def _exposed(base_b: np.ndarray) -> np.ndarray:
    """0..1: how well exposed (bright) the visible base is: 0 up to EXPOSED[0], 1 from EXPOSED[1]."""
    low, high = EXPOSED
    return np.clip((base_b - low) * (1.0 / (high - low)), 0.0, 1.0)


def _coarse(detail: np.ndarray) -> np.ndarray:
    """What the boost lifts: the detail blurred by BOOST_SIGMA (at half size), so faint
    structure gains contrast and the pixel grain under it (finer than the blur) does not."""
    h, w = detail.shape
    half = cv2.resize(detail, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    half = cv2.GaussianBlur(half, (0, 0), BOOST_SIGMA / 2, borderType=cv2.BORDER_REFLECT_101)
    return _up(half, (h, w))


def _knee_numpy(x: np.ndarray) -> np.ndarray:
    """x within [KNEE, 1 - KNEE] as is; beyond, squeezed into the last KNEE by a tanh."""
    high, low = x > 1.0 - KNEE, x < KNEE
    if high.any():
        x[high] = 1.0 - KNEE + KNEE * np.tanh((x[high] - (1.0 - KNEE)) / KNEE)
    if low.any():
        x[low] = KNEE - KNEE * np.tanh((KNEE - x[low]) / KNEE)
    return x


# --------------------------------------------------------------------------- the network in numpy

#: The network's parameters by name (as `lite_torch.build_net` names them) and shape.
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "skip.weight": (MAPS, IN_CHANNELS, 1, 1), "skip.bias": (MAPS,),
    "body.0.weight": (HIDDEN, IN_CHANNELS, 3, 3), "body.0.bias": (HIDDEN,),
    "body.2.weight": (HIDDEN, HIDDEN, 3, 3), "body.2.bias": (HIDDEN,),
    "body.4.weight": (HIDDEN, HIDDEN, 3, 3), "body.4.bias": (HIDDEN,),
    "body.6.weight": (MAPS, HIDDEN, 1, 1), "body.6.bias": (MAPS,),
}
#: (layer, dilation) of the body's 3x3 convolutions, each followed by LeakyReLU(LEAK).
_BODY = (("body.0", 1), ("body.2", 2), ("body.4", 1))
LEAK = 0.1


def forward_numpy(params: dict[str, np.ndarray], feats: np.ndarray) -> np.ndarray:
    """The network (`lite_torch.build_net`) in numpy: features (6 x h x w float32) -> the 4 logit
    maps (4 x h x w). At 128 x 160 cells (a 640x512 frame) it costs well under a millisecond,
    so the per-frame path needs no torch and no thread team of its own."""
    x = _pool2(feats)
    for name, dilation in _BODY:
        x = _conv3x3(x, params[name + ".weight"], params[name + ".bias"], dilation)
        x = np.maximum(x, LEAK * x)
    coarse = _conv1x1(x, params["body.6.weight"], params["body.6.bias"])
    h, w = feats.shape[1:]
    up = np.stack([_up(c, (h, w)) for c in coarse])
    return _conv1x1(feats, params["skip.weight"], params["skip.bias"]) + up


def _conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    return (weight[:, :, 0, 0] @ x.reshape(c, h * w)).reshape(-1, h, w) + bias[:, None, None]


def _conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, dilation: int) -> np.ndarray:
    """torch's Conv2d(3x3, padding=dilation, dilation=dilation): zero padding, same size. The
    nine shifted windows are stacked once and multiplied in one product (im2col): nine small
    products cost 1.6x more at 8 x 64 x 80."""
    c, h, w = x.shape
    windows = np.zeros((3, 3, c, h, w), np.float32)  # the zeros are the padding
    for i in range(3):
        rows = _shifted((i - 1) * dilation, h)
        for j in range(3):
            cols = _shifted((j - 1) * dilation, w)
            if rows and cols:  # a shift beyond the map leaves only padding
                windows[i, j, :, rows[0], cols[0]] = x[:, rows[1], cols[1]]
    flat = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], 9 * c)   # (out, (i, j, in))
    out = flat @ windows.reshape(9 * c, h * w)
    out += bias[:, None]
    return out.reshape(-1, h, w)


def _shifted(shift: int, n: int) -> tuple[slice, slice] | None:
    """(destination, source) slices of an axis of length `n` for a window shifted by `shift`
    (the source index is the destination's plus `shift`); None when nothing overlaps."""
    start, stop = max(0, -shift), min(n, n - shift)
    if start >= stop:
        return None
    return slice(start, stop), slice(start + shift, stop + shift)


def _pool2(x: np.ndarray) -> np.ndarray:
    """torch's avg_pool2d(x, 2, ceil_mode=True): 2x2 means, an odd last row/column alone."""
    _, h, w = x.shape
    if not (h % 2 or w % 2):   # OpenCV's area resize is the 2x2 mean, ~8x faster than numpy here
        return np.stack([cv2.resize(c, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for c in x])
    x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2)))
    count = np.ones((h, w), np.float32)
    count = np.pad(count, ((0, h % 2), (0, w % 2)))
    # Four strided adds: a sum over the axes of a (c, hh, 2, ww, 2) view walks it element by
    # element, about 10x slower at 6 x 128 x 160.
    total = x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]
    cells = count[0::2, 0::2] + count[1::2, 0::2] + count[0::2, 1::2] + count[1::2, 1::2]
    return (total / cells).astype(np.float32)

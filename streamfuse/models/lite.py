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
    base           selected = b_base + w_b * (a_base - b_base)
                   additive = mean + ADDITIVE * (a_base - mean a) + ADDITIVE * (b_base - mean b)
                   base     = knee(selected + kappa * (additive - selected))   (soft, KNEE)
    detail         d = b_detail + w_d * (a_detail - b_detail)
    fused          base + (1 + boost / (1 + local contrast of d / BOOST_CONTRAST)) * d

Why this shape: choosing each detail from one camera keeps edges as strong and as oriented as
in the camera that has them (what Qabf and VIF measure), and a partly additive base keeps
what each camera adds to the other's large-scale picture (what SCD measures). A semantic
prior's emphasis e (0..1, at 1/4 size) hands marked regions to the IR: w_d, w_b -> w + (1 - w)
e, kappa and boost -> x (1 - e), so where e = 1 the fused luma is the IR luma (through the
base's soft knee, which only touches the darkest and brightest KNEE of the base).
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
GUIDE_RADIUS = 2
GUIDE_EPS = 1e-4
#: Weight of each camera in the additive base.
ADDITIVE = 0.8
#: Soft knee of the base: values within KNEE of 0 or 1, and past them, are squeezed (tanh)
#: rather than clipped later, so an additive base over bright IR targets keeps their edges.
#: (It also lifts a pure black base to ~0.036 and lowers a pure white one as much.)
KNEE = 0.15
#: Local contrast (grey levels) below which faint detail gets most of its boost.
BOOST_CONTRAST = 4.0
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


def _area(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _up(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(x, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.blur(x, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT_101)


#: The noise estimator: Immerkaer's kernel (1996), which cancels smooth image content, with the
#: median of its response (robust to edges and texture): sigma = median |x * K| / (0.6745 * 6)
#: (6 = the kernel's norm; 0.6745 = the median of |N(0, 1)|).
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_NOISE_SCALE = float(1.0 / (0.6745 * 6.0))
#: Mean |3x3 Laplacian| of white noise of sigma 1: sqrt(20) * sqrt(2 / pi).
_LAPLACIAN_OF_NOISE = float(np.sqrt(20) * np.sqrt(2 / np.pi))


def noise_sigma(x: np.ndarray) -> float:
    """The pixel noise sigma of an HxW float32 image (interior pixels; every other row and
    column, which is plenty for a median and four times cheaper)."""
    response = cv2.filter2D(x, cv2.CV_32F, _NOISE_KERNEL)[1:-1:2, 1:-1:2]
    return _NOISE_SCALE * float(np.median(np.abs(response)))


def features_numpy(a: np.ndarray, b: np.ndarray, noise: tuple[float, float] | None = None) -> Prepared:
    """The network input (and cell means) from two HxW float32 lumas in 0..1. `noise`: the
    cameras' noise sigmas if known (a video fuser re-estimates them every few frames only);
    None estimates them here (`noise_sigma`)."""
    size = low_size(a.shape)
    noise = noise if noise is not None else (noise_sigma(a), noise_sigma(b))
    out, lows = [], []
    for x, sigma in zip((a, b), noise):
        m = _area(x, size)
        sd = np.sqrt(np.maximum(_area(x * x, size) - m * m, 0.0) + 1e-6)
        sal = _area(np.abs(cv2.Laplacian(x, cv2.CV_32F)), size)
        floor = NOISE_MARGIN * _LAPLACIAN_OF_NOISE * sigma
        sal = np.sqrt(np.maximum(sal * sal - floor * floor, 0.0))
        sal = cv2.GaussianBlur(sal, (0, 0), SALIENCY_SIGMA, borderType=cv2.BORDER_REFLECT_101)
        out += [m, sd, np.log(sal + 1e-4)]
        lows.append(m)
    ma, sa, la, mb, sb, lb = out
    return Prepared(np.stack([ma, mb, sa, sb, la, lb]).astype(np.float32), lows[0], lows[1])


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
    return cv2.add(cv2.multiply(_up(_box(coef, r), guide.shape), guide), _up(_box(offset, r), guide.shape))


def apply_numpy(a: np.ndarray, b: np.ndarray, probs: np.ndarray, prepared: Prepared) -> np.ndarray:
    """The fused HxW float32 luma (0..1, not clipped) from lumas a, b (HxW float32, 0..1), the
    probabilities of `probabilities_numpy` and the `Prepared` of the same a, b."""
    shape = a.shape
    w_d, w_b, kappa, boost = probs
    wa = np.clip(_guided_up(a, prepared.a_low, w_d), 0.0, 1.0)
    wb = np.clip(_guided_up(b, prepared.b_low, 1.0 - w_d), 0.0, 1.0)
    detail_w = wa / (wa + wb + 1e-6)
    base_a, base_b = _box(a, BASE_RADIUS), _box(b, BASE_RADIUS)
    mean_a, mean_b = float(prepared.a_low.mean()), float(prepared.b_low.mean())
    selected = base_b + _up(w_b, shape) * (base_a - base_b)
    additive = ADDITIVE * (base_a + base_b) + (0.5 - ADDITIVE) * (mean_a + mean_b)
    base = _knee_numpy(selected + _up(kappa, shape) * (additive - selected))
    detail_b = b - base_b
    detail = detail_b + detail_w * ((a - base_a) - detail_b)
    size = w_d.shape
    contrast = np.sqrt(cv2.GaussianBlur(_area(detail * detail, size), (0, 0), CONTRAST_SIGMA,
                                        borderType=cv2.BORDER_REFLECT_101)) * 255.0
    gain = 1.0 + boost / (1.0 + contrast / BOOST_CONTRAST)
    return base + _up(gain, shape) * detail


def _knee_numpy(x: np.ndarray) -> np.ndarray:
    """x within [KNEE, 1 - KNEE] as is; beyond, squeezed into the last KNEE by a tanh."""
    high, low = x > 1.0 - KNEE, x < KNEE
    if high.any():
        x[high] = 1.0 - KNEE + KNEE * np.tanh((x[high] - (1.0 - KNEE)) / KNEE)
    if low.any():
        x[low] = KNEE - KNEE * np.tanh((KNEE - x[low]) / KNEE)
    return x


# --------------------------------------------------------------------------- torch

def _torch():
    import torch
    import torch.nn.functional as F
    return torch, F


def build_net():
    """The network (an nn.Module): features (B,6,h,w) -> logit maps (B,4,h,w)."""
    torch, F = _torch()
    from torch import nn

    class LiteNet(nn.Module):
        """A 1x1 skip (starting as the saliency rule) plus 4 convs at 1/8 size (starting at zero)."""

        def __init__(self):
            super().__init__()
            act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
            self.skip = nn.Conv2d(IN_CHANNELS, MAPS, 1)
            self.body = nn.Sequential(
                nn.Conv2d(IN_CHANNELS, HIDDEN, 3, padding=1), act(),
                nn.Conv2d(HIDDEN, HIDDEN, 3, padding=2, dilation=2), act(),
                nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1), act(),
                nn.Conv2d(HIDDEN, MAPS, 1))
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)
            with torch.no_grad():
                self.skip.weight.zero_()
                for row in (0, 1):  # log saliency of a minus that of b (channels 4, 5)
                    self.skip.weight[row, 4] = START_STEEPNESS
                    self.skip.weight[row, 5] = -START_STEEPNESS
                self.skip.bias.copy_(torch.tensor([0.0, 0.0, _logit(START_KAPPA), _logit(START_BOOST)]))

        def forward(self, feats):
            # The convolutions run at half the maps' size (1/8 of the frame): a quarter of the
            # cost; the skip keeps the saliency rule at full 1/4 precision.
            coarse = self.body(F.avg_pool2d(feats, 2, ceil_mode=True))
            return self.skip(feats) + F.interpolate(coarse, size=feats.shape[-2:], mode="bilinear",
                                                    align_corners=False)

    return LiteNet()


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _box_torch(x, r: int):
    _, F = _torch()
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="reflect"), 2 * r + 1, stride=1)


def _gauss_torch(x, sigma: float):
    torch, F = _torch()
    r = int(4 * sigma + 0.5)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.pad(x, (r, r, r, r), mode="reflect")
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _laplacian_torch(x):
    torch, F = _torch()
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype, device=x.device)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k.view(1, 1, 3, 3))


def features_torch(a, b):
    """((B,6,h,w) network input, a_low, b_low) from lumas a, b (B,1,H,W) in 0..1; H, W
    multiples of SCALE."""
    torch, F = _torch()
    out, lows = [], []
    kernel = torch.from_numpy(_NOISE_KERNEL).to(a).view(1, 1, 3, 3)
    for x in (a, b):
        m = F.avg_pool2d(x, SCALE)
        sd = torch.sqrt(torch.clamp(F.avg_pool2d(x * x, SCALE) - m * m, min=0.0) + 1e-6)
        response = F.conv2d(x, kernel)[..., ::2, ::2].abs().flatten(1)
        noise = _NOISE_SCALE * response.median(dim=1).values.view(-1, 1, 1, 1)
        sal = F.avg_pool2d(_laplacian_torch(x).abs(), SCALE)
        floor = NOISE_MARGIN * _LAPLACIAN_OF_NOISE * noise
        sal = _gauss_torch(torch.sqrt(torch.relu(sal * sal - floor * floor) + 1e-12), SALIENCY_SIGMA)
        out += [m, sd, torch.log(sal + 1e-4)]
        lows.append(m)
    ma, sa, la, mb, sb, lb = out
    return torch.cat([ma, mb, sa, sb, la, lb], dim=1), lows[0], lows[1]


def probabilities_torch(maps):
    """`probabilities_numpy` (no emphasis) in torch: (B,4,h,w) logits -> (B,4,h,w)."""
    torch, _ = _torch()
    p = torch.sigmoid(maps)
    return torch.cat([p[:, :1], _box_torch(p[:, 1:2], BASE_WEIGHT_RADIUS), p[:, 2:]], dim=1)


def apply_torch(a, b, probs, a_low, b_low):
    """`apply_numpy` in torch: a, b (B,1,H,W), probs (B,4,h,w) -> fused (B,1,H,W), unclipped."""
    torch, F = _torch()
    shape = a.shape[-2:]
    up = lambda x: F.interpolate(x, size=shape, mode="bilinear", align_corners=False)  # noqa: E731
    r = GUIDE_RADIUS

    def guided_up(guide, guide_low, p_low):
        mean_i, mean_p = _box_torch(guide_low, r), _box_torch(p_low, r)
        var_i = _box_torch(guide_low * guide_low, r) - mean_i * mean_i
        coef = (_box_torch(guide_low * p_low, r) - mean_i * mean_p) / (var_i + GUIDE_EPS)
        offset = mean_p - coef * mean_i
        return up(_box_torch(coef, r)) * guide + up(_box_torch(offset, r))

    w_d, w_b, kappa, boost = probs[:, :1], probs[:, 1:2], probs[:, 2:3], probs[:, 3:]
    wa = guided_up(a, a_low, w_d).clamp(0.0, 1.0)
    wb = guided_up(b, b_low, 1.0 - w_d).clamp(0.0, 1.0)
    detail_w = wa / (wa + wb + 1e-6)
    base_a, base_b = _box_torch(a, BASE_RADIUS), _box_torch(b, BASE_RADIUS)
    mean_a = a_low.mean(dim=(2, 3), keepdim=True)
    mean_b = b_low.mean(dim=(2, 3), keepdim=True)
    selected = base_b + up(w_b) * (base_a - base_b)
    additive = ADDITIVE * (base_a + base_b) + (0.5 - ADDITIVE) * (mean_a + mean_b)
    base = selected + up(kappa) * (additive - selected)
    base = torch.where(base > 1.0 - KNEE, 1.0 - KNEE + KNEE * torch.tanh((base - (1.0 - KNEE)) / KNEE), base)
    base = torch.where(base < KNEE, KNEE - KNEE * torch.tanh((KNEE - base) / KNEE), base)
    detail_b = b - base_b
    detail = detail_b + detail_w * ((a - base_a) - detail_b)
    contrast = torch.sqrt(_gauss_torch(F.avg_pool2d(detail * detail, SCALE), CONTRAST_SIGMA) + 1e-12) * 255.0
    gain = 1.0 + boost / (1.0 + contrast / BOOST_CONTRAST)
    return base + up(gain) * detail

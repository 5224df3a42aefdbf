"""`lite` in torch, for training: the network (`build_net`) and the formula of
`streamfuse.models.lite` made differentiable (`features_torch`, `probabilities_torch`,
`apply_torch`). Inference never imports this file: it runs the same network and formula in
numpy/OpenCV (`lite.forward_numpy`, `lite.apply_numpy`); tests check that both agree.
"""
from __future__ import annotations

import numpy as np

from streamfuse.models.lite import (
    ADDITIVE,
    BASE_RADIUS,
    BASE_WEIGHT_RADIUS,
    BOOST_CONTRAST,
    BOOST_GRAIN,
    BOOST_SIGMA,
    CONTRAST_SIGMA,
    EXPOSED,
    EXPOSED_DROP,
    GUIDE_EPS,
    GUIDE_RADIUS,
    HIDDEN,
    IN_CHANNELS,
    KNEE,
    LAPLACIAN_OF_NOISE,
    MAPS,
    NOISE_KERNEL,
    NOISE_MARGIN,
    NOISE_SCALE,
    SALIENCY_SIGMA,
    SCALE,
    START_BOOST,
    START_KAPPA,
    START_STEEPNESS,
)


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
    kernel = torch.from_numpy(NOISE_KERNEL).to(a).view(1, 1, 3, 3)
    for x in (a, b):
        m = F.avg_pool2d(x, SCALE)
        sd = torch.sqrt(torch.clamp(F.avg_pool2d(x * x, SCALE) - m * m, min=0.0) + 1e-6)
        response = F.conv2d(x, kernel)[..., ::2, ::2].abs().flatten(1)
        noise = NOISE_SCALE * response.median(dim=1).values.view(-1, 1, 1, 1)
        sal = F.avg_pool2d(_laplacian_torch(x).abs(), SCALE)
        floor = NOISE_MARGIN * LAPLACIAN_OF_NOISE * noise
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


def grain_torch(x):
    """`lite.grain_sigma` per image of x (B,1,H,W) -> (B,), not differentiated."""
    torch, F = _torch()
    with torch.no_grad():
        smooth = _gauss_torch(x, 1.5)
        gx = F.conv2d(F.pad(smooth, (1, 1, 1, 1), mode="reflect"), _sobel(x, transpose=False))
        gy = F.conv2d(F.pad(smooth, (1, 1, 1, 1), mode="reflect"), _sobel(x, transpose=True))
        gradient = torch.sqrt(gx * gx + gy * gy).flatten(1)
        fine = (x - _gauss_torch(x, 2.0)).flatten(1)
        limit = torch.quantile(gradient[:, ::4], 0.3, dim=1, keepdim=True)
        flat = (gradient <= limit).float()
        count = flat.sum(dim=1).clamp(min=1.0)
        mean = (fine * flat).sum(dim=1) / count
        return torch.sqrt(((fine - mean[:, None]) ** 2 * flat).sum(dim=1) / count)


def _sobel(x, transpose: bool):
    torch, _ = _torch()
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    return (k.t() if transpose else k).reshape(1, 1, 3, 3)


def apply_torch(a, b, probs, a_low, b_low, grain=None):
    """`apply_numpy` in torch: a, b (B,1,H,W), probs (B,4,h,w) -> fused (B,1,H,W), unclipped.
    `grain`: (grain of a, grain of b), each (B,) (`grain_torch`, computed here if None)."""
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
    r_low = BASE_RADIUS // SCALE
    base_a, base_b = _box_torch(a_low, r_low), _box_torch(b_low, r_low)
    mean_a = a_low.mean(dim=(2, 3), keepdim=True)
    mean_b = b_low.mean(dim=(2, 3), keepdim=True)
    selected = base_b + w_b * (base_a - base_b)
    additive = ADDITIVE * (base_a + base_b) + (0.5 - ADDITIVE) * (mean_a + mean_b)
    base = selected + kappa * (additive - selected)
    exposed = ((base_b - EXPOSED[0]) / (EXPOSED[1] - EXPOSED[0])).clamp(0.0, 1.0)
    base = base + exposed * torch.relu(base_b - EXPOSED_DROP - base)
    base = torch.where(base > 1.0 - KNEE, 1.0 - KNEE + KNEE * torch.tanh((base - (1.0 - KNEE)) / KNEE), base)
    base = torch.where(base < KNEE, KNEE - KNEE * torch.tanh((KNEE - base) / KNEE), base)
    detail = b - up(base_b) + detail_w * (a - b - up(base_a - base_b))
    contrast = torch.sqrt(_gauss_torch(F.avg_pool2d(detail * detail, SCALE), CONTRAST_SIGMA) + 1e-12) * 255.0
    ga, gb = (grain_torch(a), grain_torch(b)) if grain is None else grain
    noise = 255.0 * (gb.view(-1, 1, 1, 1) + w_d * (ga - gb).view(-1, 1, 1, 1))
    signal = (1.0 - (BOOST_GRAIN * noise) ** 2 / (contrast * contrast + 1e-6)).clamp(0.0, 1.0)
    lift = boost * signal / (1.0 + contrast / BOOST_CONTRAST)
    half = F.avg_pool2d(detail, 2, ceil_mode=True)
    return up(base) + detail + up(lift) * up(_gauss_torch(half, BOOST_SIGMA / 2))

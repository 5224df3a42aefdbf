"""`lite`: learned fusion weights at 1/8 resolution, applied at full resolution on the CPU.

The network sees only 1/8-size statistics of the two lumas (IR a, visible b, both 0..1):

    cell means and standard deviations of a and b (4 x h/8 x w/8) ─► 4 small convs ─► 3 maps:
        w     IR weight of the base layer, 0..1     (sigmoid)
        g_ir  gain of the IR detail,       0..3     (3 * sigmoid)
        g_vis gain of the visible detail,  0..3     (3 * sigmoid)

and the maps are applied at full resolution by one formula, written twice over the same
operations: `apply_numpy` (OpenCV, the per-frame path; no torch) and `apply_torch`
(differentiable, for training); tests check that they agree.

    guide   = (a + b) / 2
    maps    = fast guided upsampling of (w, g_ir, g_vis) from 1/8 size, guided by `guide`
              (He & Sun 2015: a guided filter of radius 1 at 1/8 size, its linear
              coefficients upsampled bilinearly and applied to the full-size guide)
    base_x  = box blur of x, (2 * BASE_RADIUS + 1)^2;  detail_x = x - base_x
    fused   = w * base_a + (1 - w) * base_b + g_ir * detail_a + g_vis * detail_b

Both details are added (no per-pixel choice between cameras), and the maps are smooth, so
the maps are smooth. A semantic prior's emphasis e (0..1, at 1/8 size) hands the marked
regions to the IR after the network: w <- w + (1 - w) * e, g_ir <- g_ir + (1 - g_ir) * e,
g_vis <- g_vis * (1 - e), so where e = 1 the fused luma is the IR luma.
"""
from __future__ import annotations

import cv2
import numpy as np

#: The maps are predicted at 1/SCALE of the frame size.
SCALE = 8
#: Radius (px, full resolution) of the box blur that splits base from detail.
BASE_RADIUS = 8
#: Radius (px, 1/SCALE resolution) and regularisation of the guided upsampling.
GUIDE_RADIUS = 1
GUIDE_EPS = 1e-3
#: Upper bound of the detail gains.
MAX_GAIN = 3.0
#: Features per 1/SCALE cell fed to the network.
IN_CHANNELS = 4
HIDDEN = 16


def low_size(shape: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the maps for a frame of `shape` (h, w): ceil(h / SCALE) x ceil(w / SCALE)."""
    return max(1, -(-shape[0] // SCALE)), max(1, -(-shape[1] // SCALE))


# --------------------------------------------------------------------------- numpy / OpenCV

def features_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """4 x h x w float32 network input from two HxW float32 lumas in 0..1 (cell means, stds)."""
    h, w = low_size(a.shape)
    out = []
    for x in (a, b):
        m = cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)
        m2 = cv2.resize(x * x, (w, h), interpolation=cv2.INTER_AREA)
        out.append((m, np.sqrt(np.maximum(m2 - m * m, 0.0) + 1e-6)))
    (ma, sa), (mb, sb) = out
    return np.stack([ma, mb, sa, sb]).astype(np.float32)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT_101)


def apply_numpy(a: np.ndarray, b: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """The fused HxW float32 luma (not clipped) from lumas a, b (HxW float32, 0..1) and the
    3 x h x w maps (w, g_ir, g_vis) at low_size(a.shape)."""
    height, width = a.shape
    guide = cv2.addWeighted(a, 0.5, b, 0.5, 0.0)
    h, w = maps.shape[1:]
    g_low = cv2.resize(guide, (w, h), interpolation=cv2.INTER_AREA)
    r = GUIDE_RADIUS
    mean_i = _box(g_low, r)
    var_i = _box(g_low * g_low, r) - mean_i * mean_i
    full = []
    for p in maps:
        mean_p = _box(p, r)
        coef = (_box(g_low * p, r) - mean_i * mean_p) / (var_i + GUIDE_EPS)
        offset = mean_p - coef * mean_i
        coef_up = cv2.resize(_box(coef, r), (width, height), interpolation=cv2.INTER_LINEAR)
        offset_up = cv2.resize(_box(offset, r), (width, height), interpolation=cv2.INTER_LINEAR)
        full.append(cv2.add(cv2.multiply(coef_up, guide), offset_up))
    weight, gain_ir, gain_vis = full
    base_a, base_b = _box(a, BASE_RADIUS), _box(b, BASE_RADIUS)
    fused = base_b + weight * (base_a - base_b)
    fused += gain_ir * (a - base_a)
    fused += gain_vis * (b - base_b)
    return fused


def emphasize_numpy(maps: np.ndarray, emphasis: np.ndarray | None) -> np.ndarray:
    """The maps with a prior's emphasis (h x w, 0..1, at the maps' size) applied."""
    if emphasis is None:
        return maps
    w, g_ir, g_vis = maps
    return np.stack([w + (1.0 - w) * emphasis, g_ir + (1.0 - g_ir) * emphasis, g_vis * (1.0 - emphasis)])


# --------------------------------------------------------------------------- torch

def _torch():
    import torch
    import torch.nn.functional as F
    return torch, F


def build_net():
    """The network (an nn.Module): features (B,4,h,w) -> maps (B,3,h,w)."""
    torch, _ = _torch()
    from torch import nn

    class LiteNet(nn.Module):
        """4 convs at 1/8 size; starts as w = 0.5, g_ir = 1, g_vis = 1.2 everywhere."""

        def __init__(self):
            super().__init__()
            act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
            self.body = nn.Sequential(
                nn.Conv2d(IN_CHANNELS, HIDDEN, 3, padding=1, padding_mode="replicate"), act(),
                nn.Conv2d(HIDDEN, HIDDEN, 3, padding=2, dilation=2, padding_mode="replicate"), act(),
                nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1, padding_mode="replicate"), act(),
                nn.Conv2d(HIDDEN, 3, 1))
            head = self.body[-1]
            nn.init.zeros_(head.weight)
            with torch.no_grad():
                head.bias.copy_(torch.tensor([0.0, _logit(1.0 / MAX_GAIN), _logit(1.2 / MAX_GAIN)]))

        def forward(self, feats):
            z = self.body(feats)
            return torch.cat([torch.sigmoid(z[:, :1]), MAX_GAIN * torch.sigmoid(z[:, 1:])], dim=1)

    return LiteNet()


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _pool_area(x, size):
    _, F = _torch()
    return F.adaptive_avg_pool2d(x, size)


def _box_torch(x, r: int):
    _, F = _torch()
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="reflect"), 2 * r + 1, stride=1)


def features_torch(a, b):
    """(B,4,h,w) network input from lumas a, b (B,1,H,W) in 0..1; H, W multiples of SCALE."""
    torch, _ = _torch()
    size = low_size(tuple(a.shape[-2:]))
    out = []
    for x in (a, b):
        m = _pool_area(x, size)
        m2 = _pool_area(x * x, size)
        out += [m, torch.sqrt(torch.clamp(m2 - m * m, min=0.0) + 1e-6)]
    ma, sa, mb, sb = out
    return torch.cat([ma, mb, sa, sb], dim=1)


def upsample_maps_torch(a, b, maps):
    """Full-size (B,3,H,W) maps from (B,3,h,w): the guided upsampling of `apply_torch`."""
    _, F = _torch()
    height, width = a.shape[-2:]
    guide = 0.5 * a + 0.5 * b
    g_low = _pool_area(guide, tuple(maps.shape[-2:]))
    r = GUIDE_RADIUS
    mean_i = _box_torch(g_low, r)
    var_i = _box_torch(g_low * g_low, r) - mean_i * mean_i
    mean_p = _box_torch(maps, r)
    coef = (_box_torch(g_low * maps, r) - mean_i * mean_p) / (var_i + GUIDE_EPS)
    offset = mean_p - coef * mean_i
    up = lambda x: F.interpolate(_box_torch(x, r), size=(height, width), mode="bilinear",  # noqa: E731
                                 align_corners=False)
    return up(coef) * guide + up(offset)


def apply_torch(a, b, maps):
    """`apply_numpy` in torch: a, b (B,1,H,W), maps (B,3,h,w) -> fused (B,1,H,W), unclipped."""
    full = upsample_maps_torch(a, b, maps)
    weight, gain_ir, gain_vis = full[:, :1], full[:, 1:2], full[:, 2:]
    base_a, base_b = _box_torch(a, BASE_RADIUS), _box_torch(b, BASE_RADIUS)
    return base_b + weight * (base_a - base_b) + gain_ir * (a - base_a) + gain_vis * (b - base_b)

"""Loss terms for training the fusion networks (torch; imported by `streamfuse.train`).

Every image argument is a (B,C,H,W) float tensor in 0..1. Training batches have the layout of
`streamfuse.train.sample`: B x 2 (frames t, t+1) x 4 (IR luma, visible B, G, R) x H x W.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: BT.601 luma weights for B, G, R (the Y of OpenCV's YCrCb, which the fusers use).
_LUMA_BGR = (0.114, 0.587, 0.299)


def luma(bgr: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) luma of a (B,3,H,W) BGR tensor."""
    b, g, r = bgr[:, :1], bgr[:, 1:2], bgr[:, 2:3]
    return _LUMA_BGR[0] * b + _LUMA_BGR[1] * g + _LUMA_BGR[2] * r


def chroma(bgr: torch.Tensor) -> torch.Tensor:
    """(B,2,H,W) Cr, Cb (centred on 0) of a (B,3,H,W) BGR tensor, as OpenCV's YCrCb defines them."""
    y = luma(bgr)
    return torch.cat([(bgr[:, 2:3] - y) * 0.713, (bgr[:, :1] - y) * 0.564], dim=1)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two (B,1,H,W) images over 7x7 windows."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pool = lambda z: F.avg_pool2d(z, 7, 1, 3, count_include_pad=False)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx * mx, pool(y * y) - my * my, pool(x * y) - mx * my
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean()


def sobel(x: torch.Tensor) -> torch.Tensor:
    """(B,2,H,W) Sobel derivatives (x, y) of a (B,1,H,W) image, /4, replicate borders."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device) / 4.0
    kernel = torch.stack([k, k.t()])[:, None].to(x.dtype)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)


def gradient(x: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) L1 gradient magnitude |gx| + |gy|."""
    return sobel(x).abs().sum(dim=1, keepdim=True)


def corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample correlation coefficient of two (B,1,H,W) tensors: (B,)."""
    x = x.flatten(1) - x.flatten(1).mean(dim=1, keepdim=True)
    y = y.flatten(1) - y.flatten(1).mean(dim=1, keepdim=True)
    return (x * y).sum(1) / ((x * x).sum(1) * (y * y).sum(1) + 1e-12).sqrt()


def scd(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2 - SCD per sample (B,): 0 when each difference image is the other source."""
    return 2.0 - corr(fused - b, a) - corr(fused - a, b)


def box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Box mean over (2r+1)^2 with reflected borders."""
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="reflect"), 2 * r + 1, stride=1)

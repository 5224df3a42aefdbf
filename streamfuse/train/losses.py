"""Loss terms for training the fusion networks (torch; imported by `streamfuse.train.loop`).

Every image argument is a (B,C,H,W) float tensor in 0..1. Training batches have the layout of
`streamfuse.train.loop.sample`: B x 2 (frames t, t+1) x 4 (IR luma, visible B, G, R) x H x W.
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


def _sobel_kernels(like: torch.Tensor) -> torch.Tensor:
    """(2,1,3,3) Sobel kernels (x, y), unscaled, in `like`'s dtype and device."""
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=like.dtype, device=like.device)
    return torch.stack([k, k.t()])[:, None]


def sobel(x: torch.Tensor) -> torch.Tensor:
    """(B,2,H,W) Sobel derivatives (x, y) of a (B,1,H,W) image, /4, replicate borders."""
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), _sobel_kernels(x) / 4.0)


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



# --------------------------------------------------------------------------- the image measures
# Differentiable versions of VIF and Qabf as `streamfuse.quality.measures` computes them (the
# literature's MATLAB toolbox), on luma tensors in 0..1 scaled to grey levels 0..255. They
# differ from the measures only where those are not differentiable: no rounding to 8 bit, and
# Qabf's edge orientation and strength ratio are taken with a tiny epsilon.

def _gauss_window(n: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(n, dtype=like.dtype, device=like.device) - (n - 1) / 2
    k = torch.exp(-(x * x) / (2 * (n / 5.0) ** 2))
    return k / k.sum()


def _filter_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def vif(ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Pixel-domain 4-scale VIF of `dist` against `ref` (B,1,H,W in 0..1), per sample (B,)."""
    sigma_nsq = 2.0
    ref, dist = ref * 255.0, dist * 255.0
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        win = _gauss_window(n, ref)
        if scale > 1:
            ref = _filter_valid(ref, win)[..., ::2, ::2]
            dist = _filter_valid(dist, win)[..., ::2, ::2]
        if min(ref.shape[-2:]) < n:
            break
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        s1 = (_filter_valid(ref * ref, win) - mu1 * mu1).clamp(min=0)
        s2 = (_filter_valid(dist * dist, win) - mu2 * mu2).clamp(min=0)
        s12 = _filter_valid(ref * dist, win) - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        negative = g < 0
        sv = torch.where(negative, s2, sv).clamp(min=1e-10)
        g = g.clamp(min=0)
        num = num + torch.log10(1 + g * g * s1 / (sv + sigma_nsq)).flatten(1).sum(1)
        den = den + torch.log10(1 + s1 / sigma_nsq).flatten(1).sum(1)
    return num / (den + 1e-12)


def _edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and orientation atan(gy/gx) of a (B,1,H,W) image in grey levels."""
    d = F.conv2d(x, _sobel_kernels(x), padding=1)  # unscaled, zero borders: as the toolbox
    gx, gy = d[:, :1], d[:, 1:]
    strength = torch.sqrt(gx * gx + gy * gy + 1e-6)
    safe = torch.where(gx.abs() < 1e-6, torch.full_like(gx, 1e-6), gx)
    return strength, torch.atan(gy / safe)


def qabf(a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """Xydeas-Petrovic Q^AB/F of `fused` from sources a, b (B,1,H,W in 0..1), per sample (B,)."""
    from streamfuse.quality.measures import _DA, _DG, _KA, _KG, _TA, _TG

    (g_a, o_a), (g_b, o_b), (g_f, o_f) = _edges(a * 255.0), _edges(b * 255.0), _edges(fused * 255.0)

    def keep(g_s, o_s):
        ratio = torch.minimum(g_s, g_f) / torch.maximum(g_s, g_f)
        q_g = _TG / (1 + torch.exp(_KG * (ratio - _DG)))
        q_o = _TA / (1 + torch.exp(_KA * (1 - (o_s - o_f).abs() / (torch.pi / 2) - _DA)))
        return q_g * q_o

    total = (keep(g_a, o_a) * g_a + keep(g_b, o_b) * g_b).flatten(1).sum(1)
    return total / (g_a + g_b).flatten(1).sum(1)


# --------------------------------------------------------------------------- SPGFusion's terms
# As SPGFusion's `util.py` computes them (RGB order there; these take the channel order they are
# given, grey via `grey_rgb` on RGB tensors), written with separable filters.

def _gauss(n: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(n, dtype=like.dtype, device=like.device) - n // 2
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _separable(x: torch.Tensor, k: torch.Tensor, pad: int) -> torch.Tensor:
    """Depthwise separable filtering of (B,C,H,W) by the 1-d kernel k, zero padding `pad`."""
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, pad), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(pad, 0), groups=c)


def grey_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) 0.299 R + 0.587 G + 0.114 B of an RGB tensor; a 1-channel tensor is returned as is."""
    if rgb.shape[1] == 1:
        return rgb
    return 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 48) -> torch.Tensor:
    """1 - mean SSIM over valid (unpadded) Gaussian windows of `window` pixels, sigma 1.5, per
    channel (SPGFusion's L_SSIM(window_size=48); a 1-channel x against a 3-channel y is repeated)."""
    if x.shape[1] == 1 and y.shape[1] != 1:
        x = x.expand(-1, y.shape[1], -1, -1)
    window = min(window, x.shape[-2], x.shape[-1])
    k = _gauss(window, 1.5, x)
    f = lambda z: _separable(z, k, 0)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return 1.0 - (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean()


def max_gradient_loss(a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """L1 of |Sobel_x f| to max(|Sobel_x a|, |Sobel_x b|), plus the same along y (unscaled Sobel,
    replicate borders; SPGFusion's GradientMaxLoss), on (B,1,H,W) greys."""
    ga, gb, gf = (F.conv2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), _sobel_kernels(z)).abs() for z in (a, b, fused))
    return (gf - torch.maximum(ga, gb)).abs().mean(dim=(0, 2, 3)).sum()


def local_mse(x: torch.Tensor, y: torch.Tensor, window: int = 9) -> torch.Tensor:
    """(B,1,H,W) squared difference summed over channels and a window x window box (zero
    padding), divided by window^2 (SPGFusion's `mse`)."""
    d = ((x - y) ** 2).sum(dim=1, keepdim=True)
    return F.avg_pool2d(d, window, 1, window // 2, count_include_pad=True)


def local_std(x: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Per-channel local standard deviation over a Gaussian window (sigma 1.5, zero padding)."""
    k = _gauss(window, 1.5, x)
    mu = _separable(x, k, window // 2)
    return (_separable(x * x, k, window // 2) - mu * mu).clamp(min=1e-10).sqrt()


def intensity_mask_loss(vis: torch.Tensor, ir: torch.Tensor, fused: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """SPGFusion's adaptive intensity loss (Intensity_Mask2) on 3-channel images: per pixel,
    w * localMSE(vis, f) + (1 - w) * localMSE(ir, f), w = sigmoid(brightness(vis) - brightness(ir)
    + std(vis) - std(ir)) (brightness: the channel mean; std: 9x9 local, per channel).

    `mask` (B,1,H,W in 0..1, targets = 1): inside it the IR is the target (w -> 0). The
    published code accepts a mask but its line `w * mask + (1 - mask) * w` leaves w unchanged;
    this is what a target mask is for, and it is used only with the `mask` training prior."""
    w = torch.sigmoid(vis.mean(dim=1, keepdim=True) - ir.mean(dim=1, keepdim=True) + local_std(vis) - local_std(ir))
    if mask is not None:
        w = w * (1.0 - mask)
    return (w * local_mse(vis, fused) + (1.0 - w) * local_mse(ir, fused)).mean()


def cbcr_loss(rgb_a: torch.Tensor, rgb_b: torch.Tensor) -> torch.Tensor:
    """L1 of Cb plus L1 of Cr (BT.601 full-range formulas on RGB; SPGFusion's L_color)."""
    def cbcr(x):
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        return -0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b

    (cb_a, cr_a), (cb_b, cr_b) = cbcr(rgb_a), cbcr(rgb_b)
    return (cb_a - cb_b).abs().mean() + (cr_a - cr_b).abs().mean()

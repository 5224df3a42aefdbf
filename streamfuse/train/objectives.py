"""What each trainable network minimises: `OBJECTIVES[network](net, batch, ...) -> {term: tensor}`.

Batches have the layout of `streamfuse.train.loop.sample`: B x 2 (frames t, t+1) x 4 (IR
luma, visible B, G, R) x H x W float in 0..1. No fused ground truth exists, so every
objective is label-free.

`lite` is trained on the image measures themselves, made differentiable
(`streamfuse.train.losses`), on the fused luma f of the lumas a (IR) and b (visible):

    vif          max(0, VIF_TARGET - VIF(a, f) - VIF(b, f))     information of both kept (hinge)
    qabf         1 - Qabf(a, b, f)                             edges as strong and as oriented
    scd          max(0, SCD_TARGET - SCD(a, b, f))             what each camera adds (hinge)
    consistency  | maps(flip x) - flip maps(x) |               equivariance
    temporal     | maps(x_t) - maps(x_t+1) |                   no flicker between frames

`spg` has SPGFusion-style losses (`spg_losses`).
"""
from __future__ import annotations

import torch

from streamfuse.models import lite_torch
from streamfuse.train import losses as L

#: Loss weights. VIF and SCD count only below their targets (a hinge): past them, Qabf (edge
#: preservation, the hardest of the three to raise) decides.
VIF_W, VIF_TARGET = 1.0, 1.0
QABF_W = 4.0
SCD_W, SCD_TARGET = 1.0, 1.5
CLIP_W = 0.1
LITE_CONSISTENCY_W = 0.5
LITE_TEMPORAL_W = 1.0

#: Loss weights (spg_losses). Sobel gradients (/4) and luma differences are small numbers, so
#: their terms are scaled up to weigh about as much as the SSIM term at the start of training.
GRAD_W = 10.0
INTENSITY_W = 0.5
COLOUR_W = 2.0
SPG_CONSISTENCY_W = 1.0
SPG_TEMPORAL_W = 4.0


def lite_losses(net, batch, clip=None) -> dict:
    """The lite loss terms (module docstring) on one batch (layout of `sample`); with `clip`
    (a `clipfusion.PromptTargets`), CLIPFusion's prompt loss on the fused luma too."""
    a0, b0 = batch[:, 0, :1], L.luma(batch[:, 0, 1:])
    a1, b1 = batch[:, 1, :1], L.luma(batch[:, 1, 1:])
    feats0, a_low, b_low = lite_torch.features_torch(a0, b0)
    maps0 = net(feats0)
    probs0 = lite_torch.probabilities_torch(maps0)
    probs1 = lite_torch.probabilities_torch(net(lite_torch.features_torch(a1, b1)[0]))
    flipped = lite_torch.probabilities_torch(net(lite_torch.features_torch(a0.flip(-1), b0.flip(-1))[0]).flip(-1))
    fused = lite_torch.apply_torch(a0, b0, probs0, a_low, b_low).clamp(0.0, 1.0)
    extra = {} if clip is None else {"clip": CLIP_W * clip.loss(fused)}
    return extra | {
        "vif": VIF_W * (VIF_TARGET - L.vif(a0, fused) - L.vif(b0, fused)).clamp(min=0).mean(),
        "qabf": QABF_W * (1.0 - L.qabf(a0, b0, fused)).mean(),
        "scd": SCD_W * (SCD_TARGET - (2.0 - L.scd(fused, a0, b0))).clamp(min=0).mean(),
        "consistency": LITE_CONSISTENCY_W * (flipped - probs0).abs().mean(),
        "temporal": LITE_TEMPORAL_W * (probs1 - probs0).abs().mean(),
    }


def spg_losses(net, batch, prior=None) -> dict:
    """The weighted loss terms of one training batch; their sum is what to minimise.

    Args:
        net: the network (train mode).
        batch: B x 2 (frames t, t+1) x 4 (IR luma, visible B, G, R) x H x W float in 0..1,
            the layout of `streamfuse.train.loop.sample`.
        prior: optional prior maps for frame t and t+1 alike: a (B,P,h,w) tensor for both
            modalities or a pair (IR maps, visible maps); the modulation then gets gradients.

    Terms, on the fused luma f of frame t, with a the IR and b the visible luma:
        ssim         1 - (SSIM(f, a) + SSIM(f, b)) / 2
        gradient     | |grad f| - max(|grad a|, |grad b|) |            the stronger edge (x GRAD_W)
        intensity    | f - max(a, b) |                                 SPGFusion's maximum intensity
        colour       | chroma(fused) - chroma(visible) |               the visible colours (x COLOUR_W)
        consistency  | flip net(flip x) - net(x) |                     flip equivariance
        temporal     relu(|f1 - f0| - max(|a1 - a0|, |b1 - b0|))       no change the sources lack
    """
    n, _, _, h, w = batch.shape
    ir = torch.cat([batch[:, 0, :1], batch[:, 1, :1], batch[:, 0, :1].flip(-1)])
    vis = torch.cat([batch[:, 0, 1:4], batch[:, 1, 1:4], batch[:, 0, 1:4].flip(-1)])
    # One forward over frame t, frame t+1 and the mirrored frame t: three views, one pass.
    out = net(ir, vis, _batch_modulation(net, prior, h, w))
    fused0, fused1, mirrored = out[:n], out[n:2 * n], out[2 * n:].flip(-1)
    f0, f1 = L.luma(fused0), L.luma(fused1)
    a0, a1 = batch[:, 0, :1], batch[:, 1, :1]
    b0, b1 = L.luma(batch[:, 0, 1:4]), L.luma(batch[:, 1, 1:4])
    source_change = torch.maximum((a1 - a0).abs(), (b1 - b0).abs())
    return {
        "ssim": 1.0 - 0.5 * (L.ssim(f0, a0) + L.ssim(f0, b0)),
        "gradient": GRAD_W * (L.gradient(f0) - torch.maximum(L.gradient(a0), L.gradient(b0))).abs().mean(),
        "intensity": INTENSITY_W * (f0 - torch.maximum(a0, b0)).abs().mean(),
        "colour": COLOUR_W * (L.chroma(fused0) - L.chroma(batch[:, 0, 1:4])).abs().mean(),
        "consistency": SPG_CONSISTENCY_W * (mirrored - fused0).abs().mean(),
        "temporal": SPG_TEMPORAL_W * torch.relu((f1 - f0).abs() - source_change).mean(),
    }


def _batch_modulation(net, prior, height: int, width: int):
    """The modulation for spg_losses' three views (t, t+1, mirrored t); None without a prior."""
    if prior is None:
        return None
    p_ir, p_vis = prior if isinstance(prior, (tuple, list)) else (prior, prior)
    three = lambda p: torch.cat([p, p, p.flip(-1)])  # noqa: E731
    return net.modulation(three(p_ir), three(p_vis), height, width)


#: The objective of each trainable network (`streamfuse.fuse.MODES[...].network`).
OBJECTIVES = {"lite_torch": lite_losses, "spg": spg_losses}

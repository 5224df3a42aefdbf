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

`spg` has SPGFusion's published losses (`spg_losses`) and a temporal term; `c3d` (CLIPFusion's
generator) the lite measures on its luma, a temporal term, and CLIPFusion's prompt loss.
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

#: SPGFusion's loss weights (util.py `fusion_loss`: ssim_ratio, grad_ratio, int_ratio1,
#: color_ratio, consist_ratio), and the temporal term's, which SPGFusion (stills) has not.
SPG_SSIM_W = 1.0
SPG_GRAD_W = 10.0
SPG_INTENSITY_W = 4.0
SPG_COLOUR_W = 12.0
SPG_CONSIST_W = 1.0
SPG_TEMPORAL_W = 4.0


def measure_terms(a, b, fused) -> dict:
    """The image measures as weighted loss terms (module docstring): VIF and SCD hinges, 1 - Qabf,
    of the fused luma from the IR luma a and the visible luma b."""
    return {
        "vif": VIF_W * (VIF_TARGET - L.vif(a, fused) - L.vif(b, fused)).clamp(min=0).mean(),
        "qabf": QABF_W * (1.0 - L.qabf(a, b, fused)).mean(),
        "scd": SCD_W * (SCD_TARGET - (2.0 - L.scd(fused, a, b))).clamp(min=0).mean(),
    }


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
        **measure_terms(a0, b0, fused),
        "consistency": LITE_CONSISTENCY_W * (flipped - probs0).abs().mean(),
        "temporal": LITE_TEMPORAL_W * (probs1 - probs0).abs().mean(),
    }


def spg_losses(net, batch, prior=None, mask=None, clip=None) -> dict:
    """The weighted loss terms of one training batch; their sum is what to minimise.

    Args:
        net: the network (train mode).
        batch: B x 2 (frames t, t+1) x 4 (IR luma, visible B, G, R) x H x W float in 0..1,
            the layout of `streamfuse.train.loop.sample`.
        prior: None (the no-prior input), or the semantic maps (IR, visible) of frame t, each
            (B, D, h, w); frame t+1 is fused with the same maps, as the pipeline reuses a prior
            between refreshes. The modulation then gets its gradients from every term.
        mask: (B,1,H,W) target masks of frame t (the `mask` training prior), or None.
        clip: a `clipfusion.PromptTargets`: CLIPFusion's prompt loss on the fused luma too
            (x CLIP_W; luma, as the prompts were fitted on grey images).

    Terms, SPGFusion's (`util.py`), on RGB views of frame t (the IR repeated to three channels),
    f the fused image, with their weights:
        ssim         SSIM loss (window 48) of f to the visible RGB + of grey f to the IR (x1)
        gradient     per-axis L1 of |Sobel f| to the larger source's (x10)
        intensity    adaptive local MSE to the brighter/busier source, IR inside `mask` (x4)
        colour       L1 of Cb and Cr to the visible image's (x12)
        consistency  (L1(grey f, grey visible) + L1(grey f, IR)) / 2 (x1)
    and the temporal term: relu(|grey f1 - grey f0| - max(|a1 - a0|, |b1 - b0|)) (x4), no
    change between frames that the sources do not have.
    """
    n, _, _, h, w = batch.shape
    ir = torch.cat([batch[:, 0, :1], batch[:, 1, :1]])
    vis = torch.cat([batch[:, 0, 1:4], batch[:, 1, 1:4]])
    modulation = None if prior is None else net.modulation(*(torch.cat([p, p]) for p in prior), h, w)
    out = net(ir, vis, modulation)  # frames t and t+1, one pass
    rgb = lambda bgr: bgr.flip(1)  # noqa: E731
    fused0, fused1 = rgb(out[:n]), rgb(out[n:])
    vis0, ir0 = rgb(batch[:, 0, 1:4]), batch[:, 0, :1]
    f0, f1, b0, b1 = L.grey_rgb(fused0), L.grey_rgb(fused1), L.grey_rgb(vis0), L.grey_rgb(rgb(batch[:, 1, 1:4]))
    a0, a1 = ir0, batch[:, 1, :1]
    source_change = torch.maximum((a1 - a0).abs(), (b1 - b0).abs())
    extra = {} if clip is None else {"clip": CLIP_W * clip.loss(L.luma(out[:n]))}
    return extra | {
        "ssim": SPG_SSIM_W * (L.ssim_loss(vis0, fused0) + L.ssim_loss(a0, f0)),
        "gradient": SPG_GRAD_W * L.max_gradient_loss(b0, a0, f0),
        "intensity": SPG_INTENSITY_W * L.intensity_mask_loss(vis0, ir0.expand(-1, 3, -1, -1), fused0, mask),
        "colour": SPG_COLOUR_W * L.cbcr_loss(vis0, fused0),
        "consistency": SPG_CONSIST_W * 0.5 * ((b0 - f0).abs().mean() + (a0 - f0).abs().mean()),
        "temporal": SPG_TEMPORAL_W * torch.relu((f1 - f0).abs() - source_change).mean(),
    }


def c3d_losses(net, batch, clip=None) -> dict:
    """The c3d generator's loss terms: the lite terms (the image measures, made differentiable)
    on its fused luma, the temporal term on the luma itself, and with `clip` CLIPFusion's
    prompt loss, its main signal in the paper."""
    a0, b0 = batch[:, 0, :1], L.luma(batch[:, 0, 1:])
    a1, b1 = batch[:, 1, :1], L.luma(batch[:, 1, 1:])
    f0, f1 = net(a0, b0), net(a1, b1)
    source_change = torch.maximum((a1 - a0).abs(), (b1 - b0).abs())
    extra = {} if clip is None else {"clip": CLIP_W * clip.loss(f0)}
    return extra | measure_terms(a0, b0, f0) | {
        "temporal": SPG_TEMPORAL_W * torch.relu((f1 - f0).abs() - source_change).mean(),
    }


@torch.no_grad()
def c3d_fused_luma(net, batch) -> torch.Tensor:
    """(B,1,H,W) the c3d generator's fused luma of frame t of a batch."""
    return net(batch[:, 0, :1], L.luma(batch[:, 0, 1:]))


@torch.no_grad()
def lite_fused_luma(net, batch) -> torch.Tensor:
    """(B,1,H,W) the lite network's fused luma of frame t of a batch (CLIPFusion's refits)."""
    a0, b0 = batch[:, 0, :1], L.luma(batch[:, 0, 1:])
    feats, a_low, b_low = lite_torch.features_torch(a0, b0)
    return lite_torch.apply_torch(a0, b0, lite_torch.probabilities_torch(net(feats)), a_low, b_low).clamp(0.0, 1.0)


@torch.no_grad()
def spg_fused_luma(net, batch) -> torch.Tensor:
    """(B,1,H,W) the spg network's fused luma of frame t of a batch, without a prior."""
    return L.luma(net(batch[:, 0, :1], batch[:, 0, 1:4]).clamp(0.0, 1.0))


#: The objective of each trainable network (`streamfuse.fuse.MODES[...].network`).
OBJECTIVES = {"lite_torch": lite_losses, "spg": spg_losses, "c3d": c3d_losses}
#: What each trainable network fuses a batch to, as CLIPFusion's prompts read it (grey).
FUSED_LUMA = {"lite_torch": lite_fused_luma, "spg": spg_fused_luma, "c3d": c3d_fused_luma}

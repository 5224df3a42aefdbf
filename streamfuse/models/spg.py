"""`spg`: a prior-guided fusion network in the manner of SPGFusion.

Shape of the network (B = batch, H x W divisible by 8 after padding):

    ir  (B,1,H,W) ─► encoder_ir  ─► f_ir[s]  ─┐  s = 1, 1/2, 1/4, 1/8
    vis (B,3,H,W) ─► encoder_vis ─► f_vis[s] ─┤
                                              ├─ semantic spatial modulation per modality and scale:
    prior maps (B,P,h,w) ─► modulation() ─────┘  f <- f * (1 + gamma) + beta   (SFT-style)
    coarsest scale: cross-modal attention (IR queries visible and vice versa)
    decoder: fuse both modalities per scale, upsample, skip connections ─► (B,3,H,W) in [0,1]

`modulation(prior_ir, prior_vis)` depends only on the priors, so the pipeline computes it
once per prior refresh and passes the result to every `forward` until the next refresh
(in SPGFusion this part is most of the network's FLOPs). With `modulation=None` the
modulation is off and the network still fuses.

Colour order: the visible input and the fused output are BGR (OpenCV's order, and the order of
`streamfuse.train.loop.sample`); the weights learn whichever order they are trained in, so training
and fusion must agree, and both use BGR.

Beside the network: `prior_maps` (a `priors.Prior` -> the P prior channels per modality, the
preprocessing that travels with the weights) and `build_net`. Its losses are in
`streamfuse.train.objectives`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Channels per scale (full, 1/2, 1/4, 1/8). Chosen for 60 fps at 640x512 in bf16 on one H100
#: (not yet measured on a GPU: `streamfuse bench-models --device cuda`).
WIDTHS = (16, 32, 64, 96)
#: Prior channels per modality, in the order `prior_maps` stacks them.
PRIOR_CHANNELS = 4
#: Distinctiveness is stretched over at least this much cosine distance (as the extractor's
#: objectness), so a frame of one meaning does not turn feature noise into full contrast.
_MIN_SPREAD = 0.05


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class Encoder(nn.Module):
    """Four scales of features from one modality."""

    def __init__(self, cin: int, widths=WIDTHS):
        super().__init__()
        self.stem = nn.Sequential(_conv(cin, widths[0]), _conv(widths[0], widths[0]))
        self.down = nn.ModuleList(
            nn.Sequential(_conv(widths[i], widths[i + 1], 2), _conv(widths[i + 1], widths[i + 1]))
            for i in range(len(widths) - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for block in self.down:
            feats.append(block(feats[-1]))
        return feats


class Modulator(nn.Module):
    """Prior maps -> (gamma, beta) for every scale of one modality's features."""

    def __init__(self, prior_channels: int, widths=WIDTHS, hidden: int = 32):
        super().__init__()
        self.shared = nn.Sequential(_conv(prior_channels, hidden), _conv(hidden, hidden))
        self.heads = nn.ModuleList(nn.Conv2d(hidden, 2 * w, 3, 1, 1) for w in widths)
        for head in self.heads:  # start as the identity modulation
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, prior: torch.Tensor, sizes: list[tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for head, size in zip(self.heads, sizes):
            h = self.shared(F.interpolate(prior, size=size, mode="bilinear", align_corners=False))
            gamma, beta = head(h).chunk(2, dim=1)
            out.append((gamma, beta))
        return out


class CrossAttention(nn.Module):
    """Each modality's coarsest features attend to the other's (multi-head, residual)."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.ir_from_vis = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.vis_from_ir = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_ir = nn.LayerNorm(dim)
        self.norm_vis = nn.LayerNorm(dim)

    def forward(self, f_ir: torch.Tensor, f_vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = f_ir.shape
        t_ir = self.norm_ir(f_ir.flatten(2).transpose(1, 2))
        t_vis = self.norm_vis(f_vis.flatten(2).transpose(1, 2))
        a_ir, _ = self.ir_from_vis(t_ir, t_vis, t_vis, need_weights=False)
        a_vis, _ = self.vis_from_ir(t_vis, t_ir, t_ir, need_weights=False)
        back = lambda t: t.transpose(1, 2).reshape(b, c, h, w)  # noqa: E731
        return f_ir + back(a_ir), f_vis + back(a_vis)


class SPGFusionNet(nn.Module):
    """Registered IR (B,1,H,W) and visible BGR (B,3,H,W), both in [0,1] -> fused BGR (B,3,H,W) in [0,1].

    `modulation`: None (off), or what `modulation(prior_ir, prior_vis, H, W)` returned for
    this H x W (prior maps (B,P,h,w) in [0, 1], P = `prior_channels`, any h x w).
    """

    def __init__(self, prior_channels: int = PRIOR_CHANNELS, widths=WIDTHS):
        super().__init__()
        self.widths = widths
        self.prior_channels = prior_channels
        self.enc_ir = Encoder(1, widths)
        self.enc_vis = Encoder(3, widths)
        self.mod_ir = Modulator(prior_channels, widths)
        self.mod_vis = Modulator(prior_channels, widths)
        self.cross = CrossAttention(widths[-1])
        self.merge = nn.ModuleList(_conv(2 * w, w) for w in widths)
        self.up = nn.ModuleList(_conv(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], 3, 3, 1, 1)

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        sizes, h, w = [], height, width
        for _ in self.widths:
            sizes.append((h, w))
            h, w = (h + 1) // 2, (w + 1) // 2
        return sizes

    def modulation(self, prior_ir: torch.Tensor, prior_vis: torch.Tensor, height: int, width: int):
        """Everything that depends only on the priors; reuse it until the next refresh."""
        sizes = self.feature_sizes(height, width)
        return self.mod_ir(prior_ir, sizes), self.mod_vis(prior_vis, sizes)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, modulation=None) -> torch.Tensor:
        f_ir, f_vis = self.enc_ir(ir), self.enc_vis(vis)
        if modulation is not None:
            m_ir, m_vis = modulation
            f_ir = [f * (1 + g) + b for f, (g, b) in zip(f_ir, m_ir)]
            f_vis = [f * (1 + g) + b for f, (g, b) in zip(f_vis, m_vis)]
        f_ir[-1], f_vis[-1] = self.cross(f_ir[-1], f_vis[-1])
        fused = [m(torch.cat([a, b], dim=1)) for m, a, b in zip(self.merge, f_ir, f_vis)]
        x = fused[-1]
        for i in range(len(self.widths) - 2, -1, -1):
            x = F.interpolate(x, size=fused[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, fused[i]], dim=1))
        # Residual on the visible image: the network learns what to add from the IR.
        return (vis + self.head(x)).clamp(0, 1)


def build_net() -> SPGFusionNet:
    """The network with the default sizes (the ones `fuse.spg` loads weights into)."""
    return SPGFusionNet(prior_channels=PRIOR_CHANNELS, widths=WIDTHS)


# --- priors -> prior maps (numpy, no torch) -----------------------------------------------


def prior_maps(prior) -> tuple[np.ndarray, np.ndarray]:
    """The network's prior channels for a `priors.Prior`: (IR maps, visible maps), each
    PRIOR_CHANNELS x gh x gw float32 in [0, 1] on the prior's grid (the emphasis map's).

    Channels, per modality: 0 emphasis, 1 the largest prompt relevance, 2 how distinct each
    patch's meaning is in that camera (cosine distance from the frame's mean meaning, 0 at the
    median patch, 1 at the most distinct), 3 how much the two cameras agree on the meaning
    there ((1 + cos) / 2). Only cosines between CLIP features enter, so the maps do not depend on
    the CLIP model's width. A prior with only `emphasis` (the Fuser contract allows that)
    gives zeros in channels 1-3.
    """
    emphasis = np.clip(np.asarray(prior.emphasis, dtype=np.float32), 0.0, 1.0)
    if emphasis.ndim != 2 or emphasis.size == 0:
        raise ValueError(f"prior: expected an hxw emphasis map, got shape {emphasis.shape}")
    zeros = np.zeros_like(emphasis)
    relevance = getattr(prior, "relevance", None) or {}
    rel = np.max([_on_grid(r, emphasis.shape) for r in relevance.values()], axis=0) if relevance else zeros
    sem_ir, sem_vis = getattr(prior, "semantic_ir", None), getattr(prior, "semantic_vis", None)
    if sem_ir is None or sem_vis is None:
        distinct_ir = distinct_vis = agree = zeros
    else:
        f_ir, f_vis = _unit(sem_ir), _unit(sem_vis)
        distinct_ir = _on_grid(_distinctiveness(f_ir), emphasis.shape)
        distinct_vis = _on_grid(_distinctiveness(f_vis), emphasis.shape)
        agree = _on_grid(0.5 * (1.0 + (f_ir * f_vis).sum(-1)), emphasis.shape)
    stack = lambda distinct: np.clip(np.stack([emphasis, rel, distinct, agree]), 0.0, 1.0)  # noqa: E731
    return stack(distinct_ir).astype(np.float32), stack(distinct_vis).astype(np.float32)


def _unit(features) -> np.ndarray:
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 3:
        raise ValueError(f"prior: expected gh x gw x C semantic features, got shape {f.shape}")
    return f / (np.linalg.norm(f, axis=-1, keepdims=True) + 1e-6)


def _distinctiveness(f: np.ndarray) -> np.ndarray:
    """gh x gw in [0, 1] from unit features gh x gw x C (the extractor's objectness formula)."""
    mean = f.reshape(-1, f.shape[-1]).mean(axis=0)
    distance = 1.0 - f @ (mean / (np.linalg.norm(mean) + 1e-6))
    median = float(np.median(distance))
    spread = max(float(distance.max()) - median, _MIN_SPREAD)
    return np.clip((distance - median) / spread, 0.0, 1.0)


def _on_grid(a, shape: tuple[int, int]) -> np.ndarray:
    """`a` (float32) resized to `shape` (h, w) if it is on another grid."""
    import cv2

    a = np.asarray(a, dtype=np.float32)
    return a if a.shape == shape else cv2.resize(a, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)

"""`spg`: the SPGFusion network (Huiqin-Zhang/SPGFusion, `model/SPGFusion.py`), made small.

Shape of the network (B = batch, H x W divisible by 8 after padding):

    ir  (B,1,H,W) ─► encoder_ir  ─► f_ir[l]   l = 1..4 (full, 1/2, 1/4, 1/8)
    vis (B,3,H,W) ─► encoder_vis ─► f_vis[l]
    semantic maps (B,D,h,w) per camera ─► CSAF modulation (gamma, beta) per level and camera

    level 4: cross-attention (IR <-> visible) ─► CSAF per camera ─► fusion embed (1x1 conv of both)
             ─► spatial self-attention ─► decoder
    levels 3..1: upsample ─► concat with the fusion embed of both CSAF-modulated encoder features
             ─► decoder conv
    head: 3x3 conv ─► BGR, plus the mean of the two sources (see `SPGFusionNet.forward`)

CSAF, as SPGFusion: `BatchNorm(InstanceNorm(f) * (1 + gamma)) + beta`, with
`h = relu(conv3x3(semantic map resized to f))`, `gamma = sigmoid(conv3x3(h))`, `beta = conv3x3(h)`;
one block per level, shared by both cameras (each modulated by its own camera's map).

Where this departs from the published network, and why:
- Convolutional encoders and decoders of widths `WIDTHS` instead of Restormer blocks of
  48..384 channels: the published network runs at ~1 fps on a GPU at 640x512 and cannot be
  trained on a CPU at all; the structure (two encoders, CSAF at every level, level-4
  cross-attention, fusion embeds, spatial attention, skip connections) is kept.
- The semantic maps have `SEMANTIC_DIM` channels, a fixed projection of the pooled CLIP
  features (`semantic_maps`), and CSAF's hidden width is `HIDDEN` (SPGFusion: 768 and 384).
  CSAF's first 3x3 conv runs at every level's full resolution, so its cost grows with the
  product of the two widths: at 640x512 the published 768 -> 384 conv is ~1.7 TFLOP per camera
  per refresh, 64 -> 32 is ~0.012 TFLOP (`streamfuse bench-models`, `spg modulation`).
- The head adds the mean of the IR and the visible image: the untrained network starts from
  average fusion rather than noise, which a CPU training budget needs.

`modulation(sem_ir, sem_vis, H, W)` depends only on the semantic maps, so the pipeline computes
it once per prior refresh and passes it to every `forward` until the next; `forward` without
one uses the modulation of an all-zero map ("no prior"), the same input a network trained
without priors always saw.

Colour order: the visible input and the output are BGR (OpenCV's, and `train.data.sample`'s).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Channels per level (full, 1/2, 1/4, 1/8).
WIDTHS = (16, 32, 64, 96)
#: Channels of each camera's semantic map (the network's prior input).
SEMANTIC_DIM = 64
#: CSAF's hidden width (SPGFusion: 384).
HIDDEN = 32


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class Encoder(nn.Module):
    """Four levels of features from one camera."""

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


class CSAF(nn.Module):
    """SPGFusion's semantic modulation of one level (module docstring), split in two: `params`
    (from the semantic map only: once per prior refresh) and `forward` (per frame)."""

    def __init__(self, width: int, semantic_dim: int = SEMANTIC_DIM, hidden: int = HIDDEN):
        super().__init__()
        self.norm = nn.InstanceNorm2d(width, affine=False, track_running_stats=False)
        self.shared = nn.Sequential(nn.Conv2d(semantic_dim, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, width, 3, padding=1)
        self.beta = nn.Conv2d(hidden, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def params(self, semantic: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta), each (B, width, *size), of a (B, D, h, w) semantic map."""
        h = self.shared(F.interpolate(semantic, size=size, mode="bilinear", align_corners=False))
        return torch.sigmoid(self.gamma(h)), self.beta(h)

    def forward(self, f: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return self.bn(self.norm(f) * (1 + gamma)) + beta


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One-head attention over the pixels of (B, C, H, W) maps: softmax(q k^T / sqrt(C)) v,
    memory-efficient (SPGFusion's einsum builds the whole HW x HW matrix)."""
    b, c, h, w = q.shape
    tokens = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v))
    return out.transpose(1, 2).reshape(b, c, h, w)


class CrossAttention(nn.Module):
    """SPGFusion's level-4 cross-attention: each camera's normalised features query the other's
    keys and values; a 1x1 projection and a residual on the normalised features."""

    def __init__(self, dim: int, groups: int = 16):
        super().__init__()
        self.norm_ir, self.norm_vis = nn.GroupNorm(groups, dim), nn.GroupNorm(groups, dim)
        self.qkv_ir = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_vis = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.out_ir, self.out_vis = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)

    def forward(self, f_ir: torch.Tensor, f_vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_ir, n_vis = self.norm_ir(f_ir), self.norm_vis(f_vis)
        q_ir, k_ir, v_ir = self.qkv_ir(n_ir).chunk(3, dim=1)
        q_vis, k_vis, v_vis = self.qkv_vis(n_vis).chunk(3, dim=1)
        ir = n_ir + self.out_ir(_attend(q_vis, k_ir, v_ir))
        vis = n_vis + self.out_vis(_attend(q_ir, k_vis, v_vis))
        return ir, vis


class SpatialAttention(nn.Module):
    """SPGFusion's spatial self-attention after the level-4 fusion (residual)."""

    def __init__(self, dim: int, groups: int = 16):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(_attend(*self.qkv(self.norm(x)).chunk(3, dim=1)))


class SPGFusionNet(nn.Module):
    """Registered IR (B,1,H,W) and visible BGR (B,3,H,W), both in [0,1] -> fused BGR (B,3,H,W),
    not clamped (training sees the raw output, as SPGFusion's; the fuser clamps).

    `modulation`: what `modulation(sem_ir, sem_vis, H, W)` returned for this H x W (semantic
    maps (B, semantic_dim, h, w), any h x w), or None: the no-prior modulation.
    """

    def __init__(self, semantic_dim: int = SEMANTIC_DIM, widths=WIDTHS, hidden: int = HIDDEN):
        super().__init__()
        self.widths, self.semantic_dim = widths, semantic_dim
        self.enc_ir, self.enc_vis = Encoder(1, widths), Encoder(3, widths)
        self.csaf = nn.ModuleList(CSAF(w, semantic_dim, hidden) for w in widths)
        self.cross = CrossAttention(widths[-1])
        self.embed = nn.ModuleList(nn.Conv2d(2 * w, w, 1, bias=False) for w in widths)
        self.spatial = SpatialAttention(widths[-1])
        self.decode4 = _conv(widths[-1], widths[-1])
        self.up = nn.ModuleList(_conv(widths[i + 1], widths[i]) for i in range(len(widths) - 1))
        self.decode = nn.ModuleList(_conv(2 * widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], 3, 3, 1, 1)

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        sizes, h, w = [], height, width
        for _ in self.widths:
            sizes.append((h, w))
            h, w = (h + 1) // 2, (w + 1) // 2
        return sizes

    def modulation(self, sem_ir: torch.Tensor, sem_vis: torch.Tensor, height: int, width: int):
        """Everything that depends only on the semantic maps, for frames of height x width:
        per level, ((gamma_ir, beta_ir), (gamma_vis, beta_vis)). Reuse it until the next refresh."""
        sizes = self.feature_sizes(height, width)
        return tuple((csaf.params(sem_ir, size), csaf.params(sem_vis, size)) for csaf, size in zip(self.csaf, sizes))

    def no_prior(self, height: int, width: int, like: torch.Tensor):
        """The modulation of an all-zero semantic map: what the network does without a prior.
        One sample (the same for every sample: it broadcasts over any batch)."""
        zeros = like.new_zeros(1, self.semantic_dim, 1, 1)
        return self.modulation(zeros, zeros, height, width)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, modulation=None) -> torch.Tensor:
        if modulation is None:
            modulation = self.no_prior(*ir.shape[-2:], ir)
        f_ir, f_vis = self.enc_ir(ir), self.enc_vis(vis)
        f_ir[-1], f_vis[-1] = self.cross(f_ir[-1], f_vis[-1])
        fused = [embed(torch.cat([csaf(a, *m_ir), csaf(b, *m_vis)], dim=1))
                 for embed, csaf, a, b, (m_ir, m_vis) in zip(self.embed, self.csaf, f_ir, f_vis, modulation)]
        x = self.decode4(self.spatial(fused[-1]))
        for i in range(len(self.widths) - 2, -1, -1):
            x = self.up[i](F.interpolate(x, size=fused[i].shape[-2:], mode="bilinear", align_corners=False))
            x = self.decode[i](torch.cat([x, fused[i]], dim=1))
        return self.head(x) + 0.5 * (vis + ir)


def build_net() -> SPGFusionNet:
    """The network with the default sizes (the ones `fuse.spg` loads weights into)."""
    return SPGFusionNet()


# --- priors -> semantic maps (numpy, no torch) ---------------------------------------------


@functools.lru_cache(maxsize=8)
def projection(channels: int, dim: int = SEMANTIC_DIM) -> np.ndarray:
    """The fixed (channels, dim) projection of CLIP features onto the network's semantic input:
    orthonormal columns (or rows, for a CLIP narrower than `dim`: then it is an exact isometry)
    from a Gaussian of a frozen generator (numpy's legacy RandomState, whose stream never
    changes) seeded by `channels`, so a weights file and a CLIP model always meet the same
    projection. Random orthonormal projections keep the features' cosine geometry up to a
    small distortion (Johnson-Lindenstrauss), which is all that a prior's meaning is."""
    gauss = np.random.RandomState(channels).standard_normal((max(channels, dim), min(channels, dim)))
    q, _ = np.linalg.qr(gauss)
    q = (q if channels >= dim else q.T).astype(np.float32)
    q.flags.writeable = False  # shared by every caller (cached)
    return q


def semantic_maps(prior) -> tuple[np.ndarray, np.ndarray]:
    """The network's semantic input for a `priors.Prior`: (IR map, visible map), each
    SEMANTIC_DIM x gh x gw float32 on the prior's patch grid.

    Each patch's pooled CLIP feature is scaled to norm sqrt(C) (unit variance per channel, as the
    LayerNorm'd features SPGFusion feeds) and projected (`projection`). A prior without
    semantic features (the Fuser contract allows an emphasis map alone) gives zero maps: the
    no-prior input.
    """
    sem_ir, sem_vis = getattr(prior, "semantic_ir", None), getattr(prior, "semantic_vis", None)
    if sem_ir is None or sem_vis is None:
        grid = np.asarray(prior.emphasis).shape
        zeros = np.zeros((SEMANTIC_DIM, *grid), np.float32)
        return zeros, zeros.copy()
    return _project(sem_ir), _project(sem_vis)


def _project(features) -> np.ndarray:
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 3:
        raise ValueError(f"prior: expected gh x gw x C semantic features, got shape {f.shape}")
    c = f.shape[-1]
    unit = f / (np.linalg.norm(f, axis=-1, keepdims=True) + 1e-6)
    return np.ascontiguousarray((math.sqrt(c) * unit @ projection(c)).transpose(2, 0, 1), dtype=np.float32)


def mask_map(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A target mask (h x w, 0/1) as a semantic map (SEMANTIC_DIM x gh x gw): its area fraction
    per patch in channel 0, zeros elsewhere, so an empty mask is the no-prior input. Training and
    tests only: it proves the modulation path learns without pretrained models."""
    import cv2

    gh, gw = grid
    out = np.zeros((SEMANTIC_DIM, gh, gw), np.float32)
    out[0] = cv2.resize(np.asarray(mask, np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    return out

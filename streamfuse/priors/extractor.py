"""One registered IR/visible pair -> a `Prior`, the way SPGFusion reads a scene.

Per camera (both run as one batch of two):

1. The frame is resized, keeping its aspect, so that its shorter side is `priors.size` and
   both sides are multiples of the patch size (`size: native`: each side of the frame's own
   size rounded to the nearest multiple); the IR frame goes through the same 8-bit
   display mapping as fusion and is repeated into three channels.
2. CLIP gives its global embedding, the patch tokens of an intermediate block (at its
   `ln_2`, SPGFusion's tap), and dense
   patch embeddings in the text space; DINO gives its last block's value features.
3. DINO affinities pool the CLIP features (SPGFusion / CLIP-DINOiser): with f the
   L2-normalised DINO features, A = f f^T with affinities below `AFFINITY_FLOOR` set to 0,
   and every patch's CLIP feature becomes the A-weighted mean over the patches like it.
   Objects come out as regions of one meaning instead of CLIP's noisy patchwork.
4. Prompts: the pooled dense embeddings against the prompts' text embeddings and a few
   background words, a softmax with CLIP's logit scale; per prompt, the larger of the two
   cameras' probabilities. emphasis = strength * min(1, sum_k weight_k * p_k).
   Without prompts: objectness, how far each IR patch's pooled meaning is from the frame's
   mean meaning (background dominates the mean), stretched from the median to the maximum;
   emphasis = strength * objectness.
"""
from __future__ import annotations

import math
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from streamfuse.priors.config import NATIVE, PriorConfig
from streamfuse.priors.prior import Prior
from streamfuse.thermal import ir_to_u8

#: DINO affinities below this count as "not the same thing" (SPGFusion's gamma).
AFFINITY_FLOOR = 0.2
#: Background words the prompts compete with in the zero-shot softmax, so that a frame with
#: no person in it does not call its most person-like patch a person.
BACKGROUND_WORDS = ("background", "sky", "road", "ground", "building", "wall", "tree", "grass", "water")
#: Objectness is stretched over at least this much cosine distance, so that a frame of one
#: meaning (a blank wall) does not turn its feature noise into full emphasis.
OBJECTNESS_MIN_SPREAD = 0.05


class PriorExtractor:
    """Computes priors with a CLIP tower, a DINO tower and the prompts' text embeddings.

    The towers are anything with `patch`, `mean`, `std` and a call on a (B, 3, H, W) float
    tensor: `models.ClipTower` / `DinoTower`, or a fake in tests. `text` holds the text
    embeddings (K, E) of the prompts followed by `background` words (float32, normalised).
    """

    def __init__(self, cfg: PriorConfig, clip, dino, text: np.ndarray | None = None,
                 background: int = 0, device: str = "cpu"):
        self.cfg = cfg
        self.clip = clip
        self.dino = dino
        self.device = torch.device(device)
        self.prompts = [p.text for p in cfg.prompts]
        self._weights = torch.tensor([p.weight for p in cfg.prompts], dtype=torch.float32, device=self.device)
        self._text = torch.from_numpy(text).to(self.device) if text is not None and len(text) else None
        self._background = background
        if self.prompts and (self._text is None or len(self._text) != len(self.prompts) + background):
            raise ValueError("text: expected one embedding per prompt plus the background words")
        patch = math.lcm(clip.patch, dino.patch)
        self._multiple = patch

    def input_size(self, frame_wh: tuple[int, int]) -> tuple[int, int]:
        """(w, h) the models see for a frame of `frame_wh`: shorter side `size` (or the frame's
        own size for `native`), multiples of the patch."""
        w, h = frame_wh
        scale = 1.0 if self.cfg.size == NATIVE else self.cfg.size / min(w, h)
        m = self._multiple
        return max(m, round(w * scale / m) * m), max(m, round(h * scale / m) * m)

    @torch.inference_mode()
    def __call__(self, ir: np.ndarray, vis: np.ndarray, *, t_ns: int = 0, index: int = 0,
                 reason: str = "") -> Prior:
        """The prior of one registered pair (ir: HxW uint8/uint16, vis: HxWx3 BGR or HxW uint8)."""
        start = time.perf_counter()
        size = self.input_size((vis.shape[1], vis.shape[0]))
        images = np.stack([_rgb(ir_to_u8(ir), size), _rgb(vis, size)])  # (2, h, w, 3) uint8
        batch = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        with self._autocast():  # the towers in bf16 on CUDA; affinities and pooling in fp32 below
            global_emb, inter, dense = self.clip(_normalise(batch, self.clip))
            dino = self.dino(_normalise(batch, self.dino))
        affinity = _affinity(dino)
        grid = affinity.shape[-1], affinity.shape[-2]  # (gw, gh) of the DINO grid
        semantic = _pool(_to_grid(inter, grid), affinity)
        dense = F.normalize(_pool(_to_grid(dense, grid), affinity), dim=-1)
        global_emb = global_emb.float()
        objectness = _objectness(semantic[0])
        relevance, emphasis = self._emphasis(dense, objectness)
        return Prior(
            emphasis=_numpy(emphasis), semantic_ir=_numpy(semantic[0]), semantic_vis=_numpy(semantic[1]),
            global_ir=_numpy(F.normalize(global_emb[0].float(), dim=0)),
            global_vis=_numpy(F.normalize(global_emb[1].float(), dim=0)),
            relevance={p: _numpy(r) for p, r in zip(self.prompts, relevance)},
            objectness=_numpy(objectness), t_ns=t_ns, index=index, reason=reason,
            refresh_s=time.perf_counter() - start, key=self.cfg.key)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _emphasis(self, dense: torch.Tensor, objectness: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-prompt relevance maps and the emphasis map (strength applied)."""
        if not self.prompts:
            return [], self.cfg.strength * objectness
        logits = self.clip.logit_scale * dense @ self._text.T  # (2, gh, gw, K + background)
        probs = logits.softmax(dim=-1)[..., :len(self.prompts)].amax(dim=0)  # (gh, gw, K)
        wanted = (probs * self._weights).sum(dim=-1).clamp_(0.0, 1.0)
        return list(probs.permute(2, 0, 1)), self.cfg.strength * wanted


def _rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxW grey or HxWx3 BGR uint8 image as (h, w, 3) RGB at `size` (w, h)."""
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    code = cv2.COLOR_GRAY2RGB if small.ndim == 2 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(small, code)


def _normalise(batch: torch.Tensor, tower) -> torch.Tensor:
    mean = torch.tensor(tower.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(tower.std, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def _affinity(dino: torch.Tensor) -> torch.Tensor:
    """(B, gh, gw, D) DINO features -> (B, N, N) row-normalised pooling weights, N = gh*gw,
    returned viewed as (B, N, gh, gw) so the grid travels with it."""
    b, gh, gw, d = dino.shape
    f = F.normalize(dino.float().reshape(b, gh * gw, d), dim=-1)
    corr = f @ f.transpose(1, 2)
    corr = torch.where(corr < AFFINITY_FLOOR, torch.zeros_like(corr), corr)
    weights = corr / corr.sum(dim=-1, keepdim=True).clamp_min(1e-6)
    return weights.reshape(b, gh * gw, gh, gw)


def _to_grid(features: torch.Tensor, grid_wh: tuple[int, int]) -> torch.Tensor:
    """(B, h, w, C) features resampled (bilinear) onto the DINO grid when the patch sizes differ."""
    gw, gh = grid_wh
    if features.shape[1:3] == (gh, gw):
        return features.float()
    x = F.interpolate(features.float().permute(0, 3, 1, 2), size=(gh, gw), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1)


def _pool(features: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Affinity-weighted mean of (B, gh, gw, C) features: (B, gh, gw, C)."""
    b, gh, gw, c = features.shape
    pooled = affinity.reshape(b, gh * gw, gh * gw) @ features.reshape(b, gh * gw, c)
    return pooled.reshape(b, gh, gw, c)


def _objectness(semantic: torch.Tensor) -> torch.Tensor:
    """(gh, gw, C) -> (gh, gw) in [0, 1]: cosine distance of each patch from the mean meaning,
    0 at and below the median patch, 1 at the most distinct one (if distinct enough)."""
    f = F.normalize(semantic, dim=-1)
    mean = F.normalize(f.reshape(-1, f.shape[-1]).mean(dim=0), dim=0)
    distance = 1.0 - f @ mean
    median = distance.median()
    spread = (distance.max() - median).clamp_min(OBJECTNESS_MIN_SPREAD)
    return ((distance - median) / spread).clamp_(0.0, 1.0)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy(), dtype=np.float32)


def build_extractor(cfg: PriorConfig, rig_path) -> PriorExtractor:
    """Resolve and load both models, embed the prompts, and return the extractor.

    UsageError in one line for what the user can fix (see `worker.open_priors`).
    """
    from streamfuse.errors import UsageError
    from streamfuse.priors import models, weights

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("priors.device: cuda is not available to torch here; use cpu")
    clip_file, dino_file = weights.weights_paths(cfg, rig_path)
    clip, encode_text = models.build_clip(cfg.clip, clip_file, cfg.device)
    dino = models.build_dino(cfg.dino, dino_file, cfg.device)
    prompts = [p.text for p in cfg.prompts]
    background = [w for w in BACKGROUND_WORDS if w not in prompts] if prompts else []
    text = encode_text(prompts + background) if prompts else None
    return PriorExtractor(cfg, clip, dino, text, len(background), cfg.device)

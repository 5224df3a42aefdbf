"""CLIPFusion's label-free training target: learned CLIP prompts for infrared, visible and fused images.

Image fusion has no ground truth. CLIPFusion (Sun et al., "CLIPFusion: Infrared and visible
image fusion network based on image-text large model and adaptive learning") replaces it with
text prompts learned in CLIP's embedding space, in the manner of CoOp (Zhou et al., IJCV 2022)
and CLIP-LIT (Liang et al., ICCV 2023). CLIP itself stays frozen throughout; only the prompts
learn, and only in stage 1:

- A prompt is `n_ctx` learned token embeddings followed by the words of its class (CoOp's
  class-specific context), read by CLIP's own text transformer: one each for "infrared",
  "visible" and "fused".
- Stage 1 (`PromptTargets.fit`): softmax cross-entropy, temperature CLIP's logit scale, over
  the three prompts, so that IR images score as the infrared prompt and visible images as the
  visible one. The fused prompt learns from fused images when there are some (`fused_init`:
  a fuser's outputs; calling `fit` again with the network's newer outputs is CLIPFusion's
  adaptive refinement); without any, it is pulled to the bisector of the other two prompts,
  the direction of an image that reads as both.
- Stage 2 (`PromptTargets.loss`): cross-entropy of the fused image's CLIP embedding towards
  the fused prompt against the infrared and visible ones; differentiable in the fused image,
  the prompts held fixed.

Images are (B, 1|3, H, W) float tensors in 0..1, three channels in BGR order (the layout of
`streamfuse.train.loop` batches). The CLIP preprocessing (shorter side to the model's input size,
centre crop, CLIP's mean and std) runs in torch so that gradients reach the pixels.

CLIP is loaded by `streamfuse.priors` (tags from the hub cache, checkpoint files, the one-line
error naming `streamfuse models fetch RIG`); a run never falls back to random weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from streamfuse.errors import UsageError
from streamfuse.priors.config import RANDOM, DinoConfig, PriorConfig, is_file_ref

#: Learned context tokens per prompt (CoOp's default is 16; 8 learns in fewer steps).
N_CTX = 8
#: The three classes, in logit order, and the words that follow each prompt's learned context.
#: The fused class names both cameras, so that even before fitting it reads as between them.
CLASSES = (("infrared", "thermal infrared image."), ("visible", "visible light image."),
           ("fused", "fused infrared and visible image."))
INFRARED, VISIBLE, FUSED = range(3)
#: Stage-1 defaults: Adam steps on the prompts (each is one pass of the text transformer over
#: three prompts; the images are encoded once) and learning rate.
FIT_STEPS = 300
FIT_LR = 5e-3
#: Images per CLIP forward when `fit` encodes its image sets (bounds the memory, not the result).
ENCODE_CHUNK = 32


@dataclass(frozen=True)
class _Frozen:
    """Holds CLIP outside the nn.Module tree: its weights come from their own file, so a
    prompt checkpoint (`state_dict`) holds only the prompts, and an optimiser over
    `parameters()` can only reach the prompts."""

    model: torch.nn.Module


class PromptTargets(torch.nn.Module):
    """A frozen open_clip CLIP and three learnable prompt contexts (see the module docstring).

    Build it with `load_prompt_targets`. `state_dict()` holds the prompt contexts (3, n_ctx,
    text width) and which CLIP they were learned with; loading prompts learned with another
    CLIP is a UsageError. `.to(device)` moves CLIP too; CLIP stays in eval mode.
    """

    def __init__(self, model, tokenizer, *, mean, std, logit_scale: float, n_ctx: int = N_CTX,
                 identity: str = ""):
        super().__init__()
        _check_text_tower(model, identity)
        if not isinstance(n_ctx, int) or not 1 <= n_ctx <= 32:
            raise UsageError(f"clipfusion: n_ctx: expected 1..32 learned tokens per prompt, got {n_ctx!r}")
        self._clip = _Frozen(model.eval().requires_grad_(False))
        self.identity = identity
        self.logit_scale = float(logit_scale)
        self.image_size = _pair(model.visual.image_size)
        tokens = tokenizer([" ".join(["X"] * n_ctx) + " " + words for _, words in CLASSES])
        placeholder = tokenizer(["X"])[0, 1]
        if not bool((tokens[:, 1:1 + n_ctx] == placeholder).all()):
            raise UsageError(f"clipfusion: {identity or 'this CLIP'} does not tokenize like CLIP's BPE "
                             f"(one token per word); use an open_clip ViT such as ViT-B-16")
        if model.attn_mask is not None and model.text_pool_type == "argmax":
            # Causal attention, read at the end-of-text token: what follows it changes nothing,
            # so the prompts run ~20 tokens instead of the 77 of the context (4x less work).
            tokens = tokens[:, :int(tokens.argmax(dim=1).max()) + 1]
        device = model.token_embedding.weight.device
        with torch.no_grad():
            embedded = model.token_embedding(tokens.to(device))
        self.register_buffer("_tokens", tokens.to(device), persistent=False)
        self.register_buffer("_embedded", embedded, persistent=False)
        self.register_buffer("_mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False)
        # CoOp's random context init (std 0.02), seeded so that two builds start alike.
        start = torch.randn(len(CLASSES), n_ctx, embedded.shape[-1], generator=torch.Generator().manual_seed(0))
        self.ctx = torch.nn.Parameter(0.02 * start.to(device, embedded.dtype))
        self._text_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def clip(self) -> torch.nn.Module:
        """The frozen open_clip model (eval mode, no parameter requires grad)."""
        return self._clip.model

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[1]

    # --- the two encoders ------------------------------------------------------------------

    def text_features(self) -> torch.Tensor:
        """(3, E) L2-normalised embeddings of the prompts (rows in CLASSES order), with grad to `ctx`.

        open_clip's `CLIP.encode_text` with the placeholder tokens' embeddings replaced by `ctx`.
        """
        m = self.clip
        cast = m.transformer.get_cast_dtype()
        x = torch.cat([self._embedded[:, :1], self.ctx.to(self._embedded.dtype),
                       self._embedded[:, 1 + self.n_ctx:]], dim=1).to(cast)
        length = x.shape[1]
        mask = None if m.attn_mask is None else m.attn_mask[:length, :length]
        x = x + m.positional_embedding[:length].to(cast)
        x = m.ln_final(m.transformer(x, attn_mask=mask))
        x = text_global_pool(x, self._tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if isinstance(m.text_projection, torch.nn.Linear):
            x = m.text_projection(x)
        elif m.text_projection is not None:
            x = x @ m.text_projection
        return F.normalize(x.float(), dim=-1)

    def clip_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) CLIP input of (B, 1|3, H, W) grey or BGR images in 0..1, differentiable.

        CLIP's eval preprocessing: shorter side to the input size (bicubic, antialiased as PIL
        does), centre crop, RGB normalised with the model's mean and std.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images: expected (B, 1|3, H, W) grey or BGR, got shape {tuple(images.shape)}")
        x = images.to(self._mean.device, torch.float32)
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.flip(1)
        (th, tw), (h, w) = self.image_size, rgb.shape[-2:]
        short = max(th, tw)  # CLIP's inputs are square: the shorter side becomes the input side
        rh, rw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)  # torchvision's rounding
        if (rh, rw) != (h, w):
            rgb = F.interpolate(rgb, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
        top, left = int(round((rh - th) / 2.0)), int(round((rw - tw) / 2.0))
        return (rgb[..., top:top + th, left:left + tw] - self._mean) / self._std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, E) L2-normalised CLIP embeddings of (B, 1|3, H, W) grey/BGR images, differentiable."""
        return F.normalize(self.clip.encode_image(self.clip_input(images)).float(), dim=-1)

    # --- stage 1: the prompts ----------------------------------------------------------------

    def fit(self, ir: torch.Tensor, vis: torch.Tensor, fused_init: torch.Tensor | None = None, *,
            steps: int = FIT_STEPS, lr: float = FIT_LR) -> dict[str, float]:
        """Learn the prompts on image sets (stage 1); CLIP stays frozen.

        Args:
            ir: (N, 1|3, H, W) infrared images, 0..1.
            vis: (M, 1|3, H, W) visible images, 0..1: BGR, or their luma when the network
                fuses luma only (then give `loss` the fused luma too, so that colour is not
                what tells the prompts apart).
            fused_init: (K, 1|3, H, W) fused images the fused prompt learns from (a fuser's
                outputs; later, the network's own), or None: the fused prompt then learns to
                sit on the bisector of the infrared and visible prompts.
            steps, lr: Adam steps and learning rate on the prompt contexts (0 steps: only
                measure).

        Returns:
            The stage-1 terms after the last step (cross-entropies `infrared`, `visible`, and
            `fused`: a cross-entropy, or 1 - cosine to the bisector without fused images),
            `total`, and `accuracy`: the share of the IR and visible images that score higher
            on their own prompt than on the other camera's.
        """
        sets = {INFRARED: self._encode_all(ir), VISIBLE: self._encode_all(vis)}
        if fused_init is not None:
            sets[FUSED] = self._encode_all(fused_init)
        opt = torch.optim.Adam([self.ctx], lr=lr)
        for _ in range(steps):
            total = sum(self._stage1_terms(sets).values())
            opt.zero_grad()
            total.backward()
            opt.step()
        self.ctx.grad = None  # no stale stage-1 gradient rides into stage 2
        with torch.no_grad():
            text = self.text_features()
            terms = {k: v.item() for k, v in self._stage1_terms(sets, text).items()}
            right = [(feats @ text[[INFRARED, VISIBLE]].T).argmax(dim=1) == (0 if k == INFRARED else 1)
                     for k, feats in sets.items() if k != FUSED]
        return terms | {"total": sum(terms.values()), "accuracy": torch.cat(right).float().mean().item()}

    def _stage1_terms(self, sets: dict[int, torch.Tensor], text: torch.Tensor | None = None) -> dict:
        text = self.text_features() if text is None else text
        terms = {CLASSES[k][0]: self._cross_entropy(feats, text, k) for k, feats in sets.items()}
        if FUSED not in sets:
            bisector = F.normalize(text[INFRARED] + text[VISIBLE], dim=0).detach()
            terms["fused"] = 1.0 - text[FUSED] @ bisector
        return terms

    @torch.no_grad()
    def _encode_all(self, images: torch.Tensor) -> torch.Tensor:
        if len(images) == 0:
            raise ValueError("images: expected at least one image")
        return torch.cat([self.image_features(chunk) for chunk in images.split(ENCODE_CHUNK)])

    # --- stage 2: the training loss --------------------------------------------------------

    def loss(self, fused: torch.Tensor) -> torch.Tensor:
        """Stage-2 loss (scalar): cross-entropy of each fused image towards the fused prompt.

        Args:
            fused: (B, 1|3, H, W) fused images in 0..1 (three channels: BGR), with grad.

        The prompts are fixed targets here (no gradient reaches them); CLIP is frozen.
        """
        return self._cross_entropy(self.image_features(fused), self._targets(), FUSED)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3) softmax over the prompts (CLASSES order) of (B, 1|3, H, W) grey/BGR images."""
        return (self.logit_scale * self.image_features(images) @ self._targets().T).softmax(dim=1)

    def _targets(self) -> torch.Tensor:
        """The prompts' text embeddings without grad, recomputed only when `ctx` changed."""
        if self._text_cache is None or not torch.equal(self._text_cache[0], self.ctx):
            with torch.no_grad():
                self._text_cache = (self.ctx.detach().clone(), self.text_features())
        return self._text_cache[1]

    def _cross_entropy(self, feats: torch.Tensor, text: torch.Tensor, target: int) -> torch.Tensor:
        logits = self.logit_scale * feats @ text.T
        return F.cross_entropy(logits, torch.full((len(feats),), target, device=logits.device))

    # --- nn.Module plumbing --------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        return {"clip": self.identity, "n_ctx": self.n_ctx, "classes": [c for c, _ in CLASSES]}

    def set_extra_state(self, state: dict) -> None:
        if state.get("clip") != self.identity or state.get("classes") != [c for c, _ in CLASSES]:
            raise UsageError(f"clipfusion: these prompts were learned with CLIP {state.get('clip')!r}, "
                             f"this run uses {self.identity!r}; use the same priors.clip or learn them again")
        if state.get("n_ctx") != self.n_ctx:
            raise UsageError(f"clipfusion: these prompts have {state.get('n_ctx')} context tokens, "
                             f"this run expects {self.n_ctx}; use the same n_ctx or learn them again")

    def _apply(self, fn, *args, **kwargs):
        # `.to(device)` and `.cuda()` reach CLIP too, although it is outside the module tree
        # (which also keeps `.train()` from turning on its dropout: CLIP stays in eval mode).
        self.clip._apply(fn, *args, **kwargs)
        self._text_cache = None
        return super()._apply(fn, *args, **kwargs)


def load_prompt_targets(cfg: PriorConfig, rig_path, *, n_ctx: int = N_CTX,
                        allow_random: bool = False) -> PromptTargets:
    """Load the CLIP a priors section names (`cfg.clip`, on `cfg.device`) and wrap it with
    fresh prompts; load learned prompts into it with `load_state_dict`.

    Weights come as `streamfuse run` finds them (the hub cache or `cfg.cache_dir`, a checkpoint
    file; offline unless the rig says `offline: false`); missing weights are a one-line
    UsageError naming `streamfuse models fetch RIG`. DINO is not needed and not loaded.

    Args:
        rig_path: the rig file `cfg` came from (named in the error).
        allow_random: accept `priors.clip.weights: random` (tests and cost measurements only:
            targets from a random CLIP mean nothing, so training refuses them by default).
    """
    from streamfuse.priors import models, weights

    if cfg.clip.weights == RANDOM and not allow_random:
        raise UsageError(f"{rig_path}: priors.clip.weights is `random`, and CLIPFusion's targets need "
                         f"pretrained CLIP weights; name a pretrained tag (laion2b_s34b_b88k) or a checkpoint")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("priors.device: cuda is not available to torch here; use cpu")
    clip_only = dataclasses.replace(cfg, dino=DinoConfig(weights=RANDOM))
    clip_file, _ = weights.weights_paths(clip_only, rig_path)
    tower, encode_text = models.build_clip(cfg.clip, clip_file, cfg.device)
    model, tokenizer = _open_clip_parts(tower, encode_text)
    return PromptTargets(model, tokenizer, mean=tower.mean, std=tower.std, logit_scale=tower.logit_scale,
                         n_ctx=n_ctx, identity=_identity(cfg))


def rig_priors(rig_path: Path | str) -> PriorConfig:
    """The `priors:` section of a rig file, whose `clip` CLIPFusion uses; UsageError if it has none."""
    from streamfuse.rig import load_rig

    rig = load_rig(Path(rig_path))
    if rig.priors is None:
        raise UsageError(f"{rig_path}: this rig has no priors section; CLIPFusion reads its priors.clip "
                         f"(e.g. rigs/priors.yaml)")
    return rig.priors


def _open_clip_parts(tower, encode_text):
    """The open_clip model and tokenizer behind `priors.models.build_clip`'s text encoder (it
    carries them as attributes), so that CLIP is loaded once, by the one loader."""
    model, tokenizer = encode_text.model, encode_text.tokenizer
    assert model.visual is tower.visual  # one model behind both
    return model, tokenizer


def _check_text_tower(model, identity: str) -> None:
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection",
              "attn_mask", "text_pool_type")
    if not all(hasattr(model, name) for name in needed):
        raise UsageError(f"clipfusion: {identity or type(model).__name__} has no open_clip CLIP text transformer "
                         f"to feed learned prompts; use a CLIP such as ViT-B-16")


def _identity(cfg: PriorConfig) -> str:
    """Which CLIP the prompts belong to, the same on every machine (files by name, not path)."""
    name = lambda value: Path(value).name if is_file_ref(value) else value  # noqa: E731
    return f"{name(cfg.clip.model)} '{name(cfg.clip.weights)}'"


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

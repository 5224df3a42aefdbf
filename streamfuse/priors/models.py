"""CLIP (open_clip) and DINO (timm) as the prior needs them: built by their own factories,
run by a short forward of our own that takes any input size.

Each tower travels with its preprocessing (mean, std, patch size) and keeps its positional
embeddings resized once per patch grid: the libraries' own dynamic-size paths resample them
on every call. What the forwards return:

- `ClipTower(x)`: the global image embedding (B, E); the patch tokens at the output of
  block `layer`'s `ln_2` (B, gh, gw, C): after the block's attention residual, normalised,
  before its MLP, where SPGFusion hooks `resblocks[-3].ln_2`; and dense patch embeddings
  in the text space (B, gh, gw, E), taken from the last block's value path as MaskCLIP does
  (the query-key attention of the last block mixes every patch into the class token and is
  left out), for zero-shot relevance.
- `DinoTower(x)`: the last block's value features (B, gh, gw, D), whose cosine affinities
  group the patches of one object (SPGFusion's local prior).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import timm
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from open_clip.transformer import VisionTransformer as ClipVisionTransformer
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

from streamfuse.errors import UsageError
from streamfuse.priors.config import ClipConfig, DinoConfig, is_file_ref

#: Sentences each prompt is put into; their text embeddings are averaged (CLIP zero-shot
#: practice). The thermal one helps CLIP read IR frames, which it rarely saw in training.
PROMPT_TEMPLATES = ("a photo of a {}.", "a thermal infrared photo of a {}.")


class ClipTower:
    """The image side of an open_clip ViT; see the module docstring."""

    def __init__(self, model, layer: int, name: str):
        visual = model.visual
        if not isinstance(visual, ClipVisionTransformer) or visual.attn_pool is not None \
                or visual.pool_type != "tok" \
                or not all(isinstance(b, ResidualAttentionBlock) for b in visual.transformer.resblocks):
            # the tap and the value path recompute these blocks' halves (`_tapped`, `_value_path`)
            raise UsageError(f"priors.clip.model: {name} is not a plain ViT with a class token; "
                             f"use ViT-B-16, ViT-B-32 or ViT-S-16")
        blocks = len(visual.transformer.resblocks)
        if not -blocks <= layer < blocks:
            raise UsageError(f"priors.clip.layer: {name} has {blocks} blocks; expected -{blocks}..{blocks - 1}")
        self.visual = visual
        self.layer = layer % blocks
        self.patch = visual.patch_size[0]
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.logit_scale = float(model.logit_scale.detach().exp())
        self._pos: dict[tuple[int, int], torch.Tensor] = {}

    def pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1 + gh*gw, C) positional embedding for a gh x gw patch grid, resized once per grid."""
        if grid not in self._pos:
            pos = self.visual.positional_embedding
            self._pos[grid] = resample_abs_pos_embed(
                pos.unsqueeze(0), list(grid), old_size=list(self.visual.grid_size), num_prefix_tokens=1)[0]
        return self._pos[grid]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.visual
        x = v.conv1(x)
        batch, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(batch, 1, width)
        x = torch.cat([cls, x], dim=1) + self.pos_embed((gh, gw)).to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        if not v.transformer.batch_first:
            x = x.transpose(0, 1)
        blocks = v.transformer.resblocks
        for i, block in enumerate(blocks):
            if i == len(blocks) - 1:
                dense = self._value_path(block, x)
            if i == self.layer:
                x, inter = self._tapped(block, x)
            else:
                x = block(x)
        if not v.transformer.batch_first:
            x, inter, dense = x.transpose(0, 1), inter.transpose(0, 1), dense.transpose(0, 1)
        pooled = v.ln_post(x[:, 0]) @ v.proj
        dense = v.ln_post(dense[:, 1:]) @ v.proj
        return pooled, _grid(inter[:, 1:], gh, gw), _grid(dense, gh, gw)

    @staticmethod
    def _tapped(block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`block(x)`, computed in its two halves, and what its `ln_2` returns in between:
        the attention residual, normalised, before the MLP (SPGFusion's forward hook)."""
        mid = x + block.ls_1(block.attention(q_x=block.ln_1(x)))
        inter = block.ln_2(mid)
        return mid + block.ls_2(block.mlp(inter)), inter

    @staticmethod
    def _value_path(block, x: torch.Tensor) -> torch.Tensor:
        """The last block's attention output if every token attended only to itself."""
        attn = block.attn
        width = x.shape[-1]
        y = block.ln_1(x)
        value = F.linear(y, attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:])
        return block.ls_1(attn.out_proj(value))


class DinoTower:
    """A timm ViT's last-block value features; see the module docstring."""

    def __init__(self, model, name: str):
        if not isinstance(model, TimmVisionTransformer) or not hasattr(model.blocks[-1].attn, "qkv"):
            raise UsageError(f"priors.dino.model: {name} is not a timm ViT with fused qkv attention; "
                             f"use vit_small_patch16_224 or vit_base_patch16_224")
        self.model = model
        self.patch = model.patch_embed.patch_size[0]
        self.mean = tuple(model.pretrained_cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN))
        self.std = tuple(model.pretrained_cfg.get("std", timm.data.IMAGENET_DEFAULT_STD))
        self._prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        self._pos: dict[tuple[int, int], torch.Tensor] = {}

    def pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, prefix + gh*gw, D) positional embedding for a patch grid, resized once per grid."""
        if grid not in self._pos:
            self._pos[grid] = resample_abs_pos_embed(
                self.model.pos_embed, list(grid), old_size=list(self.model.patch_embed.grid_size),
                num_prefix_tokens=self._prefix)
        return self._pos[grid]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(x)  # NHWC: the model was built with dynamic_img_size
        batch, gh, gw, width = x.shape
        x = x.reshape(batch, gh * gw, width)
        prefix = [t.expand(batch, -1, -1) for t in (m.cls_token, m.reg_token) if t is not None]
        pos = self.pos_embed((gh, gw)).to(x.dtype)
        x = torch.cat(prefix + [x + pos], dim=1) if m.no_embed_class else torch.cat(prefix + [x], dim=1) + pos
        x = m.norm_pre(m.patch_drop(m.pos_drop(x)))
        for block in m.blocks[:-1]:
            x = block(x)
        last = m.blocks[-1]
        qkv = last.attn.qkv(last.norm1(x))
        value = qkv[..., 2 * width:]
        return _grid(value[:, m.num_prefix_tokens:], gh, gw)


#: Texts -> (K, E) float32 L2-normalised text embeddings (one row per text).
TextEncoder = Callable[[list[str]], np.ndarray]


def _grid(tokens: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[-1])


def build_clip(cfg: ClipConfig, weights: Path | None, device: str) -> tuple[ClipTower, TextEncoder]:
    """The CLIP tower, and a text encoder `encode(texts) -> (K, E)` float32 L2-normalised.

    Args:
        weights: the checkpoint to load (from `weights.weights_paths`), or None for random
            weights, which the rig must have asked for.
    """
    name = cfg.model
    if is_file_ref(name):  # an open_clip model config file: registered under its stem
        open_clip.add_model_config(name)
        name = Path(name).stem
    if name not in open_clip.list_models():
        raise UsageError(f"priors.clip.model: open_clip has no model {cfg.model!r}; e.g. ViT-B-16, ViT-B-32, "
                         f"ViT-S-16, or an open_clip model config .json file")
    with _quiet_loading(), _one_line_load_errors("clip", weights, cfg.model):
        model = open_clip.create_model(name, pretrained=str(weights) if weights else None, device=device)
        if weights is not None and cfg.weights != str(weights):  # a tag: its mean/std come with it
            pcfg = open_clip.get_pretrained_cfg(name, cfg.weights)
            model.visual.preprocess_cfg = {**model.visual.preprocess_cfg, **{k: pcfg[k] for k in ("mean", "std")}}
    model.eval()
    tower = ClipTower(model, cfg.layer, cfg.model)
    tokenizer = open_clip.get_tokenizer(name)

    @torch.inference_mode()
    def encode(texts: list[str]) -> np.ndarray:
        embeddings = []
        for text in texts:
            tokens = tokenizer([t.format(text) for t in PROMPT_TEMPLATES]).to(device)
            e = F.normalize(model.encode_text(tokens).float(), dim=-1).mean(0)
            embeddings.append(F.normalize(e, dim=0))
        return torch.stack(embeddings).cpu().numpy() if embeddings else np.zeros((0, 0), np.float32)

    encode.model, encode.tokenizer = model, tokenizer  # CLIPFusion's prompt learning needs the text parts
    return tower, encode


def build_dino(cfg: DinoConfig, weights: Path | None, device: str) -> DinoTower:
    """The DINO tower (timm), with `weights` loaded (None: random, as the rig asked).

    A pretrained tag brings its own mean and std; a checkpoint file or random weights get
    ImageNet's, which DINO was trained with.
    """
    if cfg.model not in timm.list_models(module="vision_transformer"):
        raise UsageError(f"priors.dino.model: {cfg.model} is not a timm ViT with fused qkv attention; "
                         f"use vit_small_patch16_224 or vit_base_patch16_224")
    from_tag = weights is not None and cfg.weights != str(weights)
    name = f"{cfg.model}.{cfg.weights}" if from_tag else cfg.model
    overlay = {} if from_tag else dict(mean=timm.data.IMAGENET_DEFAULT_MEAN, std=timm.data.IMAGENET_DEFAULT_STD)
    if weights is not None:
        overlay["file"] = str(weights)
    with _quiet_loading(), _one_line_load_errors("dino", weights, cfg.model):
        model = timm.create_model(name, pretrained=weights is not None, pretrained_cfg_overlay=overlay,
                                  num_classes=0, dynamic_img_size=True)
    return DinoTower(model.to(device).eval(), cfg.model)


@contextmanager
def _quiet_loading():
    """open_clip and timm log every step of loading (and a warning for random weights, which
    the rig asked for); keep the run's stderr to streamfuse's own lines."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _one_line_load_errors(role: str, weights: Path | None, model: str):
    """A checkpoint that does not fit the architecture (or a model config that cannot be
    built) ends as one line, not a traceback."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        if weights is None:
            raise UsageError(f"priors.{role}.model: cannot build {model}: {first}") from None
        raise UsageError(f"priors.{role}: cannot load {weights} into {model}: {first}; "
                         f"check that the file is for this model") from None

"""Semantic priors: CLIP and DINO read the scene; the fusion gives what matters its thermal signature.

Stages, in order of use:

    config.py     PriorConfig: the rig's `priors:` section (no torch)
    weights.py    where weights come from: open_clip tags, timm names, local files, the hub cache
    models.py     building CLIP (open_clip) and DINO (timm), and their forward passes at any
                  input size (positional embeddings cached per size)
    extractor.py  one IR/visible pair -> a Prior (SPGFusion's DINO-pooled CLIP maps, prompts)
    worker.py     the refresh policy and the worker thread that keeps the latest Prior
    prior.py      Prior, and EmphasisTrack: how a fuser turns a Prior into weight maps (no torch)

Only config.py and prior.py may be imported without the `learn` extra (torch, open_clip,
timm); everything else imports them at the top and is imported only when a rig has priors.
"""
from streamfuse.priors.config import ClipConfig, DinoConfig, PriorConfig, PromptConfig
from streamfuse.priors.prior import Prior

__all__ = ["ClipConfig", "DinoConfig", "Prior", "PriorConfig", "PromptConfig"]

"""The fusion stage: one registered IR frame + one visible frame -> one BGR frame.

`FusionConfig.mode` names an entry of `MODES` (base.py); `make_fuser` builds it. The
classical CPU modes live in `classical.py`, the learned ones in `lite.py` and `spg.py`,
`palettes.py` colours thermal images and `views.py` draws every other picture the pipeline
shows (one camera, side by side, picture in picture, no signal).
"""
from __future__ import annotations

import importlib

from streamfuse.fuse.base import (
    MODES,
    NEEDS_WEIGHTS,
    TRAINABLE,
    Fuser,
    FusionConfig,
    Mode,
    check_inputs,
    palette_use,
)

__all__ = ["MODES", "NEEDS_WEIGHTS", "TRAINABLE", "Fuser", "FusionConfig", "Mode", "check_inputs", "fuser_class",
           "make_fuser", "palette_use"]


def fuser_class(mode: str) -> type[Fuser]:
    """The Fuser subclass of `mode` (a key of MODES), importing its module now."""
    module, _, name = MODES[mode].fuser.partition(":")
    return getattr(importlib.import_module(f"streamfuse.fuse.{module}"), name)


def make_fuser(cfg: FusionConfig) -> Fuser:
    """The fuser for `cfg.mode` (validated in FusionConfig, so the lookup cannot miss)."""
    return fuser_class(cfg.mode)(cfg)

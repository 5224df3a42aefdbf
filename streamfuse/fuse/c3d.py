"""The `c3d` mode: CLIPFusion's 3D-convolution generator (`streamfuse.models.c3d`) on the CPU.

Per frame: the IR through the display mapping and the visible luma (BT.601 Y of OpenCV's
YCrCb) go through the generator as floats in 0..1; the fused luma replaces the visible Y and
the visible chroma is kept (a grey visible frame gives a grey picture). No weights ship: the
rig names a file made by `streamfuse train --model c3d` (`fusion.weights`), usually with
`--clipfusion RIG`, CLIPFusion's prompt loss. Priors are not used.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.errors import UsageError, needs_torch
from streamfuse.fuse.base import Fuser, check_inputs
from streamfuse.thermal import ir_to_u8

_TRAIN_HINT = "train them with `streamfuse train --model c3d --out c3d.pt` and set `fusion.weights: c3d.pt` in the rig"


class C3dFuser(Fuser):
    """The generator's fused luma with the visible chroma. Uses `cfg.weights` (required)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        try:
            import torch
        except ImportError:
            raise needs_torch("fusion mode c3d") from None
        from streamfuse.fuse.weights import load_state
        from streamfuse.models import c3d
        from streamfuse.threads import apply_torch

        apply_torch()
        if cfg.weights is None:
            raise UsageError(f"fusion mode c3d: no weights file (fusion.weights is not set); {_TRAIN_HINT}")
        self._torch = torch
        self.net = load_state(c3d.build_net(), cfg.weights, "c3d", _TRAIN_HINT).eval()

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        torch = self._torch
        ycc = cv2.cvtColor(vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR), cv2.COLOR_BGR2YCrCb)
        a = torch.from_numpy(np.ascontiguousarray(ir_to_u8(ir))).float().mul_(1.0 / 255.0)[None, None]
        b = torch.from_numpy(np.ascontiguousarray(ycc[..., 0])).float().mul_(1.0 / 255.0)[None, None]
        with torch.inference_mode():
            y = self.net(a, b)[0, 0].mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8).numpy()
        ycc[..., 0] = y
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)

"""The `spg` mode: the prior-guided network of `streamfuse.models.spg`, on the CPU or a GPU.

Per frame: the IR through the display mapping (`ir_to_u8`) and the visible BGR frame as
float tensors in 0..1, padded (edge pixels repeated) to a multiple of `MULTIPLE` and cropped
back after the network; fp32 on the CPU, bf16 autocast on CUDA. No weights ship for this mode:
the rig names a file made by `streamfuse train --model spg` (`fusion.weights`).

Priors: the network's CSAF modulation depends only on the prior's semantic maps
(`models.spg.semantic_maps`), so it is computed once per new prior (a refresh publishes a new
`Prior` object) and reused by every frame until the next; a `PriorTrack` blends it in over
`BLEND_FRAMES` frames, as `EmphasisTrack` does for the other modes, so a refresh never makes
the picture jump. With no prior yet, the network's no-prior modulation (all-zero maps) is
used, computed once per frame size.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import UsageError, needs_torch
from streamfuse.fuse.base import Fuser, check_inputs
from streamfuse.priors.prior import PriorTrack
from streamfuse.thermal import ir_to_u8

#: Frames are padded to a multiple of this: the network halves them three times.
MULTIPLE = 8
#: The fix named by every "no usable weights" error.
_TRAIN_HINT = "train them with `streamfuse train --model spg --out spg.pt` and set `fusion.weights: spg.pt` in the rig"


def _torch():
    try:
        import torch
    except ImportError:
        raise needs_torch("fusion mode spg") from None
    from streamfuse.threads import apply_torch

    apply_torch()
    return torch


def load_net(path: Path | None, device: str = "cpu"):
    """The spg network with the weights at `path` on `device`, in eval mode.

    Accepts what `streamfuse train` writes ({"model": state_dict, ...}) or a bare state dict.
    UsageError (one line, with the fix) when the path is unset or missing, the file does not
    hold spg weights, or `device` is cuda and torch sees no CUDA device.
    """
    torch = _torch()
    from streamfuse.models import spg

    if path is None:
        raise UsageError(f"fusion mode spg: no weights file (fusion.weights is not set); {_TRAIN_HINT}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("fusion.device: cuda, but torch sees no CUDA device here; set `fusion.device: cpu`")
    from streamfuse.fuse.weights import load_state

    return load_state(spg.build_net(), path, "spg", _TRAIN_HINT).to(device).eval()


def _blend(start, target, t: float):
    """(1 - t) * start + t * target over the modulation's structure (per level, per camera,
    gamma and beta). CSAF applies it as BN(IN(f) * (1 + gamma)) + beta, linear in (gamma,
    beta), so blending modulations blends the modulated features."""
    return tuple(tuple((g0.lerp(g1, t), b0.lerp(b1, t)) for (g0, b0), (g1, b1) in zip(s_level, t_level))
                 for s_level, t_level in zip(start, target))


class SPGFuser(Fuser):
    """Learned, prior-guided fusion: the network's BGR output, clamped to 0..255. `palette`,
    `strength` and the other classical fields are not used.

    Uses `cfg.weights` (required) and `cfg.device`. A grey visible frame gives a grey picture
    (the output's luma). Keeps per-frame state only in its PriorTrack.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self._torch = _torch()
        self.device = self._torch.device(cfg.device)
        self.net = load_net(cfg.weights, cfg.device)
        self._track = PriorTrack(self._modulation, lambda prior, size: self._no_prior(size), _blend)
        self._neutral: dict[tuple[int, int], tuple] = {}

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        torch = self._torch
        h, w = ir.shape
        a, b = self._tensors(ir, vis)
        with torch.inference_mode(), self._autocast():
            size = tuple(a.shape[-2:])
            modulation = self._track.get(prior, size)
            out = self.net(a, b, self._no_prior(size) if modulation is None else modulation)[0, :, :h, :w]
            bgr = out.float().mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
            bgr = bgr.permute(1, 2, 0).contiguous().cpu().numpy()
        return bgr if vis.ndim == 3 else cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)

    def _tensors(self, ir: np.ndarray, vis: np.ndarray):
        """(1,1,H',W') IR and (1,3,H',W') BGR in 0..1 on the device, padded to MULTIPLE."""
        torch = self._torch
        vis = vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
        # uint8 crosses to the GPU (a quarter of float32's bytes); the scaling runs there.
        a = torch.from_numpy(np.ascontiguousarray(ir_to_u8(ir))).to(self.device)[None, None]
        b = torch.from_numpy(vis).to(self.device).permute(2, 0, 1)[None]
        x = torch.cat([a, b], dim=1).float().mul_(1.0 / 255.0)
        x = pad_to_multiple(x, MULTIPLE)
        return x[:, :1], x[:, 1:]

    def _modulation(self, prior, size: tuple[int, int]):
        from streamfuse.models.spg import semantic_maps

        sem_ir, sem_vis = (self._torch.from_numpy(m)[None].to(self.device) for m in semantic_maps(prior))
        return self.net.modulation(sem_ir, sem_vis, *size)

    def _no_prior(self, size: tuple[int, int]):
        """The no-prior modulation for frames of `size`, computed once per size (it costs as much
        as a refresh's)."""
        if size not in self._neutral:
            self._neutral = {size: self.net.no_prior(*size, self._torch.zeros(1, device=self.device))}
        return self._neutral[size]

    def _autocast(self):
        torch = self._torch
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)


def pad_to_multiple(x, multiple: int):
    """(B,C,H,W) padded at the bottom and right, edge pixels repeated, to multiples of `multiple`."""
    import torch.nn.functional as F

    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

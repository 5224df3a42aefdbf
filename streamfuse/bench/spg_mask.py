"""Does spg's prior path learn? The `mask` prior experiment (issue: spg for real, item 3).

Two copies of the spg network are trained on the same synthetic scenes, the same steps and
seed: one with the `mask` training prior (the scenes' target masks through the modulation
input, and the intensity loss asked to follow the IR inside them), one without priors. Each is
then run on scenes it never saw, with the mask prior and with the no-prior input, and measured:

    masked contrast   fused target contrast / IR target contrast: mean inside the mask less the
                      mean of its ring (`quality.targets.ring_of`), medians over the frames
    gain              masked contrast with the mask prior less without it, same network
    outside change    mean |fused with the mask - fused without| in grey levels, away from the
                      targets (outside their 15x15 dilation): what the prior did elsewhere

The network trained with the mask must show a large gain and a small outside change; the one
trained without priors must not gain (its modulation never saw a non-zero map).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

import cv2
import numpy as np

#: The unseen scenes are drawn with seeds from here on (training uses seed * 1000 + i).
EVAL_SEED = 977
#: (h, w) of the unseen frames, cut around their targets.
EVAL_SIZE = (192, 256)


@dataclass(frozen=True)
class MaskScore:
    """What one network does with and without the mask prior (module docstring)."""

    with_mask: float
    without: float
    outside_change: float

    @property
    def gain(self) -> float:
        return self.with_mask - self.without


def train_pair(steps: int, scenes: int = 6, seed: int = 0, batch: int = 4, lr: float = 1e-3, crop: int = 160,
               net_factory=None):
    """(network trained with the mask prior, network trained without priors), both in eval mode."""
    import torch

    from streamfuse.train import loop
    from streamfuse.train.data import synthetic_clips_with_masks
    from streamfuse.train.priors import MaskPriors

    clips, masks = synthetic_clips_with_masks(scenes, seed)
    nets = []
    for priors in (MaskPriors(masks), None):
        cfg = loop.TrainConfig(model="spg", steps=steps, batch=batch, lr=lr, seed=seed, every=steps, crop=crop)
        nets.append(loop.train_network(cfg, clips, priors=priors, net_factory=net_factory).eval())
    torch.set_grad_enabled(True)
    return tuple(nets)


def eval_frames(count: int = 4, seed: int = EVAL_SEED, size: tuple[int, int] = EVAL_SIZE):
    """`count` unseen synthetic frames (IR grey, visible BGR, target mask), half by night, each
    cropped to `size` (h, w) around its targets (the network's cost grows with the area)."""
    from streamfuse.train.data import synthetic_clips_with_masks

    clips, masks = synthetic_clips_with_masks(count, seed, length=1)
    frames = []
    for clip, mask in zip(clips, masks):
        frame, mask = clip[0], mask[0]
        y, x = _around(mask, size)
        window = np.s_[y:y + size[0], x:x + size[1]]
        frames.append((frame[0][window], frame[1:4][(slice(None),) + window], np.ascontiguousarray(mask[window])))
    return frames


def _around(mask: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a `size` window centred on the mask's targets, inside the frame."""
    ys, xs = np.nonzero(mask)
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (mask.shape[0] // 2, mask.shape[1] // 2)
    return (int(np.clip(cy - size[0] // 2, 0, mask.shape[0] - size[0])),
            int(np.clip(cx - size[1] // 2, 0, mask.shape[1] - size[1])))


def score(net, frames) -> MaskScore:
    """`net` on `frames` with the mask prior and without (module docstring)."""
    import torch

    from streamfuse.models.spg import mask_map
    from streamfuse.quality.targets import RING_OUTER, ring_of

    with_mask, without, outside = [], [], []
    for ir, vis, mask in frames:
        h, w = ir.shape
        a = torch.from_numpy(np.ascontiguousarray(ir))[None, None]
        b = torch.from_numpy(np.ascontiguousarray(vis))[None]
        sem = torch.from_numpy(mask_map(mask, (h // 16, w // 16)))[None]
        with torch.inference_mode():
            fused_mask = net(a, b, net.modulation(sem, sem, h, w))
            fused_none = net(a, b)
        grey = lambda t: _grey(t[0].clamp(0, 1).numpy())  # noqa: E731
        g_mask, g_none, g_ir = grey(fused_mask), grey(fused_none), ir * 255.0
        inside, ring = mask.astype(bool), ring_of(mask)
        ir_c = g_ir[inside].mean() - g_ir[ring].mean()
        with_mask.append((g_mask[inside].mean() - g_mask[ring].mean()) / ir_c)
        without.append((g_none[inside].mean() - g_none[ring].mean()) / ir_c)
        away = ~cv2.dilate(mask, np.ones((RING_OUTER, RING_OUTER), np.uint8)).astype(bool)
        outside.append(np.abs(g_mask - g_none)[away].mean())
    return MaskScore(float(np.median(with_mask)), float(np.median(without)), float(np.mean(outside)))


def _grey(bgr: np.ndarray) -> np.ndarray:
    """Grey levels (0..255 float) of a 3 x H x W BGR float image in 0..1 (BT.601 luma)."""
    return 255.0 * (0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2])


def bench(steps: int, out: TextIO | None = None, **train) -> tuple[MaskScore, MaskScore]:
    """Train both networks, score them, print a line each (to `out`, default stdout); returns
    (with mask, without priors)."""
    out = out or sys.stdout
    trained_mask, trained_none = train_pair(steps, **train)
    frames = eval_frames()
    scores = score(trained_mask, frames), score(trained_none, frames)
    print(f"spg mask-prior experiment: {steps} steps, unseen synthetic frames: {len(frames)}", file=out)
    for name, s in zip(("trained with mask prior", "trained without priors"), scores):
        print(f"{name:26s} masked contrast {s.with_mask:.3f} with the mask, {s.without:.3f} without; "
              f"gain {s.gain:+.3f}; outside change {s.outside_change:.2f} grey levels", file=out)
    return scores

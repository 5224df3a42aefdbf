"""`c3d`: CLIPFusion's 3D-convolution generator, made small.

CLIPFusion (Sun et al., Displays 2025) generates the fused image with 3D convolutions over
the two cameras stacked as depth, so that no hand-made rule decides how the two are mixed: the
same kernels see both cameras at once and learn the mixture (its training signal is mainly the
learned CLIP prompts, `streamfuse.train.clipfusion`).

    IR luma, visible luma (B,1,H,W) each ─► stack as depth (B,1,2,H,W)
    ─► Conv3d 3x3x3 (depth padded) x 3, LeakyReLU ─► Conv3d 2x1x1 (depth 2 -> 1) ─► sigmoid
    ─► fused luma (B,1,H,W); the visible chroma is kept (the fuser's job)

Widths `WIDTHS`; about 14k parameters, fully convolutional (any H x W).
"""
from __future__ import annotations

import torch
from torch import nn

#: Channels of the three 3x3x3 layers.
WIDTHS = (16, 16, 16)


class Conv3dGenerator(nn.Module):
    """IR and visible lumas (B,1,H,W) in [0,1] -> fused luma (B,1,H,W) in [0,1]."""

    def __init__(self, widths=WIDTHS):
        super().__init__()
        layers, cin = [], 1
        for w in widths:
            layers += [nn.Conv3d(cin, w, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.collapse = nn.Conv3d(cin, 1, (2, 1, 1))  # the depth of two cameras into one image

    def forward(self, ir: torch.Tensor, vis_luma: torch.Tensor) -> torch.Tensor:
        x = torch.stack([ir, vis_luma], dim=2)  # (B, 1, 2, H, W)
        return torch.sigmoid(self.collapse(self.body(x))[:, :, 0])


def build_net() -> Conv3dGenerator:
    """The generator with the default sizes (the ones `fuse.c3d` loads weights into)."""
    return Conv3dGenerator()

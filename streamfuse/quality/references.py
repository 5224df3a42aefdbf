"""Reference fusions that are not streamfuse modes, so that `streamfuse eval` can score them in
the same run as the modes (the literature's rows are otherwise copied from papers):

    gff   guided-filter fusion (Li, Kang and Hu, IEEE TIP 2013): a two-scale split by a 31x31
          mean; per-pixel saliency |Laplacian| blurred by an 11x11 Gaussian (sigma 5); binary
          weight maps (the more salient camera) refined by guided filters with each camera
          as the guide (r 45, eps 0.3 for the base; r 7, eps 1e-6 for the detail)
    max   the larger of the IR and the visible luma, as ../shared/data/peers/README.md's max

Both fuse the luma (Y of YCrCb) and keep the visible chroma, like the streamfuse modes, and
take the Fuser inputs (`streamfuse.fuse.base.Fuser`). The Laplacian pyramid is the mode
`pyramid`.
"""
from __future__ import annotations

import cv2
import numpy as np

from streamfuse.fuse.base import check_inputs
from streamfuse.fuse.classical import on_luma
from streamfuse.thermal import ir_to_u8

GFF_BASE_SIZE = 31
GFF_SALIENCY = (11, 5.0)
GFF_BASE_GUIDE = (45, 0.3)
GFF_DETAIL_GUIDE = (7, 1e-6)


def guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He, Sun and Tang's guided filter (grey guide, float32 images in 0..1)."""
    box = lambda x: cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mean_i, mean_p = box(guide), box(p)
    var_i = box(guide * guide) - mean_i * mean_i
    a = (box(guide * p) - mean_i * mean_p) / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def gff_luma(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Guided-filter fusion of two float32 lumas in 0..1 (HxW), unclipped."""
    sources = (a, b)
    bases = [cv2.blur(x, (GFF_BASE_SIZE, GFF_BASE_SIZE), borderType=cv2.BORDER_REFLECT) for x in sources]
    size, sigma = GFF_SALIENCY
    saliency = [cv2.GaussianBlur(np.abs(cv2.Laplacian(x, cv2.CV_32F)), (size, size), sigma) for x in sources]
    first = (saliency[0] >= saliency[1]).astype(np.float32)
    picks = (first, 1.0 - first)
    fused = np.zeros_like(a)
    for part, (r, eps) in (("base", GFF_BASE_GUIDE), ("detail", GFF_DETAIL_GUIDE)):
        weights = [np.clip(guided_filter(x, p, r, eps), 0.0, 1.0) for x, p in zip(sources, picks)]
        total = weights[0] + weights[1] + 1e-6
        layers = bases if part == "base" else [x - base for x, base in zip(sources, bases)]
        fused += (weights[0] * layers[0] + weights[1] * layers[1]) / total
    return fused


class GffFuser:
    """Guided-filter fusion with the Fuser inputs and output (module docstring)."""

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        a = ir_to_u8(ir).astype(np.float32) * (1.0 / 255.0)

        def luma(y: np.ndarray) -> np.ndarray:
            fused = gff_luma(a, y.astype(np.float32) * (1.0 / 255.0))
            return np.clip(np.rint(fused * 255.0), 0, 255).astype(np.uint8)
        return on_luma(vis, luma)


class MaxFuser:
    """The larger of the IR and the visible luma, the visible chroma kept."""

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        a = ir_to_u8(ir)
        return on_luma(vis, lambda y: np.maximum(a, y))


#: The references by the name `streamfuse eval --references` takes.
REFERENCES = {"gff": GffFuser, "max": MaxFuser}

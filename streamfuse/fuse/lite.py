"""The `lite` mode: the learned fusion of `streamfuse.models.lite`, on the CPU in real time.

Per frame: the two lumas as float32, their 1/8-size statistics, the network on those
(torch, 4 x 80 x 64 at 640x512: well under a millisecond), then the full-resolution
application in OpenCV (`models.lite.apply_numpy`). The weights ship in the package
(streamfuse/models/weights/lite.pt; how they were made: streamfuse/models/weights/README.md).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import UsageError
from streamfuse.fuse import Fuser, check_inputs
from streamfuse.fuse.classical import on_luma
from streamfuse.models import lite
from streamfuse.priors.prior import EmphasisTrack
from streamfuse.thermal import ir_to_u8

#: The shipped weights.
WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights" / "lite.pt"


def load_net(path: Path = WEIGHTS):
    """The lite network with the weights at `path`, in eval mode. UsageError (one line, with
    the fix) when torch or the file is missing or the file does not hold lite weights."""
    try:
        import torch
    except ImportError:
        raise UsageError("fusion mode lite: needs torch; install the learn extra: "
                           "pip install -e '.[learn]'") from None
    if not Path(path).is_file():
        raise UsageError(f"fusion mode lite: weights file {path} not found; reinstall streamfuse, or "
                           f"make one with `streamfuse train --out {path}`")
    net = lite.build_net()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"] if "model" in state else state)
    except Exception as exc:  # a corrupt or foreign file: say which, not a traceback
        raise UsageError(f"fusion mode lite: {path} does not hold lite weights ({exc.__class__.__name__}); "
                           f"make one with `streamfuse train --out {path}`") from None
    return net.eval()


class LiteFuser(Fuser):
    """Learned, edge-aware fusion of the IR with the visible luma; the visible chroma is kept.

    `strength` and the other FusionConfig fields are not used: the network sets the weights.
    With a prior, the marked regions go to the IR: the IR base weight becomes
    w + (1 - w) * emphasis, the IR detail gain g_ir + (1 - g_ir) * emphasis and the visible
    detail gain g_vis * (1 - emphasis) (blended in over a few frames by an EmphasisTrack).
    """

    def __init__(self, cfg, weights: Path = WEIGHTS):
        super().__init__(cfg)
        import torch

        self._torch = torch
        self._net = load_net(weights)
        self._emphasis = EmphasisTrack(_low_emphasis)

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        a = ir_to_u8(ir).astype(np.float32) * (1.0 / 255.0)
        return on_luma(vis, lambda luma: self._fuse_luma(a, luma, prior))

    def maps(self, a: np.ndarray, b: np.ndarray, prior=None) -> np.ndarray:
        """The 3 x h x w maps (w, g_ir, g_vis) for lumas a, b (HxW float32, 0..1)."""
        feats = self._torch.from_numpy(lite.features_numpy(a, b))[None]
        with self._torch.inference_mode():
            maps = self._net(feats)[0].numpy()
        emphasis = self._emphasis.maps(prior, a.shape)
        return lite.emphasize_numpy(maps, None if emphasis is None else emphasis[0])

    def _fuse_luma(self, a: np.ndarray, luma: np.ndarray, prior) -> np.ndarray:
        b = luma.astype(np.float32) * (1.0 / 255.0)
        fused = lite.apply_numpy(a, b, self.maps(a, b, prior))
        fused *= 255.0
        return np.clip(fused, 0.0, 255.0, out=fused).round().astype(np.uint8)


def _low_emphasis(emphasis: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray]:
    """The emphasis at the maps' size (linear in emphasis, as EmphasisTrack needs)."""
    h, w = lite.low_size(shape)
    return (cv2.resize(emphasis, (w, h), interpolation=cv2.INTER_AREA),)

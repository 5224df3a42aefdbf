"""The `lite` mode: the learned fusion of `streamfuse.models.lite`, on the CPU in real time.

Per frame: the two lumas as float32, their 1/4-size statistics, the network on those
(numpy, 6 x 128 x 160 at 640x512: under a millisecond; torch only trains it), then the full-resolution
application in OpenCV (`models.lite.apply_numpy`) and, over a video, a temporal noise
reduction of the result. The weights ship in the package
(streamfuse/models/weights/lite.pt; how they were made: streamfuse/models/weights/README.md).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamfuse.fuse import lite_targets as targets
from streamfuse.fuse.base import Fuser, check_inputs
from streamfuse.fuse.classical import on_luma
from streamfuse.fuse.isotherm import hot_regions_of, hot_tint
from streamfuse.fuse.weights import read_state
from streamfuse.models import lite
from streamfuse.priors.prior import EmphasisTrack
from streamfuse.thermal import ir_to_u8

#: The shipped weights.
WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights" / "lite.pt"


def load_params(path: Path = WEIGHTS) -> dict[str, np.ndarray]:
    """The lite network's parameters from the weights file at `path` (read without torch).
    UsageError (one line, with the fix) when the file is missing or holds no lite weights."""
    hint = f"reinstall streamfuse, or make one with `streamfuse train --out {path}`"
    return read_state(path, "lite", hint, lite.PARAM_SHAPES)


#: Video: the maps follow the newest frame by this share per frame (an exponential average,
#: so the choice between cameras does not jump from frame to frame).
MAP_FOLLOW = 0.5
#: Video: temporal noise reduction of the fused luma. A pixel whose (3x3-averaged) change from
#: the last output is under NOISE_LEVEL grey levels moves only part of the way, at least
#: NOISE_FOLLOW; larger changes (motion, scene changes) pass at once. Without it the fused
#: video flickers more than its visible source, since it carries the visible noise plus the IR.
NOISE_LEVEL = 12.0
NOISE_FOLLOW = 0.2
#: Video: the cameras' noise levels (for the saliency, `models.lite.noise_sigma`) change slowly;
#: they are re-estimated every this many frames (on the first frame after a reset, always).
NOISE_EVERY = 15


class LiteFuser(Fuser):
    """Learned, edge-aware fusion of the IR with the visible luma; the visible chroma is kept.

    `strength` and the other FusionConfig fields are not used: the network sets the weights.
    A fuser is stateful over a video (MAP_FOLLOW, NOISE_LEVEL; a change of frame size starts
    afresh); use a fresh one, or `reset()`, for unrelated images. With a prior, the marked
    regions go to the IR (see `streamfuse.models.lite`), blended in over a few frames by an
    EmphasisTrack.
    """

    def __init__(self, cfg, weights: Path = WEIGHTS):
        super().__init__(cfg)
        self._params = load_params(weights)
        self._emphasis = EmphasisTrack(_low_emphasis)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames (maps and output)."""
        self._last_maps: np.ndarray | None = None
        self._last_out: np.ndarray | None = None
        self._noise = self._grain = (0.0, 0.0)
        self._view = targets.FieldOfView()
        self._frames = 0

    def fuse(self, ir: np.ndarray, vis: np.ndarray, prior=None) -> np.ndarray:
        check_inputs(ir, vis)
        a = ir_to_u8(ir).astype(np.float32)
        a *= 1.0 / 255.0  # in place: a full-size temporary less (as below)
        a = targets.destripe(a)
        inside = self._view.update(ir)
        if inside is not None:
            a = targets.fill_outside(a, inside)
        out = on_luma(vis, lambda luma: self._fuse_luma(a, luma, prior, inside))
        if not self.cfg.hot_tint:
            return out
        return hot_tint(out, self.cfg.palette, hot_regions_of(self._excess))  # the lift's, reused

    def probabilities(self, a: np.ndarray, b: np.ndarray, prior=None) -> tuple[np.ndarray, lite.Prepared]:
        """(4 x h x w maps (w_d, w_b, kappa, boost), the Prepared) for lumas a, b (HxW float32, 0..1)."""
        if self._frames % NOISE_EVERY == 0:  # frame 0 after a reset included
            self._noise = (lite.noise_sigma(a), lite.noise_sigma(b))
            self._grain = (lite.grain_sigma(a), lite.grain_sigma(b))
        self._frames += 1
        prepared = lite.features_numpy(a, b, self._noise, self._grain)
        maps = lite.forward_numpy(self._params, prepared.features)
        if self._last_maps is not None and self._last_maps.shape == maps.shape:
            maps = self._last_maps + MAP_FOLLOW * (maps - self._last_maps)
        self._last_maps = maps
        emphasis = self._emphasis.maps(prior, a.shape)
        return lite.probabilities_numpy(maps, None if emphasis is None else emphasis[0]), prepared

    def _fuse_luma(self, a: np.ndarray, luma: np.ndarray, prior, inside: np.ndarray | None) -> np.ndarray:
        b = luma.astype(np.float32)
        b *= 1.0 / 255.0
        probs, prepared = self.probabilities(a, b, prior)
        fused = lite.apply_numpy(a, b, probs, prepared)
        fused, self._excess = targets.lift_targets(fused, a, self._noise[0])
        if inside is not None:  # outside the IR's view: the visible luma, feathered in
            fused = b + inside * (fused - b)
        fused *= 255.0
        fused = self._steady(fused)
        # Clipped first, so that convertScaleAbs (round and saturate in one pass) sees no negatives.
        return cv2.convertScaleAbs(np.clip(fused, 0.0, 255.0))

    def _steady(self, fused: np.ndarray) -> np.ndarray:
        """Temporal noise reduction (NOISE_LEVEL) of the fused luma (grey levels, float32)."""
        last = self._last_out
        if last is not None and last.shape == fused.shape:
            change = fused - last
            follow = cv2.blur(change, (3, 3))
            np.abs(follow, out=follow)
            follow *= 1.0 / NOISE_LEVEL
            np.clip(follow, NOISE_FOLLOW, 1.0, out=follow)
            change *= follow
            fused = np.add(last, change, out=change)
        self._last_out = fused
        return fused


def _low_emphasis(emphasis: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray]:
    """The emphasis at the maps' size (linear in emphasis, as EmphasisTrack needs)."""
    h, w = lite.low_size(shape)
    return (cv2.resize(emphasis, (w, h), interpolation=cv2.INTER_AREA),)

"""What a semantic prior is, and how a fuser turns one into weight maps (numpy and OpenCV only).

A `Prior` is computed by the refresh worker from one registered IR/visible pair and then
read, unchanged, by every frame until the next refresh. The fusers use only its `emphasis`
map, through an `EmphasisTrack`: it builds the fuser's full-resolution weight maps once per
new prior (upsampling and deriving them costs about a millisecond) and blends from the
previous maps to the new ones over `BLEND_FRAMES` frames, so that a refresh never makes the
picture jump. Between refreshes the maps are reused as they are: no per-frame work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

#: Frames over which a fuser moves from the previous prior's weight maps to a new prior's:
#: a third of a second at 25 fps, long enough not to flicker, short enough to follow a cut.
BLEND_FRAMES = 8

#: Derives a fuser's weight maps from a low-resolution emphasis map and the frame's (h, w).
Derive = Callable[[np.ndarray, tuple[int, int]], tuple[np.ndarray, ...]]


@dataclass(frozen=True, eq=False)
class Prior:
    """The semantic reading of one IR/visible pair, on the models' patch grid (gh x gw).

    Attributes:
        emphasis: gh x gw float32 in [0, 1], how much to raise the IR weight there (0: not at
            all, 1: as far as `priors.strength` allows; strength is already applied).
        semantic_ir, semantic_vis: gh x gw x C float32, CLIP patch features of block
            `priors.clip.layer` at its `ln_2` output (after the attention residual, normalised,
            before the MLP: SPGFusion's tap), pooled over DINO patch affinities (SPGFusion's
            local semantic prior).
        global_ir, global_vis: the CLIP image embeddings (E,), L2-normalised.
        relevance: prompt -> gh x gw float32 in [0, 1], the zero-shot probability of that
            prompt per patch (the larger of the two cameras); empty without prompts.
        objectness: gh x gw float32 in [0, 1], how much each IR patch's meaning stands out.
        t_ns: capture time (pipeline clock) of the visible frame it was computed from.
        index: the frame number (in the run) it was computed from.
        reason: why it was computed: "first", "frames", "age" or "scene".
        refresh_s: how long computing it took (wall clock, in the worker).
        key: the configuration it depends on (PriorConfig.key).
    """

    emphasis: np.ndarray
    semantic_ir: np.ndarray
    semantic_vis: np.ndarray
    global_ir: np.ndarray
    global_vis: np.ndarray
    relevance: dict[str, np.ndarray] = field(default_factory=dict)
    objectness: np.ndarray | None = None
    t_ns: int = 0
    index: int = 0
    reason: str = ""
    refresh_s: float = 0.0
    key: str = ""


class PriorTrack:
    """Follows the prior a fuser is given and hands out what the fuser derived from it.

    `derive(prior, shape)` is called once per new prior (a different object) or new frame
    shape, never per frame; the result is blended in from the previous one over
    `blend_frames` frames by `blend(start, target, t)`, so a refresh never makes the picture
    jump. The first prior, and every prior after a change of shape, blends in from
    `neutral(prior, shape)` (what the fuser does without a prior).
    """

    def __init__(self, derive: Callable, neutral: Callable, blend: Callable, blend_frames: int = BLEND_FRAMES):
        self._derive, self._neutral, self._blend = derive, neutral, blend
        self._blend_frames = blend_frames
        self._prior = None
        self._shape: tuple[int, int] | None = None
        self._start = self._target = self._current = None
        self._step = 0

    def get(self, prior, shape: tuple[int, int]):
        """What to fuse this frame with; None while no prior has arrived.

        Args:
            prior: a Prior, or None to keep the last one.
            shape: the frame's (h, w) (or whatever size the derived values depend on).
        """
        prior = self._prior if prior is None else prior
        if prior is None:
            return None
        if prior is not self._prior or shape != self._shape:
            fresh = self._prior is None or shape != self._shape
            self._start = self._neutral(prior, shape) if fresh else self._current
            self._target = self._derive(prior, shape)
            self._prior, self._shape, self._step = prior, shape, 0
        if self._step < self._blend_frames:
            self._step += 1
            t = self._step / self._blend_frames
            self._current = self._target if self._step == self._blend_frames else \
                self._blend(self._start, self._target, t)
        return self._current


class EmphasisTrack(PriorTrack):
    """A PriorTrack of a fuser's weight maps, derived from the prior's emphasis map.

    `derive(emphasis, (h, w))` turns a low-resolution emphasis map into the fuser's weight
    maps (float32 or int16 arrays of any sizes), and must be linear in `emphasis`, so that
    blending maps equals deriving from a blended emphasis. It is called once per new prior
    (and once for the neutral, all-zero emphasis the first prior blends from).
    """

    def __init__(self, derive: Derive, blend_frames: int = BLEND_FRAMES):
        super().__init__(lambda prior, shape: derive(np.clip(_emphasis(prior), 0.0, 1.0), shape),
                         lambda prior, shape: derive(np.zeros_like(_emphasis(prior)), shape),
                         _blend_maps, blend_frames)

    def maps(self, prior, shape: tuple[int, int]) -> tuple[np.ndarray, ...] | None:
        """The weight maps for this frame; None while no prior has arrived (fuse classically).

        Args:
            prior: a Prior (or anything with `emphasis`), or None: keep the last maps.
            shape: the frame's (h, w).
        """
        return self.get(prior, shape)


def _emphasis(prior) -> np.ndarray:
    emphasis = np.asarray(prior.emphasis, dtype=np.float32)
    if emphasis.ndim != 2 or emphasis.size == 0:
        raise ValueError(f"prior: expected an hxw emphasis map, got shape {emphasis.shape}")
    return emphasis


def _blend_maps(start: tuple[np.ndarray, ...], target: tuple[np.ndarray, ...], t: float) -> tuple[np.ndarray, ...]:
    return tuple(cv2.addWeighted(a, 1.0 - t, b, t, 0.0) for a, b in zip(start, target))


def upsample(emphasis: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """A low-resolution map stretched over a (w, h) image, bilinear, float32."""
    return cv2.resize(emphasis, size_wh, interpolation=cv2.INTER_LINEAR)

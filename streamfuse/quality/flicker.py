"""Temporal flicker of a video: how much it changes from frame to frame beyond what motion explains.

Definition (the warping error of Lai et al., "Learning Blind Video Temporal Consistency",
ECCV 2018, taken in L1 on grey levels):

    flicker(V) = 1/(T-1) * sum over t = 1..T-1 of  mean over p in M_t of |V_t(p) - V_{t-1}(p + u_t(p))|

V_t are the frames as grey levels 0..255 (`measures.to_gray`, so colour videos are
measured on the same luma as the image measures), u_t is the dense optical flow from frame t
back to frame t-1 (OpenCV DIS, medium preset; V_{t-1} sampled bilinearly), and M_t keeps the
pixels whose flow lands inside the frame and passes the forward-backward consistency check of
Sundaram et al. (ECCV 2010), which leaves out occlusions and flow failures.

The flow and the masks are estimated once per clip, on a reference video, and applied to every
video compared: the IR source, the visible source and each fused result, so the figures
differ only by what each video does over time, not by motion estimates. `FlickerMeter` and
`fusion_flicker` take as reference the mean of the two sources' luma: both cameras see the
same pixels once registered, and the mean favours neither (a flow estimated on one video
partly follows that video's own noise and so explains it away: on the M3SVD clips, flow
from the IR alone rates the visible video 1.3-1.8x as flickering as flow from the mean does).

A static scene with steady brightness scores 0; camera or object motion that the flow follows
scores ~0; sensor noise, brightness pumping and fusion weights that jump between frames score
above 0. The unit is grey levels per pixel per frame; "the fused video flickers no more than
its more flickering source" reads flicker(fused) <= max(flicker(IR), flicker(visible)).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from streamfuse.quality.measures import to_gray

#: Forward-backward consistency: |b + f|^2 < ALPHA1 * (|b|^2 + |f|^2) + ALPHA2 (Sundaram et al.).
_ALPHA1, _ALPHA2 = 0.01, 0.5


@dataclass(frozen=True)
class Motion:
    """How frame t maps back onto frame t-1: sampling maps and the pixels to compare.

    Attributes:
        map_x, map_y: HxW float32, where p of frame t lies in frame t-1 (for cv2.remap).
        mask: HxW bool, True where the flow is trusted.
    """

    map_x: np.ndarray
    map_y: np.ndarray
    mask: np.ndarray

    @property
    def coverage(self) -> float:
        """Fraction of the pixels compared."""
        return float(self.mask.mean())


class _Flow:
    """Dense optical flow between consecutive reference frames of one size, as `Motion`s."""

    def __init__(self, shape: tuple[int, int]):
        self.height, self.width = shape
        self.xs, self.ys = np.meshgrid(np.arange(self.width, dtype=np.float32),
                                       np.arange(self.height, dtype=np.float32))
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def motion(self, previous: np.ndarray, current: np.ndarray) -> Motion:
        """How `current` maps back onto `previous` (both HxW uint8)."""
        back = self.dis.calc(current, previous, None)    # current(p) ~ previous(p + back(p))
        forth = self.dis.calc(previous, current, None)   # previous(q) ~ current(q + forth(q))
        map_x, map_y = self.xs + back[..., 0], self.ys + back[..., 1]
        forth_at = cv2.remap(forth, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        round_trip = ((back + forth_at) ** 2).sum(axis=2)
        bound = _ALPHA1 * ((back ** 2).sum(axis=2) + (forth_at ** 2).sum(axis=2)) + _ALPHA2
        inside = (map_x >= 0) & (map_x <= self.width - 1) & (map_y >= 0) & (map_y <= self.height - 1)
        return Motion(map_x, map_y, inside & (round_trip < bound))


def estimate_motion(reference: Sequence[np.ndarray]) -> list[Motion]:
    """One Motion per consecutive pair of `reference` frames (T frames give T-1).

    Args:
        reference: T >= 2 frames of one size, HxW uint8 or HxWx3 BGR uint8.
    """
    grey = [to_gray(frame) for frame in reference]
    if len(grey) < 2:
        raise ValueError(f"flicker: expected at least 2 frames, got {len(grey)}")
    if any(g.shape != grey[0].shape for g in grey):
        raise ValueError("flicker: expected frames of one size")
    flow = _Flow(grey[0].shape)
    return [flow.motion(previous, current) for previous, current in zip(grey, grey[1:])]


def flicker(frames: Sequence[np.ndarray], motions: Sequence[Motion]) -> float:
    """The flicker of `frames` (module docstring) along `motions` from `estimate_motion`.

    Args:
        frames: T frames (HxW uint8 or HxWx3 BGR uint8) of the size the motions were
            estimated at; T - 1 must equal len(motions).

    Returns:
        Grey levels per pixel per frame; NaN if no pixel could be compared.
    """
    if len(frames) != len(motions) + 1:
        raise ValueError(f"flicker: expected {len(motions) + 1} frames for {len(motions)} motions, got {len(frames)}")
    errors = []
    previous = to_gray(frames[0])
    for frame, motion in zip(frames[1:], motions):
        current = to_gray(frame)
        errors.append(_frame_error(previous, current, motion))
        previous = current
    return _mean(errors)


def _frame_error(previous: np.ndarray, current: np.ndarray, motion: Motion) -> float:
    """Mean |current - previous warped by motion| over the trusted pixels (NaN if none)."""
    if current.shape != motion.mask.shape:
        raise ValueError(f"flicker: expected frames of {motion.mask.shape[1]}x{motion.mask.shape[0]}, "
                         f"got {current.shape[1]}x{current.shape[0]}")
    if not motion.mask.any():
        return float("nan")
    warped = cv2.remap(previous.astype(np.float32), motion.map_x, motion.map_y, cv2.INTER_LINEAR)
    return float(np.abs(current - warped)[motion.mask].mean())


def _mean(errors: list[float]) -> float:
    kept = [e for e in errors if not np.isnan(e)]
    return float(np.mean(kept)) if kept else float("nan")


class FlickerMeter:
    """Flicker of a clip's two sources and its fused videos, fed a frame at a time.

    Memory stays constant however long the clip: only the previous frame of each video is
    kept. The motion comes from the mean of the two sources' luma (module docstring).

        meter = FlickerMeter()
        for ir, vis in clip:
            meter.add(ir, vis, {"mine": fuser.fuse(ir, vis)})
        meter.result()   # {"IR": .., "visible": .., "mine": ..}
    """

    def __init__(self):
        self._flow: _Flow | None = None
        self._reference: np.ndarray | None = None
        self._previous: dict[str, np.ndarray] = {}
        self._errors: dict[str, list[float]] = {}
        self.frames = 0

    def add(self, ir: np.ndarray, vis: np.ndarray, fused: Mapping[str, np.ndarray]) -> None:
        """The next frame: registered IR (HxW uint8; map 16-bit first), visible and fused
        (HxW uint8 or HxWx3 BGR uint8, one size), the same fused labels every frame."""
        grey = {"IR": to_gray(ir), "visible": to_gray(vis), **{k: to_gray(v) for k, v in fused.items()}}
        shapes = {g.shape for g in grey.values()}
        if len(shapes) > 1:
            raise ValueError(f"flicker: expected IR, visible and fused frames of one size (register the IR "
                             f"first), got {sorted(shapes)}")
        if self._errors and set(grey) != set(self._errors):
            raise ValueError(f"flicker: expected the videos {sorted(self._errors)} every frame, got {sorted(grey)}")
        reference = cv2.addWeighted(grey["IR"], 0.5, grey["visible"], 0.5, 0.0)
        if self._reference is None:
            self._flow = _Flow(reference.shape)
            self._errors = {label: [] for label in grey}
        else:
            if reference.shape != self._reference.shape:
                raise ValueError("flicker: expected every frame of a clip to have one size")
            motion = self._flow.motion(self._reference, reference)
            for label, frame in grey.items():
                self._errors[label].append(_frame_error(self._previous[label], frame, motion))
        self._reference, self._previous = reference, grey
        self.frames += 1

    def result(self) -> dict[str, float]:
        """{"IR": .., "visible": .., label: ..} in grey levels per pixel per frame."""
        if self.frames < 2:
            raise ValueError(f"flicker: expected at least 2 frames, got {self.frames}")
        return {label: _mean(errors) for label, errors in self._errors.items()}


def fusion_flicker(ir: Sequence[np.ndarray], vis: Sequence[np.ndarray],
                   fused: Mapping[str, Sequence[np.ndarray]]) -> dict[str, float]:
    """{"IR": .., "visible": .., label: ..} flicker of the sources and of each fused video.

    Args:
        ir, vis: the registered source frames, T >= 2 of each, HxW uint8 (16-bit IR mapped to
            8 bit first) or HxWx3 BGR uint8.
        fused: {label: T fused frames of the same size}.
    """
    lengths = {"IR": len(ir), "visible": len(vis), **{label: len(frames) for label, frames in fused.items()}}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"flicker: expected as many frames in every video, got {lengths}")
    meter = FlickerMeter()
    for t in range(len(ir)):
        meter.add(ir[t], vis[t], {label: frames[t] for label, frames in fused.items()})
    return meter.result()

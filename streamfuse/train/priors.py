"""Semantic priors for training `spg` (`streamfuse train --model spg --priors ...`).

A training prior gives, for the crops of one batch (`data.Pick`s), each camera's semantic map on
the crop's patch grid (B x D x side/16 x side/16, the network's modulation input), and for the
`mask` prior the crops' target masks, which the intensity loss reads:

    MaskPriors   the synthetic scenes' own target masks as the semantic map (channel 0; clips
                 without masks give the no-prior input). Training and tests only: it proves the
                 modulation learns without pretrained models.
    RigPriors    the priors a rig's CLIP/DINO compute (`priors.extractor`), once per training
                 frame, cached on disk under a key of the frame's pixels and the models
                 (`PriorConfig.key`), and resampled onto every crop's grid in step with it.
                 (`weights: random` is keyed as such, not by the random values: such priors
                 are for tests, and a second run reuses the first run's.)

A prior is computed from frame t and fuses frames t and t+1 alike, as the pipeline reuses a
prior between refreshes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from streamfuse.errors import UsageError
from streamfuse.models.spg import SEMANTIC_DIM, mask_map, semantic_maps
from streamfuse.train.data import Pick

#: Pixels per cell of a crop's semantic grid (the ViTs' patch).
PATCH = 16


class MaskPriors:
    """Target masks as the prior; `masks[c]` is clip c's T x H x W uint8 (1 on targets) or None."""

    label = "mask"

    def __init__(self, masks: list[np.ndarray | None]):
        self.masks = masks

    def batch(self, picks: list[Pick]):
        """(semantic IR, semantic visible, masks): torch tensors (B,D,g,g), (B,D,g,g), (B,1,s,s)
        for crops of side s, g = s / PATCH."""
        import torch

        side = picks[0].size
        grid = (side // PATCH, side // PATCH)
        masks = np.zeros((len(picks), 1, side, side), np.float32)
        maps = np.zeros((len(picks), SEMANTIC_DIM, *grid), np.float32)
        for k, p in enumerate(picks):
            if self.masks[p.clip] is None:
                continue
            crop = self.masks[p.clip][p.t, p.y:p.y + side, p.x:p.x + side].astype(np.float32)
            masks[k, 0] = crop[:, ::-1] if p.flip else crop
            maps[k] = mask_map(masks[k, 0], grid)
        sem = torch.from_numpy(maps)
        return sem, sem.clone(), torch.from_numpy(masks)


class RigPriors:
    """The priors of a rig's models for every training frame (module docstring).

    Args:
        extractor: a `priors.PriorExtractor` (built from the rig by `priors.build_extractor`).
        clips: the training clips (`data.load_clips` layout).
        cache: folder of cached priors (created); one .npz per frame and model key.
        progress: called with (done, total) while computing.
    """

    def __init__(self, extractor, clips: list[np.ndarray], cache: Path, progress=None):
        self.key = extractor.cfg.key
        self.label = f"rig priors ({self.key})"
        cache.mkdir(parents=True, exist_ok=True)
        total = sum(len(c) - 1 for c in clips)
        self.maps: list[list[tuple[np.ndarray, np.ndarray]]] = []
        done = 0
        for clip in clips:
            frames = []
            for t in range(len(clip) - 1):  # the last frame is only ever a t+1
                frames.append(_cached(extractor, clip[t], cache, self.key))
                done += 1
                if progress:
                    progress(done, total)
            self.maps.append(frames)
        self.frame_hw = [tuple(clip.shape[-2:]) for clip in clips]

    def batch(self, picks: list[Pick]):
        """(semantic IR, semantic visible, None): each (B,D,g,g), resampled from the frame's grid."""
        import torch

        sem_ir, sem_vis = [], []
        for p in picks:
            m_ir, m_vis = self.maps[p.clip][p.t]
            sem_ir.append(crop_map(m_ir, p, self.frame_hw[p.clip]))
            sem_vis.append(crop_map(m_vis, p, self.frame_hw[p.clip]))
        return torch.stack(sem_ir), torch.stack(sem_vis), None


def crop_map(semantic: np.ndarray, pick: Pick, frame_hw: tuple[int, int]):
    """A frame's semantic map (D, gh, gw) resampled (bilinear) onto the size/PATCH grid of the
    crop `pick` takes from a frame of `frame_hw`, mirrored with it: a (D, g, g) tensor."""
    import torch
    import torch.nn.functional as F

    height, width = frame_hw
    g = max(1, pick.size // PATCH)
    centres = (torch.arange(g, dtype=torch.float32) + 0.5) * (pick.size / g)
    xs = 2.0 * (pick.x + centres) / width - 1.0   # grid_sample's -1..1 spans the map's outer edges
    ys = 2.0 * (pick.y + centres) / height - 1.0
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]
    out = F.grid_sample(torch.from_numpy(semantic)[None], grid, mode="bilinear", align_corners=False)[0]
    return out.flip(-1) if pick.flip else out


def _cached(extractor, frame: np.ndarray, cache: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The semantic maps of one training frame (4 x H x W float, `data` layout), from the cache
    when there, else computed and stored (written whole: a temporary file, then a rename)."""
    ir = np.round(frame[0] * 255.0).astype(np.uint8)
    vis = np.ascontiguousarray(np.round(frame[1:4].transpose(1, 2, 0) * 255.0).astype(np.uint8))
    digest = hashlib.sha1(key.encode() + f"|{SEMANTIC_DIM}|".encode() + ir.tobytes() + vis.tobytes()).hexdigest()
    path = cache / f"{digest[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return data["ir"], data["vis"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry: compute it again
    m_ir, m_vis = semantic_maps(extractor(ir, vis))
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, ir=m_ir, vis=m_vis)
    partial.replace(path)
    return m_ir, m_vis


def open_priors(source: str, clips: list[np.ndarray], masks: list[np.ndarray | None], cache: Path,
                progress=None):
    """The training prior `--priors SOURCE` names: "mask", or a rig file whose `priors:` section
    names the CLIP and DINO to use. UsageError (one line) when it cannot be had."""
    if source == "mask":
        if not any(m is not None for m in masks):
            raise UsageError("train: --priors mask needs synthetic scenes (their target masks); add --synthetic N")
        return MaskPriors(masks)
    rig_path = Path(source)
    if not rig_path.is_file():
        raise UsageError(f"train: --priors {source}: no such rig file; give a rig with a priors: section, or `mask`")
    from streamfuse.priors.extractor import build_extractor
    from streamfuse.rig import load_rig

    rig = load_rig(rig_path)
    if rig.priors is None:
        raise UsageError(f"train: --priors {source}: the rig has no priors: section naming CLIP and DINO")
    return RigPriors(build_extractor(rig.priors, rig_path), clips, cache, progress)

"""Training data: clips of registered IR/visible frames and synthetic scenes, and random crops of them.

Only what shipped weights may be trained on: clips (`--clips`, folders with ir/ and vis/
frames in name order, e.g. the M3SVD frames, MIT licence) and the project's own synthetic
street scenes (`--synthetic N` scenes, half by night). Folders of still pairs are refused:
they are for evaluation (`streamfuse eval`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamfuse.capture.scene import SyntheticScene
from streamfuse.errors import UsageError
from streamfuse.thermal import ir_to_u8

#: Side of the square random crops every step trains on.
CROP = 160
_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _frame(ir_u8: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """4 x H x W float32 0..1: IR luma, visible B, G, R (a grey visible image is repeated)."""
    vis = vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
    return np.concatenate([ir_u8[None], vis.transpose(2, 0, 1)]).astype(np.float32) / 255.0


def load_clips(roots: list[Path]) -> list[np.ndarray]:
    """Each clip under `roots` as a T x 4 x H x W float32 array (IR luma, visible B, G, R; 0..1)."""
    clips = []
    for root in roots:
        if "pairs" in Path(root).resolve().parts:
            raise UsageError(f"train: {root} is an evaluation set; train only on clips you may train on "
                             f"(e.g. the M3SVD frames) and --synthetic scenes")
        if not Path(root).is_dir():
            raise UsageError(f"train: --clips {root}: no such folder")
        folders = [root] if (root / "ir").is_dir() else sorted(p for p in root.iterdir() if (p / "ir").is_dir())
        if not folders:
            raise UsageError(f"train: {root} holds no clip (ir/ and vis/ folders of frames)")
        for folder in folders:
            names = sorted(p.name for p in (folder / "ir").iterdir() if p.suffix.lower() in _EXTS)
            frames = []
            for name in names:
                ir = cv2.imread(str(folder / "ir" / name), cv2.IMREAD_UNCHANGED)
                vis = cv2.imread(str(folder / "vis" / name), cv2.IMREAD_COLOR)
                if ir is None or vis is None:
                    raise UsageError(f"train: cannot read {folder}/{{ir,vis}}/{name} as an image pair (missing, "
                                     f"corrupt, or not PNG/JPG/TIFF); fix or remove that frame")
                if ir.shape[:2] != vis.shape[:2] or min(ir.shape[:2]) < CROP:
                    raise UsageError(f"train: {folder}/{{ir,vis}}/{name} are {_size(ir)} and {_size(vis)}; training "
                                     f"needs registered frames of one size, at least {CROP}x{CROP}")
                ir = ir if ir.ndim == 2 else cv2.cvtColor(ir, cv2.COLOR_BGR2GRAY)
                frames.append(_frame(ir_to_u8(ir), vis))
            if len(frames) >= 2:
                clips.append(np.stack(frames))
    return clips


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def synthetic_clips(count: int, seed: int, length: int = 6) -> list[np.ndarray]:
    """`count` synthetic clips (half by night) in the format of `load_clips`, IR registered."""
    return synthetic_clips_with_masks(count, seed, length)[0]


def synthetic_clips_with_masks(count: int, seed: int, length: int = 6) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`synthetic_clips`, and each clip's target masks (T x H x W uint8, 1 on every person and
    vehicle): the scenes know where their targets are (the `mask` training prior)."""
    clips, masks = [], []
    for i in range(count):
        scene = SyntheticScene(seed=seed * 1000 + i, night=bool(i % 2))
        frames, targets = [], []
        for t in range(length):
            t_s = 0.8 * i + t / 25.0
            ir = cv2.warpPerspective(scene.render_ir(t_s, t), scene.H_vis_from_ir, scene.vis_size,
                                     flags=cv2.INTER_LINEAR)
            frames.append(_frame(ir_to_u8(ir), scene.render_vis(t_s, t)))
            targets.append(scene.body_mask_vis(t_s).astype(np.uint8))
        clips.append(np.stack(frames))
        masks.append(np.stack(targets))
    return clips, masks


@dataclass(frozen=True)
class Pick:
    """Where one training crop comes from: clip, frame t (and t+1), top-left corner, mirrored, side."""

    clip: int
    t: int
    y: int
    x: int
    flip: bool
    size: int = CROP


def sample(clips: list[np.ndarray], batch: int, rng: np.random.Generator) -> np.ndarray:
    """batch x 2 (t, t+1) x 4 (IR, visible B, G, R) x CROP x CROP random crops, flipped at random."""
    return crops(clips, sample_picks(clips, batch, rng))


def sample_picks(clips: list[np.ndarray], batch: int, rng: np.random.Generator, size: int = CROP) -> list[Pick]:
    """`batch` random `size` x `size` crop positions (what `sample` crops; priors are cropped
    in step with them)."""
    picks = []
    for _ in range(batch):
        c = int(rng.integers(len(clips)))
        clip = clips[c]
        t = int(rng.integers(len(clip) - 1))
        y = int(rng.integers(clip.shape[2] - size + 1))
        x = int(rng.integers(clip.shape[3] - size + 1))
        picks.append(Pick(c, t, y, x, bool(rng.random() < 0.5), size))
    return picks


def crops(clips: list[np.ndarray], picks: list[Pick]) -> np.ndarray:
    """The crops of `picks` (all of one size s): len(picks) x 2 (t, t+1) x 4 x s x s."""
    s = picks[0].size
    out = np.empty((len(picks), 2, clips[0].shape[1], s, s), np.float32)
    for k, p in enumerate(picks):
        crop = clips[p.clip][p.t:p.t + 2, :, p.y:p.y + s, p.x:p.x + s]
        out[k] = crop[..., ::-1] if p.flip else crop
    return out

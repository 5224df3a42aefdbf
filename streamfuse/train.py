"""Training of the fusion networks (`streamfuse train`): `lite` on the CPU in minutes, `spg`.

Data (only what shipped weights may be trained on): clips of registered IR/visible frames
(`--clips`, folders with ir/ and vis/ frames in name order, e.g. the M3SVD frames, MIT
licence) and the project's own synthetic street scenes (`--synthetic N` scenes, half by
night). Folders of still pairs are refused: they are for evaluation (`streamfuse eval`).

Every step takes random CROP x CROP crops of two consecutive frames (flipped at random). The
`lite` network is trained on the image measures themselves, made differentiable
(`streamfuse.losses`; label-free: no fused ground truth exists), on the fused luma f of the
lumas a (IR) and b (visible):

    vif          max(0, VIF_TARGET - VIF(a, f) - VIF(b, f))     information of both kept (hinge)
    qabf         1 - Qabf(a, b, f)                             edges as strong and as oriented
    scd          max(0, SCD_TARGET - SCD(a, b, f))             what each camera adds (hinge)
    consistency  | maps(flip x) - flip maps(x) |               equivariance
    temporal     | maps(x_t) - maps(x_t+1) |                   no flicker between frames

`spg` has the SPGFusion losses (`streamfuse.models.spg.spg_losses`). Checkpoints (model,
optimiser, step, random state) go to --checkpoint every --every steps and at the end, through
a temporary file; --resume continues from it, exactly. The final weights go to --out.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import UsageError
from streamfuse.models import lite

CROP = 160
#: Loss weights. VIF and SCD count only below their targets (a hinge): past them, Qabf (edge
#: preservation, the hardest of the three to raise) decides.
VIF_W, VIF_TARGET = 1.0, 1.0
QABF_W = 4.0
SCD_W, SCD_TARGET = 1.0, 1.5
CLIP_W = 0.1
CONSISTENCY_W = 0.5
TEMPORAL_W = 1.0
_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Validated on construction (ValueError("field: message"))."""

    model: str = "lite"
    steps: int = 60        # the defaults are the recipe of the shipped lite weights (model card)
    batch: int = 4
    lr: float = 2e-4
    seed: int = 0
    synthetic: int = 6
    every: int = 20

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {self.model!r}")
        for name in ("steps", "batch", "every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a whole number >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.synthetic, int) or self.synthetic < 0:
            raise ValueError(f"synthetic: expected a whole number >= 0, got {self.synthetic!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")


def _frame(ir_u8: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """4 x H x W float32 0..1: IR luma, visible B, G, R (a grey visible image is repeated)."""
    vis = vis if vis.ndim == 3 else cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
    return np.concatenate([ir_u8[None], vis.transpose(2, 0, 1)]).astype(np.float32) / 255.0


def load_clips(roots: list[Path]) -> list[np.ndarray]:
    """Each clip under `roots` as a T x 4 x H x W float32 array (IR luma, visible B, G, R; 0..1)."""
    from streamfuse.thermal import ir_to_u8

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
    from streamfuse.capture.scene import SyntheticScene
    from streamfuse.thermal import ir_to_u8

    clips = []
    for i in range(count):
        scene = SyntheticScene(seed=seed * 1000 + i, night=bool(i % 2))
        frames = []
        for t in range(length):
            t_s = 0.8 * i + t / 25.0
            ir = cv2.warpPerspective(scene.render_ir(t_s, t), scene.H_vis_from_ir, scene.vis_size,
                                     flags=cv2.INTER_LINEAR)
            frames.append(_frame(ir_to_u8(ir), scene.render_vis(t_s, t)))
        clips.append(np.stack(frames))
    return clips


def sample(clips: list[np.ndarray], batch: int, rng: np.random.Generator) -> np.ndarray:
    """batch x 2 (t, t+1) x 4 (IR, visible B, G, R) x CROP x CROP random crops, flipped at random."""
    out = np.empty((batch, 2, clips[0].shape[1], CROP, CROP), np.float32)
    for k in range(batch):
        clip = clips[rng.integers(len(clips))]
        t = rng.integers(len(clip) - 1)
        y = rng.integers(clip.shape[2] - CROP + 1)
        x = rng.integers(clip.shape[3] - CROP + 1)
        crop = clip[t:t + 2, :, y:y + CROP, x:x + CROP]
        if rng.random() < 0.5:
            crop = crop[..., ::-1]
        out[k] = crop
    return out


def lite_losses(net, batch, clip=None) -> dict:
    """The lite loss terms (module docstring) on one batch (layout of `sample`); with `clip`
    (a `clipfusion.PromptTargets`), CLIPFusion's prompt loss on the fused luma too."""
    import torch

    from streamfuse import losses as L

    a0, b0 = batch[:, 0, :1], L.luma(batch[:, 0, 1:])
    a1, b1 = batch[:, 1, :1], L.luma(batch[:, 1, 1:])
    feats0, a_low, b_low = lite.features_torch(a0, b0)
    maps0 = net(feats0)
    probs0 = lite.probabilities_torch(maps0)
    probs1 = lite.probabilities_torch(net(lite.features_torch(a1, b1)[0]))
    flipped = lite.probabilities_torch(net(lite.features_torch(a0.flip(-1), b0.flip(-1))[0]).flip(-1))
    fused = lite.apply_torch(a0, b0, probs0, a_low, b_low).clamp(0.0, 1.0)
    extra = {} if clip is None else {"clip": CLIP_W * clip.loss(fused)}
    return extra | {
        "vif": VIF_W * (VIF_TARGET - L.vif(a0, fused) - L.vif(b0, fused)).clamp(min=0).mean(),
        "qabf": QABF_W * (1.0 - L.qabf(a0, b0, fused)).mean(),
        "scd": SCD_W * (SCD_TARGET - (2.0 - L.scd(fused, a0, b0))).clamp(min=0).mean(),
        "consistency": CONSISTENCY_W * (flipped - probs0).abs().mean(),
        "temporal": TEMPORAL_W * (probs1 - probs0).abs().mean(),
    }


def _spg():
    from streamfuse.models import spg
    return spg.build_net, spg.spg_losses


#: Trainable networks: name -> () -> (build_net, losses(net, batch) -> {term: tensor}).
MODELS = {"lite": lambda: (lite.build_net, lite_losses), "spg": _spg}


def _save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill mid-write keeps the last file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    partial.replace(path)


def train(cfg: TrainConfig, clips: list[np.ndarray], out: Path, checkpoint: Path, *,
          resume: bool = False, progress: bool = True, clip_rig: Path | None = None) -> dict:
    """Train (or resume) and write the weights to `out`; returns the last step's losses.

    With `clip_rig` (a rig whose priors section names a pretrained CLIP), CLIPFusion's
    learned prompts are fitted first (IR vs visible crops of the training data, all grey) and
    their loss joins the others; the prompts are checkpointed with the network."""
    import torch

    torch.manual_seed(cfg.seed)
    build_net, losses_of = MODELS[cfg.model]()
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    step = 0
    state: dict | None = None
    if resume:
        if not checkpoint.is_file():
            raise UsageError(f"train: --resume: no checkpoint at {checkpoint}; drop --resume to start afresh")
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("config", {}).get("model", "lite") != cfg.model:
            raise UsageError(f"train: --resume: {checkpoint} is a {state['config'].get('model', 'lite')} checkpoint, "
                             f"not {cfg.model}; pass --model {state['config'].get('model', 'lite')}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        rng = state["rng"]
    else:
        rng = np.random.default_rng(cfg.seed)
    if not clips:
        raise UsageError("train: no training data; give --clips and/or --synthetic N")
    targets = _prompt_targets(clip_rig, clips, cfg, state)
    extra = {} if targets is None else {"clip": targets}
    last: dict = {}
    started = time.monotonic()
    first = step
    while step < cfg.steps:
        terms = losses_of(net, torch.from_numpy(sample(clips, cfg.batch, rng)), **extra)
        total = sum(terms.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        step += 1
        last = {k: v.item() for k, v in terms.items()} | {"total": total.item()}
        if progress:
            rate = (step - first) / max(time.monotonic() - started, 1e-9)
            print(f"\rstep {step}/{cfg.steps}  loss {last['total']:.4f}  "
                  + " ".join(f"{k} {v:.4f}" for k, v in terms.items() if k != "total")
                  + f"  {rate:.1f} steps/s", end="", file=sys.stderr, flush=True)
        if step % cfg.every == 0 or step == cfg.steps:
            _save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng,
                   "config": cfg.__dict__, "prompts": targets.state_dict() if targets else None}, checkpoint)
    if progress:
        print(file=sys.stderr)
    _save({"model": net.state_dict(), "steps": step, "config": cfg.__dict__}, out)
    return last


def _prompt_targets(clip_rig: Path | None, clips: list[np.ndarray], cfg: TrainConfig, state: dict | None):
    """CLIPFusion's prompt targets (`streamfuse.clipfusion`), or None without --clipfusion."""
    if clip_rig is None:
        return None
    import torch

    from streamfuse import clipfusion
    from streamfuse import losses as L

    targets = clipfusion.load_prompt_targets(clipfusion.rig_priors(clip_rig), clip_rig)
    if state is not None and state.get("prompts") is not None:
        targets.load_state_dict(state["prompts"])
    else:
        probe = torch.from_numpy(sample(clips, 64, np.random.default_rng(cfg.seed + 1)))[:, 0]
        # Grey IR against the grey visible luma: the lite network fuses lumas, so colour must
        # not be what tells the prompts apart.
        targets.fit(probe[:, :1], L.luma(probe[:, 1:]))
    return targets


def add_train_parser(sub) -> None:
    """The `train` subcommand, registered on the CLI's subparsers."""
    t = sub.add_parser("train", help="train a fusion network (lite or spg) on clips and synthetic scenes",
                       description="Train the `lite` (or `spg`) fusion mode's network. Use only data you may "
                                   "train on; folders of evaluation pairs are refused. Ctrl-C or a crash loses "
                                   "at most --every steps: run again with --resume.")
    t.add_argument("--model", choices=sorted(MODELS), default="lite",
                   help="network to train: lite (real time on the CPU) or spg (prior-guided, for a GPU) (lite)")
    t.add_argument("--clipfusion", type=Path, metavar="RIG",
                   help="add CLIPFusion's learned-prompt loss with the CLIP of RIG's priors section "
                        "(pretrained weights needed: `streamfuse models fetch RIG`)")
    t.add_argument("--clips", type=Path, nargs="*", default=[], metavar="DIR",
                   help="clips (ir/ + vis/ folders of registered frames) or folders of clips")
    t.add_argument("--synthetic", type=int, default=6, metavar="N", help="synthetic scenes, half by night (6)")
    t.add_argument("--steps", type=int, default=60, metavar="N", help="optimiser steps in all (60)")
    t.add_argument("--batch", type=int, default=4, metavar="N", help="crops per step (4)")
    t.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (0.0002)")
    t.add_argument("--seed", type=int, default=0, help="random seed (0)")
    t.add_argument("--every", type=int, default=20, metavar="N", help="checkpoint every N steps (20)")
    t.add_argument("--checkpoint", type=Path, default=Path("lite-checkpoint.pt"),
                   help="checkpoint file (lite-checkpoint.pt)")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument("--out", type=Path, default=Path("lite.pt"), help="weights file to write (lite.pt)")
    t.add_argument("--quiet", action="store_true", help="no progress line")
    t.set_defaults(handler=run_train)


def run_train(args) -> int:
    """The `train` command."""
    try:
        cfg = TrainConfig(model=args.model, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                          synthetic=args.synthetic, every=args.every)
    except ValueError as exc:
        raise UsageError(f"train: --{exc}") from None
    if args.clipfusion is not None and cfg.model != "lite":
        raise UsageError("train: --clipfusion works with --model lite (the CLIP loss reads the fused luma)")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("train: needs torch (a dependency of streamfuse: pip install torch)") from None
    clips = load_clips(args.clips) + synthetic_clips(cfg.synthetic, cfg.seed)
    last = train(cfg, clips, args.out, args.checkpoint, resume=args.resume, progress=not args.quiet,
                 clip_rig=args.clipfusion)
    print(f"wrote {args.out} ({cfg.steps} steps; last loss {last.get('total', float('nan')):.4f})")
    return 0

"""The training loop of `streamfuse train`: `lite` on the CPU in minutes, `spg` on a GPU.

Every step takes `batch` random crops of two consecutive frames (`data.sample`) and
minimises the network's objective (`objectives.OBJECTIVES`). Checkpoints (model, optimiser,
step, random state) go to `checkpoint` every `every` steps and at the end, through a
temporary file; `resume` continues from it, exactly. The final weights go to `out`.
"""
from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamfuse.errors import UsageError
from streamfuse.fuse import MODES, TRAINABLE
from streamfuse.train.data import CROP, crops, sample, sample_picks


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the one place its defaults live (the CLI reads them from here).
    Validated on construction (ValueError("field: message")). The defaults are the recipe
    of the shipped lite weights (model card)."""

    model: str = "lite"
    steps: int = 60
    batch: int = 4
    lr: float = 2e-4
    seed: int = 0
    #: Synthetic scenes added to the clips, half by night.
    synthetic: int = 6
    #: Checkpoint every this many steps.
    every: int = 20
    #: Side of the square random crops (pixels, a multiple of 16: the priors' patch grid).
    crop: int = CROP
    #: With CLIPFusion's prompts: refit them on the network's current fused images every this
    #: many steps (CLIPFusion's adaptive learning); 0: fit once, before training.
    refit_every: int = 0
    #: With CLIPFusion's prompts: the fixed crops they are fitted and refitted on (the refit
    #: fuses them all in one batch: fewer need less memory and time, and say less per fit).
    probe_crops: int = 64

    def __post_init__(self):
        if self.model not in TRAINABLE:
            raise ValueError(f"model: expected one of {', '.join(TRAINABLE)}, got {self.model!r}")
        if not isinstance(self.crop, int) or self.crop < 32 or self.crop % 16:
            raise ValueError(f"crop: expected a multiple of 16 of at least 32, got {self.crop!r}")
        for name in ("steps", "batch", "every", "probe_crops"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a whole number >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.refit_every, int) or self.refit_every < 0:
            raise ValueError(f"refit_every: expected a whole number >= 0, got {self.refit_every!r}")
        if not isinstance(self.synthetic, int) or self.synthetic < 0:
            raise ValueError(f"synthetic: expected a whole number >= 0, got {self.synthetic!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")


def network_and_objective(model: str):
    """(build_net, objective) of a trainable mode (torch is imported here)."""
    from streamfuse.train.objectives import OBJECTIVES

    network = MODES[model].network
    return importlib.import_module(f"streamfuse.models.{network}").build_net, OBJECTIVES[network]


def _save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill mid-write keeps the last file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    partial.replace(path)


def train(cfg: TrainConfig, clips: list[np.ndarray], out: Path, checkpoint: Path, *,
          resume: bool = False, progress: bool = True, clip_rig: Path | None = None, priors=None) -> dict:
    """Train (or resume) and write the weights to `out`; returns the last step's losses.

    With `clip_rig` (a rig whose priors section names a pretrained CLIP), CLIPFusion's
    learned prompts are fitted first (IR vs visible crops of the training data, all grey) and
    their loss joins the others; the prompts are checkpointed with the network.

    `priors` (spg only): a training prior (`train.priors.MaskPriors` / `RigPriors`) whose
    semantic maps, cropped with every batch, feed the modulation; without it spg trains on the
    no-prior input, and the weights file says which (`priors`: its label, or "none")."""
    net, last, label = _run(cfg, clips, checkpoint, resume=resume, progress=progress, clip_rig=clip_rig,
                            priors=priors)
    _save({"model": net.state_dict(), "steps": cfg.steps, "config": cfg.__dict__, "priors": label}, out)
    return last


def train_network(cfg: TrainConfig, clips: list[np.ndarray], *, priors=None, net_factory=None):
    """`train` without files (no checkpoint, no weights file): the trained network itself.
    `net_factory()` builds the network in place of the mode's own (e.g. a narrower spg in tests)."""
    return _run(cfg, clips, None, progress=False, priors=priors, net_factory=net_factory)[0]


def _run(cfg: TrainConfig, clips: list[np.ndarray], checkpoint: Path | None, *, resume: bool = False,
         progress: bool = True, clip_rig: Path | None = None, priors=None, net_factory=None):
    """The training loop: (network, last step's losses, priors label)."""
    import torch

    torch.manual_seed(cfg.seed)
    build_net, losses_of = network_and_objective(cfg.model)
    net = (net_factory or build_net)()
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
    label = "none" if priors is None else priors.label
    if state is not None and state.get("priors", "none") != label:
        raise UsageError(f"train: --resume: {checkpoint} was trained with priors: {state.get('priors', 'none')}, "
                         f"not {label}; resume with the same --priors")
    while step < cfg.steps:
        args, kwargs = _batch(clips, cfg, rng, priors)
        terms = losses_of(net, *args, **kwargs, **extra)
        total = sum(terms.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        step += 1
        last = {k: v.item() for k, v in terms.items()} | {"total": total.item()}
        if targets is not None and cfg.refit_every and step % cfg.refit_every == 0 and step < cfg.steps:
            last["refit"] = _refit(targets, net, clips, cfg)
        if progress:
            rate = (step - first) / max(time.monotonic() - started, 1e-9)
            print(f"\rstep {step}/{cfg.steps}  loss {last['total']:.4f}  "
                  + " ".join(f"{k} {v:.4f}" for k, v in terms.items() if k != "total")
                  + f"  {rate:.1f} steps/s", end="", file=sys.stderr, flush=True)
        if checkpoint is not None and (step % cfg.every == 0 or step == cfg.steps):
            _save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng,
                   "config": cfg.__dict__, "prompts": targets.state_dict() if targets else None,
                   "priors": label}, checkpoint)
    if progress:
        print(file=sys.stderr)
    return net, last, label


def _batch(clips: list[np.ndarray], cfg: TrainConfig, rng: np.random.Generator, priors) -> tuple[tuple, dict]:
    """One step's (args, kwargs) for the objective: the crops, and with `priors` their semantic
    maps (and target masks) cropped in step with them."""
    import torch

    picks = sample_picks(clips, cfg.batch, rng, cfg.crop)
    batch = torch.from_numpy(crops(clips, picks))
    if priors is None:
        return (batch,), {}
    sem_ir, sem_vis, mask = priors.batch(picks)
    return (batch,), {"prior": (sem_ir, sem_vis), "mask": mask}


#: Adam steps of each refit of the prompts (the first fit takes clipfusion.FIT_STEPS from
#: scratch; a refit starts from the fitted prompts).
REFIT_STEPS = 60


def _probe(clips: list[np.ndarray], cfg: TrainConfig):
    """The fixed crops (frame t) the prompts are fitted and refitted on."""
    import torch

    return torch.from_numpy(sample(clips, cfg.probe_crops, np.random.default_rng(cfg.seed + 1)))


def _refit(targets, net, clips: list[np.ndarray], cfg: TrainConfig) -> float:
    """CLIPFusion's adaptive learning: the prompts refitted with the network's current fused
    images of the probe crops as the fused class; returns the refit's stage-1 total."""
    from streamfuse.train import losses as L
    from streamfuse.train.objectives import FUSED_LUMA

    probe = _probe(clips, cfg)
    was_training = net.training
    net.eval()  # BatchNorm's running statistics, as the network fuses after training
    fused = FUSED_LUMA[MODES[cfg.model].network](net, probe)
    net.train(was_training)
    return targets.fit(probe[:, 0, :1], L.luma(probe[:, 0, 1:4]), fused, steps=REFIT_STEPS)["total"]


def _prompt_targets(clip_rig: Path | None, clips: list[np.ndarray], cfg: TrainConfig, state: dict | None):
    """CLIPFusion's prompt targets (`streamfuse.train.clipfusion`), or None without --clipfusion."""
    if clip_rig is None:
        return None
    from streamfuse.train import clipfusion
    from streamfuse.train import losses as L

    targets = clipfusion.load_prompt_targets(clipfusion.rig_priors(clip_rig), clip_rig)
    if state is not None and state.get("prompts") is not None:
        targets.load_state_dict(state["prompts"])
    else:
        probe = _probe(clips, cfg)[:, 0]
        # Grey IR against the grey visible luma: the losses read the fused luma, so colour must
        # not be what tells the prompts apart.
        targets.fit(probe[:, :1], L.luma(probe[:, 1:]))
    return targets

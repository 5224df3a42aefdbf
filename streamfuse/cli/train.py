"""`streamfuse train`: train a fusion mode's network (the loop is `streamfuse.train.loop`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from streamfuse.errors import UsageError, needs_torch
from streamfuse.fuse import TRAINABLE
from streamfuse.train.loop import TrainConfig

#: Numbers the command takes, each a TrainConfig field (whose default is the one default):
#: field -> (metavar, help).
_NUMBERS = {
    "synthetic": ("N", "synthetic scenes, half by night"),
    "steps": ("N", "optimiser steps in all"),
    "batch": ("N", "crops per step"),
    "crop": ("PX", "side of the square crops, a multiple of 16"),
    "lr": ("LR", "Adam learning rate"),
    "seed": ("N", "random seed"),
    "every": ("N", "checkpoint every N steps"),
    "refit_every": ("K", "with --clipfusion: refit the prompts on the current fused images every K steps "
                         "(CLIPFusion's adaptive learning; 0: fit once)"),
    "probe_crops": ("N", "with --clipfusion: crops the prompts are fitted and refitted on"),
}


def add_parser(sub) -> None:
    """The `train` subcommand, registered on the CLI's subparsers."""
    defaults = TrainConfig()
    t = sub.add_parser("train", help="train a fusion network (lite or spg) on clips and synthetic scenes",
                       description="Train the `lite` (or `spg`) fusion mode's network. Use only data you may "
                                   "train on; folders of evaluation pairs are refused. Ctrl-C or a crash loses "
                                   "at most --every steps: run again with --resume.")
    t.add_argument("--model", choices=sorted(TRAINABLE), default=defaults.model,
                   help="network to train: lite (real time on the CPU) or spg (prior-guided, for a GPU) "
                        f"({defaults.model})")
    t.add_argument("--clipfusion", type=Path, metavar="RIG",
                   help="add CLIPFusion's learned-prompt loss with the CLIP of RIG's priors section "
                        "(pretrained weights needed: `streamfuse models fetch RIG`)")
    t.add_argument("--priors", metavar="RIG|mask",
                   help="spg only: train the prior modulation with the semantic priors of RIG's priors section "
                        "(computed once per training frame and cached, see --prior-cache), or with the synthetic "
                        "scenes' target masks (`mask`: a test of the prior path, not for real use); without it "
                        "spg trains without priors and its weights file says so")
    t.add_argument("--prior-cache", type=Path, default=None, metavar="DIR",
                   help="folder of cached training priors (~/.cache/streamfuse/train-priors)")
    t.add_argument("--clips", type=Path, nargs="*", default=[], metavar="DIR",
                   help="clips (ir/ + vis/ folders of registered frames) or folders of clips")
    for name, (metavar, text) in _NUMBERS.items():
        default = getattr(defaults, name)
        t.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default, metavar=metavar, help=f"{text} ({default:g})")
    t.add_argument("--checkpoint", type=Path, default=Path("lite-checkpoint.pt"),
                   help="checkpoint file (lite-checkpoint.pt)")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument("--out", type=Path, default=Path("lite.pt"), help="weights file to write (lite.pt)")
    t.add_argument("--quiet", action="store_true", help="no progress line")
    t.set_defaults(handler=run_train)


def run_train(args) -> int:
    """The `train` command."""
    try:
        cfg = TrainConfig(model=args.model, **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                                                if f.name in _NUMBERS})
    except ValueError as exc:  # "field: message", the field named as its option
        field, _, message = str(exc).partition(":")
        raise UsageError(f"train: --{field.replace('_', '-')}:{message}") from None
    if cfg.refit_every and args.clipfusion is None:
        raise UsageError("train: --refit-every refits CLIPFusion's prompts; add --clipfusion RIG")
    if cfg.probe_crops != TrainConfig.probe_crops and args.clipfusion is None:
        raise UsageError("train: --probe-crops sets how many crops CLIPFusion's prompts are fitted on; add --clipfusion RIG")
    if args.priors is not None and cfg.model != "spg":
        raise UsageError(f"train: --priors works with --model spg ({cfg.model} has no prior input)")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise needs_torch("train") from None
    from streamfuse.train.data import load_clips, synthetic_clips_with_masks
    from streamfuse.train.loop import train

    real = load_clips(args.clips)
    synthetic, masks = synthetic_clips_with_masks(cfg.synthetic, cfg.seed)
    clips = real + synthetic
    priors = None if args.priors is None else _priors(args, clips, [None] * len(real) + masks)
    last = train(cfg, clips, args.out, args.checkpoint, resume=args.resume, progress=not args.quiet,
                 clip_rig=args.clipfusion, priors=priors)
    trained = "" if cfg.model != "spg" else f"; priors: {priors.label if priors else 'none (trained without priors)'}"
    print(f"wrote {args.out} ({cfg.steps} steps; last loss {last.get('total', float('nan')):.4f}{trained})")
    return 0


def _priors(args, clips, masks):
    """The training prior of --priors (computing and caching a rig's priors, with progress)."""
    import sys

    from streamfuse.train.priors import open_priors

    cache = args.prior_cache or Path.home() / ".cache" / "streamfuse" / "train-priors"
    show = None if args.quiet else (lambda done, total: print(f"\rpriors {done}/{total}", end="" if done < total
                                                             else "\n", file=sys.stderr, flush=True))
    return open_priors(args.priors, clips, masks, cache, show)

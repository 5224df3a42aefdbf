"""`streamfuse models list|fetch|verify`: prepare the CLIP and DINO weights of a rig with priors.

    streamfuse models list [RIG]    what the rig (or streamfuse by default) uses; on disk or not
    streamfuse models fetch RIG     download the rig's weights into the hub cache (needs internet)
    streamfuse models verify RIG    check that they are on disk, intact, and load into the models

To prepare a machine without internet: run `fetch` where there is internet with the same
`priors.cache_dir` (or HF_HUB_CACHE), copy the cache folder over, and run `verify` there.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from streamfuse.errors import RuntimeFailure, UsageError


def add_parser(sub) -> None:
    """Add the `models` command to the CLI's subparsers."""
    m = sub.add_parser("models", help="list, fetch or verify the CLIP/DINO weights of a rig with priors",
                       description="Prepare the CLIP and DINO weights of a rig with priors, e.g. "
                                   "for a machine without internet.",
                       epilog="Weights live in the Hugging Face hub cache (HF_HUB_CACHE, or the rig's "
                              "priors.cache_dir). `streamfuse run` never falls back to random weights.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = m.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="the weights a rig (default: streamfuse's presets) uses, and where they are")
    ls.add_argument("rig", type=Path, nargs="?", help="a rig file with a priors section")
    ls.set_defaults(handler=_cmd_list)
    fetch = actions.add_parser("fetch", help="download a rig's weights into the hub cache (needs internet)")
    fetch.add_argument("rig", type=Path)
    fetch.set_defaults(handler=_cmd_fetch)
    verify = actions.add_parser("verify", help="check that a rig's weights are on disk, intact, and load")
    verify.add_argument("rig", type=Path)
    verify.set_defaults(handler=_cmd_verify)


def _cmd_list(args) -> int:
    from streamfuse.priors import weights
    from streamfuse.priors.config import ClipConfig, DinoConfig, PriorConfig

    if args.rig is not None:
        cfg = _rig_priors(args.rig)
        rows = [(ref, "") for ref in weights.weight_refs(cfg)]
    else:
        _require_learn("streamfuse models")
        cfg = PriorConfig()
        rows = [(weights.clip_ref(ClipConfig(model=model, weights=tag)) if role == "clip" else
                 weights.dino_ref(DinoConfig(model=model, weights=tag)), note)
                for role, model, tag, note in weights.KNOWN]
    print(f"hub cache: {weights.cache_location(cfg)}")
    for ref, note in rows:
        found = weights.locate(ref, cfg.cache_dir)
        where = "random weights (tests, benchmarks)" if ref.random else \
            f"on disk: {found}" if found else "missing: streamfuse models fetch RIG"
        print(f"  {ref.describe()}{'  -- ' + note if note else ''}\n      {where}")
    return 0


def _cmd_fetch(args) -> int:
    from streamfuse.priors import weights

    cfg = _rig_priors(args.rig)
    for ref in weights.weight_refs(cfg):
        if ref.random:
            print(f"{ref.describe()}: random, nothing to fetch")
            continue
        if ref.local_file is not None:
            if not ref.local_file.is_file():
                raise UsageError(f"{args.rig}: priors.{ref.role}.weights: {ref.local_file} does not exist")
            print(f"{ref.describe()}: local file, nothing to fetch")
            continue
        try:
            path = weights.fetch(ref, cfg.cache_dir)
        except UsageError as exc:
            raise RuntimeFailure(f"{exc}; check the connection (or HF_ENDPOINT), then run this again") from None
        print(f"{ref.describe()}: {path}")
    return 0


def _cmd_verify(args) -> int:
    from streamfuse.priors import models, weights

    cfg = _rig_priors(args.rig)
    problems = []
    for ref in weights.weight_refs(cfg):
        if ref.random:
            print(f"{ref.describe()}: random, nothing to verify")
            continue
        path = weights.locate(ref, cfg.cache_dir)
        if path is None:
            problems.append(f"{ref.describe()} is missing")
            print(f"{ref.describe()}: MISSING")
            continue
        if weights.check_hash(path) is False:
            problems.append(f"{path} is corrupted (its SHA-256 does not match the hub's)")
            print(f"{ref.describe()}: CORRUPTED {path}")
            continue
        try:
            if ref.role == "clip":
                models.build_clip(cfg.clip, path, "cpu")
            else:
                models.build_dino(cfg.dino, path, "cpu")
        except UsageError as exc:
            problems.append(str(exc))
            print(f"{ref.describe()}: DOES NOT LOAD {path}")
            continue
        print(f"{ref.describe()}: OK {path}")
    if problems:
        raise UsageError(f"{args.rig}: {problems[0]}"
                         f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                         f"run `streamfuse models fetch {args.rig}` where there is internet")
    return 0


def _rig_priors(path: Path):
    """The rig's priors section; UsageError if it has none or the learn extra is missing."""
    from streamfuse.rig import load_rig

    rig = load_rig(path)
    if rig.priors is None:
        raise UsageError(f"{path}: this rig has no priors section, so it needs no model weights")
    _require_learn(path)
    return rig.priors


def _require_learn(what) -> None:
    from streamfuse.priors.worker import require_learn

    require_learn(what)

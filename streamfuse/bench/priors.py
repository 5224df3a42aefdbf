"""`streamfuse bench-priors`: what semantic priors cost, alone and inside a running rig.

Two parts, both with random weights of the real architectures (same cost as pretrained ones):

1. Refresh cost: milliseconds per prior refresh (one IR/visible pair of 640x480, or the
   `--frame` size, both cameras in one batch) for the default, the smaller and the larger
   configurations (DINO ViT-B/16, the frame at its native size), with 1 and 2
   torch threads: the fastest of a few refreshes after a warm-up (on a shared machine the
   fastest is the one the others disturbed least).
2. In the pipeline: a synthetic rig (default rigs/bench.yaml, recording to a temporary MP4)
   runs for a while with priors off and on, at the cameras' pace (`realtime`) and as fast as
   it goes (`fast`): frames per second, the priors-on rate as a share of priors-off, the
   fuse stage's median time per frame, how many refreshes ran and the longest time between
   two of them (wall clock), and the largest prior age a frame was fused with. Runs are
   repeated in interleaved rounds and each keeps its fastest (the machines are shared).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from streamfuse.bench.throughput import as_fast
from streamfuse.pipeline import run
from streamfuse.priors.config import (
    NATIVE,
    ClipConfig,
    DinoConfig,
    PriorConfig,
    PromptConfig,
)
from streamfuse.rig import RigConfig

#: name -> (CLIP model, DINO model, input size): the configurations the cost table compares.
#: dino-b is spg's default (SPGFusion's DINO ViT-B/16); the -native ones see the whole frame.
CONFIGS = {
    "default": ("ViT-B-16", "vit_small_patch16_224", 224),
    "small": ("ViT-B-32", "vit_small_patch16_224", 224),
    "small-160": ("ViT-B-32", "vit_small_patch16_224", 160),
    "dino-b": ("ViT-B-16", "vit_base_patch16_224", 224),
    "native": ("ViT-B-16", "vit_small_patch16_224", NATIVE),
    "dino-b-native": ("ViT-B-16", "vit_base_patch16_224", NATIVE),
}
#: (w, h) of the pair the cost table refreshes on, unless `--frame` says otherwise.
COST_FRAME = (640, 480)
PROMPTS = (PromptConfig("person"), PromptConfig("car", 0.7))


def random_config(name: str, **overrides) -> PriorConfig:
    """The named configuration with random weights (benchmarks only)."""
    clip, dino, size = CONFIGS[name]
    return PriorConfig(clip=ClipConfig(model=clip, weights="random"), dino=DinoConfig(model=dino, weights="random"),
                       size=size, prompts=PROMPTS, **overrides)


def refresh_cost(name: str, threads: int, repeats: int = 5, device: str = "cpu",
                 frame: tuple[int, int] = COST_FRAME) -> float:
    """Fastest ms per refresh of configuration `name` with `threads` torch threads, on a
    random pair of `frame` (w, h)."""
    import torch

    from streamfuse.priors.extractor import build_extractor

    extractor = build_extractor(random_config(name, device=device), "bench")
    rng = np.random.default_rng(0)
    w, h = frame
    ir = rng.integers(20000, 30000, (h, w), dtype=np.uint16)
    vis = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        extractor(ir, vis)  # warm-up: allocations, positional embeddings for this size
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            extractor(ir, vis)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 1e3 * min(times)


def pipeline_run(rig, pace: str, priors: PriorConfig | None, seconds: float, out: Path) -> dict:
    """Run `rig` for `seconds` at `pace` with or without priors; the figures of one row."""
    rig = as_fast(rig, out)
    rig = dataclasses.replace(rig, ir=dataclasses.replace(rig.ir, pace=pace),
                              vis=dataclasses.replace(rig.vis, pace=pace), priors=priors)
    report = run(rig, duration_s=seconds)
    row = {"fps": report.fps, "fuse_p50": report.stages["fuse"].summary_ms()["p50"], "refreshes": 0,
           "max_interval": float("nan"), "max_age": float("nan"), "refresh_ms": float("nan")}
    if report.priors is not None:
        published = list(report.priors.published_at)
        gaps = np.diff(published) if len(published) > 1 else np.array([float("nan")])
        row.update(refreshes=report.prior_refreshes, max_interval=float(np.max(gaps)),
                   max_age=report.stages["prior age"].summary_ms()["max"] / 1e3,
                   refresh_ms=report.stages["prior refresh"].summary_ms()["mean"])
    return row


def report(rig: RigConfig | None, configs: list[str], args) -> None:
    """Print the refresh cost table (unless args.no_cost) and the pipeline runs of `rig`
    (None: none). `args`: seconds, paces, threads, nice, rounds, device, frame (cli/bench.py)."""
    w, h = args.frame
    print(f"{os.cpu_count()} CPU cores, models on {args.device}, random weights, {w}x{h} frames")
    if not args.no_cost:
        print("\nrefresh cost (ms per refresh, IR + visible in one batch, fastest of 5):")
        print(f"  {'config':<15}{'CLIP':<10}{'DINO':<23}{'size':>7}{'1 thread':>10}{'2 threads':>11}")
        for name in configs:
            clip, dino, size = CONFIGS[name]
            cost = [refresh_cost(name, t, device=args.device, frame=args.frame) for t in (1, 2)]
            print(f"  {name:<15}{clip:<10}{dino:<23}{size:>7}{cost[0]:>10.0f}{cost[1]:>11.0f}", flush=True)
    if rig is not None:
        print(f"\npipeline: rig {rig.name}, {args.seconds:g} s per run, worker {args.threads} threads nice {args.nice}")
        print(f"  {'pace':<9}{'priors':<11}{'fps':>7}{'of off':>8}{'fuse p50':>10}{'refreshes':>10}"
              f"{'refresh ms':>11}{'max gap s':>10}{'max age s':>10}")
        with tempfile.TemporaryDirectory(prefix="streamfuse-priors-bench-") as tmp:
            for pace in [s.strip() for s in args.paces.split(",") if s.strip()]:
                best: dict[str, dict] = {}
                for _ in range(args.rounds):
                    for name in ["off", *configs]:
                        cfg = None if name == "off" else \
                            random_config(name, threads=args.threads, nice=args.nice, device=args.device)
                        row = pipeline_run(rig, pace, cfg, args.seconds, Path(tmp) / "bench.mp4")
                        if name not in best or row["fps"] > best[name]["fps"]:
                            best[name] = row
                for name, row in best.items():
                    _print_row(pace, name, row, best["off"])


def _print_row(pace: str, name: str, row: dict, off: dict) -> None:
    print(f"  {pace:<9}{name:<11}{row['fps']:>7.1f}{row['fps'] / off['fps']:>8.2f}{row['fuse_p50']:>10.2f}"
          f"{row['refreshes']:>10}{row['refresh_ms']:>11.0f}{row['max_interval']:>10.2f}{row['max_age']:>10.2f}",
          flush=True)


"""The benchmark commands: `bench` (throughput beside the I/O floor), `bench-models` (the learned
fusion per frame), `bench-viewers` (does watching slow the pipeline) and `bench-priors` (what
semantic priors cost). Each prints numbers; the measuring is in `streamfuse.bench`."""
from __future__ import annotations

import argparse
from pathlib import Path

from streamfuse.cli.args import positive_float, positive_int
from streamfuse.errors import UsageError, needs_torch
from streamfuse.fuse import MODES, NEEDS_WEIGHTS

#: The shipped rigs, for the benchmarks' default rig.
RIGS = Path(__file__).resolve().parents[2] / "rigs"


def add_parsers(sub) -> None:
    ready = ",".join(m for m in MODES if m not in NEEDS_WEIGHTS)  # no weights file needed
    b = sub.add_parser("bench", help="throughput and per-stage timings beside the I/O floor")
    b.add_argument("rig", type=Path)
    b.add_argument("--frames", type=positive_int, default=300, metavar="N", help="fused frames per run (300)")
    b.add_argument("--modes", default=ready, help=f"comma-separated modes (default: {ready})")
    b.add_argument("--rounds", type=positive_int, default=3, metavar="R",
                   help="interleaved rounds; each run reports its fastest (3)")
    b.add_argument("--busy", action="store_true",
                   help="run everything again beside a CPU-bound process and print how much each mode slowed, "
                        "against pyramid (the ratio of ratios)")
    b.add_argument("--latency-seconds", type=float, default=10.0, metavar="S",
                   help="length of each run of the paced latency round: the rig paced at 30 fps, lite, without "
                        "and with priors (10; 0 skips the round)")
    b.add_argument("--latency-mode", default="lite", metavar="NAME", help="fusion mode of the latency round (lite)")
    b.add_argument("--latency-rounds", type=positive_int, default=1, metavar="N",
                   help="interleaved rounds of the latency runs; the table gives medians (1)")
    b.add_argument("--latency-busy", action="store_true",
                   help="repeat each latency run with a CPU-bound process beside it")
    b.add_argument("--no-latency-priors", action="store_true",
                   help="leave out the latency round's runs with priors (they need the learn extra)")
    b.set_defaults(handler=_cmd_bench)

    from streamfuse.bench.models import LITE_MIN_FRAMES

    m = sub.add_parser("bench-models", help="time the learned fusion per frame: lite, the spg network",
                       description="What the learned fusion costs per frame (lite, the spg network).")
    m.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where spg runs (cpu)")
    m.add_argument("--size", type=_model_size, default=(640, 512), metavar="WxH", help="frame size (640x512)")
    m.add_argument("--frames", type=positive_int, default=10, metavar="N",
                   help=f"timed frames per item (10; lite at least {LITE_MIN_FRAMES})")
    m.add_argument("--mask-prior", type=positive_int, metavar="STEPS",
                   help="instead: spg's mask-prior experiment, two networks trained STEPS steps each with "
                        "and without the synthetic scenes' target masks as the prior (minutes on a CPU)")
    m.add_argument("--crop", type=positive_int, default=96, metavar="PX",
                   help="training crop side of --mask-prior (96; a multiple of 16)")
    m.set_defaults(handler=_cmd_bench_models)

    v = sub.add_parser("bench-viewers", help="frame rate with and without browser viewers and a slow sink")
    v.add_argument("rig", nargs="?", type=Path, default=RIGS / "demo.yaml", help="rig file (rigs/demo.yaml)")
    v.add_argument("--seconds", type=positive_float, default=5.0, help="measured seconds per run (5)")
    v.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds (3)")
    v.set_defaults(handler=_cmd_bench_viewers)

    p = sub.add_parser("bench-priors", help="what semantic priors cost, alone and inside a running rig")
    p.add_argument("--rig", type=Path, default=RIGS / "bench.yaml", help="rig of the pipeline runs (rigs/bench.yaml)")
    p.add_argument("--configs", default="default,small,small-160",
                   help="comma-separated prior configurations (default,small,small-160; also dino-b, native, "
                        "dino-b-native)")
    p.add_argument("--seconds", type=positive_float, default=20.0, help="length of each pipeline run (20)")
    p.add_argument("--paces", default="realtime,fast")
    p.add_argument("--threads", type=positive_int, default=2, help="worker threads in the pipeline runs (2)")
    p.add_argument("--nice", type=int, default=10, help="worker niceness in the pipeline runs (10)")
    p.add_argument("--rounds", type=positive_int, default=2, help="interleaved rounds; each run keeps its fastest (2)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the models run (cpu)")
    p.add_argument("--no-cost", action="store_true", help="skip the refresh cost table")
    p.add_argument("--no-pipeline", action="store_true", help="skip the pipeline runs")
    p.add_argument("--frame", type=_model_size, default=(640, 480), metavar="WxH",
                   help="size of the pair the refresh cost table refreshes on (640x480)")
    p.set_defaults(handler=_cmd_bench_priors)


def _model_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit()) or int(w) < 32 or int(h) < 32 or int(w) % 8 or int(h) % 8:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, multiples of 8 and at least 32, e.g. 640x512; "
                                         f"got {text!r}")
    return int(w), int(h)


def _cmd_bench(args) -> int:
    from streamfuse.bench.throughput import bench
    from streamfuse.rig import load_rig

    rig = load_rig(args.rig)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise UsageError("--modes: name at least one fusion mode")
    for mode in modes + [args.latency_mode]:
        rig.with_mode(mode)  # validates the name before any run starts
    if args.latency_seconds < 0:
        raise UsageError("--latency-seconds: expected 0 (no latency round) or more")
    print(bench(rig, modes, args.frames, args.rounds, busy=args.busy), flush=True)
    if args.latency_seconds:
        from streamfuse.bench.latency import latency_round

        priors = not args.no_latency_priors
        if priors:
            import importlib.util

            priors = all(importlib.util.find_spec(m) for m in ("torch", "open_clip", "timm"))
            if not priors:
                print("paced latency: the runs with priors are left out (they need the learn extra: "
                      "pip install -e '.[learn]')")
        print(latency_round(rig, args.latency_mode, args.latency_seconds, priors=priors, busy=args.latency_busy,
                            rounds=args.latency_rounds))
    return 0


def _cmd_bench_models(args) -> int:
    if args.device == "cuda":
        try:
            import torch
        except ImportError:
            raise needs_torch("bench-models --device cuda") from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("bench-models: --device cuda, but torch sees no CUDA device here; use --device cpu")
    if args.mask_prior:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise needs_torch("bench-models --mask-prior") from None
        if args.crop % 16 or args.crop < 32:
            raise UsageError(f"bench-models: --crop: expected a multiple of 16 of at least 32, got {args.crop}")
        from streamfuse.bench import spg_mask

        spg_mask.bench(args.mask_prior, crop=args.crop, lr=2e-3)
        return 0
    from streamfuse.bench.models import bench

    bench(args.size, args.frames, args.device)
    return 0


def _cmd_bench_viewers(args) -> int:
    from streamfuse.bench.viewers import report
    from streamfuse.rig import load_rig

    report(load_rig(args.rig), args.seconds, args.rounds)
    return 0


def _cmd_bench_priors(args) -> int:
    from streamfuse.bench.priors import CONFIGS, report
    from streamfuse.rig import load_rig

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise UsageError(f"--configs: unknown {', '.join(unknown) or '(none given)'}; expected some of "
                         f"{', '.join(CONFIGS)}")
    report(None if args.no_pipeline else load_rig(args.rig), configs, args)
    return 0

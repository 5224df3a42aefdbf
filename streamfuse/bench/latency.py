"""`streamfuse bench`'s paced latency round: exposure-to-sink latency of a rig run like cameras.

The rig's synthetic (or replayed) sources run paced at `fps` (both cameras, wall clock), the
fused frames are recorded to a temporary MP4, and each run reports, from each frame's
exposure (its capture time) to the end of its write into the recording, p50, p95 and p99;
the same to the moment the fused frame was handed to the sinks; the fuse stage's p50 and
p99; and the frames skipped because the loop was behind. Four runs: no priors, and priors
(random weights of the real CLIP/DINO architectures, same cost as pretrained ones) in their
own process in SCHED_IDLE stopped while the frame loop works (the default), the same process
left running (`yield_to_frames: false`), and in a thread of the frame loop's process in
SCHED_IDLE; the fuse p99 of a run with priors is also given
as a ratio of the no-prior run's (the thread budget's promise is at most 1.10). With `busy`,
each run is repeated with a CPU-bound process beside it (another program on the same cores).
"""
from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from streamfuse.pipeline import run
from streamfuse.report import RunReport
from streamfuse.rig import RigConfig
from streamfuse.sinks import Mp4SinkConfig

#: The prior configuration of the runs with priors (bench.priors.CONFIGS).
PRIOR_CONFIG = "small"
#: The runs with priors: (name, priors.isolation, priors.yield_to_frames); the first is the
#: default. (A thread at nice 10 did no better than one in SCHED_IDLE: docs/benchmarks.md.)
PRIOR_RUNS = (("priors process", "process", True), ("priors process running", "process", False),
              ("priors thread idle", "thread", False))
#: The most the default priors may raise the fuse stage's p99 (the thread budget's promise).
MAX_PRIOR_RATIO = 1.10
#: The goal for exposure-to-sink p99: two frame periods.
GOAL_PERIODS = 2


def paced(rig: RigConfig, fps: float, out: Path) -> RigConfig:
    """`rig` with both sources paced at `fps` and one MP4 sink (blocking) at `out`."""
    def pace(cfg):
        kind = "realtime" if cfg.type == "synthetic" else "recorded"
        changes = {"pace": kind} | ({"fps": fps} if cfg.type == "synthetic" else {})
        return dataclasses.replace(cfg, **changes)

    mp4 = next((s for s in rig.sinks if isinstance(s, Mp4SinkConfig)), Mp4SinkConfig(path=out))
    return dataclasses.replace(rig, ir=pace(rig.ir), vis=pace(rig.vis),
                               sinks=(dataclasses.replace(mp4, path=out, queue="block"),))


@contextlib.contextmanager
def busy_process(on: bool = True):
    """A CPU-bound process at normal priority beside the block (when `on`)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def latency_round(rig: RigConfig, mode: str, seconds: float, fps: float = 30.0, priors: bool = True,
                  busy: bool = False, rounds: int = 1) -> str:
    """Run `rig` paced at `fps` with `mode` for `seconds` without and (if `priors`) with priors,
    and each again beside a CPU-bound process if `busy`, `rounds` times interleaved (so a
    change in the machine's load falls on every run alike); the printed table (medians over
    the rounds)."""
    configs: dict[str, object] = {"no priors": None}
    if priors:
        from streamfuse.bench.priors import random_config

        configs.update({name: random_config(PRIOR_CONFIG, isolation=iso, yield_to_frames=yields)
                        for name, iso, yields in PRIOR_RUNS})
    runs: dict[str, list[RunReport]] = {}
    with tempfile.TemporaryDirectory(prefix="streamfuse-latency-") as tmp:
        base = paced(rig.with_mode(mode), fps, Path(tmp) / "bench.mp4")
        for _ in range(rounds):
            for loaded in (False, True) if busy else (False,):
                for name, cfg in configs.items():
                    with busy_process(loaded):
                        report = run(dataclasses.replace(base, priors=cfg), duration_s=seconds)
                    runs.setdefault(name + (" +busy" if loaded else ""), []).append(report)
    return format_round(base, mode, fps, seconds, runs)


def _row(reports: list[RunReport], baseline: list[RunReport]) -> dict[str, float]:
    """The medians over rounds of one run's figures; `of none`: fuse p99 over the same round's
    run without priors."""
    def median(values) -> float:
        return float(np.median(list(values)))

    def fuse_p99(rep: RunReport) -> float:
        return rep.stages["fuse"].summary_ms()["p99"]

    sinks = [next(iter(r.sink_latency.values())).summary_ms() for r in reports]
    return {"fps": median(r.fps for r in reports),
            **{k: median(s[k] for s in sinks) for k in ("p50", "p95", "p99")},
            "fused p99": median(r.fused_latency.summary_ms()["p99"] for r in reports),
            "fuse p50": median(r.stages["fuse"].summary_ms()["p50"] for r in reports),
            "fuse p99": median(fuse_p99(r) for r in reports),
            "of none": median(fuse_p99(r) / max(fuse_p99(b), 1e-9) for r, b in zip(reports, baseline)),
            "skipped": median(r.skipped for r in reports), "refreshes": median(r.prior_refreshes for r in reports)}


def format_round(rig: RigConfig, mode: str, fps: float, seconds: float, runs: dict[str, list[RunReport]]) -> str:
    goal = GOAL_PERIODS * 1e3 / fps
    rounds = len(next(iter(runs.values())))
    lines = [f"paced latency (+busy: a CPU-bound process beside): rig {rig.name} at {fps:g} fps (both cameras, wall clock), mode {mode}, {seconds:g} s "
             f"per run, recording to MP4; priors {PRIOR_CONFIG} with random weights, every "
             f"{_every(runs)} frames; medians over {rounds} interleaved round(s)",
             f"  {'run':<30}{'fps':>6}{'->mp4 p50':>11}{'p95':>7}{'p99':>7}{'->fused p99':>13}"
             f"{'fuse p50':>10}{'p99':>7}{'of none':>9}{'skipped':>9}{'refreshes':>11}   (ms)"]
    rows = {name: _row(reps, runs["no priors" + (" +busy" if name.endswith("+busy") else "")])
            for name, reps in runs.items()}
    for name, r in rows.items():
        lines.append(f"  {name:<30}{r['fps']:>6.1f}{r['p50']:>11.1f}{r['p95']:>7.1f}{r['p99']:>7.1f}"
                     f"{r['fused p99']:>13.1f}{r['fuse p50']:>10.2f}{r['fuse p99']:>7.2f}"
                     f"{r['of none']:>9.2f}{r['skipped']:>9g}{r['refreshes']:>11g}")
    # The goal is judged on what a rig runs: no priors, and the default priors; the other prior
    # runs are the designs the default was chosen over, shown for comparison.
    judged = [n for n in ("no priors", PRIOR_RUNS[0][0]) if n in rows]
    others = [n for n in rows if n not in judged and "busy" not in n]
    worst = max(rows[n]["p99"] for n in judged)
    lines.append(f"  exposure-to-mp4 p99, worst of {' and '.join(judged)} on a quiet machine: {worst:.1f} ms against "
                 f"a goal of {goal:.1f} ms ({GOAL_PERIODS} frame periods): {'met' if worst <= goal else 'MISSED'}"
                 + (f"; {', '.join(others)}: for comparison only" if others else ""))
    if PRIOR_RUNS[0][0] in rows:
        ratio = rows[PRIOR_RUNS[0][0]]["of none"]
        lines.append(f"  fuse p99 with the default priors ({PRIOR_RUNS[0][0]}) against none: {ratio:.2f} "
                     f"(at most {MAX_PRIOR_RATIO:.2f} promised): {'met' if ratio <= MAX_PRIOR_RATIO else 'MISSED'}")
    return "\n".join(lines)


def _every(runs: dict[str, RunReport]) -> str:
    from streamfuse.bench.priors import random_config

    return str(random_config(PRIOR_CONFIG).every_frames) if len(runs) > 1 else "-"

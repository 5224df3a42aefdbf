"""`streamfuse bench`'s paced latency round: exposure-to-sink latency of a rig run like cameras.

The rig's synthetic (or replayed) sources run paced at `fps` (both cameras, wall clock), the
fused frames are recorded to a temporary MP4, and each run reports, from each frame's
exposure (its capture time) to the end of its write into the recording, p50, p95 and p99;
the same to the moment the fused frame was handed to the sinks; the fuse stage's p50 and
p99; and the frames skipped because the loop was behind. Three runs: no priors, and priors
(random weights of the real CLIP/DINO architectures, same cost as pretrained ones) with the
prior worker in SCHED_IDLE and with `nice`; the fuse p99 of a run with priors is also given
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

from streamfuse.pipeline import run
from streamfuse.report import RunReport
from streamfuse.rig import RigConfig
from streamfuse.sinks import Mp4SinkConfig

#: The prior configuration of the runs with priors (bench.priors.CONFIGS).
PRIOR_CONFIG = "small"
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
                  busy: bool = False) -> str:
    """Run `rig` paced at `fps` with `mode` for `seconds` without and (if `priors`) with priors,
    and each again beside a CPU-bound process if `busy`; the printed table."""
    configs: dict[str, object] = {"no priors": None}
    if priors:
        from streamfuse.bench.priors import random_config

        configs.update({f"priors {s}": random_config(PRIOR_CONFIG, schedule=s) for s in ("idle", "nice")})
    runs: dict[str, RunReport] = {}
    with tempfile.TemporaryDirectory(prefix="streamfuse-latency-") as tmp:
        base = paced(rig.with_mode(mode), fps, Path(tmp) / "bench.mp4")
        for loaded in (False, True) if busy else (False,):
            for name, cfg in configs.items():
                with busy_process(loaded):
                    runs[name + (" +busy" if loaded else "")] = run(dataclasses.replace(base, priors=cfg),
                                                                    duration_s=seconds)
    return format_round(base, mode, fps, seconds, runs)


def format_round(rig: RigConfig, mode: str, fps: float, seconds: float, runs: dict[str, RunReport]) -> str:
    goal = GOAL_PERIODS * 1e3 / fps
    lines = [f"paced latency (+busy: a CPU-bound process beside): rig {rig.name} at {fps:g} fps (both cameras, wall clock), mode {mode}, {seconds:g} s "
             f"per run, recording to MP4; priors {PRIOR_CONFIG} with random weights, every "
             f"{_every(runs)} frames",
             f"  {'run':<20}{'fps':>6}{'->mp4 p50':>11}{'p95':>7}{'p99':>7}{'->fused p99':>13}"
             f"{'fuse p50':>10}{'p99':>7}{'of none':>9}{'skipped':>9}{'refreshes':>11}   (ms)"]
    for name, rep in runs.items():
        none_p99 = runs["no priors" + (" +busy" if name.endswith("+busy") else "")].stages["fuse"].summary_ms()["p99"]
        sink = next(iter(rep.sink_latency.values())).summary_ms()
        fuse = rep.stages["fuse"].summary_ms()
        lines.append(f"  {name:<20}{rep.fps:>6.1f}{sink['p50']:>11.1f}{sink['p95']:>7.1f}{sink['p99']:>7.1f}"
                     f"{rep.fused_latency.summary_ms()['p99']:>13.1f}{fuse['p50']:>10.2f}{fuse['p99']:>7.2f}"
                     f"{fuse['p99'] / none_p99 if none_p99 else 0:>9.2f}{rep.skipped:>9}{rep.prior_refreshes:>11}")
    worst = max(next(iter(r.sink_latency.values())).summary_ms()["p99"] for n, r in runs.items() if "busy" not in n)
    lines.append(f"  exposure-to-mp4 p99, worst run on a quiet machine: {worst:.1f} ms against a goal of {goal:.1f} ms "
                 f"({GOAL_PERIODS} frame periods): {'met' if worst <= goal else 'MISSED'}")
    return "\n".join(lines)


def _every(runs: dict[str, RunReport]) -> str:
    from streamfuse.bench.priors import random_config

    return str(random_config(PRIOR_CONFIG).every_frames) if len(runs) > 1 else "-"

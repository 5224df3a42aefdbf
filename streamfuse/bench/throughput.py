"""`streamfuse bench`: fused throughput beside the I/O floor, measured in the same run.

The I/O floor is the same pipeline with registration and fusion left out: both inputs are
decoded (or rendered) and the visible frame is encoded with the same encoder settings. Every
run replays the rig's sources as fast as possible and records to a temporary MP4, so the
figures measure the machine, not the cameras' frame rate. The floor and the modes run in
interleaved rounds and each keeps its fastest round, because on a shared 2-core machine a
single run's rate moves by 20% with whatever else the machine does.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from streamfuse.pipeline import RunReport, run
from streamfuse.rig import RigConfig
from streamfuse.sinks import Mp4SinkConfig


def bench(rig: RigConfig, modes: list[str], frames: int, rounds: int = 3) -> str:
    """Run the floor and each mode for `frames` fused frames, `rounds` times interleaved;
    returns the printed report of each one's fastest round."""
    best: dict[str, RunReport] = {}
    with tempfile.TemporaryDirectory(prefix="streamfuse-bench-") as tmp:
        fast = as_fast(rig, Path(tmp) / "bench.mp4")
        for _ in range(rounds):
            for name in [FLOOR, *modes]:
                report = run(fast, max_frames=frames, fuse=False) if name == FLOOR else \
                    run(fast.with_mode(name), max_frames=frames)
                if name not in best or report.fps > best[name].fps:
                    best[name] = report
    floor = best.pop(FLOOR)
    return format_bench(fast, floor, best, rounds)


FLOOR = "I/O floor"


def as_fast(rig: RigConfig, out: Path) -> RigConfig:
    """The rig with sources unpaced and one MP4 sink with the rig's first MP4 settings."""
    mp4 = next((s for s in rig.sinks if isinstance(s, Mp4SinkConfig)), Mp4SinkConfig(path=out))
    sink = dataclasses.replace(mp4, path=out, queue="block")
    ir, vis = (dataclasses.replace(s, pace="fast") for s in (rig.ir, rig.vis))
    return dataclasses.replace(rig, ir=ir, vis=vis, sinks=(sink,))


def format_bench(rig: RigConfig, floor: RunReport, results: dict[str, RunReport], rounds: int) -> str:
    sink = rig.sinks[0]
    lines = [
        f"rig {rig.name}: {floor.frames} frames per run, best of {rounds} rounds, {os.cpu_count()} CPU cores, "
        f"encoder {sink.codec} preset {sink.preset} crf {sink.crf}",
        f"  {'run':<10}{'fps':>8}{'of floor':>10}{'register':>10}{'fuse':>8}{'encode':>8}"
        f"{'cap ir':>8}{'cap vis':>8}   (ms per frame, mean)",
    ]
    for name, rep in [(FLOOR, floor), *results.items()]:
        ms = {k.split()[0] + (" " + k.split()[1] if k.startswith("capture") else ""): t.summary_ms()["mean"]
              for k, t in rep.stages.items()}
        ratio = rep.fps / floor.fps if floor.fps else 0.0
        lines.append(f"  {name:<10}{rep.fps:>8.1f}{ratio:>10.2f}{ms.get('register', 0):>10.2f}"
                     f"{ms.get('fuse', 0):>8.2f}{ms.get('sink', 0):>8.2f}"
                     f"{ms.get('capture ir', 0):>8.2f}{ms.get('capture vis', 0):>8.2f}")
    return "\n".join(lines)

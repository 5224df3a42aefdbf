"""`streamfuse bench`: fused throughput beside the I/O floor, measured in the same run.

The I/O floor is the same pipeline with registration and fusion left out: both inputs are
decoded (or rendered) and the visible frame is encoded with the same encoder settings. Every
run replays the rig's sources as fast as possible and records to a temporary MP4, so the
figures measure the machine, not the cameras' frame rate.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from streamfuse.pipeline import RunReport, run
from streamfuse.rig import RigConfig
from streamfuse.sinks import Mp4SinkConfig


def bench(rig: RigConfig, modes: list[str], frames: int) -> str:
    """Run the floor, then each mode, for `frames` fused frames; returns the printed report."""
    with tempfile.TemporaryDirectory(prefix="streamfuse-bench-") as tmp:
        fast = _as_fast(rig, Path(tmp) / "bench.mp4")
        floor = run(fast, max_frames=frames, fuse=False)
        results = {mode: run(fast.with_mode(mode), max_frames=frames) for mode in modes}
    return format_bench(fast, floor, results)


def _as_fast(rig: RigConfig, out: Path) -> RigConfig:
    """The rig with sources unpaced and one MP4 sink with the rig's first MP4 settings."""
    mp4 = next((s for s in rig.sinks if isinstance(s, Mp4SinkConfig)), Mp4SinkConfig(path=out))
    sink = dataclasses.replace(mp4, path=out, queue="block")
    ir, vis = (dataclasses.replace(s, pace="fast") for s in (rig.ir, rig.vis))
    return dataclasses.replace(rig, ir=ir, vis=vis, sinks=(sink,))


def format_bench(rig: RigConfig, floor: RunReport, results: dict[str, RunReport]) -> str:
    sink = rig.sinks[0]
    lines = [
        f"rig {rig.name}: {floor.frames} frames per run, {os.cpu_count()} CPU cores, "
        f"encoder {sink.codec} preset {sink.preset} crf {sink.crf}",
        f"  {'run':<10}{'fps':>8}{'of floor':>10}{'register':>10}{'fuse':>8}{'encode':>8}"
        f"{'cap ir':>8}{'cap vis':>8}   (ms per frame, mean)",
    ]
    for name, rep in [("I/O floor", floor), *results.items()]:
        ms = {k.split()[0] + (" " + k.split()[1] if k.startswith("capture") else ""): t.summary_ms()["mean"]
              for k, t in rep.stages.items()}
        ratio = rep.fps / floor.fps if floor.fps else 0.0
        lines.append(f"  {name:<10}{rep.fps:>8.1f}{ratio:>10.2f}{ms.get('register', 0):>10.2f}"
                     f"{ms.get('fuse', 0):>8.2f}{ms.get('sink', 0):>8.2f}"
                     f"{ms.get('capture ir', 0):>8.2f}{ms.get('capture vis', 0):>8.2f}")
    return "\n".join(lines)

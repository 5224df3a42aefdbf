"""`streamfuse bench`: fused throughput beside the I/O floor, measured in the same run.

The I/O floor is the same pipeline with registration and fusion left out: both inputs are
decoded (or rendered) and the visible frame is encoded with the same encoder settings. Every
run replays the rig's sources as fast as possible and records to a temporary MP4, so the
figures measure the machine, not the cameras' frame rate. The floor and the modes run in
interleaved rounds and each keeps its fastest round, because on a shared 2-core machine a
single run's rate moves by 20% with whatever else the machine does.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamfuse.pipeline import run
from streamfuse.report import RunReport
from streamfuse.rig import RigConfig
from streamfuse.sinks import Mp4SinkConfig


def bench(rig: RigConfig, modes: list[str], frames: int, rounds: int = 3, busy: bool = False) -> str:
    """Run the floor and each mode for `frames` fused frames, `rounds` times interleaved;
    returns the printed report of each one's fastest round. With `busy`, everything runs a
    second time with a CPU-bound process beside it (`busy_neighbour`), and the report adds how
    much each mode slowed, and each mode's slowdown over `pyramid`'s (the ratio of ratios)."""
    with tempfile.TemporaryDirectory(prefix="streamfuse-bench-") as tmp:
        fast = as_fast(rig, Path(tmp) / "bench.mp4")
        best = _best_rounds(fast, modes, frames, rounds)
        floor = best.pop(FLOOR)
        text = format_bench(fast, floor, best, rounds)
        if busy:
            with busy_neighbour():
                loaded = _best_rounds(fast, modes, frames, rounds)
            loaded_floor = loaded.pop(FLOOR)
            text += "\n\nwith a CPU-bound process beside it:\n" + format_bench(fast, loaded_floor, loaded, rounds)
            text += "\n" + format_slowdown({FLOOR: floor, **best}, {FLOOR: loaded_floor, **loaded})
    # 640x480 too: the size the encoder-input goal (0.1 ms) is stated for.
    sizes = dict.fromkeys([tuple(fast.vis.size), SD_SIZE])
    return text + "\n" + "\n".join(encoder_input_line(size) for size in sizes)


def _best_rounds(fast: RigConfig, modes: list[str], frames: int, rounds: int) -> dict[str, RunReport]:
    best: dict[str, RunReport] = {}
    for _ in range(rounds):
        for name in [FLOOR, *modes]:
            report = run(fast, max_frames=frames, fuse=False) if name == FLOOR else \
                run(fast.with_mode(name), max_frames=frames)
            if name not in best or report.fps > best[name].fps:
                best[name] = report
    return best


@contextlib.contextmanager
def busy_neighbour():
    """A separate Python process spinning on one core for as long as the block runs: what
    another program on a small machine does to the pipeline's threads."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it reach the scheduler before the first run
        yield proc
    finally:
        proc.kill()
        proc.wait()


def format_slowdown(quiet: dict[str, RunReport], busy: dict[str, RunReport]) -> str:
    """Per run: fps alone, fps beside the busy process, busy / alone; and each mode's ratio over
    pyramid's (under 1: it slowed more than pyramid did)."""
    ratio = {name: busy[name].fps / quiet[name].fps if quiet[name].fps else 0.0 for name in quiet}
    lines = [f"  {'run':<10}{'alone':>8}{'beside':>8}{'ratio':>8}{'/ pyramid':>11}   (fps)"]
    for name, alone in quiet.items():
        versus = f"{ratio[name] / ratio['pyramid']:>11.2f}" if ratio.get("pyramid") else f"{'':>11}"
        lines.append(f"  {name:<10}{alone.fps:>8.1f}{busy[name].fps:>8.1f}{ratio[name]:>8.2f}{versus}")
    return "\n".join(lines)


FLOOR = "I/O floor"
#: The standard-definition frame the encoder-input cost is also measured on.
SD_SIZE = (640, 480)


def encoder_input_line(size: tuple[int, int], repeats: int = 300) -> str:
    """What feeding the encoder costs per frame: streamfuse's planar YUV conversion against
    PyAV's own BGR to yuv420p, on a frame of `size` (w, h); fastest of `repeats`."""
    import av
    import numpy as np

    from streamfuse.sinks.containers import bgr_to_i420

    w, h = size[0] - size[0] % 2, size[1] - size[1] % 2
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def fastest(convert) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            convert()
            times.append(time.perf_counter() - start)
        return 1e3 * min(times)

    convert = fastest(lambda: bgr_to_i420(image))
    handed = fastest(lambda: av.VideoFrame.from_ndarray(bgr_to_i420(image), format="yuv420p"))
    pyav = fastest(lambda: av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p"))
    return (f"encoder input, {w}x{h}: BGR to planar YUV (BT.601 limited) {convert:.3f} ms, with the copy into "
            f"PyAV's frame {handed:.3f} ms; PyAV converting BGR itself {pyav:.3f} ms (fastest of {repeats})")


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

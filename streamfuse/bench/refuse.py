"""`streamfuse bench-refuse`: re-fuse throughput with 1 and 2 workers on a local Ray cluster.

Records `archives` raw archives of the synthetic street (`streamfuse run` with
`raw_archive: true`), starts a Ray cluster of 2 CPUs on this machine (loopback only), warms
its workers with one round, then re-fuses all archives with at most 1 and then 2 tasks at
once, and prints frames per second over all jobs and the ratio. The numbers say how well
jobs spread over workers; on a machine with other work the ratio is below 2.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import yaml

from streamfuse.pipeline import run
from streamfuse.refuse.cluster import import_ray
from streamfuse.refuse.inputs import discover
from streamfuse.refuse.job import JobSpec
from streamfuse.refuse.runner import refuse_all
from streamfuse.rig import load_rig
from streamfuse.sinks import Mp4SinkConfig

#: Object store of the benchmark's cluster: jobs pass only paths and small results.
OBJECT_STORE_BYTES = 80 << 20


def record_archives(folder: Path, count: int, frames: int, size: tuple[int, int]) -> list[Path]:
    """`count` raw archives of `frames` frames of the synthetic street at `size`, in `folder`."""
    camera = {"type": "synthetic", "size": list(size), "pace": "fast"}
    rig_file = folder / "record.yaml"
    rig_file.write_text(yaml.safe_dump({
        "name": "bench-refuse", "calibration": None, "fusion": {"mode": "alpha"},
        "sources": {"ir": {**camera, "fps": 30, "pixel_format": "gray16"}, "vis": {**camera, "fps": 25}}}))
    rig = load_rig(rig_file)
    paths = []
    for i in range(count):
        video = folder / f"take{i}.mp4"
        run(dataclasses.replace(rig, sinks=(Mp4SinkConfig(path=video, codec="libx264", raw_archive=True),)),
            max_frames=frames)
        paths.append(video.with_name(f"take{i}.raw.mkv"))
    return paths


def start_local_cluster(num_cpus: int = 2):
    """A Ray cluster of `num_cpus` CPUs in this process, bound to 127.0.0.1, kept light."""
    ray = import_ray()
    ray.init(_node_ip_address="127.0.0.1", num_cpus=num_cpus, include_dashboard=False,
             object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, configure_logging=False)
    return ray


def bench_refuse(archives: int, frames: int, size: tuple[int, int], mode: str) -> dict[int, float]:
    """Print and return frames per second over all jobs with 1 and 2 workers."""
    folder = Path(tempfile.mkdtemp(prefix="streamfuse-bench-refuse-"))
    ray = None
    try:
        print(f"recording {archives} raw archives of {frames} frames at {size[0]}x{size[1]} ...", flush=True)
        items = discover([folder / p.name for p in record_archives(folder, archives, frames, size)])
        ray = start_local_cluster(2)
        fps: dict[int, float] = {}
        for workers, label in ((2, "warm-up"), (1, "1 worker"), (2, "2 workers")):
            out = folder / f"out-{label.replace(' ', '-')}"
            out.mkdir()
            specs = [JobSpec(item, out, mode=mode) for item in items]
            summary = refuse_all(specs, workers=workers, use_ray=True, show_progress=False)
            if summary.failed:
                raise RuntimeError(f"bench-refuse: {summary.failed[0].name}: {summary.failed[0].errors}")
            if label != "warm-up":
                fps[workers] = summary.fps
            print(f"  {label:9s}  {summary.frames} frames in {summary.wall_s:.2f} s: {summary.fps:.1f} fps", flush=True)
        print(f"2 workers / 1 worker: {fps[2] / fps[1]:.2f}x ({mode}, Ray on this machine, 2 CPUs)")
        return fps
    finally:
        if ray is not None:
            ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)

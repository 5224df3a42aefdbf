"""Run every job of a `streamfuse refuse` command: skip the complete ones, run the rest
locally or on Ray, keep one progress bar over all of them, write summary.json."""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamfuse.refuse.inputs import expected_frames
from streamfuse.refuse.job import JobResult, JobSpec, finished, write_atomic
from streamfuse.refuse.local import run_local

SUMMARY_NAME = "summary.json"


@dataclass
class Summary:
    """What a refuse command did: one result per input, in the order given."""

    results: list[JobResult]
    wall_s: float
    workers: int | None = None
    ray: str | None = None
    frames: int = field(init=False)

    def __post_init__(self):
        self.frames = sum(r.frames for r in self.results)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def fps(self) -> float:
        """Frames fused in this run (skipped inputs left out) per second of wall time."""
        fused = sum(r.frames for r in self.results if r.status == "done")
        return fused / self.wall_s if self.wall_s > 0 else 0.0

    def write(self, out_dir: Path) -> Path:
        path = out_dir / SUMMARY_NAME
        data = {"inputs": [dataclasses.asdict(r) for r in self.results], "frames": self.frames,
                "fps": round(self.fps, 2), "wall_s": round(self.wall_s, 3), "failed": len(self.failed),
                "workers": self.workers, "ray": self.ray}
        write_atomic(path, json.dumps(data, indent=2) + "\n")
        return path


Progress = Callable[[str, int, int], None]


def refuse_all(specs: list[JobSpec], workers: int | None = None, ray: str | None = None, use_ray: bool = False,
               show_progress: bool = True, on_progress: Progress | None = None) -> Summary:
    """Run `specs` (in local processes, or as Ray tasks with `use_ray`; `ray`: the cluster
    address, None for auto) and write OUT_DIR/summary.json. `on_progress(name, frames, pid)`
    sees every progress message (tests use the pid)."""
    started = time.monotonic()
    results: dict[str, JobResult] = {}
    todo = []
    for spec in specs:
        done = finished(spec)
        if done is not None:
            results[spec.item.name] = done
        else:
            todo.append(spec)
    bar = _Bar(todo, results.values(), show_progress)
    try:
        def progress(name: str, frames: int, pid: int) -> None:
            bar.update(name, frames)
            if on_progress is not None:
                on_progress(name, frames, pid)

        def result(r: JobResult) -> None:
            results[r.name] = r
            bar.update(r.name, r.frames)

        if todo and use_ray:
            from streamfuse.refuse.cluster import run_ray

            run_ray(todo, ray, workers, progress, result)
        elif todo:
            from streamfuse.threads import available_cores

            run_local(todo, workers or available_cores(), progress, result)
    finally:
        bar.close()
    summary = Summary([results[s.item.name] for s in specs], time.monotonic() - started, workers,
                      (ray or "auto") if use_ray else None)
    if specs:
        summary.write(specs[0].out_dir)
    return summary


class _Bar:
    """One tqdm bar over all jobs: frames done of frames expected, rate, ETA."""

    def __init__(self, todo: list[JobSpec], done, show: bool):
        from tqdm import tqdm

        self.frames = {r.name: r.frames for r in done}
        self.expected = {s.item.name: min(expected_frames(s.item), s.max_frames or 1 << 60) for s in todo}
        total = sum(self.expected.values()) + sum(self.frames.values())
        self.bar = tqdm(total=total, initial=sum(self.frames.values()), unit="frame", desc="refuse",
                        disable=not show, smoothing=0.1)

    def update(self, name: str, frames: int) -> None:
        self.frames[name] = frames  # a retried job starts again from 0
        done = sum(self.frames.values())
        if done > self.bar.total:  # an estimate was short
            self.bar.total = done
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        else:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        self.bar.total = self.bar.n  # the estimates are replaced by what was done
        self.bar.refresh()
        self.bar.close()

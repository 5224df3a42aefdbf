"""One re-fuse job: build a rig for an input, run it through `pipeline.run`, publish the MP4.

The rig is the one `streamfuse run` would run: sources that replay the input as fast as
the pipeline goes (the archive's two streams, or the clip's two recordings), and one MP4
sink. Its other sections come from `--rig` when given (its sources and sinks replaced),
else from the archive's own description (the rig it was recorded with: calibration, sync,
fusion, thermal, registration, priors), else (a clip) the defaults with `calibration: null`.

Outputs appear whole or not at all: the MP4 is written in a work folder of its own
(OUT_DIR/.refuse-work/NAME-...), renamed into OUT_DIR/NAME.mp4 when the run has ended
well, and then a marker (OUT_DIR/.NAME.done.json: the job's figures and the MP4's size) says
it is complete. A job whose marker matches its MP4 is skipped: re-running a command resumes
it. A retried job (a killed worker) starts again from the input and writes the same file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from streamfuse.capture.archive import ArchiveConfig, read_metadata
from streamfuse.capture.replay import ReplayConfig
from streamfuse.errors import RuntimeFailure, StreamfuseError, one_line
from streamfuse.pipeline import run
from streamfuse.refuse.inputs import Input
from streamfuse.register.calibration import load_calibration
from streamfuse.rig import RigConfig, load_rig
from streamfuse.sinks import Mp4SinkConfig
from streamfuse.sinks.containers import sync_folder

#: Folder (in OUT_DIR) of the jobs' unfinished outputs.
WORK_FOLDER = ".refuse-work"
#: Sections of an archive's description that a job's rig takes over.
RIG_SECTIONS = ("sync", "fusion", "thermal", "registration")


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one job (plain data: it travels to other machines;
    paths are read there, so OUT_DIR and the inputs are on storage every worker sees)."""

    item: Input
    out_dir: Path
    rig: Path | None = None
    mode: str | None = None
    calibration: Path | None = None
    max_frames: int | None = None

    @property
    def output(self) -> Path:
        return self.out_dir / f"{self.item.name}.mp4"

    @property
    def marker(self) -> Path:
        return self.out_dir / f".{self.item.name}.done.json"


@dataclass
class JobResult:
    """What one job did; a row of summary.json. `status`: done, skipped (complete before) or failed."""

    name: str
    input: str
    output: str
    status: str
    frames: int = 0
    fps: float = 0.0
    drops: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @classmethod
    def failed(cls, spec: JobSpec, error: str, started: float) -> "JobResult":
        return cls(spec.item.name, str(spec.item.path), str(spec.output), "failed",
                   wall_s=round(time.monotonic() - started, 3), errors=[one_line(error)])


def finished(spec: JobSpec) -> JobResult | None:
    """The earlier result of `spec` when its output is complete (marker and MP4 agree), else None."""
    try:
        done = json.loads(spec.marker.read_text())
        if spec.output.stat().st_size != done.pop("bytes"):
            return None
        return dataclasses.replace(JobResult(**done), status="skipped")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_job(spec: JobSpec, progress: Callable[[str, int], None] | None = None) -> JobResult:
    """Run one job to its end; never raises for a bad input (the result says what failed).
    `progress(name, frames)` is called about twice a second while it runs."""
    done = finished(spec)
    if done is not None:
        return done
    started = time.monotonic()
    work = make_work_folder(spec)
    try:
        rig = build_rig(spec, work)
        on_progress = (lambda report: progress(spec.item.name, report.frames)) if progress else None
        report = run(rig, max_frames=spec.max_frames, on_progress=on_progress)
        video = rig.sinks[0].path
        if report.frames == 0 or not video.exists():
            raise RuntimeFailure(f"{spec.item.path}: no frame fused (no IR and visible frames within "
                                 f"sync.tolerance_ms of each other)")
        os.replace(video, spec.output)
        sync_folder(spec.out_dir)
        wall = time.monotonic() - started
        result = JobResult(spec.item.name, str(spec.item.path), str(spec.output), "done", report.frames,
                           round(report.frames / max(report.wall_s, 1e-9), 2),
                           report.capture_drops + report.sink_drops + report.sync.unmatched_vis, round(wall, 3),
                           [report.warning] if report.warning else [])
        write_atomic(spec.marker, json.dumps({**dataclasses.asdict(result), "bytes": spec.output.stat().st_size}))
        return result
    except StreamfuseError as exc:
        return JobResult.failed(spec, str(exc), started)
    except Exception as exc:  # a bug met by one input must not stop the other jobs
        return JobResult.failed(spec, f"{type(exc).__name__}: {exc}", started)
    finally:
        remove_work_folder(work)


def build_rig(spec: JobSpec, work: Path) -> RigConfig:
    """The rig of `spec`, its MP4 written into `work`; RigError/SourceError when it cannot be built."""
    item = spec.item
    video = work / f"{item.name}.mp4"
    if spec.rig is not None:
        rig = load_rig(spec.rig)
        ir, vis = _sources(item)
        rig = dataclasses.replace(rig, name=item.name, ir=ir, vis=vis, sinks=(_mp4(rig, video),))
        if spec.calibration is not None:
            rig = dataclasses.replace(rig, calibration_path=spec.calibration,
                                      calibration=load_calibration(spec.calibration))
    else:
        path = work / "rig.yaml"
        path.write_text(yaml.safe_dump(_rig_data(spec, work, video), sort_keys=False))
        rig = load_rig(path)
    return rig.with_mode(spec.mode) if spec.mode else rig


def job_resources(spec: JobSpec) -> tuple[float, float]:
    """(CPUs, GPUs) one job of `spec` takes: a core for the frame loop (decoding, fusion and
    encoding threads share it), one more for the prior worker when the rig has priors, and a
    GPU when it fuses or warps on CUDA. Read from `--rig` or the archive's description."""
    try:
        if spec.rig is not None:
            rig = load_rig(spec.rig)
            fusion, registration, priors = rig.fusion.device, rig.registration.backend, rig.priors
            priors = dataclasses.asdict(priors) if priors is not None else None
        elif spec.item.kind == "archive":
            meta = read_metadata(spec.item.path)
            fusion, registration = meta["fusion"].get("device"), meta["registration"].get("backend")
            priors = meta.get("priors")
        else:
            fusion, registration, priors = "cpu", "auto", None
    except (StreamfuseError, KeyError, TypeError, AttributeError):
        return 1.0, 0.0  # the job itself will say what is wrong with its input
    cuda = fusion == "cuda" or registration == "gpu" or (priors or {}).get("device") == "cuda"
    return 1.0 + (priors is not None), float(cuda)


def _sources(item: Input) -> tuple:
    if item.kind == "archive":
        path = item.path.resolve()
        return ArchiveConfig(path=path), ArchiveConfig(path=path)
    return ReplayConfig(path=item.ir.resolve()), ReplayConfig(path=item.vis.resolve())


def _mp4(rig: RigConfig, video: Path) -> Mp4SinkConfig:
    """The job's recording: the rig's first MP4 sink's encoder settings, one plain file.
    `codec: auto` becomes libx264, so that a job retried on another machine writes the same file."""
    first = next((s for s in rig.sinks if isinstance(s, Mp4SinkConfig)), Mp4SinkConfig(path=video))
    return dataclasses.replace(first, path=video, codec="libx264" if first.codec == "auto" else first.codec,
                               segment_s=None, segment_mb=None, keep=None, ir_archive=False, raw_archive=False,
                               queue="block")


def _rig_data(spec: JobSpec, work: Path, video: Path) -> dict:
    """A rig file's content for `spec` without --rig: from the archive's description, or the defaults."""
    item = spec.item
    kind = "archive" if item.kind == "archive" else "replay"
    ir, vis = (item.path, item.path) if item.kind == "archive" else (item.ir, item.vis)
    data: dict = {"name": item.name,
                  "sources": {"ir": {"type": kind, "path": str(ir.resolve())},
                              "vis": {"type": kind, "path": str(vis.resolve())}},
                  "calibration": str(spec.calibration.resolve()) if spec.calibration else None}
    if item.kind == "archive":
        meta = read_metadata(item.path)
        data.update({key: meta[key] for key in RIG_SECTIONS if meta.get(key) is not None})
        if meta.get("priors") is not None:
            data["priors"] = meta["priors"]
        if spec.calibration is None and meta.get("calibration"):
            calibration = work / "calibration.yaml"
            calibration.write_text(meta["calibration"])
            data["calibration"] = str(calibration)
    data["sinks"] = [{"type": "mp4", "path": str(video), "codec": "libx264"}]
    return data


def make_work_folder(spec: JobSpec) -> Path:
    """A new folder for this attempt's files; what an earlier, killed attempt left is removed.

    Safe beside other workers' jobs in the same OUT_DIR: a job that ends removes the shared
    parent when it is empty (`remove_work_folder`), which may happen between our creating the
    parent and our folder in it; then we create both again."""
    root = spec.out_dir / WORK_FOLDER
    work = root / f"{spec.item.name}-{uuid.uuid4().hex[:8]}"
    for _ in range(100):  # each retry means another job emptied the parent just now
        try:
            root.mkdir(exist_ok=True)
            for stale in root.glob(f"{spec.item.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            work.mkdir()
            return work
        except (FileNotFoundError, FileExistsError):  # FileExistsError: the parent went during mkdir
            if work.is_dir():
                return work
    raise RuntimeFailure(f"{root}: could not create a work folder (it keeps disappearing); "
                         f"is another program removing it?")


def remove_work_folder(work: Path) -> None:
    """Remove one attempt's folder, and the shared parent when no other job's folder is left."""
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.parent.rmdir()  # fails while another job's folder is in it, as it should
    except OSError:
        pass


def write_atomic(path: Path, text: str) -> None:
    """Write `path` whole or not at all (a temporary file beside it, then a rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 is for secrets; these are results to share
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


"""`run(rig)`: capture -> sync -> register -> fuse -> sinks, until a limit, the end or a stop.

Threads. One capture thread per camera reads frames and hands them over through a bounded
queue (a latest-frame slot for live sources, a blocking queue for fast replay). The main
thread, the only one that touches registration and fusion (and so, later, the GPU), merges
the two streams in capture-time order, pairs them, warps IR onto the visible frame, fuses
and hands each fused frame to every sink. Each sink has its own thread and bounded queue.
Shutdown happens in one `finally`: stop the capture threads, drain and close every sink
(so a recording is finalized on every exit path), and report any thread that did not end.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from streamfuse.capture import CaptureThread, Source, open_sources
from streamfuse.errors import RuntimeFailure, SourceError
from streamfuse.frames import Frame, FramePair, now_ns
from streamfuse.fuse import make_fuser
from streamfuse.queues import EndOfStream
from streamfuse.register import Calibration, Registrar
from streamfuse.rig import RigConfig
from streamfuse.sinks import SinkRunner, StreamInfo, make_sink
from streamfuse.stats import RateMeter, StageTimer
from streamfuse.sync import Pairer, SyncStats

#: How long the main loop sleeps at most before re-checking stop requests and limits.
POLL_S = 0.1
#: Extra time a realtime frame waits for the other camera, beyond the sync tolerance, to
#: absorb transport delay between the two cameras' frames reaching this process.
LIVE_SLACK_NS = 50_000_000


@dataclass
class RunReport:
    """What a run did; also the live snapshot handed to the progress callback."""

    frames: int = 0
    wall_s: float = 0.0
    sync: SyncStats = field(default_factory=SyncStats)
    capture_drops: int = 0
    sink_drops: int = 0
    stages: dict[str, StageTimer] = field(default_factory=dict)
    latency: StageTimer = field(default_factory=lambda: StageTimer("latency"))
    rate: RateMeter = field(default_factory=RateMeter)
    error: BaseException | None = None

    @property
    def drops(self) -> int:
        return self.sync.unmatched_vis + self.sync.late + self.capture_drops + self.sink_drops

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


class Merger:
    """Takes frames from the two capture queues in capture-time order."""

    def __init__(self, captures: list[CaptureThread], wakeup: threading.Event, wait_ns: int | None):
        self._captures = captures
        self._wakeup = wakeup
        self._wait_ns = wait_ns  # None: never skip ahead of a silent source (fast replay)
        self._heads: dict[str, Frame | None] = {c.source.name: None for c in captures}
        self._ended: set[str] = set()

    def next(self, timeout: float) -> Frame | None:
        """The earliest frame that can no longer be preceded by one of the other camera's;
        None after `timeout` s; EndOfStream when both streams have ended."""
        deadline = time.monotonic() + timeout
        while True:
            self._wakeup.clear()
            self._fill()
            frame = self._pick()
            if frame is not None:
                return frame
            if len(self._ended) == len(self._captures):
                raise EndOfStream
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._wakeup.wait(min(remaining, 0.02) if self._wait_ns else remaining)

    def _fill(self) -> None:
        for capture in self._captures:
            name = capture.source.name
            if self._heads[name] is None and name not in self._ended:
                try:
                    self._heads[name] = capture.queue.get(timeout=0)
                except EndOfStream:
                    self._ended.add(name)

    def _pick(self) -> Frame | None:
        ready = [f for f in self._heads.values() if f is not None]
        if not ready:
            return None
        first = min(ready, key=lambda f: f.t_ns)
        waiting = [n for n, f in self._heads.items() if f is None and n not in self._ended]
        if waiting and (self._wait_ns is None or now_ns() - first.t_ns <= self._wait_ns):
            return None
        self._heads[first.camera] = None
        return first


def open_rig_sources(rig: RigConfig) -> tuple[Source, Source, Registrar]:
    """Open both sources and check them against the calibration; SourceError if they disagree."""
    ir, vis = open_sources(rig.ir, rig.vis, rig.scene)
    try:
        ir.open()
        vis.open()
        cal = rig.calibration or Calibration.identity(ir.size)
        where = rig.calibration_path or "the rig (calibration: null)"
        for src, expected in ((ir, cal.ir_size), (vis, cal.vis_size)):
            if tuple(src.size) != tuple(expected):
                raise SourceError(f"{src.name} source delivers {src.size[0]}x{src.size[1]} but {where} is for "
                                  f"{expected[0]}x{expected[1]}; calibrate for these cameras or fix the sizes")
        return ir, vis, Registrar(cal.H_vis_from_ir, cal.ir_size, cal.vis_size)
    except BaseException:
        ir.close()
        vis.close()
        raise


def run(rig: RigConfig, *, max_frames: int | None = None, duration_s: float | None = None,
        stop: threading.Event | None = None, on_progress: Callable[[RunReport], None] | None = None,
        fuse: bool = True) -> RunReport:
    """Run the rig until `max_frames` fused frames, `duration_s` seconds, `stop` is set, or
    both inputs end. `fuse=False` skips registration and fusion and passes the visible frame
    on (the I/O floor for benchmarks). Raises StreamfuseError; the report of a failed run is
    attached to the exception as `.report`."""
    stop = stop or threading.Event()
    report = RunReport()
    ir, vis, registrar = open_rig_sources(rig)
    fuser = make_fuser(rig.fusion) if fuse else None
    runners = _open_sinks(rig, vis)
    wakeup = threading.Event()
    captures = [CaptureThread(ir, wakeup), CaptureThread(vis, wakeup)]
    report.stages = {"register": StageTimer("register"), "fuse": StageTimer("fuse")}
    started = time.monotonic()
    try:
        t0 = now_ns()
        for c in captures:
            c.source.start_clock(t0)
            c.start()
        realtime = ir.realtime or vis.realtime
        wait_ns = round(rig.sync.tolerance_ms * 1e6) + LIVE_SLACK_NS if realtime else None
        merger = Merger(captures, wakeup, wait_ns)
        pairer = Pairer(round(rig.sync.tolerance_ms * 1e6))
        report.sync = pairer.stats

        def emit(pairs: list[FramePair]) -> bool:
            """Fuse and hand out `pairs`; False once the frame limit is reached."""
            for pair in pairs:
                if max_frames is not None and report.frames >= max_frames:
                    return False
                out = _process(pair, registrar, fuser, report)
                for runner in runners:
                    runner.put(out)
                report.frames += 1
                report.rate.tick()
            return max_frames is None or report.frames < max_frames

        going, last_progress = True, 0.0
        while going and not stop.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            try:
                frame = merger.next(POLL_S)
            except EndOfStream:
                emit(pairer.flush())
                break
            except RuntimeFailure as exc:  # a source broke: keep what can still be paired
                emit(pairer.flush())
                raise exc
            if frame is not None:
                going = emit(pairer.push(frame))
            elif realtime:
                going = emit(pairer.advance(now_ns() - wait_ns))
            if on_progress and time.monotonic() - last_progress > 0.5:
                last_progress = time.monotonic()
                _collect(report, captures, runners, started)
                on_progress(report)
    except BaseException as exc:
        report.error = exc
        exc.report = report
        raise
    finally:
        late_error = _shutdown(captures, runners, report, started)
    if late_error is not None:
        report.error = late_error
        late_error.report = report
        raise late_error
    return report


def _process(pair: FramePair, registrar: Registrar, fuser, report: RunReport) -> Frame:
    vis = pair.vis
    if fuser is None:
        image = vis.image
    else:
        with report.stages["register"].time():
            try:
                ir = registrar.warp(pair.ir.image)
            except ValueError as exc:
                raise RuntimeFailure(f"ir source: {exc}") from None
        with report.stages["fuse"].time():
            image = fuser.fuse(ir, vis.image)
    return Frame(image, vis.t_ns, report.frames, "fused", "bgr24", min(pair.ir.recv_ns, vis.recv_ns))


def _open_sinks(rig: RigConfig, vis: Source) -> list[SinkRunner]:
    info = StreamInfo(size=vis.size, fps=vis.fps)
    runners: list[SinkRunner] = []
    try:
        for cfg in rig.sinks:
            sink = make_sink(cfg)
            sink.open(info)
            runners.append(SinkRunner(sink, cfg.queue))
    except BaseException:
        for r in runners:
            r.finish()
        raise
    for r in runners:
        r.start()
    return runners


def _collect(report: RunReport, captures: list[CaptureThread], runners: list[SinkRunner], started: float) -> None:
    report.wall_s = time.monotonic() - started
    report.capture_drops = sum(c.queue.dropped for c in captures)
    report.sink_drops = sum(r.queue.dropped for r in runners)
    for c in captures:
        report.stages[c.read_time.name] = c.read_time
    for r in runners:
        report.stages[r.write_time.name] = r.write_time
    if runners:
        report.latency = runners[0].latency


def _shutdown(captures: list[CaptureThread], runners: list[SinkRunner], report: RunReport,
              started: float) -> BaseException | None:
    """Stop everything; returns an error that only showed up while stopping, if any."""
    stuck = [c.source.name for c in captures if not c.stop()]
    for runner in runners:
        runner.finish()
    _collect(report, captures, runners, started)
    errors = [r.error for r in runners if r.error is not None]
    if errors:
        return errors[0]
    if stuck:
        return RuntimeFailure(f"capture thread(s) {', '.join(stuck)} did not stop")
    return None

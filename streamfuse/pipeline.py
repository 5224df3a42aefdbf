"""`run(rig)`: capture -> sync -> register -> priors -> fuse -> sinks, until a limit, the end or a stop.

Threads. One capture thread per camera reads frames and hands them over through a bounded
queue (a latest-frame slot for live sources, a blocking queue for fast replay). The main
thread, the only one that touches registration and fusion (and so the GPU), merges the two
streams in capture-time order (`sync.Merger`), pairs them (`sync.Pairer`), and runs the
per-pair stages (`process_pair`: AGC, warp, the current prior, fuse) before handing each
fused frame to every sink. Each sink has its own thread and bounded queue; a sink that fails
stops alone. With a viewer (display, monitor) the main loop also reads the live controls
once per frame (`controls.LiveFusion`). With live cameras, `capture.liveness.Liveness` tells
the loop which one is lost, frozen or silent: the loop then stops waiting for it and hands
out the other camera's frames alone (`fuse.views`) until it is back. The prior worker and
the registration refiner have a thread each (ARCHITECTURE.md).
Shutdown happens in one `finally`: stop the capture threads, drain and close every sink
(so a recording is finalized on every exit path), stop the workers, and report any thread
that did not end.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamfuse import threads
from streamfuse.capture import CaptureThread, Source, open_sources
from streamfuse.capture.base import live_slot_depth
from streamfuse.capture.liveness import Liveness, lag_bound_ns
from streamfuse.controls import Controls, LiveFusion
from streamfuse.errors import RuntimeFailure, SourceError
from streamfuse.frames import Frame, FramePair, now_ns
from streamfuse.fuse import Fuser, make_fuser
from streamfuse.fuse.views import no_signal, render_view, single_camera
from streamfuse.priors.worker import PriorStage
from streamfuse.queues import EndOfStream
from streamfuse.radiometry import RadiometryConfig, SceneTemperatures, measure
from streamfuse.register.calibration import Calibration
from streamfuse.register.registrar import Registrar
from streamfuse.report import RunReport
from streamfuse.rig import RigConfig, recording_metadata
from streamfuse.sinks import (
    INTERACTIVE_SINKS,
    Mp4SinkConfig,
    SinkRunner,
    StreamInfo,
    make_sink,
)
from streamfuse.stats import StageTimer
from streamfuse.sync import Merger, Pairer, PairingWatch, min_frame_gap_ns
from streamfuse.thermal import Agc, display_counts, make_agc

log = logging.getLogger("streamfuse")

#: How long the main loop sleeps at most before re-checking stop requests and limits.
POLL_S = 0.1
#: Extra time a realtime frame waits for the other camera, beyond the sync tolerance, to
#: absorb transport delay between the two cameras' frames reaching this process.
LIVE_SLACK_NS = 50_000_000


@dataclass
class Stages:
    """The per-pair stages of the main loop, in order (main thread only).

    Attributes:
        registrar: warps the IR frame into the visible frame.
        agc: the rig's thermal AGC (raw counts -> 8-bit display levels), or None: raw
            frames go on to the fuser, which maps them itself.
        priors: the semantic priors' stage, or None without priors.
        radiometry: the rig's count -> temperature mapping, or None without one.
        timers: "register", "fuse" (and "agc", "temperatures") stage timers, filled per pair.
    """

    registrar: Registrar
    agc: Agc | None = None
    priors: PriorStage | None = None
    radiometry: RadiometryConfig | None = None
    timers: dict[str, StageTimer] = field(default_factory=dict)

    def __post_init__(self):
        names = ("register", "fuse") + (("agc",) if self.agc is not None else ()) + \
            (("temperatures",) if self.radiometry is not None else ())
        for name in names:
            self.timers.setdefault(name, StageTimer(name))

    def display_ir(self, ir: Frame) -> np.ndarray:
        """The IR frame for registration and fusion: 8-bit through the AGC, or raw without one."""
        if self.agc is None:
            return ir.image
        with self.timers["agc"].time():
            return self.agc(ir.image, ir.t_ns)


def process_pair(pair: FramePair, stages: Stages, fuser: Fuser | None, view: str, seq: int,
                 spot: tuple[float, float] = (0.5, 0.5)) -> Frame:
    """One pair through AGC, registration, the current prior and fusion (or the live `view`);
    the fused frame (`seq`) keeps the visible frame's capture time and carries the pair (and,
    with radiometry, the temperatures, the spot meter at `spot`). `fuser=None` passes the
    visible frame on (the I/O floor of benchmarks)."""
    vis = pair.vis
    if fuser is None:
        image, temperatures = vis.image, None
    else:
        with stages.priors.holding() if stages.priors is not None else contextlib.nullcontext():
            image, temperatures = _fuse_pair(pair, stages, fuser, view, seq, spot)
    return Frame(image, vis.t_ns, seq, "fused", "bgr24", min(pair.ir.recv_ns, vis.recv_ns), pair, temperatures)


def _fuse_pair(pair: FramePair, stages: Stages, fuser: Fuser, view: str, seq: int,
               spot: tuple[float, float]) -> tuple[np.ndarray, SceneTemperatures | None]:
    """(picture, temperatures) of `process_pair` with a fuser: the frame loop's work on a pair,
    while the prior process, if it yields to frames, is stopped."""
    vis = pair.vis
    temperatures = None
    ir_display = stages.display_ir(pair.ir)
    with stages.timers["register"].time():
        try:
            ir = stages.registrar.warp(ir_display)
        except ValueError as exc:
            raise RuntimeFailure(f"ir source: {exc}") from None
        stages.registrar.observe(pair.ir.image, vis.image)  # live refinement, when the rig enables it
    prior = stages.priors.step(ir, vis, seq) if stages.priors is not None else None
    with stages.timers["fuse"].time():
        image = render_view(view, fuser, ir, vis.image, prior)
    if stages.radiometry is not None:
        temperatures = scene_temperatures(pair, ir, stages, spot)
    return image, temperatures


def scene_temperatures(pair: FramePair, ir: np.ndarray, stages: Stages, spot: tuple[float, float]) -> SceneTemperatures:
    """The temperatures of the registered raw counts, so that every position is a pixel of the
    fused picture: `ir` itself without an AGC (the fusers got the raw counts), else the raw
    frame warped once more (0.3 ms)."""
    with stages.timers["temperatures"].time():
        counts = ir if stages.agc is None else stages.registrar.warp(pair.ir.image)
        return measure(counts, stages.radiometry, spot, display_counts(counts, stages.agc))


def alone_picture(frame: Frame, lost: str, stages: Stages, on_loss: str, palette: str,
                  vis_size: tuple[int, int]) -> np.ndarray:
    """The picture handed out for `frame` while the other camera (`lost`) is down."""
    if on_loss == "no_signal":
        return no_signal(lost, vis_size)
    if frame.camera == "vis":
        return single_camera("vis", frame.image, palette)
    return single_camera("ir", stages.registrar.warp(stages.display_ir(frame)), palette)


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
        return ir, vis, Registrar.from_calibration(cal, rig.registration)
    except BaseException:
        ir.close()
        vis.close()
        raise


def run(rig: RigConfig, *, max_frames: int | None = None, duration_s: float | None = None,
        stop: threading.Event | None = None, on_progress: Callable[[RunReport], None] | None = None,
        fuse: bool = True, controls: Controls | None = None) -> RunReport:
    """Run the rig until `max_frames` fused frames, `duration_s` seconds, `stop` is set, or
    both inputs end. `fuse=False` skips registration and fusion and passes the visible frame
    on (the I/O floor for benchmarks). `controls` are live settings to follow (made here
    when the rig has a display or monitor sink). Raises StreamfuseError; the report of a
    failed run is attached to the exception as `.report`."""
    stop = stop or threading.Event()
    report = RunReport(threads=threads.apply().describe())
    priors = None
    if fuse and rig.priors is not None:
        from streamfuse.priors.worker import (
            open_priors,  # torch and the models: only for priors
        )

        priors = open_priors(rig.priors, rig.path)
    ir, vis, registrar = open_rig_sources(rig)
    try:
        fuser = make_fuser(rig.fusion) if fuse else None
        if controls is None and any(isinstance(s, INTERACTIVE_SINKS) for s in rig.sinks):
            controls = Controls(rig.fusion, getattr(registrar, "distance_m", None))
        live = LiveFusion(controls, rig.fusion, registrar) if controls is not None and fuse else None
        report.paced = ir.realtime or vis.realtime
        radiometry = rig.thermal.radiometry_config
        info = StreamInfo(vis.size, vis.fps, controls, report, stop, radiometry.on,
                          radiometry if radiometry.on else None,
                          recording_metadata(rig, ir, vis) if _keeps_raw(rig) else {})
        runners = _open_sinks(rig, info, report.paced)
    except BaseException:  # a sink that cannot open (a window without a screen, a bad path)
        ir.close()
        vis.close()
        registrar.close()
        raise
    wakeup = threading.Event()
    realtime = ir.realtime or vis.realtime
    wait_ns = _live_wait_ns(rig) if realtime else None
    captures = [CaptureThread(s, wakeup, live_slot_depth(float(s.fps), wait_ns or 0)) for s in (ir, vis)]
    radiometry = rig.thermal.radiometry_config
    stages = Stages(registrar, make_agc(rig.thermal), priors, radiometry if radiometry.on else None)
    report.stages = dict(stages.timers)
    if priors is not None:
        report.stages.update(priors.timers)
    liveness: Liveness | None = None
    started = time.monotonic()
    try:
        if priors is not None:
            priors.start()
        t0 = report.t0_ns = now_ns()
        for c in captures:
            c.source.start_clock(t0)
            c.start()
        liveness = Liveness(rig.live, captures) if realtime else None
        gaps = {c.source.name: min_frame_gap_ns(float(c.source.fps)) for c in captures} if realtime else {}
        report.lag_bounds_ns = {c.source.name: lag_bound_ns(rig.live, float(c.source.fps), getattr(cfg, "latency_ms", 0.0))
                                for c, cfg in zip(captures, (rig.ir, rig.vis))} if realtime else {}
        merger = Merger(captures, wakeup, wait_ns, liveness, min_gap_ns=gaps, max_lag_ns=report.lag_bounds_ns)
        pairer = Pairer(round(rig.sync.tolerance_ms * 1e6), gaps.get("ir"))
        report.sync = pairer.stats
        watch = PairingWatch(pairer.tolerance_ns)

        def hand_out(out: Frame) -> None:
            report.fused_latency.add((now_ns() - (out.t_ns if report.paced else out.recv_ns)) / 1e9)
            for runner in runners:
                runner.put(out)
            if runners and all(r.failed for r in runners):
                raise runners[0].error  # nothing left to hand frames to
            report.frames += 1
            report.rate.tick()

        def room() -> bool:
            return max_frames is None or report.frames < max_frames

        def emit(pairs: list[FramePair]) -> bool:
            """Fuse and hand out `pairs`; False once the frame limit is reached."""
            nonlocal fuser
            view, spot = "fused", (0.5, 0.5)
            for pair in pairs:
                if not room():
                    return False
                if live is not None:
                    fuser, view = live.current()
                    spot = live.controls.settings.spot
                hand_out(process_pair(pair, stages, fuser, view, report.frames, spot))
                if liveness is not None:
                    liveness.paired(now_ns())
            return room()

        def emit_alone(frame: Frame) -> bool:
            """Hand out `frame` on its own, the other camera being down (live.on_loss)."""
            if not room():
                return False
            image = alone_picture(frame, liveness.alone(frame), stages, rig.live.on_loss, rig.fusion.palette,
                                  vis.size)
            hand_out(Frame(image, frame.t_ns, report.frames, "fused", "bgr24", frame.recv_ns))
            return room()

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
            if liveness is not None:
                liveness.watch(now_ns())
            if frame is not None and liveness is not None and liveness.other_down(frame):
                going = emit(pairer.advance(frame.t_ns)) and emit_alone(frame)
            elif frame is not None:
                going = emit(pairer.push(frame))
            elif realtime:
                going = emit(pairer.advance(now_ns() - wait_ns))
            if time.monotonic() - last_progress > 0.5:  # also feeds the monitor's statistics
                last_progress = time.monotonic()
                _collect(report, captures, runners, started, priors, liveness)
                if watch.check(merger.latest_t_ns, pairer.stats.pairs):
                    log.warning("%s", watch.warning)
                report.warning = watch.warning
                if on_progress:
                    on_progress(report)
    except BaseException as exc:
        report.error = exc
        exc.report = report
        raise
    finally:
        late_error = _shutdown(captures, runners)
        if priors is not None and not priors.stop():
            late_error = late_error or RuntimeFailure("the prior worker did not stop")
        if not registrar.close():
            late_error = late_error or RuntimeFailure("the registration refiner did not stop")
        _collect(report, captures, runners, started, priors, liveness)
    if late_error is not None:
        report.error = late_error
        late_error.report = report
        raise late_error
    return report


def _live_wait_ns(rig: RigConfig) -> int:
    """How long a live frame waits for the other camera's: the sync tolerance, the transport
    slack, and the larger known latency (a frame arrives that long after its capture time)."""
    latency_ms = max(getattr(cfg, "latency_ms", 0.0) for cfg in (rig.ir, rig.vis))
    return round((rig.sync.tolerance_ms + latency_ms) * 1e6) + LIVE_SLACK_NS


def _open_sinks(rig: RigConfig, info: StreamInfo, paced: bool) -> list[SinkRunner]:
    runners: list[SinkRunner] = []
    try:
        for cfg in rig.sinks:
            sink = make_sink(cfg)
            sink.open(info)
            taken = sum(r.sink.name == sink.name for r in runners)
            runners.append(SinkRunner(sink, cfg.queue, f"{sink.name}{taken + 1}" if taken else None, paced))
    except BaseException:
        for r in runners:
            r.finish()
        raise
    for r in runners:
        r.start()
    return runners


def _collect(report: RunReport, captures: list[CaptureThread], runners: list[SinkRunner], started: float,
             priors: PriorStage | None, liveness: Liveness | None) -> None:
    """Refresh the report's figures from the running parts."""
    report.wall_s = time.monotonic() - started
    report.capture_drops = sum(c.queue.dropped for c in captures)
    report.sink_drops = sum(r.queue.dropped for r in runners)
    for c in captures:
        report.stages[c.read_time.name] = c.read_time
    for r in runners:
        report.stages[r.write_time.name] = r.write_time
    report.sources = {c.source.name: c.stats for c in captures}
    report.sinks = [r.state() for r in runners]
    report.sink_latency = {r.name: r.latency for r in runners}
    if runners:  # the first sink still working: a stopped one's latency would freeze the readout
        report.latency = next((r.latency for r in runners if not r.failed), runners[-1].latency)
    if priors is not None:
        report.priors = priors.figures()
    if liveness is not None:
        report.live = liveness.figures()


def _shutdown(captures: list[CaptureThread], runners: list[SinkRunner]) -> BaseException | None:
    """Stop everything; returns an error that only showed up while stopping, if any."""
    stuck = [c.source.name for c in captures if not c.stop()]
    for runner in runners:
        runner.finish()
    errors = [r.error for r in runners if r.error is not None]
    if errors:
        return errors[0]
    if stuck:
        return RuntimeFailure(f"capture thread(s) {', '.join(stuck)} did not stop")
    return None


def _keeps_raw(rig: RigConfig) -> bool:
    """Whether a sink keeps the raw streams with the rig's description (`raw_archive`)."""
    return any(isinstance(s, Mp4SinkConfig) and s.raw_archive for s in rig.sinks)

"""The live progress line and the end-of-run summary, both on stderr."""
from __future__ import annotations

import sys
import time

from streamfuse.capture.liveness import summary_lines
from streamfuse.pipeline import RunReport
from streamfuse.rig import RigConfig
from streamfuse.stats import format_table

#: Without a terminal (a log file, a service), print a progress line this often.
LOG_EVERY_S = 5.0


def progress_line(report: RunReport) -> str:
    lat = report.latency.summary_ms()
    skew = report.sync.skew_summary_ms()
    return (f"fps {report.rate.rate():5.1f} | latency {lat['p50']:5.1f} ms | frames {report.frames} | "
            f"pairs {report.sync.pairs} | drops {report.drops} | skew {skew['p50']:4.1f} ms"
            + "".join(f" | {name} DOWN" for name, up in report.sources_up.items() if not up)
            + (" | NO PAIRS: check the clocks and sync.tolerance_ms" if report.warning else ""))


def progress_printer(stream=None):
    """A callback for `pipeline.run(on_progress=...)`: rewrites one line on a terminal."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    last = [time.monotonic()]  # the first log line after LOG_EVERY_S, not an empty one at start

    def show(report: RunReport) -> None:
        if tty:
            stream.write("\r" + progress_line(report) + "   ")
            stream.flush()
        elif time.monotonic() - last[0] >= LOG_EVERY_S:
            last[0] = time.monotonic()
            print(progress_line(report), file=stream, flush=True)
    show.tty = tty
    return show


def summary(rig: RigConfig, report: RunReport) -> str:
    s = report.sync
    skew = s.skew_summary_ms()
    lines = [
        f"{rig.name}: {report.frames} fused frames in {report.wall_s:.1f} s ({report.fps:.1f} fps), "
        f"mode {rig.fusion.mode}",
        f"  sync: {s.pairs} pairs, |skew| mean {skew['mean']:.1f} ms, p95 {skew['p95']:.1f} ms, "
        f"max {skew['max']:.1f} ms; IR frames unused {s.unused_ir}, reused {s.reused_ir}",
        f"  drops: {report.drops} (no IR within tolerance {s.unmatched_vis}, late {s.late}, "
        f"capture {report.capture_drops}, sinks {report.sink_drops})",
    ]
    lines += summary_lines(report.sources, report.live, report.t0_ns)
    if report.warning:
        lines.append(f"  warning: {report.warning}")
    for sink in report.sinks:
        state = f"STOPPED: {sink.error}" if sink.error else f"{sink.written} written, {sink.dropped} dropped"
        lines.append(f"  sink {sink.name} ({sink.policy}): {state}")
    stages = {name: t.summary_ms() for name, t in report.stages.items() if t.count}
    if report.latency.count:
        stages["capture->sink"] = report.latency.summary_ms()
    if stages:
        lines.append(format_table(stages))
    for cfg in rig.sinks:
        if getattr(cfg, "path", None):
            lines.append(f"  recorded {cfg.path}")
    return "\n".join(lines)


def print_summary(rig: RigConfig, report: RunReport, stream=None) -> None:
    stream = stream or sys.stderr
    if stream.isatty():
        stream.write("\n")
    print(summary(rig, report), file=stream, flush=True)

"""The live progress line, the log format and the end-of-run summary, all on stderr.

On a terminal the progress line rewrites itself (a carriage return) and log lines read
"streamfuse: ..."; anywhere else (a pipe, a log file, a service) nothing is rewritten and
nothing is coloured: every event is one line, the progress is a "status: ..." log line every
`--status-every` seconds (or none), and log lines carry a timestamp, except under systemd
(journald, recognised by JOURNAL_STREAM naming our stderr) which stamps them itself and gets
a syslog priority prefix instead ("<4>" for warnings), so `journalctl -p warning` works.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from streamfuse.capture.liveness import summary_lines
from streamfuse.report import RunReport
from streamfuse.rig import RigConfig
from streamfuse.sinks.containers import ENCODER_DELAY_S
from streamfuse.stats import format_table

#: Syslog priorities of the logging levels, for journald's "<N>" line prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
log = logging.getLogger("streamfuse")


def under_journal(stream) -> bool:
    """True when `stream` is the journal stream systemd handed us (JOURNAL_STREAM holds its
    device:inode; a child whose stderr was redirected inherits the variable but not the stream)."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a StringIO)
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class LineFormatter(logging.Formatter):
    """One line per record (line breaks of messages and tracebacks folded), formatted for
    where it goes: "terminal", "log" (timestamped) or "journal" (a priority prefix)."""

    def __init__(self, kind: str):
        super().__init__(datefmt="%Y-%m-%d %H:%M:%S")
        self.kind = kind

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(line.strip() for line in super().format(record).splitlines() if line.strip())
        if self.kind == "journal":
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        if self.kind == "log":
            return f"{self.formatTime(record, self.datefmt)} streamfuse: {text}"
        return f"streamfuse: {text}"


def setup_logging(quiet: bool = False, stream=None) -> None:
    """Log INFO and up (WARNING and up when `quiet`) to stderr, one line per event. Like
    `logging.basicConfig`, does nothing when the root logger already has a handler (a program
    or test that embeds streamfuse has set up its own)."""
    root = logging.getLogger()
    if root.handlers:
        return
    stream = stream or sys.stderr
    kind = "journal" if under_journal(stream) else "terminal" if stream.isatty() else "log"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(kind))
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def latency_readout(report: RunReport) -> str:
    """Each working sink's latency p50/p95/p99 in ms (the fused frames' when there is no sink)."""
    parts = [f"{s.name} {s.latency['p50']:.0f}/{s.latency['p95']:.0f}/{s.latency['p99']:.0f}"
             for s in report.sinks if s.latency is not None]
    if not parts and report.fused_latency.count:
        lat = report.fused_latency.summary_ms()
        parts = [f"fused {lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f}"]
    start = "exposure" if report.paced else "arrival"
    return f"{start}->{', '.join(parts) or '-'} ms"


def progress_line(report: RunReport) -> str:
    skew = report.sync.skew_summary_ms()
    return (f"fps {report.rate.rate():5.1f} | latency p50/95/99 {latency_readout(report)} | frames {report.frames} | "
            f"pairs {report.sync.pairs} | drops {report.drops} | skew {skew['p50']:4.1f} ms"
            + "".join(f" | {name} DOWN" for name, up in report.sources_up.items() if not up)
            + (" | NO PAIRS: check the clocks and sync.tolerance_ms" if report.warning else ""))


def progress_printer(every_s: float, stream=None):
    """A callback for `pipeline.run(on_progress=...)`: rewrites one line on a terminal;
    elsewhere logs "status: ..." every `every_s` seconds (never when 0)."""
    stream = stream or sys.stderr
    tty = stream.isatty() and not under_journal(stream)
    last = [time.monotonic()]  # the first status line after every_s, not an empty one at start

    def show(report: RunReport) -> None:
        if tty:
            stream.write("\r" + progress_line(report) + "   ")
            stream.flush()
        elif every_s and time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            log.info("status: %s", progress_line(report))
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
        f"capture {report.capture_drops}, skipped behind newer {report.skipped}, sinks {report.sink_drops})",
    ]
    if report.lag_bounds_ns:
        bounds = ", ".join(f"{name} {ns / 1e6:.0f} ms" for name, ns in report.lag_bounds_ns.items())
        lines.append(f"  queued age bound (live.max_lag_ms): a frame older than {bounds} is skipped when a newer "
                     "one waits, so the picture never falls behind the cameras")
    if report.threads:
        lines.append(f"  threads: {report.threads}")
    if not report.paced:
        lines.append("  unpaced: the sources ran as fast as the pipeline took them, so the latency below is the "
                     "backlog of a throughput run (arrival to sink), not live latency; paced rigs (cameras, "
                     "rigs/demo.yaml) show exposure to sink")
    lines += summary_lines(report.sources, report.live, report.t0_ns)
    if report.warning:
        lines.append(f"  warning: {report.warning}")
    for sink in report.sinks:
        state = f"STOPPED: {sink.error}" if sink.error else f"{sink.written} written, {sink.dropped} dropped"
        lines.append(f"  sink {sink.name} ({sink.policy}): {state}")
    stages = {name: t.summary_ms() for name, t in report.stages.items() if t.count}
    start = "exposure" if report.paced else "arrival"
    if report.fused_latency.count:
        stages[f"{start}->fused"] = report.fused_latency.summary_ms()
    for name, timer in report.sink_latency.items():
        if timer.count:
            stages[f"{start}->{name}"] = timer.summary_ms()
    if stages:
        lines.append(format_table(stages))
    for cfg in rig.sinks:
        if getattr(cfg, "path", None):
            lines.append(f"  recorded {cfg.path}")
    if any(getattr(cfg, "type", "") == "mp4" for cfg in rig.sinks):
        lines.append(f"  the recording's encoder holds up to {ENCODER_DELAY_S * 1e3:.0f} ms of frames (lookahead) "
                     "before they reach the file: not in the latency above, which ends when the frame is encoded")
    return "\n".join(lines)


def print_summary(rig: RigConfig, report: RunReport, stream=None) -> None:
    stream = stream or sys.stderr
    if stream.isatty() and not under_journal(stream):
        stream.write("\n")
    print(summary(rig, report), file=stream, flush=True)

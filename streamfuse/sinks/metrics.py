"""The run's numbers for machines and pages: Prometheus text (`/metrics`) and a JSON summary.

Both read a live `pipeline.RunReport` from another thread. Every counter there has a single
writer and is read without a lock, so a scrape may be a frame behind; that is fine for
monitoring. Counters that other parts of the pipeline add later (source reconnects, stale and
duplicate frames, the semantic prior's age) are published when the report has them.
(The fusion quality measures are another thing: `streamfuse.quality.measures`.)
"""
from __future__ import annotations

from typing import Any

from streamfuse.stats import HISTOGRAM_BOUNDS_S, StageTimer

#: Per-source counters (`RunReport.sources`, a CaptureStats per camera): (field, metric, help).
SOURCE_COUNTERS = (
    ("frames", "streamfuse_source_frames_total", "Frames each source published."),
    ("stale", "streamfuse_source_stale_frames_total", "Frames skipped because they were older than the age limit."),
    ("duplicates", "streamfuse_source_duplicate_frames_total", "Repeated camera frames not fused again."),
    ("ffc_stalls", "streamfuse_source_ffc_stalls_total", "Runs of repeated frames longer than the stall limit."),
    ("outages", "streamfuse_source_outages_total", "Times a live source was lost."),
    ("reconnects", "streamfuse_source_reconnects_total", "Times a live source came back after a loss."),
)
#: Run totals of those, shown on the page when the report has them.
OPTIONAL_TOTALS = ("reconnects", "stale", "duplicates", "ffc_stalls")


class _Writer:
    """Prometheus text exposition format 0.0.4, one metric family at a time."""

    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: str) -> None:
        text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")

    def metric(self, name: str, kind: str, help_text: str, value: float, **labels: str) -> None:
        self.family(name, kind, help_text)
        self.sample(name, value, **labels)

    def histogram(self, name: str, timer: StageTimer, **labels: str) -> None:
        buckets = list(timer.buckets)  # one copy: the writer thread keeps adding
        cumulative = 0
        for bound, count in zip(HISTOGRAM_BOUNDS_S, buckets):
            cumulative += count
            self.sample(f"{name}_bucket", cumulative, **labels, le=_number(bound))
        total = sum(buckets)
        self.sample(f"{name}_bucket", total, **labels, le="+Inf")
        self.sample(f"{name}_sum", timer.total_s, **labels)
        self.sample(f"{name}_count", total, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def prometheus_text(report, settings=None, viewers: int = 0, monitor_errors: int = 0, temperatures=None) -> str:
    """All metrics of a live or finished RunReport, with the live `settings`, the number of
    browser viewers, the monitor's failed requests and the newest frame's
    `radiometry.SceneTemperatures` (radiometric rigs)."""
    w = _Writer()
    w.metric("streamfuse_frames_total", "counter", "Fused frames handed to the sinks.", report.frames)
    w.metric("streamfuse_pairs_total", "counter", "IR/visible pairs made.", report.sync.pairs)
    w.metric("streamfuse_fps", "gauge", "Fused frames per second over the last seconds.", report.rate.rate())
    w.family("streamfuse_dropped_frames_total", "counter", "Frames dropped, by reason.")
    for reason, value in (("no_ir_within_tolerance", report.sync.unmatched_vis), ("late", report.sync.late),
                          ("capture", report.capture_drops), ("sink", report.sink_drops)):
        w.sample("streamfuse_dropped_frames_total", value, reason=reason)
    w.family("streamfuse_stage_seconds", "histogram", "Time per frame in each stage (capture, register, fuse, sink writes).")
    for name, timer in list(report.stages.items()):
        w.histogram("streamfuse_stage_seconds", timer, stage=name)
    w.family("streamfuse_latency_seconds", "histogram", "From a frame entering the pipeline to its first sink write.")
    w.histogram("streamfuse_latency_seconds", report.latency)
    skew = report.sync.skew_summary_ms()
    w.family("streamfuse_sync_skew_seconds", "gauge", "|IR - visible| capture time of recent pairs.")
    for stat in ("p50", "p95", "max"):
        w.sample("streamfuse_sync_skew_seconds", skew[stat] / 1e3, stat=stat)
    _sinks(w, report.sinks)
    _sources(w, report)
    prior_age = getattr(report, "prior_age_s", None)
    if prior_age is not None:
        w.metric("streamfuse_prior_age_seconds", "gauge", "Capture-time age of the semantic prior in use.", prior_age)
        w.metric("streamfuse_prior_refreshes_total", "counter", "Semantic prior refreshes.",
                 getattr(report, "prior_refreshes", 0))
    w.metric("streamfuse_monitor_viewers", "gauge", "Browsers watching the live picture.", viewers)
    w.metric("streamfuse_monitor_errors_total", "counter",
             "Monitor requests that failed (a viewer hung up, a broken request).", monitor_errors)
    if settings is not None:
        w.metric("streamfuse_settings_info", "gauge", "The live fusion settings (value always 1).", 1,
                 mode=settings.mode, view=settings.view, palette=settings.palette)
        w.metric("streamfuse_fusion_strength", "gauge", "The live fusion strength (0..1).", settings.strength)
    if temperatures is not None:
        _temperatures(w, temperatures)
    return w.text()


def _temperatures(w: _Writer, t) -> None:
    """The scene's temperatures in the newest frame; a statistic without a value (no IR data
    there) is left out rather than given a made-up number."""
    values = {"min": t.min_c, "max": t.max_c, "spot": t.spot_c}
    w.family("streamfuse_scene_temperature_celsius", "gauge",
             "Scene temperature in the newest frame (radiometric rigs): minimum, maximum, spot meter.")
    for stat, value in values.items():
        if value is not None:
            w.sample("streamfuse_scene_temperature_celsius", value, stat=stat)


def _sinks(w: _Writer, sinks) -> None:
    w.family("streamfuse_sink_frames_total", "counter", "Frames each sink has written.")
    for s in sinks:
        w.sample("streamfuse_sink_frames_total", s.written, sink=s.name)
    w.family("streamfuse_sink_dropped_frames_total", "counter", "Frames each sink's queue dropped (its policy).")
    for s in sinks:
        w.sample("streamfuse_sink_dropped_frames_total", s.dropped, sink=s.name, policy=s.policy)
    w.family("streamfuse_sink_up", "gauge", "1 while the sink works, 0 once it failed.")
    for s in sinks:
        w.sample("streamfuse_sink_up", s.error is None, sink=s.name)
    recordings = [s for s in sinks if "recording" in s.extra]
    for key, kind, help_text in (("recording", "gauge", "1 while the recording is being written."),
                                 ("bytes", "gauge", "Bytes the recording has written (video and IR archive)."),
                                 ("segments", "gauge", "Files the recording has started.")):
        name = "streamfuse_recording" if key == "recording" else f"streamfuse_recording_{key}"
        if recordings:
            w.family(name, kind, help_text)
        for s in recordings:
            w.sample(name, s.extra.get(key, 0), sink=s.name)


def _sources(w: _Writer, report) -> None:
    sources = dict(getattr(report, "sources", None) or {})
    if not sources:
        return
    up = getattr(report, "sources_up", None) or {n: getattr(s, "up", True) for n, s in sources.items()}
    w.family("streamfuse_source_up", "gauge", "1 while a source delivers frames, 0 while lost, frozen or silent.")
    for name in sources:
        w.sample("streamfuse_source_up", bool(up.get(name, True)), source=name)
    for field, metric, help_text in SOURCE_COUNTERS:
        values = {n: getattr(s, field) for n, s in sources.items() if hasattr(s, field)}
        if values:
            w.family(metric, "counter", help_text)
        for name, value in values.items():
            w.sample(metric, value, source=name)


def stats_json(report, settings=None, viewers: int = 0) -> dict[str, Any]:
    """The numbers the browser page shows, as plain JSON values."""
    latency = report.latency.summary_ms()
    skew = report.sync.skew_summary_ms()
    out: dict[str, Any] = {
        "frames": report.frames, "fps": round(report.rate.rate(), 2), "pairs": report.sync.pairs,
        "latency_ms": round(latency["p50"], 1), "latency_p95_ms": round(latency["p95"], 1),
        "skew_ms": round(skew["p50"], 2), "drops": report.drops, "viewers": viewers,
        "stages_ms": {name: round(t.summary_ms()["mean"], 2) for name, t in list(report.stages.items()) if t.count},
        "sinks": [{"name": s.name, "written": s.written, "dropped": s.dropped, "policy": s.policy,
                   "error": s.error, "latency_ms": None if s.latency_ms is None else round(s.latency_ms, 1),
                   **s.extra} for s in report.sinks],
    }
    for attr in OPTIONAL_TOTALS:
        if getattr(report, attr, None) is not None:
            out[attr] = getattr(report, attr)
    if getattr(report, "prior_age_s", None) is not None:
        out["prior_age_s"] = round(report.prior_age_s, 2)
    return out

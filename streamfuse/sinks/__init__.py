"""Sinks: where fused frames go (a recording, a window, the browser monitor), each on its own thread.

    base.py      the `Sink` contract, `NullSink`, and `SinkRunner` (thread + bounded queue, failure isolation)
    config.py    the sink configs (`SINK_TYPES`)
    mp4.py       the crash-safe MP4 recording (segments, the raw IR archive)
    display.py   the Tk window
    stream.py    the fused video published as H.264 (RTSP, UDP/RTP MPEG-TS), by publisher.py in a child process
    monitor.py   the browser monitor (monitor_page.html); feed.py, the JPEG all its viewers share
    metrics.py   /metrics and the page's statistics, from a live run report
"""
from __future__ import annotations

from streamfuse.sinks.base import NullSink, Sink, SinkRunner, SinkState, StreamInfo
from streamfuse.sinks.config import (
    INTERACTIVE_SINKS,
    SINK_TYPES,
    DisplaySinkConfig,
    MonitorSinkConfig,
    Mp4SinkConfig,
    NullSinkConfig,
    SinkConfig,
    StreamSinkConfig,
)

__all__ = ["INTERACTIVE_SINKS", "SINK_TYPES", "DisplaySinkConfig", "MonitorSinkConfig", "Mp4SinkConfig", "NullSink",
           "NullSinkConfig", "Sink", "SinkConfig", "SinkRunner", "SinkState", "StreamInfo", "StreamSinkConfig", "make_sink"]


def make_sink(cfg: SinkConfig) -> Sink:
    """The sink for `cfg`; each type's module is imported only when a rig uses it."""
    if isinstance(cfg, Mp4SinkConfig):
        from streamfuse.sinks.mp4 import Mp4Sink
        return Mp4Sink(cfg)
    if isinstance(cfg, DisplaySinkConfig):
        from streamfuse.sinks.display import DisplaySink
        return DisplaySink(cfg)
    if isinstance(cfg, MonitorSinkConfig):
        from streamfuse.sinks.monitor import MonitorSink
        return MonitorSink(cfg)
    if isinstance(cfg, StreamSinkConfig):
        from streamfuse.sinks.stream import StreamSink
        return StreamSink(cfg)
    return NullSink(cfg.delay_ms)

"""Sink configs: one typed dataclass per sink type (rig `sinks: - type: ...`), unknown keys rejected on load."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from streamfuse.config import check_range
from streamfuse.queues import Policy


@dataclass(frozen=True)
class Mp4SinkConfig:
    """An H.264 MP4 recording (rig `sinks: - type: mp4`)."""

    path: Path
    type: Literal["mp4"] = "mp4"
    #: auto: a hardware H.264 encoder if one opens (h264_nvenc, h264_v4l2m2m), else libx264.
    codec: Literal["auto", "libx264", "h264_nvenc", "h264_v4l2m2m"] = "auto"
    #: libx264 speed/size trade-off: ultrafast ... medium.
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    #: Constant rate factor: 0 lossless, 18 visually lossless, 23 default, 28 small.
    crf: int = 23
    #: Seconds between keyframes = length of each fragment of the crash-safe file: a crash
    #: loses at most about this much of the end.
    keyframe_s: float = 1.0
    #: Start a new file after this many seconds of video / megabytes (None: one file).
    segment_s: float | None = None
    segment_mb: float | None = None
    #: Keep only the newest N segment files of this recording, deleting older ones.
    keep: int | None = None
    #: Also keep the raw IR frames losslessly (FFV1 in Matroska, 16 bits kept) beside it.
    ir_archive: bool = False
    #: Also keep both raw streams of every pair losslessly (IR counts and visible frames, FFV1
    #: in one Matroska file, `<stem>.raw.mkv`), with their capture times and the rig's
    #: calibration and settings: all `streamfuse refuse` needs to fuse the recording again.
    raw_archive: bool = False
    queue: Policy = "block"

    def __post_init__(self):
        check_range("crf", self.crf, 0, 51)
        check_range("keyframe_s", self.keyframe_s, 0.1, 10)
        if self.segment_s is not None:
            check_range("segment_s", self.segment_s, 1, 7 * 24 * 3600)
        if self.segment_mb is not None:
            check_range("segment_mb", self.segment_mb, 1, 1_000_000)
        if self.keep is not None:
            check_range("keep", self.keep, 1, 1_000_000)
            if self.segment_s is None and self.segment_mb is None:
                raise ValueError("keep: only applies to segments; set segment_s or segment_mb too")


@dataclass(frozen=True)
class NullSinkConfig:
    """Discards frames; for benchmarks and dry runs (rig `sinks: - type: "null"`)."""

    type: Literal["null"] = "null"
    #: Time each frame takes (ms): a stand-in for a slow viewer or disk in tests and benchmarks.
    delay_ms: float = 0.0
    queue: Policy = "drop_oldest"

    def __post_init__(self):
        check_range("delay_ms", self.delay_ms, 0, 60_000)


@dataclass(frozen=True)
class DisplaySinkConfig:
    """A window on the rig's own screen, with an overlay and keys (rig `sinks: - type: display`)."""

    type: Literal["display"] = "display"
    title: str = "streamfuse"
    #: Window size relative to the video (0.25..4).
    scale: float = 1.0
    #: Show fps, latency, skew, drops and mode over the picture (key `o` toggles it).
    overlay: bool = True
    queue: Policy = "drop_oldest"

    def __post_init__(self):
        check_range("scale", self.scale, 0.25, 4)


@dataclass(frozen=True)
class MonitorSinkConfig:
    """The browser monitor: live picture, statistics, controls, /metrics (rig `type: monitor`)."""

    type: Literal["monitor"] = "monitor"
    #: Address to listen on; anything but loopback (127.x, ::1, localhost) needs a token.
    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: int = 8080
    #: Access token; better given as the STREAMFUSE_TOKEN environment variable or --token.
    token: str | None = None
    #: Most pictures per second sent to browsers (JPEG encoding costs CPU).
    max_fps: float = 15.0
    jpeg_quality: int = 80
    queue: Policy = "drop_oldest"

    def __post_init__(self):
        check_range("port", self.port, 0, 65535)
        check_range("max_fps", self.max_fps, 0.5, 120)
        check_range("jpeg_quality", self.jpeg_quality, 10, 100)
        if self.token is not None and len(self.token) < 8:
            raise ValueError("token: expected at least 8 characters")


#: Stream URL schemes and the container each is published in.
STREAM_FORMATS = {"rtsp": "rtsp", "udp": "mpegts", "rtp": "rtp_mpegts", "srt": "mpegts"}


@dataclass(frozen=True)
class StreamSinkConfig:
    """The fused video published as low-latency H.264 for other programs (rig `type: stream`)."""

    #: rtsp://server:8554/path (published to a server such as MediaMTX), udp://host:port
    #: (MPEG-TS), rtp://host:port (MPEG-TS over RTP), srt://host:port (needs FFmpeg with libsrt).
    url: str
    type: Literal["stream"] = "stream"
    #: libx264 speed/size trade-off; every preset runs with tune zerolatency (no lookahead, no B-frames).
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    #: Constant rate factor: 18 visually lossless, 23 default, 28 small.
    crf: int = 23
    #: Bit rate cap in kbit/s (VBV), for links of known capacity; null: crf alone.
    max_kbps: int | None = None
    #: Seconds between keyframes: how long a viewer that joins (or a receiver that restarts) waits.
    keyframe_s: float = 1.0
    #: Seconds a connection attempt may take before the publisher is restarted.
    timeout_s: float = 5.0
    queue: Policy = "drop_oldest"

    def __post_init__(self):
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in STREAM_FORMATS:
            raise ValueError(f"url: expected a URL starting with {', '.join(s + '://' for s in STREAM_FORMATS)}, "
                             f"got {self.url!r}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or (parts.scheme != "rtsp" and port is None):
            raise ValueError(f"url: expected {parts.scheme}://HOST:PORT{'/PATH' if parts.scheme == 'rtsp' else ''}, "
                             f"got {self.url!r}")
        check_range("crf", self.crf, 0, 51)
        check_range("keyframe_s", self.keyframe_s, 0.1, 10)
        check_range("timeout_s", self.timeout_s, 0.5, 60)
        if self.max_kbps is not None:
            check_range("max_kbps", self.max_kbps, 50, 1_000_000)


SINK_TYPES = {"mp4": Mp4SinkConfig, "null": NullSinkConfig, "display": DisplaySinkConfig,
              "monitor": MonitorSinkConfig, "stream": StreamSinkConfig}
SinkConfig = Mp4SinkConfig | NullSinkConfig | DisplaySinkConfig | MonitorSinkConfig | StreamSinkConfig
#: Sink types a viewer interacts with: a rig with one gets live controls.
INTERACTIVE_SINKS = (DisplaySinkConfig, MonitorSinkConfig)

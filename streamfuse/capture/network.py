"""Network cameras through PyAV: RTSP (TCP or UDP), HTTP MJPEG, UDP/RTP MPEG-TS, TCP, SRT.

A stream is opened for low latency: no demuxer buffering (`fflags nobuffer`, `flags
low_delay`), a small probe, and timeouts so that a URL that does not answer fails within
`timeout_s` instead of hanging. Decoding happens on the capture thread, one packet at a
time, so a corrupt packet costs one frame, not the stream.

Timestamps: a stream that carries a clock (RTSP/RTP, MPEG-TS, Matroska/NUT) has its frames'
pts mapped onto the pipeline clock by `StreamClock` (jitter removed, drift followed); MJPEG
over HTTP carries no clock, so its frames are stamped on arrival. Either way the camera's
`latency_ms` is then subtracted.

A stream that ends, errs or stays silent for `read_timeout` is reconnected with backoff, and
one that comes back at another size or format is converted to what it started as; see
`capture/live.py`. SRT needs an FFmpeg built with libsrt: PyAV's wheels have none, and the
error says so.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal
from urllib.parse import urlsplit

import numpy as np

from streamfuse import threads
from streamfuse.capture.live import LiveOptions, LiveSource, StreamClock
from streamfuse.config import check_range
from streamfuse.errors import SourceError
from streamfuse.frames import now_ns

SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "rtp", "tcp", "srt")
#: Bytes and microseconds the demuxer may look at before the first frame: enough for the
#: headers of a keyframe, far less than FFmpeg's 5 MB / 5 s defaults that add seconds of delay.
PROBE_BYTES = 65536
ANALYZE_US = 200_000
#: Demuxers whose timestamps are a frame counter, not a clock: stamp on arrival.
_CLOCKLESS_FORMATS = {"mpjpeg", "mjpeg", "image2pipe"}
_AV_FORMATS = {"gray8": "gray", "gray16": "gray16le", "bgr24": "bgr24"}


@dataclass(frozen=True)
class NetworkConfig(LiveOptions):
    """A network camera (rig `sources.ir` or `sources.vis` with `type: network`); the settings
    all live sources share are in `LiveOptions`."""

    #: rtsp://, http(s):// (MJPEG), udp:// or rtp:// (MPEG-TS), tcp://, srt://
    url: str
    type: Literal["network"] = "network"
    #: RTSP only: carry the video over the RTSP connection (tcp) or over separate UDP ports.
    transport: Literal["tcp", "udp"] = "tcp"
    #: [width, height] every frame is delivered in (resized if the stream differs); null: the stream's.
    size: tuple[int, int] | None = None
    #: The stream's nominal rate, for streams that do not state one (MJPEG).
    fps: float = 30.0
    #: auto: gray16 for a 10-16 bit IR stream, gray8 for other IR streams, bgr24 for visible.
    pixel_format: Literal["auto", "gray8", "gray16", "bgr24"] = "auto"
    #: auto: the stream's own clock where it has one, else arrival; stream; arrival.
    timestamps: Literal["auto", "stream", "arrival"] = "auto"
    #: Seconds to wait for a stream to answer when opening, and for data while running.
    timeout_s: float = 5.0

    def __post_init__(self):
        super().__post_init__()
        scheme = urlsplit(self.url).scheme if isinstance(self.url, str) else ""
        if scheme not in SCHEMES:
            raise ValueError(f"url: expected a URL starting with {', '.join(s + '://' for s in SCHEMES)}, "
                             f"got {self.url!r}")
        check_range("fps", self.fps, 0.1, 1000)
        check_range("timeout_s", self.timeout_s, 0.1, 60)
        if self.size is not None and (min(self.size) < 16 or max(self.size) > 8192):
            raise ValueError(f"size: expected [width, height] from 16 to 8192, got {list(self.size)}")


def open_options(cfg: NetworkConfig) -> dict[str, str]:
    """FFmpeg options for a low-latency open of `cfg.url`; only ones its protocol knows."""
    scheme = urlsplit(cfg.url).scheme
    timeout_us = str(round(cfg.timeout_s * 1e6))
    options = {"fflags": "nobuffer", "flags": "low_delay",
               "probesize": str(PROBE_BYTES), "analyzeduration": str(ANALYZE_US)}
    if scheme in ("rtsp", "rtsps"):
        options.update(rtsp_transport=cfg.transport, timeout=timeout_us)
    elif scheme in ("http", "https", "tcp", "udp", "rtp"):
        options["timeout"] = timeout_us
        if scheme in ("udp", "rtp"):
            options["overrun_nonfatal"] = "1"   # a burst that overflows the socket loses packets, not the stream
    return options


class NetworkSource(LiveSource):
    drain_backlog = True

    def __init__(self, name: str, cfg: NetworkConfig):
        super().__init__(name, cfg)
        self._container = None
        self._frames = None
        self._clock: StreamClock | None = None
        self._time_base: Fraction | None = None
        self._io = threading.RLock()

    def where(self) -> str:
        return f"{self.name} stream {self.cfg.url}"

    def _connect(self) -> None:
        import av  # PyAV: the only reader of files and network streams

        cfg = self.cfg
        try:
            container = av.open(cfg.url, options=open_options(cfg), timeout=(cfg.timeout_s, self._read_timeout()))
        except av.ExitError:   # PyAV's timeout: nothing arrived
            raise SourceError(f"{self.where()}: no answer within {cfg.timeout_s:g} s; check the URL, that the "
                              "camera is on and streaming, and `timeout_s`") from None
        except av.ProtocolNotFoundError:
            raise SourceError(f"{self.where()}: this FFmpeg build cannot open {urlsplit(cfg.url).scheme}:// "
                              "streams (PyAV's wheels have no SRT); relay the camera as RTSP or UDP") from None
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.where()}: no stream ({_reason(exc)}); check the URL, that the camera is "
                              f"on and reachable, and `timeout_s` ({cfg.timeout_s:g} s)") from None
        try:
            stream = container.streams.video[0]
        except IndexError:
            container.close()
            raise SourceError(f"{self.where()}: the stream has no video; check the URL's path or channel") from None
        stream.thread_count = threads.current().decoder
        if not self.pixel_format:
            self.pixel_format = self._choose_format(stream.codec_context.pix_fmt or "")
        clockless = container.format.name in _CLOCKLESS_FORMATS
        rate = None if clockless else (stream.average_rate or stream.guessed_rate)
        self.fps = Fraction(rate if rate and 0 < rate < 1000 else cfg.fps).limit_denominator(1001)
        use_clock = cfg.timestamps == "stream" or (cfg.timestamps == "auto" and not clockless)
        self._clock = StreamClock() if use_clock else None
        self._time_base = stream.time_base
        self._container = container
        self._frames = self._decode(container, stream)

    def _read_timeout(self) -> float:
        """Seconds of silence after which a running stream counts as lost."""
        return min(self.cfg.timeout_s, max(1.0, 3.0 / self.cfg.fps))

    def _choose_format(self, pix_fmt: str) -> str:
        if self.cfg.pixel_format != "auto":
            return self.cfg.pixel_format
        if self.name == "vis":
            return "bgr24"
        return "gray16" if any(bits in pix_fmt for bits in ("16", "14", "12", "10")) else "gray8"

    @staticmethod
    def _decode(container, stream):
        """Decoded frames; a packet that does not decode is skipped, a lost stream raises."""
        import av

        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.InvalidDataError:
                continue

    def _output_size(self, first: np.ndarray) -> tuple[int, int]:
        return tuple(self.cfg.size) if self.cfg.size else (first.shape[1], first.shape[0])

    def _grab(self) -> tuple[np.ndarray, int] | None:
        import av

        if self._frames is None:
            return None
        try:
            with self._io:
                frame = next(self._frames)
        except (StopIteration, av.FFmpegError, OSError) as exc:
            if isinstance(exc, av.ExitError):
                self._why = f"no data for {self._read_timeout():g} s"
            else:
                self._why = "the stream ended" if isinstance(exc, StopIteration) else _reason(exc)
            return None
        arrival = now_ns()
        image = frame.to_ndarray(format=_AV_FORMATS[self.pixel_format])
        if self._clock is None or frame.pts is None or not self._time_base:
            return image, arrival
        return image, self._clock.map(float(frame.pts * self._time_base), arrival)

    def _disconnect(self) -> None:
        # The lock: close() from another thread must not free the container under a read.
        with self._io:
            self._frames = None
            if self._clock is not None:
                self._clock.reset()
            if self._container is not None:
                container, self._container = self._container, None
                container.close()


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[0].strip() or type(exc).__name__

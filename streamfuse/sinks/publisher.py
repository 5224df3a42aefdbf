"""The stream sink's publisher: a child process that encodes frames and sends them to a server.

Why a process. PyAV keeps Python's global lock while FFmpeg opens an RTSP session
(`avformat_write_header`: connect, ANNOUNCE, SETUP, RECORD), and FFmpeg's RTSP muxer has no
timeout, so a server that accepts the connection and never answers would freeze every
thread of the pipeline. In a child process it freezes only the child, which the sink kills
and starts again (`stream.py`).

Protocol. Settings come as one JSON argument. Frames come on stdin, each a `HEADER`
(capture time in ns, width, height) and the picture as planar YUV 4:2:0 (`bgr_to_i420`).
Events go to stdout as JSON lines: `connecting`, `up`, `down` (with why), and the counters
after each of them and about once a second.

Reconnecting. A failed connection or send closes the session; the next frame that comes
after 0.1, 0.2, 0.4 ... up to `RECONNECT_MAX_S` seconds (as live sources wait) tries again.
Frames that arrive meanwhile are counted as `skipped`. Each session has its own encoder, so
it starts with a keyframe, and its timestamps start at 0.

Run as `python -m streamfuse.sinks.publisher SETTINGS_JSON`; nothing else uses it.
"""
from __future__ import annotations

import json
import struct
import sys
import time
from fractions import Fraction

from streamfuse.capture.live import RECONNECT_FIRST_S, RECONNECT_MAX_S
from streamfuse.sinks.containers import MIN_CLOCK_HZ, output_time_base

#: Each frame on stdin starts with: capture time (ns), width, height.
HEADER = struct.Struct("<qII")
#: Datagram size for UDP: 7 MPEG-TS packets, which fit any ordinary link's MTU.
UDP_PACKET = 1316


class Session:
    """One connection to the receiver with its own encoder."""

    def __init__(self, settings: dict, size: tuple[int, int]):
        import av

        url, fmt = settings["url"], settings["format"]
        if fmt != "rtsp" and "pkt_size" not in url:
            url += ("&" if "?" in url else "?") + f"pkt_size={UDP_PACKET}"
        options = {"rtsp_transport": "tcp"} if fmt == "rtsp" else {"flush_packets": "1"}
        self.container = av.open(url, "w", format=fmt, options=options)
        fps = Fraction(settings["fps"]).limit_denominator(1001)
        stream = self.container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        self.time_base = output_time_base(fps, MIN_CLOCK_HZ)
        ctx = stream.codec_context
        ctx.time_base = self.time_base
        ctx.gop_size = max(1, round(float(fps) * settings["keyframe_s"]))
        # zerolatency: no lookahead, no B-frames, no frame threads; every frame leaves at once.
        params = "bframes=0:rc-lookahead=0:repeat-headers=1"
        if settings.get("max_kbps"):
            kbps = settings["max_kbps"]
            params += f":vbv-maxrate={kbps}:vbv-bufsize={kbps}"
        ctx.options = {"preset": settings["preset"], "tune": "zerolatency", "crf": str(settings["crf"]),
                       "x264-params": params}
        self.stream = stream
        self.t0_ns: int | None = None
        self.last_pts = -1

    def send(self, yuv, t_ns: int) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        if self.t0_ns is None:
            self.t0_ns = t_ns
        pts = max(round((t_ns - self.t0_ns) / self.time_base / 1_000_000_000), self.last_pts + 1)
        frame.pts, frame.time_base, self.last_pts = pts, self.time_base, pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)  # the first one opens the connection (RTSP: the handshake)

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # a session that already failed: nothing to flush to
            pass


class Publisher:
    """Frames in, sessions out, with backoff between failed sessions."""

    def __init__(self, settings: dict, events=sys.stdout):
        self.settings = settings
        self.events = events
        self.session: Session | None = None
        self.counts = {"sent": 0, "skipped": 0, "outages": 0, "reconnects": 0}
        self.up = False
        self._ever_up = False
        self._delay = RECONNECT_FIRST_S
        self._next_try = 0.0
        self._reported = 0.0

    def emit(self, event: str, **extra) -> None:
        self.events.write(json.dumps({"event": event, "up": self.up, **self.counts, **extra}) + "\n")
        self.events.flush()
        self._reported = time.monotonic()

    def frame(self, yuv, t_ns: int, size: tuple[int, int]) -> None:
        import av

        if self.session is None and time.monotonic() >= self._next_try:
            self.emit("connecting")
            try:
                self.session = Session(self.settings, size)
            except (av.FFmpegError, OSError, ValueError) as exc:
                return self._lost(exc)
        if self.session is None:
            self.counts["skipped"] += 1
        else:
            try:
                self.session.send(yuv, t_ns)
            except (av.FFmpegError, OSError) as exc:
                return self._lost(exc)
            self.counts["sent"] += 1
            if not self.up:
                self.up, self._delay = True, RECONNECT_FIRST_S
                self.counts["reconnects"] += self._ever_up
                self._ever_up = True
                self.emit("up")
        if time.monotonic() - self._reported >= 1.0:
            self.emit("stats")

    def _lost(self, exc: Exception) -> None:
        self.counts["skipped"] += 1
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.up:
            self.up = False
            self.counts["outages"] += 1
        self._next_try = time.monotonic() + self._delay
        self._delay = min(2 * self._delay, RECONNECT_MAX_S)
        self.emit("down", why=_reason(exc))

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        self.emit("closed")


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.split(": '")[0].strip()


def _read_exact(stream, n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def main(argv: list[str]) -> int:
    import numpy as np

    publisher = Publisher(json.loads(argv[0]))
    source = sys.stdin.buffer
    try:
        while (head := _read_exact(source, HEADER.size)) is not None:
            t_ns, w, h = HEADER.unpack(head)
            data = _read_exact(source, w * h * 3 // 2)
            if data is None:
                break
            publisher.frame(np.frombuffer(data, np.uint8).reshape(h * 3 // 2, w), t_ns, (w, h))
    except KeyboardInterrupt:
        pass
    finally:
        publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

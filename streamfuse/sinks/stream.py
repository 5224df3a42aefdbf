"""The stream sink: the fused video as low-latency H.264 for other programs (VLC, a VMS, OBS).

    rtsp://server:8554/path   published to an RTSP server (MediaMTX, ...) over TCP:
                              ANNOUNCE + RECORD; viewers then read it from the server
    udp://host:port           MPEG-TS in UDP datagrams (unicast or multicast), no server
    rtp://host:port           MPEG-TS over RTP
    srt://host:port           only with an FFmpeg that has libsrt (PyAV's wheels have none)

Encoding (x264 `tune zerolatency`: no lookahead, no B-frames; a keyframe every
`keyframe_s`) and sending happen in a child process, `publisher.py`, which also reconnects
after a lost server with backoff, as live sources do. The sink's thread only converts each
frame to planar YUV (`containers.bgr_to_i420`) and writes it into the child's pipe.

Isolation. Like every sink it has its own thread and a `drop_oldest` queue. A receiver that
is gone costs nothing but the frames not sent (counted as `skipped`); a child that stalls in
a connection attempt for `timeout_s` (a server that accepts and never answers) is killed and
started again, while the frames it could not take are dropped by the sink's queue.
"""
from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from streamfuse.errors import RuntimeFailure, UsageError
from streamfuse.frames import Frame
from streamfuse.sinks.base import Sink, StreamInfo
from streamfuse.sinks.config import STREAM_FORMATS, StreamSinkConfig
from streamfuse.sinks.containers import bgr_to_i420
from streamfuse.sinks.publisher import HEADER

log = logging.getLogger("streamfuse")

#: Publisher restarts in a row (each after `timeout_s` or a crash) before the sink gives up.
MAX_RESTARTS = 1000
#: Wait before starting a publisher again after it died.
RESTART_WAIT_S = 0.5


def has_srt() -> bool:
    """Whether this PyAV's FFmpeg can speak SRT."""
    import av

    try:
        av.open("srt://127.0.0.1:9?connect_timeout=100", timeout=1).close()
    except av.ProtocolNotFoundError:
        return False
    except (av.FFmpegError, OSError):
        return True  # the protocol exists; nothing listens on port 9
    return True


class StreamSink(Sink):
    name = "stream"

    def __init__(self, cfg: StreamSinkConfig):
        self.cfg = cfg
        self.url = cfg.url
        self.where = _redacted(cfg.url)
        self.counts = {"up": 0, "sent": 0, "skipped": 0, "outages": 0, "reconnects": 0, "restarts": 0}
        self.last_error = ""
        self._child: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._child_counts: dict = {}
        self._banked = {"sent": 0, "skipped": 0, "outages": 0, "reconnects": 0}
        self._connecting_since: float | None = None
        self._lock = threading.Lock()

    def open(self, info: StreamInfo) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme == "srt" and not has_srt():
            raise UsageError(f"stream {self.where}: this FFmpeg build (PyAV's wheel) has no SRT; publish by "
                             "rtsp:// to a server such as MediaMTX, which serves it on as SRT, or use udp://")
        self._size = (info.size[0] - info.size[0] % 2, info.size[1] - info.size[1] % 2)
        cfg = self.cfg
        self._settings = json.dumps({"url": self.url, "format": STREAM_FORMATS[scheme], "fps": str(info.fps),
                                     "preset": cfg.preset, "crf": cfg.crf, "max_kbps": cfg.max_kbps,
                                     "keyframe_s": cfg.keyframe_s})
        self._start_child()
        log.info("stream: publishing to %s (H.264, %dx%d)", self.where, *self._size)

    def write(self, frame: Frame) -> None:
        w, h = self._size
        image = frame.image[:h, :w] if frame.image.shape[:2] != (h, w) else frame.image
        data = HEADER.pack(frame.t_ns, w, h) + bgr_to_i420(image).tobytes()
        if self._child is None or self._child.poll() is not None:
            self._restart("the publisher ended")
        try:
            self._child.stdin.write(data)
            self._child.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):  # it died (or was killed as stuck) meanwhile
            with self._lock:
                self.counts["skipped"] += 1

    def state(self) -> dict[str, float]:
        with self._lock:
            counts = {k: self._banked.get(k, 0) + self._child_counts.get(k, 0) for k in self._banked}
            skipped_here = self.counts["skipped"]
            return {"up": float(bool(self._child_counts.get("up"))), **counts,
                    "skipped": counts["skipped"] + skipped_here, "restarts": self.counts["restarts"]}

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.stdin.close()
        except OSError:
            pass
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
        if self._reader is not None:
            self._reader.join(5)

    # --- the child -----------------------------------------------------------------------

    def _start_child(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            child = subprocess.Popen([sys.executable, "-m", "streamfuse.sinks.publisher", self._settings],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            raise RuntimeFailure(f"stream {self.where}: cannot start the publisher ({exc})") from None
        self._child = child
        self._connecting_since = None
        self._reader = threading.Thread(target=self._read_events, args=(child,), name="sink-stream-events",
                                        daemon=True)
        self._reader.start()

    def _restart(self, why: str) -> None:
        if self.counts["restarts"] >= MAX_RESTARTS:
            raise RuntimeFailure(f"stream {self.where}: the publisher failed {MAX_RESTARTS} times ({why})")
        old = self._child
        if old is not None:
            old.kill()
            old.wait(5)
            self._reader.join(5)
        with self._lock:
            for key in self._banked:
                self._banked[key] += self._child_counts.get(key, 0)
            self._child_counts = {}
            self.counts["restarts"] += 1
        self.last_error = why
        log.warning("stream %s: %s; starting the publisher again", self.where, why)
        time.sleep(RESTART_WAIT_S)
        self._start_child()

    def _read_events(self, child: subprocess.Popen) -> None:
        """The child's JSON lines; kills a child stuck connecting for longer than `timeout_s`."""
        buffer = b""
        fd = child.stdout.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], 0.25)
            if not ready:
                since = self._connecting_since
                if since is not None and time.monotonic() - since > self.cfg.timeout_s:
                    self.last_error = f"no answer within {self.cfg.timeout_s:g} s"
                    child.kill()  # the sink thread's next write sees it gone and starts another
                    return
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._event(json.loads(line))

    def _event(self, event: dict) -> None:
        kind = event.pop("event")
        self._connecting_since = time.monotonic() if kind == "connecting" else None
        with self._lock:
            self._child_counts = event
        if kind == "down":
            self.last_error = event.get("why", "")
            if event.get("outages") or not event.get("sent"):
                log.debug("stream %s down: %s", self.where, self.last_error)
        elif kind == "up":
            log.info("stream %s: publishing", self.where)


def _redacted(url: str) -> str:
    """`url` without a password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                          + (f":{parts.port}" if parts.port else "")).geturl()

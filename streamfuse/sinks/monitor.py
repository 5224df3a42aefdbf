"""The browser monitor: a small web server showing the live picture, statistics and controls.

    /               the page (monitor_page.html, beside this file)
    /frame.jpg      the newest picture; ?after=SEQ waits (up to 2 s) for a newer one
    /stream.mjpg    the live picture as MJPEG (multipart/x-mixed-replace), for players
    /snapshot.png   the newest picture, lossless, as a download
    /snapshot.zip   the same picture with the raw IR frame it was made from (16-bit PNG), a
                    JSON sidecar (capture times) and, radiometric, its temperatures (CSV)
    /stats.json     the numbers the page shows; POST /control changes the live settings
    /health         200 while frames flow, 503 when they stopped
    /metrics        Prometheus text: frames, drops, per-stage latency histograms, skew, sinks

Threads. The server runs on its own thread (`monitor-http`), one more per connection. The
sink thread encodes each picture to JPEG once (at most `max_fps` a second, and only while
someone watches) and publishes it; every viewer's thread sends that same JPEG, so more
viewers cost sockets, not encoding, and a slow viewer only gets fewer pictures. Like every
viewer it is a sink with a `drop_oldest` queue: it never holds the pipeline.

Access. Only the routes above are served (nothing is read from disk per request, so no path
can reach a file). On loopback no token is needed; binding to any other address needs one
(`token`, `--token` or STREAMFUSE_TOKEN), and every request must then carry it, as
`Authorization: Bearer TOKEN`, a `?token=TOKEN` query (the page then keeps it in a cookie)
or that cookie; anything else gets 401.

Other web pages. A page the operator has open elsewhere must not drive the monitor:
- Requests whose `Host` is not a name the server is bound to (or localhost) get 421, so a
  DNS-rebinding page cannot read `/stats.json` either. (Bound to a wildcard address, any
  Host is accepted: that needs a token anyway.)
- `POST /control` changes what is recorded, so it also needs an `Origin` (when the browser
  sends one) of this very host, a JSON content type, and either the bearer token or the
  page's own CSRF token in the `X-Streamfuse-CSRF` header (a custom header, which no other
  origin can send without a preflight this server never grants). Else 403.
- Bodies are flat JSON objects of at most MAX_BODY bytes; anything else (a 2000-level nest too)
  gets 400.
- A request thread that fails (a viewer that hung up, a malformed request) is counted
  (`streamfuse_monitor_errors_total`) and otherwise silent: no traceback on the console.
"""
from __future__ import annotations

import importlib.resources
import ipaddress
import logging
import os
import re
import secrets
import threading
import time

import cv2

from streamfuse.errors import UsageError
from streamfuse.frames import Frame, now_ns
from streamfuse.sinks.base import Sink, StreamInfo
from streamfuse.sinks.config import MonitorSinkConfig
from streamfuse.sinks.feed import Feed
from streamfuse.sinks.monitor_http import CSRF_HEADER, Server, Server6, allowed_hosts
from streamfuse.sinks.overlay import draw_temperatures

__all__ = ["CSRF_HEADER", "MonitorSink", "is_loopback"]

log = logging.getLogger("streamfuse")

TOKEN_ENV = "STREAMFUSE_TOKEN"
#: /health answers 503 when the last frame is older than this.
HEALTH_STALE_S = 5.0
#: Where the page's CSRF token is written into the page when it is served.
CSRF_PLACEHOLDER = b"{{csrf}}"
#: Tokens travel in URLs and cookies: URL-safe characters only.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{8,}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere


class MonitorSink(Sink):
    name = "monitor"

    def __init__(self, cfg: MonitorSinkConfig):
        self.cfg = cfg
        self.token = cfg.token or os.environ.get(TOKEN_ENV) or None
        self.feed = Feed()
        self.url = ""
        self.latest: Frame | None = None
        self._last_frame_at = 0.0
        self._last_encode = 0.0
        self._server: Server | None = None
        self._errors_at_close = 0

    def open(self, info: StreamInfo) -> None:
        host = self.cfg.host
        if not is_loopback(host) and not self.token:
            raise UsageError(f"monitor: listening on {host} (not loopback) needs an access token; set "
                             f"{TOKEN_ENV} or --token, or listen on 127.0.0.1")
        if self.token is not None and not TOKEN_PATTERN.fullmatch(self.token):
            raise UsageError("monitor: the access token must be at least 8 letters, digits or -._~ "
                             "(e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe())')")
        self.controls, self.report = info.controls, info.report
        self.radiometric, self.radiometry = info.radiometric, info.radiometry
        page = importlib.resources.files("streamfuse.sinks").joinpath("monitor_page.html").read_bytes()
        try:
            server_class = Server6 if ":" in host else Server
            self._server = server_class((host, self.cfg.port))
        except OSError as exc:
            raise UsageError(f"monitor: cannot listen on {host}:{self.cfg.port} ({exc.strerror or exc}); "
                             f"pick another port or address") from None
        self.csrf = secrets.token_urlsafe(24)
        self._server.sink, self._server.page = self, page.replace(CSRF_PLACEHOLDER, self.csrf.encode())
        self._server.hosts = allowed_hosts(host)
        port = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="monitor-http", daemon=True)
        self._thread.start()
        log.info("monitor: %s%s", self.url, " (token required)" if self.token else "")

    def write(self, frame: Frame) -> None:
        self.latest = frame
        self._last_frame_at = time.monotonic()
        if self.feed.viewers() == 0 or self._last_frame_at - self._last_encode < 1.0 / self.cfg.max_fps:
            return
        self._last_encode = self._last_frame_at
        ok, jpeg = cv2.imencode(".jpg", self.picture(frame), [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if ok:  # the picture's wall-clock time, for the page's clock badge
            self.feed.publish(jpeg.tobytes(), time.time_ns() - (now_ns() - frame.t_ns))

    def picture(self, frame: Frame):
        """What the page shows of `frame`: with the temperature overlay on a radiometric rig."""
        if frame.temperatures is None:
            return frame.image
        s = self.controls.settings if self.controls is not None else None
        return draw_temperatures(frame.image, frame.temperatures, s.palette if s else "ironbow",
                                 s.view if s else "fused")

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._errors_at_close = server.errors
        self.feed.close()  # wakes the viewer threads, which then end
        server.shutdown()
        server.server_close()
        self._thread.join(2.0)

    @property
    def errors(self) -> int:
        """Request threads that failed (counted, not printed)."""
        return self._server.errors if self._server is not None else self._errors_at_close

    def state(self) -> dict[str, float]:
        return {"viewers": self.feed.viewers(), "errors": self.errors}

    def health(self) -> tuple[int, dict]:
        if self.latest is None:
            return 200, {"status": "starting", "frames": 0}
        age = time.monotonic() - self._last_frame_at
        status = "ok" if age <= HEALTH_STALE_S else "stalled"
        return (200 if status == "ok" else 503), {"status": status, "frames": self.report.frames if
                                                  self.report is not None else 0, "last_frame_age_s": round(age, 2)}

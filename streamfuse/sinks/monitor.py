"""The browser monitor: a small web server showing the live picture, statistics and controls.

    /               the page (monitor_page.html, beside this file)
    /frame.jpg      the newest picture; ?after=SEQ waits (up to 2 s) for a newer one
    /stream.mjpg    the live picture as MJPEG (multipart/x-mixed-replace), for players
    /snapshot.png   the newest picture, lossless, as a download
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

import hmac
import http.server
import importlib.resources
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from datetime import datetime
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import cv2

from streamfuse.errors import UsageError
from streamfuse.frames import Frame
from streamfuse.sinks.base import Sink, StreamInfo
from streamfuse.sinks.config import MonitorSinkConfig
from streamfuse.sinks.feed import Feed
from streamfuse.sinks.metrics import prometheus_text, stats_json

log = logging.getLogger("streamfuse")

TOKEN_ENV = "STREAMFUSE_TOKEN"
COOKIE = "streamfuse_token"
#: How long /frame.jpg?after= waits for a newer picture before answering 204.
FRAME_WAIT_S = 2.0
#: /health answers 503 when the last frame is older than this.
HEALTH_STALE_S = 5.0
#: A connection that cannot take data for this long is dropped.
SOCKET_TIMEOUT_S = 10.0
#: Largest POST /control body accepted (a flat JSON object of settings).
MAX_BODY = 4096
#: The header that carries the page's CSRF token on POST /control.
CSRF_HEADER = "X-Streamfuse-CSRF"
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
        self._server: _Server | None = None
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
        page = importlib.resources.files("streamfuse.sinks").joinpath("monitor_page.html").read_bytes()
        try:
            server_class = _Server6 if ":" in host else _Server
            self._server = server_class((host, self.cfg.port), _Handler)
        except OSError as exc:
            raise UsageError(f"monitor: cannot listen on {host}:{self.cfg.port} ({exc.strerror or exc}); "
                             f"pick another port or address") from None
        self.csrf = secrets.token_urlsafe(24)
        self._server.sink, self._server.page = self, page.replace(CSRF_PLACEHOLDER, self.csrf.encode())
        self._server.hosts = _allowed_hosts(host)
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
        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if ok:
            self.feed.publish(jpeg.tobytes())

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


def _allowed_hosts(bound: str) -> frozenset[str] | None:
    """The Host names (without port) requests may carry; None for a wildcard address."""
    if bound in ("0.0.0.0", "::", ""):
        return None
    return frozenset({bound.lower(), "localhost", "127.0.0.1", "::1"})


def _host_name(host_header: str) -> str:
    """The name of a Host header without its port ("[::1]:8080" -> "::1")."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: MonitorSink
    page: bytes
    hosts: frozenset[str] | None = None
    errors = 0
    _errors_lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        """A request thread failed (a viewer hung up mid-answer, a broken request): count it
        quietly instead of printing a traceback over the progress line."""
        with self._errors_lock:
            self.errors += 1


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    server_version = "streamfuse"

    def log_message(self, format, *args):  # no access log on stderr: it would break the progress line
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if not self._host_allowed() or not self._authorized(query):
            return
        routes = {"/": self._page, "/index.html": self._page, "/frame.jpg": self._frame,
                  "/stream.mjpg": self._stream, "/snapshot.png": self._snapshot, "/stats.json": self._stats,
                  "/health": self._health, "/metrics": self._metrics}
        route = routes.get(parts.path)
        if route is None:
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        route(query)

    def do_POST(self):
        parts = urlsplit(self.path)
        if not self._host_allowed() or not self._authorized(parse_qs(parts.query)):
            return
        if parts.path != "/control":
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        problem = self._cross_site_problem()
        if problem:
            return self._json(HTTPStatus.FORBIDDEN, {"error": problem})
        self._control()

    def _host_allowed(self) -> bool:
        hosts = self.server.hosts
        if hosts is None or _host_name(self.headers.get("Host", "")) in hosts:
            return True
        self.close_connection = True
        self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown Host: open the monitor by its own address\n",
                   "text/plain")
        return False

    def _cross_site_problem(self) -> str:
        """Why this POST may come from another web page ('' when it is the monitor's own)."""
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != self.headers.get("Host", "").strip().lower():
            return f"cross-site request from {origin[:100]} refused"
        if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            return "expected Content-Type: application/json"
        sink = self.server.sink
        auth = self.headers.get("Authorization", "")
        offered = [self.headers.get(CSRF_HEADER, "")] + ([auth[7:].strip()] if auth.startswith("Bearer ") else [])
        expected = [sink.csrf] + ([sink.token] if sink.token else [])
        if any(o and hmac.compare_digest(o.encode(), e.encode()) for o in offered for e in expected):
            return ""
        return f"a change needs the page's {CSRF_HEADER} header (or the bearer token)"

    def _authorized(self, query: dict) -> bool:
        token = self.server.sink.token
        if token is None:
            return True
        offered = [query.get("token", [""])[0], self._cookie(COOKIE)]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered.append(auth[7:].strip())
        if any(o and hmac.compare_digest(o.encode(), token.encode()) for o in offered):
            return True
        self._send(HTTPStatus.UNAUTHORIZED, b"a token is required: add ?token=... to the address\n",
                   "text/plain", {"WWW-Authenticate": 'Bearer realm="streamfuse"'})
        return False

    def _cookie(self, name: str) -> str:
        for part in self.headers.get("Cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return ""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _page(self, query: dict) -> None:
        headers = {"X-Content-Type-Options": "nosniff"}
        token, expected = query.get("token", [""])[0], self.server.sink.token
        if token and expected and hmac.compare_digest(token.encode(), expected.encode()):
            headers["Set-Cookie"] = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8", headers)

    def _frame(self, query: dict) -> None:
        feed = self.server.sink.feed
        feed.touch(query.get("viewer", [self.client_address[0]])[0][:64])
        try:
            after = int(query.get("after", ["-1"])[0])
        except ValueError:
            after = -1
        jpeg, seq = feed.wait_newer(after, FRAME_WAIT_S)
        if jpeg is None:
            return self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
        self._send(HTTPStatus.OK, jpeg, "image/jpeg", {"X-Frame-Seq": str(seq)})

    def _stream(self, query: dict) -> None:
        feed = self.server.sink.feed
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seq = -1
        try:
            with feed.streaming():
                while not feed.closed:
                    jpeg, seq = feed.wait_newer(seq, 1.0)
                    if jpeg is not None:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                         % (len(jpeg), jpeg))
        except OSError:
            pass  # the viewer went away

    def _snapshot(self, query: dict) -> None:
        frame = self.server.sink.latest
        ok, png = cv2.imencode(".png", frame.image) if frame is not None else (False, None)
        if not ok:
            return self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no picture yet\n", "text/plain")
        now = datetime.now()
        name = f"streamfuse-{now:%Y%m%d-%H%M%S}.png"
        self._send(HTTPStatus.OK, png.tobytes(), "image/png",
                   {"Content-Disposition": f'attachment; filename="{name}"'})

    def _stats(self, query: dict) -> None:
        sink = self.server.sink
        controls = sink.controls
        data = stats_json(sink.report, viewers=sink.feed.viewers()) if sink.report is not None else {}
        data["settings"] = controls.describe() if controls is not None else None
        self._json(HTTPStatus.OK, data)

    def _health(self, query: dict) -> None:
        self._json(*self.server.sink.health())

    def _metrics(self, query: dict) -> None:
        sink = self.server.sink
        settings = sink.controls.settings if sink.controls is not None else None
        text = prometheus_text(sink.report, settings, sink.feed.viewers(), sink.errors) if sink.report is not None else ""
        self._send(HTTPStatus.OK, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _control(self) -> None:
        controls = self.server.sink.controls
        if controls is None:
            return self._json(HTTPStatus.CONFLICT, {"error": "this run has no live controls"})
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"expected a JSON body of 1 to {MAX_BODY} bytes"})
        try:
            changes = json.loads(self.rfile.read(length))
            if not isinstance(changes, dict) or any(isinstance(v, (dict, list)) for v in changes.values()):
                raise ValueError("expected a flat JSON object, e.g. {\"mode\": \"msx\"}")
            controls.update(**changes)
        except RecursionError:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "expected a flat JSON object"})
        except (ValueError, TypeError) as exc:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)[:200]})
        self._json(HTTPStatus.OK, {"settings": controls.describe()})

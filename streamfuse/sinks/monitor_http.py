"""The monitor's HTTP side: the server, its routes, and the rules for other pages and hosts.

See `monitor.py` for the routes, access and cross-site rules; `MonitorSink` owns the server
and the picture, this file answers requests from them.
"""
from __future__ import annotations

import hmac
import http.server
import json
import socket
import threading
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2

from streamfuse.sinks.metrics import prometheus_text, stats_json
from streamfuse.sinks.overlay import frame_from_picture
from streamfuse.sinks.snapshot import snapshot_files, snapshot_name, zip_files

COOKIE = "streamfuse_token"
#: How long /frame.jpg?after= waits for a newer picture before answering 204.
FRAME_WAIT_S = 2.0
#: A connection that cannot take data for this long is dropped.
SOCKET_TIMEOUT_S = 10.0
#: Largest POST /control body accepted (a flat JSON object of settings).
MAX_BODY = 4096
#: The header that carries the page's CSRF token on POST /control.
CSRF_HEADER = "X-Streamfuse-CSRF"
#: The page's icon (served as /favicon.ico and /favicon.svg): two overlapping lenses, IR and visible.
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
           b'fill="#222"/><circle cx="12" cy="16" r="8" fill="#f60" opacity=".9"/><circle cx="20" cy="16" '
           b'r="8" fill="#39f" opacity=".75"/></svg>')

def allowed_hosts(bound: str) -> frozenset[str] | None:
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


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: Any  # the MonitorSink that owns this server
    page: bytes
    hosts: frozenset[str] | None = None
    errors = 0
    _errors_lock = threading.Lock()

    def __init__(self, address):
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        """A request thread failed (a viewer hung up mid-answer, a broken request): count it
        quietly instead of printing a traceback over the progress line."""
        with self._errors_lock:
            self.errors += 1


class Server6(Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Server
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
                  "/stream.mjpg": self._stream, "/snapshot.png": self._snapshot,
                  "/snapshot.zip": self._snapshot_zip, "/stats.json": self._stats,
                  "/health": self._health, "/metrics": self._metrics,
                  "/favicon.ico": self._favicon, "/favicon.svg": self._favicon}
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
        self._send(HTTPStatus.OK, jpeg, "image/jpeg",
                   {"X-Frame-Seq": str(seq), "X-Frame-Time": str(feed.t_wall_ns // 1_000_000)})

    def _favicon(self, query: dict) -> None:
        self._send(HTTPStatus.OK, FAVICON, "image/svg+xml")

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
        sink = self.server.sink
        frame = sink.latest
        ok, png = cv2.imencode(".png", sink.picture(frame)) if frame is not None else (False, None)
        if not ok:
            return self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no picture yet\n", "text/plain")
        self._send(HTTPStatus.OK, png.tobytes(), "image/png",
                   {"Content-Disposition": f'attachment; filename="{snapshot_name(frame)}.png"'})

    def _snapshot_zip(self, query: dict) -> None:
        """The picture, the raw IR frame, its sidecar and temperatures, all of one frame."""
        sink = self.server.sink
        frame = sink.latest
        if frame is None:
            return self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no picture yet\n", "text/plain")
        name = snapshot_name(frame)
        body = zip_files(name, snapshot_files(frame, sink.picture(frame), sink.radiometry))
        self._send(HTTPStatus.OK, body, "application/zip",
                   {"Content-Disposition": f'attachment; filename="{name}.zip"'})

    def _stats(self, query: dict) -> None:
        sink = self.server.sink
        controls = sink.controls
        data = stats_json(sink.report, viewers=sink.feed.viewers()) if sink.report is not None else {}
        data["settings"] = controls.describe() if controls is not None else None
        data["radiometric"] = sink.radiometric
        latest = sink.latest
        if latest is not None and latest.temperatures is not None:
            data["temperatures"] = latest.temperatures.as_dict()
        data["recording"] = any(s.get("recording") and not s.get("error") for s in data.get("sinks", ()))
        self._json(HTTPStatus.OK, data)

    def _health(self, query: dict) -> None:
        self._json(*self.server.sink.health())

    def _metrics(self, query: dict) -> None:
        sink = self.server.sink
        settings = sink.controls.settings if sink.controls is not None else None
        latest = sink.latest
        temperatures = latest.temperatures if latest is not None else None
        text = prometheus_text(sink.report, settings, sink.feed.viewers(), sink.errors,
                               temperatures) if sink.report is not None else ""
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
            if not isinstance(changes, dict) or not all(map(_flat, changes.values())):
                raise ValueError("expected a flat JSON object, e.g. {\"mode\": \"msx\"}")
            if "spot" in changes:  # a point of the picture as shown -> of the visible frame
                changes["spot"] = _spot(changes["spot"], changes.get("view", controls.settings.view))
            controls.update(**changes)
        except RecursionError:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "expected a flat JSON object"})
        except (ValueError, TypeError) as exc:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)[:200]})
        self._json(HTTPStatus.OK, {"settings": controls.describe()})


def _spot(value, view: str):
    """A clicked point of the picture of `view` (fractions) as a point of the visible frame."""
    if not (isinstance(value, list) and len(value) == 2 and all(0 <= v <= 1 for v in value)):
        return value  # Controls.update says what is wrong with it
    return list(frame_from_picture(view, *value))


def _flat(value) -> bool:
    """A setting's value: a plain JSON value, or a point (a list of two numbers, e.g. the spot meter)."""
    if isinstance(value, list):
        return len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return not isinstance(value, dict)

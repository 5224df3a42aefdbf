"""The browser monitor on 127.0.0.x: the page in headless Chromium, /metrics through the
Prometheus parser, tokens, paths, and viewers that never slow the pipeline."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import re
import socket
import struct
import threading
import time

import pytest
from browser import Chromium
from helpers import REPO, free_port, get, write_demo_rig
from prometheus_client.parser import text_string_to_metric_families

from streamfuse.bench.viewers import measure
from streamfuse.controls import Controls
from streamfuse.errors import UsageError
from streamfuse.pipeline import run
from streamfuse.rig import load_rig
from streamfuse.sinks import MonitorSinkConfig, Mp4SinkConfig
from streamfuse.sinks.monitor import CSRF_HEADER

TOKEN = "test-token-1234"


@contextlib.contextmanager
def running(rig, duration_s: float = 30.0, **kwargs):
    """Run `rig` on a thread for up to `duration_s`; stop it on leaving, re-raising its error."""
    stop = threading.Event()
    out: dict = {}

    def go():
        try:
            out["report"] = run(rig, duration_s=duration_s, stop=stop, **kwargs)
        except BaseException as exc:  # handed to the test thread below
            out["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join(30)
    if "error" in out:
        raise out["error"]


def _rig(tmp_path, *sinks, pace="realtime"):
    rig = load_rig(write_demo_rig(tmp_path / "rig.yaml", pace=pace))
    return dataclasses.replace(rig, sinks=sinks)


def _wait_for(url: str, timeout: float = 20.0, **headers) -> tuple[int, bytes, dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url, timeout=5, **headers)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_metrics_parse_with_the_prometheus_parser(tmp_path):
    port = free_port()
    rig = _rig(tmp_path, MonitorSinkConfig(port=port), Mp4SinkConfig(path=tmp_path / "m.mp4"))
    with running(rig):
        _wait_for(f"http://127.0.0.1:{port}/health")
        time.sleep(1.5)
        status, body, headers = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("streamfuse_frames_total", ())] > 10
    assert families["streamfuse_stage_seconds"].type == "histogram"
    fuse_count = samples[("streamfuse_stage_seconds_count", (("stage", "fuse"),))]
    assert fuse_count > 10
    assert samples[("streamfuse_stage_seconds_bucket", (("le", "+Inf"), ("stage", "fuse")))] == fuse_count
    assert families["streamfuse_latency_seconds"].type == "histogram"
    assert ("streamfuse_sync_skew_seconds", (("stat", "p50"),)) in samples
    assert samples[("streamfuse_recording", (("sink", "mp4"),))] == 1
    assert samples[("streamfuse_sink_up", (("sink", "mp4"),))] == 1
    assert ("streamfuse_sink_dropped_frames_total", (("policy", "drop_oldest"), ("sink", "monitor"))) in samples
    assert samples[("streamfuse_settings_info", (("mode", "lite"), ("palette", "ironbow"), ("view", "fused")))] == 1


def test_off_loopback_a_token_is_required(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAMFUSE_TOKEN", raising=False)
    with pytest.raises(UsageError, match="0.0.0.0 .not loopback. needs an access token"):
        run(_rig(tmp_path, MonitorSinkConfig(host="0.0.0.0", port=free_port())), max_frames=5)

    port = free_port()
    rig = _rig(tmp_path, MonitorSinkConfig(host="0.0.0.0", port=port, token=TOKEN))
    base = f"http://127.0.0.1:{port}"
    with running(rig):
        status, _, headers = _wait_for(f"{base}/health")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        for path in ("/", "/metrics", "/frame.jpg", "/stats.json", "/snapshot.png", f"/?token={TOKEN}x"):
            assert get(base + path)[0] == 401, path
        assert get(f"{base}/metrics", Authorization="Bearer wrong-token-000")[0] == 401
        assert get(f"{base}/metrics", Authorization=f"Bearer {TOKEN}")[0] == 200
        status, _, headers = get(f"{base}/?token={TOKEN}")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        assert get(f"{base}/stats.json", Cookie=cookie)[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/control", body=b'{"mode": "msx"}', headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 401


def _raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    return response.status, response.read()


def test_only_the_app_is_served(tmp_path):
    port = free_port()
    with running(_rig(tmp_path, MonitorSinkConfig(port=port))):
        _wait_for(f"http://127.0.0.1:{port}/health")
        for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd",
                     "/monitor_page.html", "/streamfuse/monitor.py", "/static/../monitor.py", "/metrics/../../x"):
            status, body = _raw_get(port, path)
            assert status == 404 and b"root:" not in body and b"import" not in body, path
        status, body = _raw_get(port, "/?x=/../etc/passwd")
        assert status == 200 and b"<title>streamfuse monitor</title>" in body


def _csrf(port: int) -> str:
    """The CSRF token the monitor's page carries (what its script sends back)."""
    page = get(f"http://127.0.0.1:{port}/")[1].decode()
    return re.search(r'<meta name="csrf" content="([^"]+)">', page).group(1)


def _post(port: int, body, headers: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/control", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def test_other_pages_and_hosts_cannot_drive_or_read_the_monitor(tmp_path):
    port = free_port()
    controls = Controls(load_rig(REPO / "rigs/demo.yaml").fusion)
    with running(_rig(tmp_path, MonitorSinkConfig(port=port)), controls=controls):
        _wait_for(f"http://127.0.0.1:{port}/health")
        csrf = _csrf(port)
        own = {"Content-Type": "application/json", CSRF_HEADER: csrf}
        body = b'{"strength": 0.9}'
        # What a page on another site can send: a "simple" POST, no custom header.
        assert _post(port, body, {"Content-Type": "text/plain", "Origin": "http://evil.example"})[0] == 403
        assert _post(port, body, {"Content-Type": "application/json"})[0] == 403          # no CSRF token
        assert _post(port, body, {**own, "Origin": "http://evil.example"})[0] == 403      # foreign origin
        assert _post(port, body, {**own, CSRF_HEADER: "x" * len(csrf)})[0] == 403          # wrong token
        assert controls.settings.strength == 0.5                                           # nothing changed
        # DNS rebinding: the right address under a foreign name is refused, reads included.
        for path in ("/stats.json", "/", "/metrics"):
            assert get(f"http://127.0.0.1:{port}{path}", Host=f"evil.example:{port}")[0] == 421, path
        assert _post(port, body, {**own, "Host": "evil.example"})[0] == 421
        # Bodies: too deep, too large, not flat.
        assert _post(port, b"[" * 2000 + b"]" * 2000, own)[0] == 400
        assert _post(port, b'{"mode": "' + b"m" * 5000 + b'"}', own)[0] == 400
        assert _post(port, b'{"mode": {"a": 1}}', own)[0] == 400
        # The monitor's own page (same origin, its token) still works, also under localhost.
        assert _post(port, body, {**own, "Origin": f"http://127.0.0.1:{port}"})[0] == 200
        assert get(f"http://127.0.0.1:{port}/stats.json", Host=f"localhost:{port}")[0] == 200
        assert controls.settings.strength == 0.9


def test_viewers_that_hang_up_are_counted_not_printed(tmp_path, capfd):
    port = free_port()
    with running(_rig(tmp_path, MonitorSinkConfig(port=port))):
        _wait_for(f"http://127.0.0.1:{port}/health")
        time.sleep(0.5)  # a picture to snapshot
        for _ in range(8):  # ask for a large answer, then reset the connection before reading it
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                s.sendall(f"GET /snapshot.png HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 10
        errors = 0.0
        while time.monotonic() < deadline and not errors:
            time.sleep(0.3)
            text = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
            errors = float(re.search(r"^streamfuse_monitor_errors_total (\S+)$", text, re.M).group(1))
        assert errors >= 1
    assert "Traceback" not in capfd.readouterr().err


def test_controls_change_the_fusion_and_bad_values_are_refused(tmp_path):
    port = free_port()
    controls = Controls(load_rig(REPO / "rigs/demo.yaml").fusion)
    with running(_rig(tmp_path, MonitorSinkConfig(port=port)), controls=controls):
        _wait_for(f"http://127.0.0.1:{port}/health")

        csrf = _csrf(port)

        def post(body: dict) -> tuple[int, dict]:
            status, answer = _post(port, json.dumps(body), {"Content-Type": "application/json", CSRF_HEADER: csrf})
            return status, json.loads(answer)

        status, answer = post({"mode": "msx", "strength": 0.8, "view": "side-by-side"})
        assert status == 200 and answer["settings"]["mode"] == "msx"
        assert (controls.settings.mode, controls.settings.strength, controls.settings.view) == ("msx", 0.8, "side-by-side")
        for bad, message in (({"mode": "nope"}, "mode: expected one of alpha"), ({"strength": 2}, "strength:"),
                             ({"distance_m": 5}, "no parallax model"), ({"colour": "red"}, "not a live setting"),
                             ([1, 2], "JSON object")):
            status, answer = post(bad)
            assert status == 400 and message in answer["error"], bad
        assert controls.settings.mode == "msx"  # a refused change changes nothing
        time.sleep(0.5)
        text = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
        assert 'streamfuse_settings_info{mode="msx",view="side-by-side",palette="ironbow"} 1' in text


def test_viewers_and_a_slow_sink_do_not_slow_the_pipeline(tmp_path):
    # A loose bound on 2 shared cores; `streamfuse bench-viewers` measures the figure.
    rig = _rig(tmp_path)
    alone, _, _ = measure(rig, 2.0)
    loaded, pictures, report = measure(rig, 2.0, viewers=3, slow_ms=200)
    assert min(pictures) >= 5, f"viewers got {pictures} pictures"
    assert loaded >= 0.8 * alone, (loaded, alone)
    slow = next(s for s in report.sinks if s.name == "null")
    assert slow.written < report.frames / 3 and slow.dropped > 10  # it skipped frames, the loop did not wait


def test_the_page_in_headless_chromium(tmp_path):
    browser = Chromium()
    port = free_port()
    controls = Controls(load_rig(REPO / "rigs/demo.yaml").fusion)
    try:
        with running(_rig(tmp_path, MonitorSinkConfig(port=port)), controls=controls):
            _wait_for(f"http://127.0.0.1:{port}/health")
            browser.call("Page.navigate", session=True, url=f"http://127.0.0.1:{port}/")
            browser.wait("document.getElementById('feed').naturalWidth === 640")
            first = int(browser.js("document.getElementById('feed').dataset.seq"))
            browser.wait(f"Number(document.getElementById('feed').dataset.seq) > {first + 3}")  # it updates
            browser.wait("document.getElementById('stats').textContent.includes('frames')")
            assert browser.js("document.getElementById('mode').value") == "lite"
            browser.js("(() => { const s = document.getElementById('mode'); s.value = 'msx';"
                       " s.dispatchEvent(new Event('change')); })()")
            deadline = time.monotonic() + 10
            while controls.settings.mode != "msx" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert controls.settings.mode == "msx"
            browser.wait("document.body.dataset.mode === 'msx'")
            shot = base64.b64decode(browser.call("Page.captureScreenshot", session=True, format="png")["data"])
            (tmp_path / "monitor.png").write_bytes(shot)  # for a person to look at (pytest --basetemp)
            assert shot.startswith(b"\x89PNG") and len(shot) > 50_000  # a picture, not a blank page
    finally:
        browser.close()

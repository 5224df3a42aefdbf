"""The monitor page in headless Chromium: badges over the picture (time, REC, mode) seen in the
DOM and in the screenshot's pixels, the picture at its native size, readable statistics, the
favicon, hidden controls, and a control that changes the picture."""
from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
from browser import Chromium
from helpers import REPO, free_port, get, write_demo_rig
from test_monitor import _wait_for, running

from streamfuse.controls import Controls
from streamfuse.rig import load_rig
from streamfuse.sinks import MonitorSinkConfig, Mp4SinkConfig


def _rect(browser: Chromium, element: str) -> tuple[int, int, int, int]:
    r = browser.js(f"(() => {{ const r = document.getElementById('{element}').getBoundingClientRect();"
                   " return [r.left, r.top, r.width, r.height]; })()")
    return tuple(round(v) for v in r)


def _crop(shot: bytes, rect) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
    x, y, w, h = rect
    return image[y:y + h, x:x + w].astype(np.float32)


def test_badges_native_size_stats_and_a_control_that_changes_the_picture(tmp_path):
    port = free_port()
    rig = load_rig(write_demo_rig(tmp_path / "rig.yaml"))
    rig = dataclasses.replace(rig, sinks=(MonitorSinkConfig(port=port), Mp4SinkConfig(path=tmp_path / "rec.mp4")))
    controls = Controls(load_rig(REPO / "rigs/demo.yaml").fusion)
    browser = Chromium()
    try:
        with running(rig, controls=controls):
            _wait_for(f"http://127.0.0.1:{port}/health")
            status, icon, headers = get(f"http://127.0.0.1:{port}/favicon.ico")
            assert status == 200 and headers["Content-Type"] == "image/svg+xml" and icon.startswith(b"<svg")
            browser.call("Page.navigate", session=True, url=f"http://127.0.0.1:{port}/")
            browser.wait("document.getElementById('feed').naturalWidth === 640")
            # The picture at its own size, not stretched to the column.
            assert browser.js("document.getElementById('feed').clientWidth") == 640
            assert browser.js("getComputedStyle(document.getElementById('feed')).imageRendering") == "crisp-edges"
            # Badges: the capture time, REC while the MP4 sink writes, the fusion mode.
            browser.wait("/^\\d\\d:\\d\\d:\\d\\d$/.test(document.getElementById('badge-time').textContent)")
            browser.wait("!document.getElementById('badge-rec').hidden")
            assert "REC" in browser.js("document.getElementById('badge-rec').textContent")
            browser.wait("document.getElementById('badge-mode').textContent === 'lite'")
            # Statistics in words and units; the distance control hidden (no parallax model here).
            stats = browser.wait("document.getElementById('stats').textContent.includes('latency (median)')"
                                 " && document.getElementById('stats').textContent")
            assert "latency_ms" not in stats and " ms" in stats and "fps" in stats
            assert browser.js("document.getElementById('distance-row').hidden") is True
            assert "written" in browser.js("document.getElementById('sinks').textContent")

            shot = browser.screenshot()
            (tmp_path / "monitor.png").write_bytes(shot)  # for a person to look at (pytest --basetemp)
            rec = _crop(shot, _rect(browser, "badge-rec"))[3:-3, 3:-3]
            b, g, r = rec.reshape(-1, 3).mean(axis=0)
            assert r > 150 and g < 90 and b < 90, (b, g, r)  # the red badge is drawn over the picture
            x, y, w, h = _rect(browser, "badge-time")
            badge = _crop(shot, (x, y, w, h))
            assert badge.max() > 200 and np.median(badge) < 60  # white digits on its dark plate

            # A click on the picture sends no spot on a rig without radiometry.
            fx, fy, fw, fh = _rect(browser, "feed")
            browser.click(fx + fw / 2, fy + fh / 2)
            time.sleep(0.3)
            assert browser.js("document.body.dataset.spot") is None
            assert browser.js("document.getElementById('message').textContent") == ""

            # A control changes the picture: far more than the moving street changes it meanwhile.
            feed = (fx, fy, fw, fh)
            before = _crop(browser.screenshot(), feed)
            time.sleep(0.4)
            still = _crop(browser.screenshot(), feed)
            seq = int(browser.js("document.getElementById('feed').dataset.seq"))
            browser.js("(() => { const s = document.getElementById('viewsel'); s.value = 'side-by-side';"
                       " s.dispatchEvent(new Event('change')); })()")
            browser.wait("document.getElementById('badge-mode').textContent === 'side-by-side · lite'")
            browser.wait(f"Number(document.getElementById('feed').dataset.seq) > {seq + 3}")
            after = _crop(browser.screenshot(), feed)
            moving, changed = np.abs(still - before).mean(), np.abs(after - still).mean()
            assert controls.settings.view == "side-by-side"
            assert changed > 3 * moving and changed > 10, (moving, changed)
    finally:
        browser.close()

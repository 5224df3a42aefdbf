"""Temperatures: counts -> Celsius (T-linear, linear, emissivity), the scene's min/max/spot on
the registered counts of a synthetic scene of known temperatures (15 C background, 34 C bodies),
the overlay's colours, /metrics of a real run with the monitor on 127.0.0.1, and the monitor's
raw snapshot (16-bit PNG to the exact counts, Celsius CSV). The window's side is in test_display.py."""
from __future__ import annotations

import dataclasses
import http.client
import io
import json
import math
import re
import time
import zipfile

import cv2
import numpy as np
import pytest
from helpers import REPO, free_port, get
from prometheus_client.parser import text_string_to_metric_families
from test_monitor import _wait_for, running

from streamfuse.capture.synthetic import make_scene
from streamfuse.controls import Controls
from streamfuse.errors import RigError
from streamfuse.fuse.palettes import get_palette
from streamfuse.radiometry import (
    RadiometryConfig,
    celsius_from_counts,
    counts_from_celsius,
    measure,
    object_kelvin,
)
from streamfuse.register.registrar import warp_ir_to_vis
from streamfuse.rig import load_rig
from streamfuse.sinks import MonitorSinkConfig
from streamfuse.sinks.overlay import (
    COLD_BGR,
    ISOTHERM_RAMPS,
    draw_temperatures,
    frame_from_picture,
    hot_bgr,
    scale_bar_rect,
)

RIG = REPO / "rigs" / "demo-radiometric.yaml"
BACKGROUND_C, BODY_C = 15.0, 34.0
TLINEAR = RadiometryConfig("tlinear")


def test_tlinear_counts_are_kelvin_times_100_and_zero_is_no_data():
    counts = np.array([[28815, 30715], [0, 27315]], np.uint16)
    c = celsius_from_counts(counts, TLINEAR)
    assert c.dtype == np.float32 and math.isnan(c[1, 0])
    np.testing.assert_allclose(c[[0, 0, 1], [0, 1, 1]], [15.0, 34.0, 0.0], atol=1e-3)
    low_gain = RadiometryConfig("tlinear", tlinear_resolution=0.1)
    assert celsius_from_counts(np.array([3071]), low_gain)[0] == pytest.approx(33.95, abs=1e-3)
    linear = RadiometryConfig("linear", linear_gain=0.05, linear_offset_c=-400.0)
    assert celsius_from_counts(np.array([8000]), linear)[0] == pytest.approx(0.0, abs=1e-3)
    assert counts_from_celsius(34.0, TLINEAR) == pytest.approx(30715, abs=1e-6)


def test_emissivity_follows_the_graybody_law_and_inverts():
    cfg = RadiometryConfig("tlinear", emissivity=0.9, reflected_c=20.0)
    counts = round(counts_from_celsius(37.0, cfg))
    # A surface warmer than its surroundings reads colder than it is (it emits less, reflects the room).
    assert counts < 31015
    assert celsius_from_counts(np.array([counts]), cfg)[0] == pytest.approx(37.0, abs=0.01)
    t_meas, t_refl = counts / 100, 293.15
    expected = ((t_meas ** 4 - 0.1 * t_refl ** 4) / 0.9) ** 0.25 - 273.15
    assert celsius_from_counts(np.array([counts]), cfg)[0] == pytest.approx(expected, abs=1e-3)
    assert math.isnan(object_kelvin(np.array([50.0]), 0.5, 300.0)[0])  # below the reflection alone


def test_rig_keys_are_checked_with_one_line(tmp_path):
    rig = load_rig(RIG)
    assert rig.thermal.radiometry_config == RadiometryConfig("tlinear", isotherm_c=30.0)
    text = RIG.read_text().replace("calibration: ../", f"calibration: {REPO}/")
    for bad, message in (("  isotherm_c: 30\n", None),
                         ("  radiometry: tlinear\n", "  radiometry: linear\n"),
                         ("  radiometry: tlinear\n", "  radiometry: tlinear\n  tlinear_resolution: 0.02\n"),
                         ("  radiometry: tlinear\n", "  radiometry: tlinear\n  emissivity: 1.5\n")):
        path = tmp_path / "rig.yaml"
        path.write_text(text.replace("  radiometry: tlinear\n", "") if message is None else text.replace(bad, message))
        with pytest.raises(RigError) as err:
            load_rig(path)
        assert "\n" not in str(err.value) and "thermal." in str(err.value), err.value
    path.write_text(text.replace("    pixel_format: gray16\n", "    pixel_format: gray8\n"))
    with pytest.raises(RigError, match="tlinear reads raw 16-bit counts"):
        load_rig(path)


@pytest.fixture(scope="module")
def scene():
    rig = load_rig(RIG)
    return rig, make_scene(rig.scene, rig.ir, rig.vis)


def test_the_known_scene_is_exact_t_linear_counts(scene):
    rig, sc = scene
    raw = sc.render_ir(1.0, 3)
    assert set(np.unique(raw).tolist()) == {28815, 30715}
    assert make_scene(dataclasses.replace(rig.scene, netd_mk=40), rig.ir, rig.vis).render_ir(1.0, 3).std() > 0


def test_min_max_and_spot_on_the_registered_counts(scene):
    rig, sc = scene
    t_s = 1.0
    counts = warp_ir_to_vis(sc.render_ir(t_s, 30), sc.H_vis_from_ir, sc.vis_size)
    bodies = sc.body_mask_vis(t_s)
    inner = cv2.erode(bodies.view(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ys, xs = np.nonzero(inner)
    w, h = sc.vis_size
    on_body = ((xs[0] + 0.5) / w, (ys[0] + 0.5) / h)
    t = measure(counts, TLINEAR, on_body)
    assert t.min_c == pytest.approx(BACKGROUND_C, abs=0.01) and t.max_c == pytest.approx(BODY_C, abs=0.01)
    assert t.spot_c == pytest.approx(BODY_C, abs=0.01)
    assert t.spot_xy == (xs[0], ys[0])
    grown = cv2.dilate(bodies.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert grown[t.max_xy[1], t.max_xy[0]] and not grown[t.min_xy[1], t.min_xy[0]]
    assert counts[t.min_xy[1], t.min_xy[0]] == 28815  # never a pixel at the IR's blended rim
    assert measure(counts, TLINEAR, (0.5, 0.1)).spot_c == pytest.approx(BACKGROUND_C, abs=0.01)
    assert measure(np.zeros_like(counts), TLINEAR, (0.5, 0.5)).max_c is None


def test_the_overlay_draws_markers_bar_and_isotherm_in_the_palette(scene):
    rig, sc = scene
    counts = warp_ir_to_vis(sc.render_ir(1.0, 30), sc.H_vis_from_ir, sc.vis_size)
    cfg = RadiometryConfig("tlinear", isotherm_c=30.0)
    t = measure(counts, cfg, (0.5, 0.1), (28815.0, 29765.0, 30715.0))
    grey = np.full((480, 640, 3), 128, np.uint8)
    pictures = {p: draw_temperatures(grey, t, p) for p in ("white-hot", "black-hot", "ironbow")}
    assert (grey == 128).all()  # drawn on a copy
    for palette, out in pictures.items():
        mx, my = t.max_xy
        inside = out[my + 6, mx] if my + 12 < 480 else out[my - 6, mx]
        assert tuple(inside) == hot_bgr(palette)
        x, y, bw, bh = scale_bar_rect(out.shape)
        column = out[y:y + bh, x + bw // 2].astype(int)
        assert tuple(column[-1]) == tuple(get_palette(palette)[0, 0])  # bottom: the palette's cold end
        tinted = (counts >= 30715) & (cv2.erode((counts > 0).view(np.uint8), np.ones((25, 25), np.uint8)) > 0)
        far = np.argwhere(tinted)  # a tinted pixel away from the markers and their labels
        ty, tx = far[np.argmax(np.hypot(far[:, 0] - my, far[:, 1] - mx))]
        expected = np.rint(0.7 * ISOTHERM_RAMPS[palette][255] + 0.3 * 128)
        assert np.abs(out[ty, tx].astype(int) - expected).max() <= 1
    mnx, mny = t.min_xy
    assert COLD_BGR in {tuple(int(v) for v in pictures["ironbow"][mny + dy, mnx]) for dy in range(-9, 10)}
    # The isotherm gives the palette something to do even on a luma picture.
    assert np.abs(pictures["white-hot"].astype(int) - pictures["ironbow"]).sum() > 1000


def test_a_click_in_side_by_side_is_a_point_of_the_frame():
    assert frame_from_picture("fused", 0.25, 0.75) == (0.25, 0.75)
    for x in (0.2, 0.7):  # either half of side-by-side shows the whole frame
        fx, fy = frame_from_picture("side-by-side", x, 0.5)
        assert fx == pytest.approx(0.4) and fy == pytest.approx(0.5)


def _samples(port: int) -> dict:
    body = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    return {s.labels.get("stat"): s.value for f in text_string_to_metric_families(body)
            if f.name == "streamfuse_scene_temperature_celsius" for s in f.samples}


def test_metrics_and_the_raw_snapshot_of_a_run(scene):
    rig, sc = scene
    port = free_port()
    rig = dataclasses.replace(rig, sinks=(MonitorSinkConfig(port=port),))
    controls = Controls(rig.fusion)
    controls.update(spot=(0.5, 0.1))
    base = f"http://127.0.0.1:{port}"
    with running(rig, controls=controls):
        _wait_for(f"{base}/health")
        deadline = time.monotonic() + 20
        while not {"min", "max", "spot"} <= set(_samples(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        values = _samples(port)
        status, body, headers = get(f"{base}/snapshot.zip")
        stats = json.loads(get(f"{base}/stats.json")[1])
        # The page's click: a point of the picture as shown, kept as a point of the frame.
        csrf = re.search(rb'name="csrf" content="([^"]+)"', get(f"{base}/")[1]).group(1).decode()
        for change, spot in (({"spot": [0.75, 0.25]}, (0.75, 0.25)),
                             ({"view": "side-by-side", "spot": [0.7, 0.5]}, (0.4, 0.5))):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/control", body=json.dumps(change),
                         headers={"Content-Type": "application/json", "X-Streamfuse-CSRF": csrf})
            assert conn.getresponse().status == 200
            assert controls.settings.spot == pytest.approx(spot)
    assert values["min"] == pytest.approx(BACKGROUND_C, abs=0.1)
    assert values["max"] == pytest.approx(BODY_C, abs=0.1)
    assert values["spot"] == pytest.approx(BACKGROUND_C, abs=0.1)
    assert stats["radiometric"] and stats["temperatures"]["max_c"] == pytest.approx(BODY_C, abs=0.1)

    assert status == 200 and headers["Content-Type"] == "application/zip"
    files = zipfile.ZipFile(io.BytesIO(body))
    names = {n.split(".", 1)[1]: n for n in files.namelist()}
    assert set(names) == {"png", "ir.png", "json", "celsius.csv"}
    assert names["ir.png"].startswith("streamfuse-")
    sidecar = json.loads(files.read(names["json"]))
    raw = cv2.imdecode(np.frombuffer(files.read(names["ir.png"]), np.uint8), cv2.IMREAD_UNCHANGED)
    seq = sidecar["ir"]["seq"]
    expected = sc.render_ir(seq * round(1e9 / rig.ir.fps) / 1e9, seq)
    assert raw.dtype == np.uint16 and np.array_equal(raw, expected)  # the exact counts
    assert sidecar["ir"]["size"] == [640, 512] and sidecar["ir"]["t_ns"] > 0 and "captured_at" in sidecar["ir"]
    assert sidecar["radiometry"]["radiometry"] == "tlinear"
    celsius = np.loadtxt(io.StringIO(files.read(names["celsius.csv"]).decode()), delimiter=",")
    assert celsius.shape == (512, 640)
    assert set(np.unique(celsius).tolist()) == {BACKGROUND_C, BODY_C}
    np.testing.assert_allclose(celsius, expected / 100 - 273.15, atol=0.006)

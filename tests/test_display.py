"""The display window: a real Tk window on Xvfb, driven with real key presses (xdotool),
seen through a screenshot of the X screen; and the one-line error where there is no screen."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from helpers import REPO, free_port, get, need_program, streamfuse, write_demo_rig

SCREEN = (800, 600)


def test_without_a_screen_it_says_so_and_points_at_the_browser():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = streamfuse("run", "rigs/demo.yaml", "--display", "--frames", "5", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no screen" in lines[0] and "--serve 127.0.0.1:8080" in lines[0], result.stderr


@pytest.fixture
def xvfb():
    """A virtual X screen of its own; yields its DISPLAY value."""
    binary = need_program("Xvfb")
    need_program("xdotool")
    read, write = os.pipe()
    proc = subprocess.Popen([binary, "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp"], pass_fds=(write,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    assert number.isdigit(), "Xvfb did not start"
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


def _xdotool(display: str, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True,
                          text=True, timeout=10).stdout.strip()


def _screenshot(display: str) -> np.ndarray:
    """The whole X screen as BGR, grabbed through FFmpeg's x11grab (inside PyAV), without the pointer."""
    with av.open(display, format="x11grab", options={"video_size": f"{SCREEN[0]}x{SCREEN[1]}", "draw_mouse": "0"}) as c:
        return next(c.decode(video=0)).to_ndarray(format="bgr24")


def _setting(port: int, label: str) -> str:
    text = get(f"http://127.0.0.1:{port}/metrics", timeout=5)[1].decode()
    return re.search(rf'streamfuse_settings_info{{.*{label}="([^"]+)"', text).group(1)


def _until(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_window_shows_the_picture_and_answers_keys(xvfb, tmp_path):
    rig = write_demo_rig(tmp_path / "rig.yaml", pace="realtime")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamfuse", "run", str(rig), "--display",
                             "--serve", f"127.0.0.1:{port}", "--quiet"], cwd=tmp_path,
                            env={**os.environ, "DISPLAY": xvfb}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        window = _until(lambda: _xdotool(xvfb, "search", "--name", "^streamfuse$"), 30).splitlines()[0]
        _until(lambda: _setting(port, "mode"))
        _xdotool(xvfb, "windowfocus", "--sync", window)
        _xdotool(xvfb, "key", "m")
        _until(lambda: _setting(port, "mode") == "pyramid")  # lite (the default) -> pyramid
        _xdotool(xvfb, "key", "v", "v", "v")
        _until(lambda: _setting(port, "view") == "side-by-side")
        _xdotool(xvfb, "key", "s")
        _until(lambda: list(tmp_path.glob("streamfuse-*.png")))
        time.sleep(0.5)
        shot = _screenshot(xvfb)
        cv2.imwrite(str(tmp_path / "window.png"), shot)  # for a person to look at (pytest --basetemp)
        _xdotool(xvfb, "key", "q")
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "fused frames" in stderr and "Traceback" not in stderr
    picture = shot[:480, :640].astype(int)
    assert picture.std() > 20, "the window shows no picture"
    assert (shot[480:, :].max() == 0) and (shot[:, 640:].max() == 0), "the window is not 640x480 at the corner"
    # Side by side: two half-size pictures (rows 120-360) on black bands above and below.
    assert picture[70:115].max() < 60 and picture[365:].max() < 60 and picture[140:340].std() > 20
    # The overlay's white text, top left, over the darkened band.
    assert (shot[:40, :300] > 230).all(axis=2).sum() > 100
    pictures = [p for p in tmp_path.glob("streamfuse-*.png") if not p.name.endswith(".ir.png")]
    snapshot = cv2.imread(str(pictures[0]))
    assert snapshot.shape == (480, 640, 3)
    # The raw IR frame beside it, 16 bits, with its capture time; no temperatures without radiometry.
    stem = str(pictures[0])[:-len(".png")]
    raw = cv2.imread(f"{stem}.ir.png", cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (512, 640)
    assert json.loads(Path(f"{stem}.json").read_text())["ir"]["t_ns"] > 0
    assert not Path(f"{stem}.celsius.csv").exists()


def test_the_window_shows_the_temperatures_of_a_known_scene(xvfb, tmp_path):
    """rigs/demo-radiometric.yaml (15 C background, 34 C bodies, T-linear counts): a click moves
    the spot meter; the paused window shows exactly the snapshot's picture, whose sidecar holds
    the values drawn (spot, min, max within 0.1 K), with the markers and the scale bar where
    and in the colours the overlay draws them."""
    from streamfuse.fuse.palettes import get_palette
    from streamfuse.sinks.overlay import hot_bgr, scale_bar_rect

    text = (REPO / "rigs" / "demo-radiometric.yaml").read_text()
    rig = tmp_path / "rig.yaml"
    rig.write_text(text.replace("calibration: ../", f"calibration: {REPO}/"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamfuse", "run", str(rig), "--display",
                             "--serve", f"127.0.0.1:{port}", "--quiet"], cwd=tmp_path,
                            env={**os.environ, "DISPLAY": xvfb}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    click = (480, 120)  # always the 15 C background: the bodies stay below a third of the height
    try:
        window = _until(lambda: _xdotool(xvfb, "search", "--name", "^streamfuse$"), 30).splitlines()[0]
        _until(lambda: _setting(port, "mode"))
        _xdotool(xvfb, "windowfocus", "--sync", window)
        _xdotool(xvfb, "mousemove", str(click[0]), str(click[1]), "click", "1")
        _until(lambda: json.loads(get(f"http://127.0.0.1:{port}/stats.json")[1])["temperatures"]["spot_xy"]
               == list(click))
        _xdotool(xvfb, "key", "space")
        time.sleep(0.5)
        _xdotool(xvfb, "key", "s")
        _until(lambda: list(tmp_path.glob("streamfuse-*.celsius.csv")))
        time.sleep(0.5)
        shot = _screenshot(xvfb)
        cv2.imwrite(str(tmp_path / "window.png"), shot)  # for a person to look at (pytest --basetemp)
        _xdotool(xvfb, "key", "q")
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    stem = str(next(tmp_path.glob("streamfuse-*.json")))[:-len(".json")]
    values = json.loads(Path(f"{stem}.json").read_text())["temperatures"]
    assert values["spot_c"] == pytest.approx(15.0, abs=0.1) and tuple(values["spot_xy"]) == click
    assert values["min_c"] == pytest.approx(15.0, abs=0.1) and values["max_c"] == pytest.approx(34.0, abs=0.1)
    picture = cv2.imread(f"{stem}.png")
    raw = cv2.imread(f"{stem}.ir.png", cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (512, 640) and set(np.unique(raw)) == {28815, 30715}
    # Below the text band, the window shows exactly the snapshot's picture (overlay included).
    assert np.array_equal(shot[100:480, :640], picture[100:])
    x, y = values["spot_xy"]
    assert tuple(shot[y, x - 6]) == (255, 255, 255) and tuple(shot[y - 6, x]) == (255, 255, 255)  # crosshair
    mx, my = values["max_xy"]
    inside = shot[my + 6, mx] if my + 12 < 480 else shot[my - 6, mx]
    assert tuple(int(v) for v in inside) == hot_bgr("ironbow")
    bx, by, bw, bh = scale_bar_rect(shot[:480, :640].shape)
    assert tuple(shot[by + bh - 1, bx + bw // 2]) == tuple(get_palette("ironbow")[0, 0])
    # The labels beside the bar read the display range: its top is the scene's hottest, 34 C.
    assert values["scale_c"][2] == pytest.approx(34.0, abs=0.1)

"""Shared test helpers: where the shared data is, and small video files made in code."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test if absent, except on CI where it must exist."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{path} is missing on CI; the shared data must sit beside the checkout")
        pytest.skip(f"shared data not found at {path} (expected ../shared/data beside the checkout)")
    return path


def need_program(name: str) -> str:
    """The path of a system program a test needs (Xvfb, chromium, ...); skips the test if it is
    not installed, except on CI, where .ci/run installs it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{name} is missing on CI; .ci/run must install it")
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10, **headers: str) -> tuple[int, bytes, dict]:
    """(status, body, headers) of a GET on a loopback URL; HTTP errors are answers, not exceptions."""
    import urllib.error
    import urllib.request

    assert url.startswith("http://127."), "tests talk to loopback addresses only"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def write_demo_rig(path: Path, pace: str = "realtime", sinks: str = "[]") -> Path:
    """rigs/demo.yaml at `pace` with `sinks` (YAML text), written to `path`."""
    text = (REPO / "rigs" / "demo.yaml").read_text()
    text = text.replace("calibration: ../calibration/demo.yaml", f"calibration: {REPO / 'calibration' / 'demo.yaml'}")
    text = text.replace("sinks: []", f"sinks: {sinks}")
    text = text.replace("    pace: realtime\n", f"    pace: {pace}\n")
    path.write_text(text)
    return path


def streamfuse(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "streamfuse", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25, codec: str = "libx264",
                pix_fmt: str = "yuv420p", options: dict | None = None) -> None:
    """Encode `frames` (gray8, gray16 or bgr24 arrays) with PyAV."""
    import av

    fmt = {np.dtype(np.uint16): "gray16le"}.get(frames[0].dtype, "gray" if frames[0].ndim == 2 else "bgr24")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = pix_fmt
        if options:
            out.options.update({k: v for k, v in options.items() if k == "movflags"})
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format=fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def read_video(path: Path) -> tuple[list[np.ndarray], Fraction, float]:
    """(frames as bgr24, average rate, duration in s) of a video file."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(s)]
        duration = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
        return frames, s.average_rate, duration

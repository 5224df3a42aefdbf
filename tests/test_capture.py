"""One contract every source type passes, plus 16-bit fidelity and failure reporting."""
from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest
from helpers import write_video
from stream_servers import MjpegServer, RtspServer, TcpStreamer

from streamfuse.capture import open_sources
from streamfuse.capture.network import NetworkConfig, NetworkSource
from streamfuse.capture.replay import ReplayConfig, open_replay
from streamfuse.capture.synthetic import SceneConfig, SyntheticConfig
from streamfuse.capture.uvc import UvcConfig, UvcSource
from streamfuse.errors import RuntimeFailure, SourceError
from streamfuse.frames import PIXEL_FORMATS, Frame, now_ns

N = 12  # frames read per source


def _pattern16(i: int, size=(96, 64)) -> np.ndarray:
    """A 16-bit frame using the whole range, different for every i."""
    w, h = size
    ramp = (np.arange(w * h, dtype=np.uint32).reshape(h, w) * 37 + i * 1009) % 65536
    return ramp.astype(np.uint16)


def _colour(i: int, size=(96, 64)) -> np.ndarray:
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 2 + i) % 256
    img[..., 1] = 128
    img[..., 2] = (np.arange(h)[:, None] * 3) % 256
    return img


class FakeCapture:
    """Stands in for cv2.VideoCapture: replays frames like a V4L2 camera would.

    A 16-bit camera only hands out raw uint16 frames once the Y16 FOURCC was requested and RGB
    conversion turned off, as real UVC drivers under OpenCV do; otherwise 8-bit BGR arrives.
    After the frames run out, read() fails as an unplugged camera does.
    """

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0, opens: bool = True):
        self.frames = list(frames)
        self.fps = fps
        self.opens = opens
        self.props: dict[int, float] = {}

    def isOpened(self):
        return self.opens

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else self.props.get(prop, 0.0)

    def read(self):
        if not self.frames:
            return False, None
        image = self.frames.pop(0)
        raw = self.props.get(cv2.CAP_PROP_CONVERT_RGB, 1) == 0 and \
            self.props.get(cv2.CAP_PROP_FOURCC) == cv2.VideoWriter_fourcc(*"Y16 ")
        if image.dtype == np.uint16 and not raw:
            image = cv2.cvtColor((image >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        return True, image

    def release(self):
        self.frames = []


def _fake_uvc(monkeypatch, frames, **kwargs) -> FakeCapture:
    fake = FakeCapture(frames, **kwargs)
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a, **k: fake)
    return fake


# Each factory returns (source, finite): finite sources end with None after their frames.
# Servers a factory starts are stopped by `cleanup` (a contextlib.ExitStack) after the test.
def _synthetic(tmp_path, monkeypatch, role, cleanup):
    ir_cfg = SyntheticConfig(size=(160, 128), fps=30, pixel_format="gray16")
    vis_cfg = SyntheticConfig(size=(160, 120), fps=25)
    ir, vis = open_sources(ir_cfg, vis_cfg, SceneConfig(seed=1))
    return (ir if role == "ir" else vis), False


def _video_file(tmp_path, monkeypatch, role, cleanup):
    if role == "ir":
        write_video(tmp_path / "ir.mkv", [_pattern16(i) for i in range(N)], codec="ffv1", pix_fmt="gray16le")
        return open_replay("ir", ReplayConfig(path=tmp_path / "ir.mkv")), True
    write_video(tmp_path / "vis.mp4", [_colour(i) for i in range(N)])
    return open_replay("vis", ReplayConfig(path=tmp_path / "vis.mp4")), True


def _folder(tmp_path, monkeypatch, role, cleanup):
    folder = tmp_path / role
    folder.mkdir()
    for i in range(N):
        cv2.imwrite(str(folder / f"{i:04d}.png"), _pattern16(i) if role == "ir" else _colour(i))
    return open_replay(role, ReplayConfig(path=folder, fps=9)), True


def _uvc(tmp_path, monkeypatch, role, cleanup):
    make = _pattern16 if role == "ir" else _colour
    # open() takes one frame to check the format and drops it, as it is stale by the first read.
    _fake_uvc(monkeypatch, [make(99)] + [make(i) for i in range(N)])
    return UvcSource(role, UvcConfig(device=0, size=(96, 64))), False


def _network(tmp_path, monkeypatch, role, cleanup):
    # A real stream on 127.0.0.1: 16-bit IR as lossless FFV1 over TCP, visible as MJPEG over HTTP.
    server = TcpStreamer(_pattern16, fps=60) if role == "ir" else MjpegServer(_colour, fps=60)
    cleanup.enter_context(server)
    return NetworkSource(role, NetworkConfig(url=server.url, timeout_s=3)), False


def _rtsp(tmp_path, monkeypatch, role, cleanup):
    # H.264 over RTP from an RTSP server on 127.0.0.1 (8-bit: the IR source widens it to gray16).
    frame = (lambda i: (_pattern16(i) >> 8).astype(np.uint8)) if role == "ir" else _colour
    server = cleanup.enter_context(RtspServer(frame, fps=60))
    fmt = "gray16" if role == "ir" else "auto"
    return NetworkSource(role, NetworkConfig(url=server.url, timeout_s=3, pixel_format=fmt)), False


def _archive(tmp_path, monkeypatch, role, cleanup):
    # A raw archive written by the recording's own writer: 16-bit IR and colour, 40 ms apart.
    from streamfuse.capture.archive import ArchiveConfig, ArchiveSource
    from streamfuse.frames import FramePair
    from streamfuse.sinks.rawarchive import RawArchiveFile

    archive = RawArchiveFile(tmp_path / "take.raw.mkv", {"cameras": {"vis": {"fps": "25"}, "ir": {"fps": "25"}}})
    for i in range(N):
        t = 1_000_000_000 + i * 40_000_000
        ir, vis = Frame(_pattern16(i), t, i, "ir", "gray16", t), Frame(_colour(i), t, i, "vis", "bgr24", t)
        archive.write(FramePair(ir, vis))
    archive.close()
    return ArchiveSource(role, ArchiveConfig(path=tmp_path / "take.raw.mkv")), True


FACTORIES = {"synthetic": _synthetic, "video_file": _video_file, "folder": _folder, "uvc": _uvc,
             "network": _network, "rtsp": _rtsp, "archive": _archive}


@pytest.fixture(params=[(kind, role) for kind in FACTORIES for role in ("ir", "vis")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def source(request, tmp_path, monkeypatch):
    kind, role = request.param
    with contextlib.ExitStack() as cleanup:
        src, finite = FACTORIES[kind](tmp_path, monkeypatch, role, cleanup)
        yield src, finite
        src.close()


def test_source_contract(source):
    src, finite = source
    src.open()
    assert src.size[0] > 0 and src.size[1] > 0 and src.fps > 0
    assert src.pixel_format in PIXEL_FORMATS
    assert src.pixel_format == ("bgr24" if src.name == "vis" else "gray16")
    src.start_clock(1_000_000_000)
    frames = [src.read() for _ in range(N)]
    ndim, dtype = PIXEL_FORMATS[src.pixel_format]
    for k, f in enumerate(frames):
        assert isinstance(f, Frame) and f.camera == src.name and f.seq == k
        assert f.image.ndim == ndim and f.image.dtype == dtype and f.size == src.size
        assert f.pixel_format == src.pixel_format and f.recv_ns > 0
    times = [f.t_ns for f in frames]
    assert all(b > a for a, b in zip(times, times[1:])), "capture times must strictly increase"
    if finite:
        assert src.read() is None
    src.close()
    src.close()  # twice is fine


@pytest.mark.parametrize("kind", ["video_file", "folder", "uvc", "network"])
def test_16bit_values_arrive_unchanged(kind, tmp_path, monkeypatch):
    with contextlib.ExitStack() as cleanup:
        src, _ = FACTORIES[kind](tmp_path, monkeypatch, "ir", cleanup)
        src.open()
        src.start_clock(0)
        frames = [src.read().image for _ in range(N)]
        src.close()
    # A live stream is joined mid-way: find which pattern it starts at, then expect every next one.
    first = next((j for j in range(1000) if np.array_equal(frames[0], _pattern16(j))), None)
    assert first == 0 or (kind == "network" and first is not None), "the first frame is no pattern sent"
    for i, image in enumerate(frames):
        np.testing.assert_array_equal(image, _pattern16(first + i))


def test_replay_uses_the_recorded_timestamps(tmp_path):
    write_video(tmp_path / "v.mp4", [_colour(i) for i in range(10)], fps=22)
    src = open_replay("vis", ReplayConfig(path=tmp_path / "v.mp4"))
    src.open()
    src.start_clock(5_000_000_000)
    times = [src.read().t_ns for _ in range(10)]
    assert src.fps == 22
    assert times == [5_000_000_000 + round(k * 1e9 / 22) for k in range(10)]


def test_recorded_pace_holds_frames_until_their_time(tmp_path):
    write_video(tmp_path / "v.mp4", [_colour(i) for i in range(8)], fps=20)
    src = open_replay("vis", ReplayConfig(path=tmp_path / "v.mp4", pace="recorded"))
    src.open()
    assert src.realtime
    t0 = now_ns()
    src.start_clock(t0)
    frames = [src.read() for _ in range(8)]
    # Frame k is not handed out before t0 + k/20 s, and then carries that recorded time.
    assert all(f.recv_ns >= f.t_ns == t0 + round(k * 1e9 / 20) for k, f in enumerate(frames))
    assert frames[-1].recv_ns - t0 >= 7 / 20 * 1e9


def test_uvc_camera_that_cannot_open(monkeypatch):
    _fake_uvc(monkeypatch, [], opens=False)
    with pytest.raises(SourceError, match="ir camera /dev/video7: cannot open"):
        UvcSource("ir", UvcConfig(device="/dev/video7")).open()


def test_uvc_driver_that_converts_16bit_to_8bit_is_refused(monkeypatch):
    fake = _fake_uvc(monkeypatch, [_pattern16(0)])
    fake.set = lambda prop, value: prop != cv2.CAP_PROP_CONVERT_RGB and FakeCapture.set(fake, prop, value)
    with pytest.raises(SourceError, match="16-bit"):
        UvcSource("ir", UvcConfig(device=0, size=(96, 64))).open()


def test_uvc_unplugged_during_capture(monkeypatch):
    _fake_uvc(monkeypatch, [_colour(i) for i in range(3)])
    src = UvcSource("vis", UvcConfig(device=0, size=(96, 64), reconnect=False))
    src.open()  # takes one frame to check the format
    src.read(), src.read()
    with pytest.raises(RuntimeFailure, match="stopped delivering"):
        src.read()


def test_folder_with_a_corrupt_image(tmp_path):
    folder = tmp_path / "ir"
    folder.mkdir()
    cv2.imwrite(str(folder / "0000.png"), _pattern16(0))
    (folder / "0001.png").write_bytes(b"not a png")
    src = open_replay("ir", ReplayConfig(path=folder))
    src.open()
    src.read()
    with pytest.raises(RuntimeFailure, match="0001.png"):
        src.read()


def test_empty_folder(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        open_replay("vis", ReplayConfig(path=tmp_path)).open()

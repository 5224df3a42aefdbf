"""Network cameras, served on 127.0.0.1 by the tests: losing a stream in the middle of a
recording and getting it back, streams that do not answer, and streams that come back changed.

The frames are real (M3SVD, ../shared/data): thermal over UDP as MPEG-TS, visible as MJPEG
over HTTP, the two kinds of stream most network cameras and encoders offer.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from helpers import data_path, streamfuse
from stream_servers import MjpegServer, RtspServer, TcpStreamer, UdpStreamer, free_port

from streamfuse.capture.network import NetworkConfig, NetworkSource
from streamfuse.frames import now_ns
from streamfuse.pipeline import run
from streamfuse.rig import load_rig

SIZE = (320, 240)
CLIP = ("video", "m3svd_frames", "0115_1831")


@pytest.fixture(scope="module")
def clip() -> dict[str, list[np.ndarray]]:
    """The night clip at 320x240: IR as 8-bit grey, visible as BGR."""
    out = {}
    for role, flag in (("ir", cv2.IMREAD_GRAYSCALE), ("vis", cv2.IMREAD_COLOR)):
        files = sorted(data_path(*CLIP, role).glob("*.png"))
        out[role] = [cv2.resize(cv2.imread(str(f), flag), SIZE, interpolation=cv2.INTER_AREA) for f in files]
    return out


def write_rig(path: Path, ir_url: str, vis_url: str, extra: str = "", record: Path | None = None) -> Path:
    sinks = f"[{{type: mp4, path: {record}, preset: ultrafast}}]" if record else "[]"
    path.write_text(f"""
name: two-network-cameras
sources:
  ir: {{type: network, url: "{ir_url}", timeout_s: 2}}
  vis: {{type: network, url: "{vis_url}", timeout_s: 2}}
calibration: null
sync: {{tolerance_ms: 25}}
sinks: {sinks}
{extra}
""")
    return path


def _mp4_times(path: Path) -> np.ndarray:
    """Presentation times (s) of every frame in an MP4 file."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return np.array(sorted(float(f.pts * s.time_base) for f in c.decode(s)))


def test_ir_stream_killed_and_restarted_mid_recording(clip, tmp_path):
    """The thermal stream dies 2 s into a recording and returns 1.5 s later: the run goes on,
    the visible camera is shown alone meanwhile, and fusion resumes within 2 s of the return."""
    n = len(clip["ir"])
    ir_server = UdpStreamer(lambda i: clip["ir"][i % n], fps=30)
    vis_server = MjpegServer(lambda i: clip["vis"][i % n], fps=30)
    out = tmp_path / "rec.mp4"
    rig = load_rig(write_rig(tmp_path / "rig.yaml", ir_server.url, vis_server.url,
                             "live: {down_after_ms: 500}\nthermal: {agc: plateau}", record=out))
    result = {}

    def go():
        try:
            result["report"] = run(rig, duration_s=7.0)
        except BaseException as exc:  # reported below, on the test's thread
            result["error"] = exc

    with ir_server, vis_server:
        runner = threading.Thread(target=go)
        runner.start()
        time.sleep(2.5)   # ~0.5 s of opening, then 2 s of fusing
        killed_ns = now_ns()
        ir_server.stop()
        time.sleep(1.5)
        back_ns = now_ns()
        ir_server.start()
        runner.join(20)
    assert not runner.is_alive() and "error" not in result, result.get("error")
    report = result["report"]
    ir = report.sources["ir"]
    events = [(e.source, e.what, e.t_ns) for e in report.live.events]
    print("events:", [f"{e.line(report.t0_ns).strip()}" for e in report.live.events])

    assert ir.outages == 1 and ir.reconnects == 1 and report.sources_up == {"ir": True, "vis": True}
    down = next(t for s, what, t in events if (s, what) == ("ir", "down"))
    up = next(t for s, what, t in events if (s, what) == ("ir", "up"))
    resumed = next(t for s, what, t in events if (s, what) == ("fusion", "resumed"))
    assert killed_ns < down < back_ns < up <= resumed
    resume_s = (resumed - back_ns) / 1e9
    print(f"IR stream back -> fusing again: {resume_s:.2f} s; frames shown alone: {report.live.single_frames}")
    assert resume_s < 2.0
    assert report.live.single_frames > 15   # the visible camera, alone, for most of the 1.5 s
    assert report.sync.pairs > 100

    # The recording went on through the 1.5 s outage: frames before, during and after it. The
    # one hole is while the lost camera is not yet called down (down_after_ms, 0.5 s here): the
    # visible frames then still wait for a thermal partner and are dropped, counted. (Loose
    # bound: this machine's 2 cores are shared.)
    times = _mp4_times(out)
    print(f"recording: {len(times)} frames over {times[-1]:.2f} s, longest gap {np.diff(times).max():.2f} s")
    assert len(times) == report.frames
    assert times[-1] > 5.0 and np.diff(times).max() < 1.2
    assert report.stages["agc"].count > 0   # the thermal frames went through the rig's AGC


def test_ir_stream_lost_for_good_at_run_time_is_reported_and_the_run_ends_normally(clip, tmp_path):
    """Through the command line: the thermal stream stops 1 s in and never returns; the run
    shows NO SIGNAL placeholders (the rig's choice), exits 0 and says what happened."""
    n = len(clip["ir"])
    out = tmp_path / "rec.mp4"
    with UdpStreamer(lambda i: clip["ir"][i % n], fps=30) as ir_server, \
            MjpegServer(lambda i: clip["vis"][i % n], fps=30) as vis_server:
        rig = write_rig(tmp_path / "rig.yaml", ir_server.url, vis_server.url,
                        "live: {down_after_ms: 300, on_loss: no_signal}", record=out)
        threading.Timer(2.5, ir_server.stop).start()   # ~1.5 s of start-up, then 1 s of fusing
        result = streamfuse("run", rig, "--duration", 4, "--quiet", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "ir: DOWN" in result.stderr and "ir down" in result.stderr, result.stderr
    last = cv2.cvtColor(_last_frame(out), cv2.COLOR_BGR2GRAY)
    assert np.median(last) == pytest.approx(32, abs=3) and last.max() > 200   # NO SIGNAL on grey


def _last_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        frame = None
        for frame in c.decode(video=0):
            pass
        return frame.to_ndarray(format="bgr24")


@pytest.mark.parametrize("url, expected", [
    (f"http://127.0.0.1:{free_port()}/video", "ir stream http://127.0.0.1:.*: no stream \\(Connection refused\\)"),
    (f"udp://127.0.0.1:{free_port()}", "ir stream udp://127.0.0.1:.*: no answer within 1 s"),
    (f"srt://127.0.0.1:{free_port()}", "cannot open srt:// streams"),
], ids=["refused", "silent", "unsupported"])
def test_a_stream_that_does_not_answer_is_one_line_and_exit_2(tmp_path, url, expected):
    rig = tmp_path / "rig.yaml"
    rig.write_text(f"""
sources:
  ir: {{type: network, url: "{url}", timeout_s: 1}}
  vis: {{type: network, url: "http://127.0.0.1:{free_port()}/video", timeout_s: 1}}
calibration: null
""")
    start = time.monotonic()
    result = streamfuse("run", rig, "--duration", 1)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamfuse: error: "), result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert time.monotonic() - start < 15   # fails in seconds, not minutes


def test_a_camera_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path):
    rig = tmp_path / "rig.yaml"
    rig.write_text("""
sources:
  ir: {type: uvc, device: /dev/video97, size: [640, 512], pixel_format: gray16}
  vis: {type: uvc, device: /dev/video98, size: [640, 480]}
calibration: null
""")
    result = streamfuse("run", rig, "--duration", 1)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"streamfuse: error: {rig}: ir camera /dev/video97: cannot open it; check that "
                                     "it is plugged in and that `streamfuse devices` lists it")


def test_a_stream_that_comes_back_at_another_size_is_resized_and_reported():
    def pattern(size):
        w, h = size
        return lambda i: ((np.arange(w * h, dtype=np.uint32).reshape(h, w) * 37 + i * 1009) % 65536).astype(np.uint16)

    port = free_port()
    with TcpStreamer(pattern((96, 64)), fps=60, port=port) as server:
        src = NetworkSource("ir", NetworkConfig(url=server.url, timeout_s=2))
        src.open()
        before = [src.read() for _ in range(5)]
    with TcpStreamer(pattern((128, 96)), fps=60, port=port):
        after = [src.read() for _ in range(5)]
    src.close()
    assert src.size == (96, 64) and src.pixel_format == "gray16"
    assert all(f.size == (96, 64) and f.image.dtype == np.uint16 for f in before + after)
    assert [f.seq for f in before + after] == list(range(10))
    assert (src.stats.outages, src.stats.reconnects, src.stats.resized) == (1, 1, 5)
    assert "came back as 128x96" in src.stats.last_error and "converted to 96x64 gray16" in src.stats.last_error


def test_mjpeg_is_stamped_on_arrival_and_mpegts_on_its_own_clock(clip):
    """MJPEG over HTTP has no clock (its pts count frames): arrival times. MPEG-TS carries a
    90 kHz clock: mapped times, spaced by the stream's 1/30 s."""
    n = len(clip["ir"])
    with MjpegServer(lambda i: clip["vis"][i % n], fps=30) as mjpeg, \
            UdpStreamer(lambda i: clip["ir"][i % n], fps=30) as ts:
        vis = NetworkSource("vis", NetworkConfig(url=mjpeg.url))
        ir = NetworkSource("ir", NetworkConfig(url=ts.url))
        for src in (vis, ir):
            src.open()
        vis_frames = [vis.read() for _ in range(30)]
        ir_frames = [ir.read() for _ in range(30)]
        vis.close()
        ir.close()
    assert vis._clock is None and ir._clock is not None and vis.fps == 30 and ir.fps == 30
    # MJPEG: stamped as each frame arrived (its pts would say 1/25 s apart: the demuxer's guess),
    # after skipping what the server sent while the other stream was being opened.
    assert vis.stats.backlog >= 5
    assert all(0 <= f.recv_ns - f.t_ns < 50_000_000 for f in vis_frames)
    assert np.median(np.diff([f.t_ns for f in vis_frames])) / 1e6 == pytest.approx(1000 / 30, abs=2)
    gaps = np.diff([f.t_ns for f in ir_frames[10:]]) / 1e6
    assert np.all(gaps > 0) and np.median(np.abs(gaps - 1000 / 30)) < 1.0


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_over_tcp_and_udp_with_a_server_that_restarts(clip, transport):
    n = len(clip["vis"])
    port = free_port()
    server = RtspServer(lambda i: clip["vis"][i % n], fps=30, port=port)
    src = NetworkSource("vis", NetworkConfig(url=server.url, transport=transport, timeout_s=2))
    with server:
        src.open()
        before = [src.read() for _ in range(10)]
    assert server.transports[0].startswith("RTP/AVP/TCP" if transport == "tcp" else "RTP/AVP/UDP")
    with RtspServer(lambda i: clip["vis"][i % n], fps=30, port=port):
        after = [src.read() for _ in range(10)]
    src.close()
    assert [f.seq for f in before + after] == list(range(20))
    assert (src.stats.outages, src.stats.reconnects) == (1, 1)
    # The pictures are the clip's (H.264: close, not exact), on the stream's own 1/30 s clock.
    for frame in before + after:
        errors = [np.abs(frame.image.astype(int) - v.astype(int)).mean() for v in clip["vis"]]
        assert min(errors) < 8.0   # grey levels; a broken or blank picture is off by 50 or more
    gaps = np.diff([f.t_ns for f in before[3:]]) / 1e6
    assert np.median(np.abs(gaps - 1000 / 30)) < 1.0

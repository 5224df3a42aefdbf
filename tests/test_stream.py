"""The stream sink against receivers started here on 127.0.0.1 (tests/stream_receiver.py, a
PyAV reader in its own process): frames decoded, capture-to-decode latency, reconnecting
after the receiver restarts, a silent server that stalls nothing, and rig-file errors."""
from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
from helpers import REPO, write_demo_rig
from stream_receiver import code_image
from stream_servers import free_port

from streamfuse.errors import RigError, UsageError
from streamfuse.frames import Frame, now_ns
from streamfuse.pipeline import run
from streamfuse.rig import load_rig
from streamfuse.sinks import SinkRunner, StreamInfo, StreamSinkConfig, make_sink
from streamfuse.sinks.stream import has_srt

FPS = 25


class Receiver:
    """tests/stream_receiver.py on `url`, its decoded frames collected as they come."""

    def __init__(self, url: str):
        self.url = url
        self.frames: list[dict] = []
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "stream_receiver.py"), url],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            item = json.loads(line)
            if "code" in item:
                self.frames.append(item)

    def wait_frames(self, n: int, timeout: float = 20.0, after_code: int = -1) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(got := [f for f in self.frames if f["code"] > after_code]) < n:
            assert time.monotonic() < deadline, f"{self.url}: {len(got)} of {n} frames decoded"
            time.sleep(0.05)
        return got

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self._thread.join(5)


class Feeder:
    """Numbered frames at FPS into a stream sink on its own runner thread, as the pipeline does."""

    def __init__(self, url: str, **cfg):
        self.sink = make_sink(StreamSinkConfig(url=url, **cfg))
        self.sink.open(StreamInfo((320, 240), Fraction(FPS)))
        self.runner = SinkRunner(self.sink, "drop_oldest")
        self.t_ns: dict[int, int] = {}
        self.slowest_put_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self.runner.start()
        self._thread.start()

    def _feed(self) -> None:
        i, t0 = 0, time.monotonic()
        while not self._stop.is_set():
            t = now_ns()
            self.t_ns[i] = t
            start = time.monotonic()
            self.runner.put(Frame(code_image(i), t, i, "fused", "bgr24", t))
            self.slowest_put_s = max(self.slowest_put_s, time.monotonic() - start)
            i += 1
            self._stop.wait(max(0.0, t0 + i / FPS - time.monotonic()))

    def latencies_ms(self, frames: list[dict]) -> np.ndarray:
        return np.array([(f["t"] - self.t_ns[f["code"]]) / 1e6 for f in frames if f["code"] in self.t_ns])

    def wait_state(self, key: str, value: float, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while (state := self.sink.state())[key] < value:
            assert time.monotonic() < deadline, f"{key} stayed below {value}: {state}"
            time.sleep(0.05)
        return state

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.runner.finish(10)
        assert self.runner.error is None, self.runner.error


def _report(what: str, latency_ms: np.ndarray) -> None:
    print(f"{what}: {latency_ms.size} frames, capture-to-decoded latency p50 {np.median(latency_ms):.1f} ms, "
          f"p95 {np.percentile(latency_ms, 95):.1f} ms")


def test_rtsp_publish_latency_and_reconnect_after_the_receiver_restarts():
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    receiver = Receiver(url)
    feeder = Feeder(url, keyframe_s=0.5)
    try:
        frames = receiver.wait_frames(40)
        assert frames[-1]["size"] == [320, 240]
        codes = [f["code"] for f in frames]
        assert codes == sorted(codes) and len(set(codes)) == len(codes)  # in order, each once
        latency = feeder.latencies_ms(frames[10:])  # after the connection settled
        _report("rtsp", latency)
        assert np.median(latency) < 500
        receiver.stop()
        down = feeder.wait_state("outages", 1)
        time.sleep(1.0)
        assert feeder.sink.state()["skipped"] > down["skipped"]  # frames while nobody listens: counted
        last = max(codes)
        receiver = Receiver(url)
        again = receiver.wait_frames(20, after_code=last + 1)
        assert feeder.sink.state()["reconnects"] >= 1 and feeder.sink.state()["up"] == 1
        _report("rtsp after reconnect", feeder.latencies_ms(again[5:]))
    finally:
        feeder.stop()
        receiver.stop()
    assert feeder.slowest_put_s < 0.2  # the pipeline side never waited for the network


def test_udp_mpegts_frames_latency_and_a_restarted_receiver():
    url = f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    receiver = Receiver(url)
    time.sleep(1.0)  # UDP has no handshake: let it bind first
    feeder = Feeder(url, keyframe_s=0.5)
    try:
        frames = receiver.wait_frames(40)
        latency = feeder.latencies_ms(frames[10:])
        _report("udp", latency)
        assert np.median(latency) < 500
        receiver.stop()
        time.sleep(0.5)
        last = max(f["code"] for f in frames)
        receiver = Receiver(url)
        again = receiver.wait_frames(20, after_code=last + 1)  # from the next keyframe on
        assert again[0]["code"] - last <= FPS * 3
    finally:
        feeder.stop()
        receiver.stop()


def test_a_server_that_never_answers_stalls_nothing():
    with socket.socket() as server:  # accepts the connection, says nothing: FFmpeg's RTSP muxer would wait forever
        server.bind(("127.0.0.1", 0))
        server.listen()
        feeder = Feeder(f"rtsp://127.0.0.1:{server.getsockname()[1]}/live", timeout_s=1.0)
        try:
            state = feeder.wait_state("restarts", 1, timeout=10)
        finally:
            feeder.stop()
    assert state["up"] == 0 and feeder.slowest_put_s < 0.2
    assert feeder.runner.queue.dropped > 0  # what the stuck publisher could not take, counted


def test_the_rig_runs_with_a_stream_sink(tmp_path):
    url = f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    receiver = Receiver(url)
    time.sleep(1.0)
    try:
        rig = load_rig(write_demo_rig(tmp_path / "rig.yaml", sinks=f"[{{type: stream, url: '{url}'}}]"))
        report = run(rig, duration_s=4.0)
        sink = next(s for s in report.sinks if s.name == "stream")
        assert sink.error is None and sink.extra["sent"] > 20
        assert len(receiver.frames) > 10 and receiver.frames[0]["size"] == [640, 480]
    finally:
        receiver.stop()


@pytest.mark.parametrize("sink, message", [
    ("{type: stream, url: 'ftp://127.0.0.1/x'}", "url: expected a URL starting with rtsp://, udp://"),
    ("{type: stream, url: 'udp://127.0.0.1'}", "url: expected udp://HOST:PORT"),
    ("{type: stream, url: 'rtsp://127.0.0.1/x', crf: 99}", "crf: expected a value from 0 to 51"),
    ("{type: stream, url: 'rtsp://127.0.0.1/x', lookahead: 3}", "unknown key"),
])
def test_rig_file_errors_are_one_line(tmp_path, sink, message):
    with pytest.raises(RigError) as err:
        load_rig(write_demo_rig(tmp_path / "rig.yaml", sinks=f"[{sink}]"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_srt_says_whether_this_ffmpeg_has_it(tmp_path):
    rig = load_rig(write_demo_rig(tmp_path / "rig.yaml"))
    rig = dataclasses.replace(rig, sinks=(StreamSinkConfig(url="srt://127.0.0.1:9000"),))
    if has_srt():
        pytest.skip("this FFmpeg has SRT")
    with pytest.raises(UsageError, match="has no SRT; publish by rtsp://") as err:
        run(rig, max_frames=3)
    assert "\n" not in str(err.value)

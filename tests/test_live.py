"""Live cameras: repeats and FFC stalls, unplugging, driver buffering and stale frames,
stalls, device timestamps, mapping a stream's clock, and an hour of live merging.

Fake V4L2 cameras replace OpenCV's capture object (`ScriptedCamera`) and replay real
frames from ../shared/data (M3SVD, its IR frames made 16-bit like a Lepton's). Times that
matter to a test are simulated (`VirtualClock`), so nothing here waits for a real camera.
"""
from __future__ import annotations

import heapq
import os
import random
import threading
import time

import cv2
import numpy as np
import pytest
from helpers import data_path, streamfuse

from streamfuse.capture import live
from streamfuse.capture import uvc as uvc_module
from streamfuse.capture.base import CaptureStats, CaptureThread, Source, live_slot_depth
from streamfuse.capture.live import RepeatDetector, StreamClock
from streamfuse.capture.liveness import LiveConfig, Liveness
from streamfuse.capture.uvc import UvcConfig, UvcSource
from streamfuse.errors import SourceError
from streamfuse.frames import Frame, now_ns
from streamfuse.pipeline import LIVE_SLACK_NS
from streamfuse.sync import Merger, Pairer, min_frame_gap_ns

MS = 1_000_000
CLIP = ("video", "m3svd_frames", "0115_1831")


def lepton_frames() -> list[np.ndarray]:
    """20 real consecutive IR frames as a Lepton 3.5 would send them: 160x120, 14-bit counts."""
    folder = data_path(*CLIP, "ir")
    frames = []
    for png in sorted(folder.glob("*.png")):
        ir8 = cv2.resize(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE), (160, 120), interpolation=cv2.INTER_AREA)
        frames.append(ir8.astype(np.uint16) * 16 + 7000)
    return frames


def visible_frames() -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(data_path(*CLIP, "vis").glob("*.png"))]


class VirtualClock:
    def __init__(self, t_ns: int = 10**12):
        self.t = t_ns

    def __call__(self) -> int:
        return self.t


class ScriptedCamera:
    """cv2.VideoCapture for a V4L2 camera that follows a script, step by step per read():

    ("frame", image[, device_ms]) delivers a frame (with a V4L2 buffer timestamp, in ms on
    CLOCK_MONOTONIC, or a function giving it, if given); ("fail",) is a read that fails (unplugged); ("block", s)
    blocks for s seconds first. `opens` lists the answers of successive opens (isOpened);
    `on_read` runs at every read (e.g. to advance a virtual clock). Records what was set.
    """

    def __init__(self, script, opens=(True,), on_read=None):
        self.script = list(script)
        self.opens = list(opens)
        self.on_read = on_read
        self.set_calls: list[tuple[int, float]] = []
        self.device_ms = 0.0
        self._open = False

    def reopen(self, *args, **kwargs) -> "ScriptedCamera":
        self._open = self.opens.pop(0) if len(self.opens) > 1 else self.opens[0]
        return self

    def isOpened(self):
        return self._open

    def set(self, prop, value):
        self.set_calls.append((prop, value))
        return True

    def get(self, prop):
        return self.device_ms if prop == cv2.CAP_PROP_POS_MSEC else 0.0

    def read(self):
        if self.on_read:
            self.on_read()
        if not self.script:
            return False, None
        step = self.script.pop(0)
        if step[0] == "block":
            time.sleep(step[1])
            step = self.script.pop(0)
        if step[0] == "fail":
            return False, None
        device_ms = step[2] if len(step) > 2 else 0.0
        self.device_ms = device_ms() if callable(device_ms) else device_ms
        return True, step[1]

    def release(self):
        self._open = False


@pytest.fixture
def camera(monkeypatch):
    """Install a ScriptedCamera as every cv2.VideoCapture; returns a function that makes it."""
    def install(script, **kwargs) -> ScriptedCamera:
        cam = ScriptedCamera(script, **kwargs)
        monkeypatch.setattr(cv2, "VideoCapture", cam.reopen)
        return cam
    monkeypatch.setattr(live, "RECONNECT_FIRST_S", 0.01)
    monkeypatch.setattr(live, "RECONNECT_MAX_S", 0.02)
    return install


# --- repeats and FFC stalls --------------------------------------------------------------------

def test_lepton_repeats_are_dropped_and_an_ffc_freeze_is_a_stall(camera, monkeypatch):
    frames = lepton_frames()
    # PureThermal: 27 Hz over USB, each 9 Hz Lepton frame three times; after frame 9 an FFC
    # freezes the picture for 15 more reads (~0.55 s).
    script = []
    for k, image in enumerate(frames):
        script += [("frame", image)] * (3 + (15 if k == 9 else 0))
    clock = VirtualClock()
    stalled_seen = []

    def tick():
        clock.t += round(1e9 / 27)
        stalled_seen.append(src.stats.stalled)
    camera(script, on_read=tick)
    monkeypatch.setattr(uvc_module, "now_ns", clock)
    src = UvcSource("ir", UvcConfig(device="/dev/v4l/by-id/usb-GroupGets_PureThermal-video-index0",
                                    size=(160, 120), fps=9, pixel_format="gray16"))
    src.open()   # takes (and drops) the first read
    out = [src.read() for _ in range(len(frames))]

    for k, frame in enumerate(out):
        np.testing.assert_array_equal(frame.image, frames[k])   # every Lepton frame once, in order
        assert frame.seq == k and frame.image.dtype == np.uint16
    reads = len(frames) * 3 + 15 - 2   # the last frame's two repeats are never read
    assert src.stats.duplicates == reads - 1 - len(frames)
    assert src.stats.ffc_stalls == 1
    assert any(stalled_seen) and not src.stats.stalled   # stalled during the freeze only
    gaps = np.diff([f.t_ns for f in out]) / MS
    # Frame 0 is published at its 2nd copy (open() took the 1st); then a new frame every
    # 111 ms except one 0.67 s gap: the FFC.
    assert gaps[0] == pytest.approx(2000 / 27, abs=0.01) and gaps[9] == pytest.approx(18000 / 27, abs=0.01)
    assert np.allclose(np.delete(gaps, [0, 9]), 3000 / 27, atol=0.01)


def test_repeat_detector_needs_identical_pixels():
    stats = CaptureStats()
    det = RepeatDetector(stats, stall_ns=250 * MS)
    a = np.full((120, 160), 7000, np.uint16)
    b = a.copy()
    b[61, 83] += 1   # one count in one pixel that the sampled comparison does not look at
    assert [det.is_repeat(x, t * MS) for x, t in ((a, 0), (a.copy(), 37), (b, 74), (b, 111))] == \
        [False, True, False, True]
    assert stats.duplicates == 2 and stats.ffc_stalls == 0
    assert det.is_repeat(b, 400 * MS) and stats.stalled and stats.ffc_stalls == 1
    assert det.is_repeat(b, 450 * MS) and stats.ffc_stalls == 1   # the same stall
    assert not det.is_repeat(a, 480 * MS) and not stats.stalled


# --- unplugging, stalls, buffering --------------------------------------------------------------

def test_unplugged_camera_is_reopened_and_delivers_again(camera):
    vis = visible_frames()[:10]
    cam = camera([("frame", vis[0])] + [("frame", v) for v in vis[:5]] + [("fail",)]
                 + [("frame", v) for v in vis[5:]], opens=[True, False, False, True])
    src = UvcSource("vis", UvcConfig(device="/dev/video4", size=(640, 480)))
    src.open()
    out = [src.read() for _ in range(10)]
    assert [f.seq for f in out] == list(range(10))
    for frame, image in zip(out, vis):
        assert frame.image is image
    assert (src.stats.outages, src.stats.reconnects, src.stats.up) == (1, 1, True)
    assert "cannot open" in src.stats.last_error   # the failed reopen attempts were reported
    assert not cam.opens[1:]   # it tried until the camera opened again


def test_camera_with_a_size_it_does_not_offer_is_refused(camera):
    camera([("frame", np.zeros((256, 320), np.uint16))])
    with pytest.raises(SourceError, match=r"ir camera 0: asked for 640x512 but it delivers 320x256"):
        UvcSource("ir", UvcConfig(device=0, size=(640, 512), pixel_format="gray16")).open()


def test_16bit_mode_is_requested_in_the_order_drivers_need(camera):
    cam = camera([("frame", np.zeros((512, 640), np.uint16))])
    UvcSource("ir", UvcConfig(device=0, size=(640, 512), pixel_format="gray16")).open()
    props = [p for p, _ in cam.set_calls]
    values = dict(cam.set_calls)
    assert props.index(cv2.CAP_PROP_FOURCC) < props.index(cv2.CAP_PROP_FRAME_WIDTH) < \
        props.index(cv2.CAP_PROP_CONVERT_RGB)
    assert values[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"Y16 ")
    assert values[cv2.CAP_PROP_CONVERT_RGB] == 0 and values[cv2.CAP_PROP_BUFFERSIZE] == 1


def test_driver_buffered_frames_carry_their_device_time_and_are_skipped_as_stale(camera):
    """A driver that ignores the one-buffer request hands out frames that waited in it: their
    V4L2 timestamps say how old they are, and the main loop skips them instead of fusing."""
    vis = visible_frames()[:9]
    now_ms = now_ns() / 1e6
    old = [("frame", v, now_ms - ms) for v, ms in zip(vis, (950, 850, 750, 650, 300))]
    fresh = [("frame", v, lambda: now_ns() / 1e6 - 3) for v in vis[5:]]   # filled just before the read
    cam = camera(old + fresh)
    src = UvcSource("vis", UvcConfig(device=0, size=(640, 480)))
    src.open()   # takes the oldest
    capture = CaptureThread(src)   # not started: this test hands the frames over itself
    taken = []
    for _ in range(8):
        frame = src.read()
        assert abs(frame.t_ns - round(cam.device_ms * 1e6)) <= 1   # stamped with the device's time
        capture.queue.put(frame)
        got = capture.take(now_ns(), max_age_ns=500 * MS)
        taken.append(got.seq if got is not None else None)
    assert taken == [None, None, None, 3, 4, 5, 6, 7]   # 850, 750, 650 ms old: stale
    assert src.stats.stale == 3


def test_a_stalled_camera_counts_as_down_until_it_delivers_again(camera):
    vis = visible_frames()
    paced = [("block", 0.03), ("frame", vis[0])]
    camera([("frame", vis[0])] + paced * 5 + [("block", 0.8), ("frame", vis[1])] + paced * 20)
    src = UvcSource("vis", UvcConfig(device=0, size=(640, 480), repeats="keep"))
    src.open()
    capture = CaptureThread(src)
    capture.start()
    seen = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and seen != [False, True, False]:
        while capture.take(now_ns()) is not None:
            pass
        down = capture.is_down(now_ns(), silent_ns=300 * MS)
        if not seen or seen[-1] != down:
            seen.append(down)
        time.sleep(0.01)
    assert capture.stop()
    assert seen == [False, True, False]


# --- one clock ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ppm", [150, -150])
def test_stream_clock_removes_jitter_and_follows_drift_for_an_hour(ppm):
    """A 30 Hz network camera whose clock runs 150 ppm fast or slow, frames arriving 40 ms
    after capture plus random network jitter: mapped times stay within 2 ms of capture + 40 ms."""
    rng = random.Random(ppm)
    clock = StreamClock()
    fixed_ns = 40 * MS
    errors, arrival_errors = [], []
    for i in range(30 * 3600):
        capture_ns = 10**12 + round(i * 1e9 / 30)
        pts_s = (capture_ns - 10**12) / 1e9 * (1 + ppm * 1e-6) + 1234.5   # the camera's own clock
        jitter = min(rng.expovariate(1 / (4 * MS)), 60 * MS)
        arrival = capture_ns + fixed_ns + round(jitter)
        errors.append(clock.map(pts_s, arrival) - capture_ns - fixed_ns)
        arrival_errors.append(arrival - capture_ns - fixed_ns)
    e = np.array(errors[300:]) / MS   # after the first 10 s window
    print(f"{ppm:+d} ppm: mapped error mean {e.mean():.2f} ms, max |e| {np.abs(e).max():.2f} ms; "
          f"on arrival: std {np.std(arrival_errors) / MS:.2f} ms, max {max(arrival_errors) / MS:.1f} ms")
    assert np.abs(e).max() < 2.0
    assert e.std() < np.std(arrival_errors) / MS / 3
    tenth = len(e) // 10
    assert abs(e[:tenth].mean() - e[-tenth:].mean()) < 1.0   # no drift over the hour


def test_stream_clock_starts_afresh_when_the_stream_restarts():
    clock = StreamClock()
    for i in range(10):
        assert clock.map(100 + i / 30, 10**12 + round(i * 1e9 / 30)) == 10**12 + round(i * 1e9 / 30)
    t = 10**12 + 5 * 10**9
    assert clock.map(0.0, t) == t   # pts back to 0: a new mapping, anchored on this arrival
    assert clock.map(1 / 30, t + 34 * MS) == t + round(1e9 / 30)


# --- an hour of live merging -----------------------------------------------------------------------

class _Idle(Source):
    """A stand-in source for CaptureThreads this test fills by hand; it is never read."""

    realtime = True

    def open(self):
        pass

    def read(self):
        raise AssertionError("not read in this test")


@pytest.mark.parametrize("ir_fps, vis_fps, minutes", [(30, 29.87, 60), (9, 30, 10), (25, 60, 10), (60, 25, 10)],
                         ids=["30-29.87Hz-hour", "9-30Hz", "25-60Hz", "60-25Hz"])
def test_live_merging_stays_paired_without_drift_or_growth(ir_fps, vis_fps, minutes):
    """Both cameras' frames reach the main loop 5-25 ms after capture (random), through the
    real latest-frame slots, Merger (with stale and down checks) and Pairer, on a simulated
    clock: an hour at 30 and 29.87 Hz in seconds, ten minutes of other rate pairs."""
    rng = random.Random(7)
    ir_period_ms = 1000 / ir_fps
    tolerance_ns = round((ir_period_ms / 2 + 5) * MS)   # every visible frame has an IR frame this near
    duration_s = 60 * minutes
    wait_ns = tolerance_ns + LIVE_SLACK_NS
    clock = VirtualClock(0)
    captures = [CaptureThread(_Idle(name), depth=live_slot_depth(fps, wait_ns))
                for name, fps in (("ir", ir_fps), ("vis", vis_fps))]
    liveness = Liveness(LiveConfig(), captures)
    gaps = {"ir": min_frame_gap_ns(ir_fps), "vis": min_frame_gap_ns(vis_fps)}   # as the pipeline does
    merger = Merger(captures, threading.Event(), wait_ns, liveness, clock=clock, min_gap_ns=gaps)
    pairer = Pairer(tolerance_ns, gaps["ir"])
    image = np.zeros((2, 2), np.uint8)

    def capture_ns(i: int, fps: float) -> int:
        return round(i * 1e9 / fps) + 10**8

    def arrivals(camera: str, fps: float):
        for i in range(int(duration_s * fps)):
            t = capture_ns(i, fps)
            yield t + rng.randint(5 * MS, 25 * MS), t, i, camera

    skews = np.zeros(int(duration_s * vis_fps) + 1, np.int64)   # preallocated: the test itself must not grow
    n_pairs = n_vis = 0
    memory_at_10_min = None

    def record(pairs) -> None:
        nonlocal n_pairs
        for p in pairs:
            skews[n_pairs] = p.skew_ns
            n_pairs += 1

    for arrival, t, seq, camera in heapq.merge(arrivals("ir", ir_fps), arrivals("vis", vis_fps)):
        clock.t = arrival
        capture = captures[camera == "vis"]
        capture.queue.put(Frame(image, t, seq, camera, "gray8", arrival))
        capture.stats.last_frame_ns = arrival
        n_vis += camera == "vis"
        liveness.watch(arrival)
        while (frame := merger.next(0)) is not None:
            record(pairer.push(frame))
        record(pairer.advance(arrival - wait_ns))
        if memory_at_10_min is None and arrival >= duration_s / 6 * 10**9:
            memory_at_10_min = _resident_bytes()
    clock.t += wait_ns + 1   # the end: the last frames no longer wait for the other camera
    while (frame := merger.next(0)) is not None:
        record(pairer.push(frame))
    record(pairer.flush())
    growth = _resident_bytes() - memory_at_10_min

    skews = skews[:n_pairs]
    s = np.abs(skews) / MS
    # Independently: each visible frame's nearest IR frame, by capture time, within the tolerance.
    ir_t = np.array([capture_ns(i, ir_fps) for i in range(int(duration_s * ir_fps))])
    vis_t = np.array([capture_ns(i, vis_fps) for i in range(int(duration_s * vis_fps))])
    idx = np.clip(np.searchsorted(ir_t, vis_t), 1, len(ir_t) - 1)
    before, after = ir_t[idx - 1] - vis_t, ir_t[idx] - vis_t
    nearest = np.where(np.abs(before) <= np.abs(after), before, after)
    expected = nearest[np.abs(nearest) <= tolerance_ns]
    print(f"{minutes} min at {ir_fps}/{vis_fps} Hz: {n_pairs} pairs of {n_vis} visible frames, |skew| mean "
          f"{s.mean():.2f} ms, max {s.max():.2f} ms; resident memory growth over the last 5/6: {growth} bytes")
    np.testing.assert_array_equal(skews, expected)   # every pair the nearest one, none missed
    assert n_vis - len(expected) <= 1   # at most the last visible frame, after the last IR frame
    assert pairer.stats.late == 0 and sum(c.stats.stale for c in captures) == 0
    assert sum(c.queue.dropped for c in captures) == 0   # the slots held what the merge held back
    tenth = len(skews) // 10
    assert abs(np.mean(skews[:tenth]) - np.mean(skews[-tenth:])) / MS < 1.0   # no drift
    assert not liveness.events   # neither camera ever looked down
    # Anything kept per frame (a Frame is ~300 bytes) would add tens of MB over 50 minutes.
    assert growth < 4 * 2**20, f"memory grew by {growth} bytes over {minutes * 5 / 6:g} simulated minutes"
    assert len(pairer._pending) <= 3 and len(pairer.stats.skews_ns) == pairer.stats.skews_ns.maxlen


def _resident_bytes() -> int:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_skew_csv_holds_the_whole_runs_distribution(tmp_path):
    out = tmp_path / "skew.csv"
    result = streamfuse("run", "rigs/demo-fast.yaml", "--frames", 100, "--skew-csv", out, "--quiet")
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows[0] == ["skew_ms", "pairs"]
    got = {float(ms): int(n) for ms, n in rows[1:]}
    # The demo's cameras: 30 Hz IR and 25 Hz visible on exact clocks; visible frame j pairs
    # with the nearest IR frame, so the skews repeat with a period of five visible frames.
    ir_period, vis_period = round(1e9 / 30), round(1e9 / 25)
    expected: dict[float, int] = {}
    for j in range(100):
        skew = min((i * ir_period - j * vis_period for i in range(200)), key=abs)
        expected[round(skew / 500_000) * 0.5] = expected.get(round(skew / 500_000) * 0.5, 0) + 1
    assert got == expected


@pytest.mark.parametrize("release", [True, False], ids=["periods-known", "periods-unknown"])
def test_a_pair_is_released_the_moment_both_halves_exist(release):
    """IR and visible frames stamped alike at 30 Hz: once both have arrived, the pair comes out
    at once when the cameras' periods are known (the next IR frame cannot be nearer); without
    them the visible frame waits for the next IR frame or the wait limit, as before."""
    wait_ns = 70 * MS
    clock = VirtualClock(10**9)
    captures = [CaptureThread(_Idle(name), depth=4) for name in ("ir", "vis")]
    gaps = {"ir": min_frame_gap_ns(30), "vis": min_frame_gap_ns(30)} if release else None
    merger = Merger(captures, threading.Event(), wait_ns, clock=clock, min_gap_ns=gaps)
    pairer = Pairer(20 * MS, gaps["ir"] if release else None)
    image = np.zeros((2, 2), np.uint8)
    t = 10**9 - 8 * MS   # both captured 8 ms ago, both here now
    captures[0].queue.put(Frame(image, t, 0, "ir", "gray8", clock.t))
    captures[1].queue.put(Frame(image, t, 0, "vis", "gray8", clock.t))
    pairs = []
    while (frame := merger.next(0)) is not None:
        pairs += pairer.push(frame)
    if release:
        assert len(pairs) == 1 and pairs[0].skew_ns == 0
        assert pairer.stats.pairs == 1 and pairer.stats.unmatched_vis == 0
    else:
        assert pairs == []   # the visible frame still waits for the next IR frame
        clock.t += wait_ns
        while (frame := merger.next(0)) is not None:
            pairs += pairer.push(frame)
        pairs += pairer.advance(clock.t - wait_ns)
        assert len(pairs) == 1 and pairs[0].skew_ns == 0   # the same pair, a wait later


def test_an_ir_frame_that_could_still_be_nearer_is_waited_for():
    """The visible frame lies between IR frames: the next IR frame may be nearer, so it waits."""
    clock = VirtualClock(10**9)
    captures = [CaptureThread(_Idle(name), depth=4) for name in ("ir", "vis")]
    gaps = {"ir": min_frame_gap_ns(30), "vis": min_frame_gap_ns(30)}
    merger = Merger(captures, threading.Event(), 70 * MS, clock=clock, min_gap_ns=gaps)
    pairer = Pairer(20 * MS, gaps["ir"])
    image = np.zeros((2, 2), np.uint8)
    captures[0].queue.put(Frame(image, 900 * MS, 0, "ir", "gray8", clock.t))
    captures[1].queue.put(Frame(image, 920 * MS, 0, "vis", "gray8", clock.t))   # 20 ms after it
    pairs = []
    while (frame := merger.next(0)) is not None:
        pairs += pairer.push(frame)
    assert pairs == []   # an IR frame at 933 ms (13 ms away) may still come
    captures[0].queue.put(Frame(image, 933 * MS, 1, "ir", "gray8", clock.t))
    while (frame := merger.next(0)) is not None:
        pairs += pairer.push(frame)
    assert len(pairs) == 1 and pairs[0].ir.seq == 1

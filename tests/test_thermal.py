"""Thermal AGC: a steady picture while a hot object crosses the view, and each setting doing
what it says (plateau, maximum gain, tail rejection, region of interest, manual, linear).

The scene is real: a night frame of M3SVD's thermal camera turned into 14-bit-like counts
(8-bit level x 6 + 21000, plus sensor noise), with a hot disc moving across it.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import REPO, data_path

from streamfuse.errors import RigError
from streamfuse.frames import Frame, FramePair
from streamfuse.fuse import FusionConfig, make_fuser
from streamfuse.pipeline import Stages, process_pair
from streamfuse.register.registrar import Registrar
from streamfuse.rig import load_rig
from streamfuse.thermal import Agc, ThermalConfig, make_agc

FRAME_NS = round(1e9 / 30)


@pytest.fixture(scope="module")
def scene() -> list[np.ndarray]:
    """90 frames (3 s at 30 Hz) of a static night scene with a hot disc moving through it."""
    ir8 = cv2.imread(str(data_path("video", "m3svd_frames", "0115_1831", "ir", "0000.png")), cv2.IMREAD_GRAYSCALE)
    base = 21000 + ir8.astype(np.float32) * 6
    rng = np.random.default_rng(0)
    h, w = ir8.shape
    frames = []
    for k in range(90):
        f = base + rng.normal(0, 4, base.shape).astype(np.float32)
        cv2.circle(f, (int(-40 + (w + 80) * k / 89), h // 2), 30, 21000 + 255 * 6 + 2500, -1)   # ~420 counts hotter
        frames.append(np.clip(f, 0, 65535).astype(np.uint16))
    return frames


def min_max(raw: np.ndarray) -> np.ndarray:
    """The plain per-frame stretch, for comparison."""
    lo, hi = int(raw.min()), int(raw.max())
    return ((raw.astype(np.float32) - lo) * (255 / (hi - lo))).astype(np.uint8)


def test_a_hot_object_crossing_the_view_does_not_pump_the_brightness(scene):
    agc = Agc(ThermalConfig(agc="plateau"))
    out = [agc(raw, k * FRAME_NS) for k, raw in enumerate(scene)]
    steps = np.abs(np.diff([o.mean() for o in out]))
    plain = np.abs(np.diff([min_max(raw).mean() for raw in scene]))
    print(f"largest frame-to-frame change of mean brightness: plateau AGC {steps.max():.2f} grey levels, "
          f"per-frame min-max {plain.max():.2f}")
    assert steps.max() < 1.0
    assert plain.max() > 10 * steps.max()   # the scene does make a plain stretch pump
    assert min(o.std() for o in out) > 40   # and the AGC still shows the scene, not a flat grey
    # The disc is the hottest thing in view: it is brighter than the scene around it.
    disc = out[45][240 - 20:240 + 20, 320 - 20:320 + 20]
    assert disc.mean() > np.percentile(out[45], 98)


def test_without_the_temporal_filter_the_same_scene_jumps(scene):
    agc = Agc(ThermalConfig(agc="plateau", smoothing_s=0))
    steps = np.abs(np.diff([agc(raw, k * FRAME_NS).mean() for k, raw in enumerate(scene)]))
    assert steps.max() > 3.0   # what the filter removes


def test_the_filter_spreads_a_change_over_smoothing_s():
    agc = Agc(ThermalConfig(agc="linear", smoothing_s=1.0, tail_reject=0.0))
    cool = np.tile(np.linspace(1000, 2000, 256, dtype=np.float32), (64, 1)).astype(np.uint16)
    probe = np.array([[1500, 2000]], np.uint16)
    agc(cool, 0)                                   # 1000..2000 counts onto 0..255
    start = agc.apply(probe).astype(float)
    for k in range(30):                            # the scene warms by 500 counts, for 1 s
        agc(cool + 500, (k + 1) * FRAME_NS)
    unfiltered = Agc(ThermalConfig(agc="linear", smoothing_s=0, tail_reject=0.0))
    unfiltered(cool + 500, 0)
    target = unfiltered.apply(probe).astype(float)   # where counts 1500 and 2000 map without the filter
    # After one time constant the mapping has moved 1 - 1/e of the way.
    moved = (agc.apply(probe) - start) / (target - start)
    np.testing.assert_allclose(moved, 1 - np.exp(-1), atol=0.03)


def test_manual_maps_the_given_counts_to_black_and_white():
    agc = Agc(ThermalConfig(agc="manual", range=(20000, 21020)))
    raw = np.array([[0, 19000, 20000, 20510, 21020, 30000]], np.uint16)
    np.testing.assert_array_equal(agc(raw, 0), [[0, 0, 0, 128, 255, 255]])


def test_tail_rejection_ignores_dead_and_saturated_pixels():
    raw = np.tile(np.arange(10000, 10256, dtype=np.uint16), (100, 1))
    raw[::50, ::40] = 0        # dead pixels
    raw[1::50, ::40] = 65535   # hot pixels
    out = Agc(ThermalConfig(agc="linear", tail_reject=0.005, max_gain=255))(raw, 0)
    row = out[2]
    assert row[0] <= 2 and row[-1] >= 253   # the scene's own range spans black to white


def test_max_gain_keeps_a_flat_scene_from_becoming_noise():
    rng = np.random.default_rng(1)
    flat = (15000 + rng.normal(0, 3, (120, 160))).astype(np.uint16)   # a wall: noise only
    for agc_mode in ("plateau", "linear"):
        out = Agc(ThermalConfig(agc=agc_mode, max_gain=2.0, smoothing_s=0))(flat, 0)
        assert out.std() < 2.0 * 3 * 1.5, agc_mode   # at most ~2 grey levels per count of noise
        assert abs(out.mean() - 127.5) < 10, agc_mode   # centred
        stretched = Agc(ThermalConfig(agc=agc_mode, max_gain=255, smoothing_s=0))(flat, 0)
        assert stretched.std() > 40, agc_mode   # what an uncapped stretch makes of it


def test_plateau_stops_a_large_uniform_area_taking_the_grey_levels():
    sky = np.full((96, 256), 12000, np.uint16)                              # 75% of the picture: one level
    detail = np.tile(np.arange(12100, 12356, dtype=np.uint16), (32, 1))   # 25%: a ramp
    raw = np.vstack([sky, detail])
    equalised = Agc(ThermalConfig(agc="plateau", plateau=1.0, max_gain=255))(raw, 0)   # no plateau: plain HE
    plateaued = Agc(ThermalConfig(agc="plateau", plateau=0.01, max_gain=255))(raw, 0)
    span = lambda out: int(out[96:].max()) - int(out[96:].min())   # noqa: E731
    assert span(equalised) < 80     # the sky took three quarters of the range
    assert span(plateaued) > 200    # clipped, the ramp gets most of it


def test_statistics_come_from_the_region_of_interest_only():
    raw = np.tile(np.linspace(8000, 8400, 200).astype(np.uint16), (100, 1))
    raw[:, :40] = 20000   # a hot exhaust at the left edge
    whole = Agc(ThermalConfig(agc="linear", tail_reject=0, max_gain=255))(raw, 0)
    roi = Agc(ThermalConfig(agc="linear", tail_reject=0, max_gain=255, roi=(0.3, 0.0, 1.0, 1.0)))(raw, 0)
    assert int(whole[:, 40:].max()) - int(whole[:, 40:].min()) < 20    # squeezed by the exhaust
    assert int(roi[:, 60:].max()) - int(roi[:, 60:].min()) > 200       # the region gets the range
    assert roi[:, :40].min() == 255                                   # the exhaust saturates


def test_8bit_thermal_video_goes_through_the_same_agc():
    raw = np.tile(np.arange(60, 100, dtype=np.uint8), (30, 1))
    out = Agc(ThermalConfig(agc="linear", tail_reject=0, max_gain=255))(raw, 0)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_the_raw_16bit_frame_reaches_fusion_and_the_sinks_unchanged():
    """16-bit counts in; the fused frame carries the raw IR frame, values and all, while the
    fuser saw the AGC's 8-bit picture."""
    w, h = 96, 64
    pattern = ((np.arange(w * h, dtype=np.uint32).reshape(h, w) * 37) % 4096 + 20000).astype(np.uint16)
    vis = np.full((h, w, 3), 90, np.uint8)
    pair = FramePair(Frame(pattern, 0, 0, "ir", "gray16", 0), Frame(vis, 0, 0, "vis", "bgr24", 0))
    agc = make_agc(ThermalConfig(agc="plateau"))
    stages = Stages(Registrar(np.eye(3), (w, h), (w, h)), agc)
    fuser = make_fuser(FusionConfig(mode="alpha", palette="white-hot", strength=1.0))
    out = process_pair(pair, stages, fuser, "fused", 0)
    assert out.pair.ir.image is pattern and out.pair.ir.image.dtype == np.uint16
    np.testing.assert_array_equal(out.pair.ir.image,
                                  ((np.arange(w * h).reshape(h, w) * 37) % 4096 + 20000))
    np.testing.assert_array_equal(out.image[..., 0], agc.apply(pattern))   # white-hot at full strength
    assert stages.timers["agc"].count == 1


def test_agc_settings_are_checked_when_the_rig_loads(tmp_path):
    text = (REPO / "rigs" / "demo.yaml").read_text().replace("calibration: ../calibration/",
                                                             f"calibration: {REPO}/calibration/")
    for section, message in (("thermal: {agc: manual}", "thermal.range: agc manual needs range"),
                             ("thermal: {agc: plateau, roi: [0.5, 0, 0.2, 1]}", "thermal.roi: expected"),
                             ("thermal: {agc: plateu}", "thermal.agc: expected one of")):
        rig = tmp_path / "rig.yaml"
        rig.write_text(text + "\n" + section + "\n")
        with pytest.raises(RigError, match=message):
            load_rig(rig)
    rig.write_text(text + "\nthermal: {agc: manual, range: [20000, 24000]}\n")
    assert load_rig(rig).thermal.range == (20000, 24000)


def test_the_display_mapping_inverts_to_counts_for_a_scale_bar():
    from streamfuse.thermal import Agc, ThermalConfig, display_counts, ir_to_u8

    ramp = np.tile(np.linspace(28000, 32000, 640).astype(np.uint16), (512, 1))
    agc = Agc(ThermalConfig(agc="linear", tail_reject=0.0, max_gain=255))
    levels = agc(ramp, 0)
    low, mid, high = display_counts(ramp, agc)
    assert low == pytest.approx(28000, abs=20) and high == pytest.approx(32000, abs=20)
    assert levels[0, np.searchsorted(ramp[0], mid)] in (127, 128)
    low, mid, high = display_counts(ramp, None)  # the per-frame stretch: its 1st and 99th percentiles
    assert ir_to_u8(ramp)[0, np.searchsorted(ramp[0], low) - 1] == 0
    assert ir_to_u8(ramp)[0, np.searchsorted(ramp[0], high) + 1] == 255

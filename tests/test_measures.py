"""Fusion measures: agreement with the published per-image values, and analytic cases."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from helpers import data_path

from streamfuse.quality.measures import MEASURES, SourcePair, fusion_metrics, to_gray

#: Pairs per set checked against metrics.json: the first ones by name (all 121 take ~20 s).
PAIRS_PER_SET = 2


def _published_subset():
    published = json.loads(data_path("peers", "metrics.json").read_text())["seafusion"]
    for group, entry in sorted(published.items()):
        for name in sorted(entry["per_image"])[:PAIRS_PER_SET]:
            yield group, name, entry["per_image"][name]


def _read(folder, name):
    (path,) = folder.glob(f"{name}.*")
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_matches_the_published_values_of_seafusion_per_image():
    pairs, fused = data_path("pairs"), data_path("peers", "seafusion")
    checked = 0
    for group, name, expected in _published_subset():
        ir, vis = _read(pairs / group / "ir", name), _read(pairs / group / "vis", name)
        got = fusion_metrics(ir, vis, _read(fused / group, name))
        for measure in MEASURES:
            assert got[measure] == pytest.approx(expected[measure], rel=1e-6), (group, name, measure)
        checked += 1
    assert checked == 5 * PAIRS_PER_SET


def test_prepared_sources_score_like_a_fresh_call():
    pairs = data_path("pairs", "msrs")
    ir, vis = _read(pairs / "ir", "00004N"), _read(pairs / "vis", "00004N")
    fused = _read(data_path("peers", "seafusion", "msrs"), "00004N")
    prepared = SourcePair(ir, vis)
    assert prepared.score(fused) == fusion_metrics(ir, vis, fused)
    copied = prepared.score(vis)
    assert math.isnan(copied.pop("SCD"))
    assert copied == {k: v for k, v in fusion_metrics(ir, vis, vis).items() if k != "SCD"}
    assert prepared.score(fused) == fusion_metrics(ir, vis, fused)  # scoring leaves the sources as they were
    assert list(prepared.score(fused, ["VIF", "EN"])) == ["VIF", "EN"]


def _noise(seed, high=256, shape=(64, 80)):
    return np.random.default_rng(seed).integers(0, high, shape, dtype=np.uint8)


def test_two_level_image_has_one_bit_and_a_standard_deviation_of_half_the_range():
    two_level = np.zeros((64, 64), np.uint8)
    two_level[:, 32:] = 255
    got = fusion_metrics(_noise(1, shape=(64, 64)), _noise(2, shape=(64, 64)), two_level, ["EN", "SD"])
    assert got == {"EN": pytest.approx(1.0), "SD": pytest.approx(127.5)}
    assert fusion_metrics(two_level, two_level, np.full((64, 64), 9, np.uint8), ["EN"])["EN"] == 0


def test_spatial_frequency_and_average_gradient_follow_the_toolbox_normalisation():
    stripes = np.zeros((40, 50), np.uint8)
    stripes[:, ::2] = 255
    assert fusion_metrics(stripes, stripes, stripes, ["SF"])["SF"] == pytest.approx(255.0)
    ramp = np.tile(np.arange(50, dtype=np.uint8), (40, 1))  # gradient 1 everywhere, along x
    # sqrt(1/2) at each of the M*N pixels, divided by (M-1)(N-1).
    assert fusion_metrics(ramp, ramp, ramp, ["AG"])["AG"] == pytest.approx(math.sqrt(0.5) * 40 * 50 / (39 * 49))


def test_mutual_information_of_a_copy_is_the_entropy_except_for_the_toolbox_joint_bin():
    ir = _noise(3, high=254)  # no level 254 or 255
    flat = np.full_like(ir, 77)  # shares no information with anything: MI(F, VIS) = 0
    got = fusion_metrics(ir, flat, ir, ["EN", "MI"])
    assert got["MI"] == pytest.approx(got["EN"])  # MI(F, IR) = H(IR) when F is IR
    only_top = np.where(_noise(5) < 128, 254, 255).astype(np.uint8)
    # 254 and 255 share a joint bin (uint8 + 1 saturates in MATLAB): H = 1 bit, H(A, A) = 0.
    mi = fusion_metrics(only_top, only_top, only_top, ["MI"])["MI"]
    assert mi == pytest.approx(2 * 2.0, abs=1e-3)


def test_scd_is_two_for_a_sum_and_undefined_for_a_copied_source():
    ir, vis = _noise(6, high=128), _noise(7, high=128)
    assert fusion_metrics(ir, vis, ir + vis, ["SCD"])["SCD"] == pytest.approx(2.0)
    assert math.isnan(fusion_metrics(ir, vis, ir, ["SCD"])["SCD"])


def test_a_perfect_copy_scores_the_maxima_of_ssim_vif_and_qabf():
    image = cv2.resize(_noise(8, shape=(32, 40)), (80, 64), interpolation=cv2.INTER_CUBIC)
    got = fusion_metrics(image, image, image, ["SSIM", "VIF", "Qabf"])
    assert got["SSIM"] == pytest.approx(1.0, abs=1e-12)
    assert got["VIF"] == pytest.approx(2.0, abs=1e-6)  # VIF(IR, F) + VIF(VIS, F)
    # Qabf tops out at Tg/(1+e^(-15(g-0.5))) * Ta/(1+e^(-22*0.2)) ~ 0.9753 for strong edges.
    assert got["Qabf"] == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2)), abs=2e-3)


def test_colour_is_converted_like_matlab_rgb2gray():
    bgr = np.array([[[200, 150, 100], [0, 0, 255], [7, 7, 7]]], np.uint8)
    # 0.298936*100 + 0.587043*150 + 0.114021*200 = 140.754; 0.298936*255 = 76.229
    assert to_gray(bgr).tolist() == [[141, 76, 7]]
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(to_gray(cv2.cvtColor(levels, cv2.COLOR_GRAY2BGR)), levels)


@pytest.mark.parametrize("ir, vis, fused, measures, message", [
    ((64, 64), (64, 64), (64, 60), MEASURES, "fused image of the sources' size 64x64"),
    ((64, 64), (60, 64), (64, 64), MEASURES, "ir and vis of one size"),
    ((16, 16), (16, 16), (16, 16), MEASURES, "at least 32x32"),
    ((64, 64), (64, 64), (64, 64), ["EN", "PSNR"], "unknown measure 'PSNR'"),
])
def test_bad_input_is_refused_with_what_was_expected(ir, vis, fused, measures, message):
    with pytest.raises(ValueError, match=message):
        fusion_metrics(*(np.zeros(s, np.uint8) for s in (ir, vis, fused)), measures)
    with pytest.raises(ValueError, match="uint8 image, got shape"):
        fusion_metrics(np.zeros((64, 64), np.uint16), np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8))

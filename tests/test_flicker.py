"""Temporal flicker: zero for still and moving-but-steady video, the gain change otherwise."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import data_path

from streamfuse.quality.flicker import (
    FlickerMeter,
    estimate_motion,
    flicker,
    fusion_flicker,
)


def _frames(clip: str, role: str, count: int) -> list[np.ndarray]:
    folder = data_path("video", "m3svd_frames", clip, role)
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))[:count]]


@pytest.fixture(scope="module")
def still():
    return _frames("0111_1716", "vis", 1)[0]


def test_a_still_video_does_not_flicker(still):
    frames = [still] * 3
    assert flicker(frames, estimate_motion(frames)) == pytest.approx(0.0, abs=1e-6)


def test_motion_that_the_flow_follows_is_not_flicker(still):
    # A pan of 3 px per frame changes every pixel, yet nothing flickers.
    frames = [np.ascontiguousarray(still[:, 3 * i:3 * i + 560]) for i in range(4)]
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(float) for f in frames]
    raw_difference = np.mean([np.abs(b - a).mean() for a, b in zip(grey, grey[1:])])
    motions = estimate_motion(frames)
    assert raw_difference > 5
    assert flicker(frames, motions) < 0.05 * raw_difference
    assert min(m.coverage for m in motions) > 0.9


def test_brightness_pumping_on_a_still_scene_is_measured_in_grey_levels(still):
    grey = cv2.cvtColor(still, cv2.COLOR_BGR2GRAY)
    pumping = [cv2.convertScaleAbs(grey, alpha=gain) for gain in (1.0, 1.1, 1.0, 1.1)]
    expected = np.abs(pumping[1].astype(float) - pumping[0]).mean()
    motions = estimate_motion([grey] * 4)  # the scene itself does not move
    assert flicker(pumping, motions) == pytest.approx(expected, rel=1e-3)


def test_a_blend_of_the_sources_flickers_no_more_than_the_worse_source():
    ir, vis = _frames("0115_1831", "ir", 4), _frames("0115_1831", "vis", 4)
    grey_vis = [cv2.cvtColor(v, cv2.COLOR_BGR2GRAY) for v in vis]
    blend = [cv2.addWeighted(a, 0.5, b, 0.5, 0.0) for a, b in zip(ir, grey_vis)]
    got = fusion_flicker(ir, vis, {"blend": blend, "copy of IR": ir})
    assert list(got) == ["IR", "visible", "blend", "copy of IR"]
    assert got["copy of IR"] == got["IR"]
    assert 0 < got["IR"] < got["visible"]
    assert got["blend"] <= max(got["IR"], got["visible"])


def test_bad_input_is_refused(still):
    with pytest.raises(ValueError, match="at least 2 frames"):
        estimate_motion([still])
    with pytest.raises(ValueError, match="expected 3 frames for 2 motions, got 2"):
        flicker([still] * 2, estimate_motion([still] * 3))
    with pytest.raises(ValueError, match="as many frames in every video"):
        fusion_flicker([still] * 2, [still] * 3, {})
    with pytest.raises(ValueError, match="one size"):
        fusion_flicker([still] * 2, [still[:100]] * 2, {})


def test_the_meter_refuses_a_clip_that_changes_shape_or_videos(still):
    meter = FlickerMeter()
    meter.add(still, still, {"a": still})
    with pytest.raises(ValueError, match=r"expected the videos \['IR', 'a', 'visible'\] every frame"):
        meter.add(still, still, {"b": still})
    with pytest.raises(ValueError, match="of one size"):
        meter.add(still, still, {"a": still[:100]})
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        meter.result()

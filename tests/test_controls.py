"""Live controls: validated all-or-nothing changes, the main loop's fuser cache, the parallax
distance handed to a real registrar, and the views."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streamfuse.controls import Controls, LiveFusion
from streamfuse.fuse import FusionConfig, make_fuser
from streamfuse.fuse.views import VIEWS, render_view
from streamfuse.register.geometry import ParallaxModel
from streamfuse.register.registrar import Registrar


def _registrar(parallax: bool) -> Registrar:
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    model = ParallaxModel(K, K, np.eye(3), np.array([0.05, 0.0, 0.0]), distance_m=10.0) if parallax else None
    H = model.H_vis_from_ir(10.0) if parallax else np.eye(3)
    return Registrar(H, (640, 480), (640, 480), parallax=model)


def test_a_change_is_checked_and_applied_all_or_nothing():
    controls = Controls(FusionConfig())
    with pytest.raises(ValueError, match="^strength: expected a number from 0 to 1"):
        controls.update(mode="msx", strength=1.5)
    assert controls.settings.mode == "lite"  # the valid half (the default mode) was not applied either
    with pytest.raises(ValueError, match="^view: expected one of fused, ir"):
        controls.update(view="thermal")
    with pytest.raises(ValueError, match="^distance_m: this registration has no parallax model"):
        controls.update(distance_m=5)
    with pytest.raises(ValueError, match="^speed: not a live setting"):
        controls.update(speed=2)
    assert controls.update(mode="alpha", palette="white-hot", view="pip").view == "pip"


def test_keys_cycle_and_nudge_within_range():
    controls = Controls(FusionConfig(mode="pyramid", strength=0.95))
    assert [controls.cycle("mode").mode for _ in range(4)] == ["alpha", "msx", "lite", "pyramid"]  # no spg: no weights
    assert Controls(FusionConfig(mode="spg", weights="spg.pt")).modes == ("alpha", "msx", "lite", "pyramid", "spg")
    assert Controls(FusionConfig(mode="c3d", weights="c3d.pt")).modes == ("alpha", "msx", "lite", "pyramid", "c3d")
    assert [controls.cycle("view").view for _ in range(len(VIEWS))] == [*VIEWS[1:], "fused"]
    assert controls.nudge_strength(0.05).strength == 1.0
    assert controls.nudge_strength(0.05).strength == 1.0
    with pytest.raises(ValueError, match="no parallax model"):
        controls.scale_distance(1.25)


def test_a_distance_at_infinity_is_json_null():
    controls = Controls(FusionConfig(), distance_m=math.inf)
    described = json.loads(json.dumps(controls.describe(), allow_nan=False))
    assert described["distance_m"] is None and described["parallax"] is True
    assert controls.scale_distance(0.8).distance_m == 10_000  # nearer than infinity: the farthest finite


def test_live_fusion_keeps_one_fuser_per_mode_and_rebuilds_on_a_new_palette():
    base = FusionConfig(mode="pyramid")
    controls = Controls(base)
    live = LiveFusion(controls, base, _registrar(parallax=False))
    pyramid, view = live.current()
    assert (pyramid.cfg.mode, view) == ("pyramid", "fused")
    assert live.current()[0] is pyramid  # nothing changed: nothing rebuilt
    controls.update(mode="msx")
    msx = live.current()[0]
    controls.update(mode="pyramid")
    assert live.current()[0] is pyramid
    controls.update(mode="msx", palette="black-hot", strength=0.3)
    rebuilt = live.current()[0]
    assert rebuilt is not msx and (rebuilt.cfg.palette, rebuilt.cfg.strength) == ("black-hot", 0.3)


def test_live_fusion_moves_the_registration_distance():
    registrar = _registrar(parallax=True)
    controls = Controls(FusionConfig(), registrar.distance_m)
    live = LiveFusion(controls, FusionConfig(), registrar)
    live.current()
    before = registrar.H_vis_from_ir.copy()
    controls.update(distance_m=2.0)
    live.current()
    assert registrar.distance_m == 2.0
    assert not np.allclose(registrar.H_vis_from_ir, before)  # a nearer plane shifts the IR more


def test_every_view_has_the_visible_size():
    rng = np.random.default_rng(0)
    ir = rng.integers(20000, 30000, (120, 160), dtype=np.uint16)
    vis = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    fuser = make_fuser(FusionConfig(mode="alpha"))
    images = {view: render_view(view, fuser, ir, vis) for view in VIEWS}
    for view, image in images.items():
        assert image.shape == (120, 160, 3) and image.dtype == np.uint8, view
    assert np.array_equal(images["visible"], vis)
    assert np.array_equal(images["fused"], fuser.fuse(ir, vis))
    assert not np.array_equal(images["pip"], images["fused"])  # the inset is there ...
    assert np.array_equal(images["pip"][80:], images["fused"][80:])  # ... in the top-right corner only
    assert images["side-by-side"][:30].max() == 0  # letterboxed halves


def test_the_spot_meter_is_a_point_of_the_frame():
    controls = Controls(FusionConfig())
    assert controls.settings.spot == (0.5, 0.5)
    assert controls.update(spot=[0.25, 1]).spot == (0.25, 1.0)
    assert json.loads(json.dumps(controls.describe()))["spot"] == [0.25, 1.0]
    for bad in ([0.5], [0.5, 1.5], [True, 0.5], "centre", [0.1, None]):
        with pytest.raises(ValueError, match="^spot: expected"):
            controls.update(spot=bad, strength=0.1)
    assert controls.settings.spot == (0.25, 1.0) and controls.settings.strength != 0.1  # all or nothing


def test_viewers_are_told_what_the_palette_does_in_the_current_mode():
    controls = Controls(FusionConfig(mode="lite"))
    assert controls.describe()["palette_use"] == "colours the hot targets"
    controls.update(mode="alpha")
    assert controls.describe()["palette_use"] == "colours the IR"
    untinted = Controls(FusionConfig(mode="pyramid", hot_tint=False))
    assert untinted.describe()["palette_use"] == "off (fusion.hot_tint)"

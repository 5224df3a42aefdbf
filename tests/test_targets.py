"""The user-facing measures (`quality.targets`) and the reference fusions (`quality.references`)."""
import cv2
import numpy as np

from streamfuse.quality import targets as T
from streamfuse.quality.references import GffFuser, MaxFuser


def _scene(seed=0, warm=60.0):
    """A 240x320 IR grey with two warm blobs on a gentle gradient, a smooth visible grey."""
    rng = np.random.default_rng(seed)
    ir = np.tile(np.linspace(60, 90, 320, dtype=np.float32), (240, 1))
    for cy, cx in ((80, 100), (160, 230)):
        yy, xx = np.mgrid[:240, :320]
        ir += warm * ((yy - cy) ** 2 / 144 + (xx - cx) ** 2 / 36 < 1)
    ir += rng.normal(0, 1.0, ir.shape)
    vis = cv2.GaussianBlur(rng.normal(120, 30, (240, 320)).astype(np.float32), (0, 0), 8) + rng.normal(0, 2, ir.shape)
    u8 = lambda x: np.clip(np.rint(x), 0, 255).astype(np.uint8)  # noqa: E731
    return u8(ir), u8(vis)


def test_hot_targets_are_the_warm_blobs_with_rings_around_them():
    ir, _ = _scene()
    found = T.hot_targets(ir)
    assert len(found) == 2
    for window, mask, ring in found:
        assert 100 < mask.sum() < 300 and not (mask & ring).any() and ring.sum() > mask.sum()
    pairs = T.contrast_pairs(ir, ir)
    assert pairs.shape == (2, 2) and (pairs[:, 0] > 40).all()


def test_retention_is_the_share_of_the_ir_contrast_the_fused_image_keeps():
    ir, vis = _scene()
    assert T.retention([T.contrast_pairs(ir, ir)]) == 1.0
    half = np.clip(vis.astype(np.float32) + 0.5 * (ir.astype(np.float32) - 75), 0, 255).astype(np.uint8)
    assert 0.4 < T.retention([T.contrast_pairs(ir, half)]) < 0.6
    assert abs(T.retention([T.contrast_pairs(ir, vis)])) < 0.2
    assert np.isnan(T.retention([np.zeros((0, 2))]))


def test_flat_noise_ratio_sees_added_grain():
    ir, vis = _scene()
    own = [T.flat_noise_ratio(ir, vis, source) for source in (ir, vis)]
    assert max(own) == 1.0 and min(own) < 1.0  # a source over the noisier source
    grainy = np.clip(vis + np.random.default_rng(3).normal(0, 4, vis.shape), 0, 255).astype(np.uint8)
    assert T.flat_noise_ratio(ir, vis, grainy) > 1.5
    smooth = cv2.GaussianBlur(vis, (0, 0), 2)
    assert T.flat_noise_ratio(ir, vis, smooth) < 0.6


def test_degrading_the_ir_is_deterministic_blurred_and_striped():
    ir, _ = _scene()
    a, b = T.degrade_ir(ir, 5), T.degrade_ir(ir, 5)
    assert np.array_equal(a, b) and not np.array_equal(a, T.degrade_ir(ir, 6))
    columns = (a.astype(float) - ir).mean(axis=0)
    assert columns.std() > 3  # stripes
    lap = lambda x: np.abs(cv2.Laplacian(cv2.GaussianBlur(x, (0, 0), 0.8).astype(np.float32), cv2.CV_32F)).mean()  # noqa: E731
    assert 0.3 < T.retention([T.contrast_pairs(ir, a)]) < 1.0 and lap(a) != lap(ir)


def test_target_score_counts_night_pairs_by_the_visible_brightness():
    ir, vis = _scene()
    day = T.target_score(ir, vis, ir)
    night = T.target_score(ir, (vis * 0.3).astype(np.uint8), ir, T.degrade_ir(ir))
    assert not day.night and night.night and day.degraded is None and night.degraded.shape == (2, 2)
    summary = T.summarize_targets([day, night])
    assert summary["TCR"] == 1.0 and summary["TCR day"] == 1.0 and summary["targets"] == 2
    assert 0 < summary["TCR degraded"] < 1.0


def test_the_references_fuse_like_their_definitions():
    ir, vis = _scene()
    bgr = cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR)
    top = MaxFuser().fuse(ir, bgr)
    assert np.array_equal(top[..., 0], np.maximum(ir, vis))
    fused = cv2.cvtColor(GffFuser().fuse(ir, bgr), cv2.COLOR_BGR2GRAY)
    # Guided-filter fusion keeps the warm blobs (the IR is the more salient camera there).
    assert T.retention([T.contrast_pairs(ir, fused)]) > 0.5
    assert fused.shape == vis.shape

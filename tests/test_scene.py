"""The synthetic street scene: shapes, determinism, radiometry, geometry and argument checks."""
import cv2
import numpy as np
import pytest

from streamfuse.capture.scene import DEMO_H_VIS_FROM_IR, Body, SyntheticScene

H_IR_FROM_VIS = np.linalg.inv(DEMO_H_VIS_FROM_IR)


@pytest.fixture(scope="module")
def day():
    return SyntheticScene(seed=3)


@pytest.fixture(scope="module")
def night():
    return SyntheticScene(seed=3, night=True)


def to_ir(polygon):
    return cv2.perspectiveTransform(polygon[None].astype(np.float64), H_IR_FROM_VIS)[0]


def fill(polygons, size):
    mask = np.zeros(size[::-1], np.uint8)
    for p in polygons:
        cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def luma(bgr):
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).mean()


def test_demo_homography_covers_most_of_the_visible_frame():
    covered = cv2.warpPerspective(np.ones((512, 640), np.uint8), DEMO_H_VIS_FROM_IR, (640, 480))
    assert covered.mean() > 0.85
    assert DEMO_H_VIS_FROM_IR.dtype == np.float64 and DEMO_H_VIS_FROM_IR[2, 2] == 1.0


@pytest.mark.parametrize("ir_bits, dtype", [(16, np.uint16), (8, np.uint8)])
@pytest.mark.parametrize("is_night", [False, True])
def test_shapes_and_dtypes(ir_bits, dtype, is_night):
    scene = SyntheticScene(night=is_night, ir_bits=ir_bits, vis_size=(320, 240), ir_size=(160, 128))
    vis, ir = scene.render_vis(1.0, 0), scene.render_ir(1.0, 0)
    assert vis.shape == (240, 320, 3) and vis.dtype == np.uint8
    assert ir.shape == (128, 160) and ir.dtype == dtype
    assert scene.body_mask_vis(1.0).shape == (240, 320)


def test_sixteen_bit_ir_is_in_kelvin_times_100(day):
    ir = day.render_ir(0.0, 0)
    assert 25000 < np.median(ir) < 31000   # 250..310 K: a street, not raw zeros or saturation


def test_bodies_describe_the_people_vehicles_and_animal(day):
    bodies = day.bodies(2.0)
    assert sorted(b.kind for b in bodies) == ["animal"] + ["person"] * 4 + ["vehicle"] * 2
    for b in bodies:
        assert isinstance(b, Body) and b.polygon.dtype == np.float32 and b.polygon.shape[1] == 2
        assert 295.0 < b.temperature < 340.0
    assert len(SyntheticScene(n_people=0, n_vehicles=1).bodies(0.0)) == 2


def test_same_inputs_give_identical_bytes(day):
    twin = SyntheticScene(seed=3)
    for t, seq in [(0.0, 0), (12.34, 77)]:
        assert day.render_vis(t, seq).tobytes() == twin.render_vis(t, seq).tobytes()
        assert day.render_ir(t, seq).tobytes() == twin.render_ir(t, seq).tobytes()


def test_seq_changes_only_the_noise(day):
    a, b = day.render_ir(5.0, 1).astype(float), day.render_ir(5.0, 2).astype(float)
    assert 2.0 < np.std(a - b) < 12.0   # a few counts of NETD-like noise, nothing structural
    va, vb = day.render_vis(5.0, 1).astype(float), day.render_vis(5.0, 2).astype(float)
    assert 0.5 < np.std(va - vb) < 4.0


def test_time_moves_the_bodies(day):
    before, after = day.bodies(1.0), day.bodies(1.5)
    moved = [np.abs(p.polygon.mean(0) - q.polygon.mean(0)).max() for p, q in zip(before, after)]
    assert min(moved) > 1.0
    assert not np.array_equal(day.body_mask_vis(1.0), day.body_mask_vis(1.5))


def test_seeds_give_different_scenes():
    a, b = SyntheticScene(seed=1), SyntheticScene(seed=2)
    assert np.abs(a.render_vis(0.0, 0).astype(int) - b.render_vis(0.0, 0)).mean() > 5


@pytest.mark.parametrize("is_night", [False, True])
def test_bodies_are_hotter_than_their_surroundings_in_ir(day, night, is_night):
    scene = night if is_night else day
    for t in (0.0, 7.0):
        ir = scene.render_ir(t, 3).astype(np.float64)
        polygons = [to_ir(b.polygon) for b in scene.bodies(t)]
        anywhere = fill(polygons, scene.ir_size)
        for polygon in polygons:
            body = fill([polygon], scene.ir_size)
            if body.sum() < 20:
                continue   # outside the IR field of view
            grow = lambda m, r: cv2.dilate(m.astype(np.uint8), np.ones((r, r), np.uint8)).astype(bool)  # noqa: E731
            ring = grow(body, 15) & ~grow(body, 5) & ~grow(anywhere, 5)
            assert ir[body].mean() - ir[ring].mean() > 500   # > 5 K
    hot8 = SyntheticScene(seed=3, night=is_night, ir_bits=8)
    ir8, mask = hot8.render_ir(0.0, 0), fill([to_ir(b.polygon) for b in hot8.bodies(0.0)], hot8.ir_size)
    assert ir8[mask].mean() - ir8[~mask].mean() > 15


def test_night_is_dark_and_day_is_bright(day, night):
    assert 10 < luma(night.render_vis(3.0, 0)) < 30
    assert luma(day.render_vis(3.0, 0)) > 90
    saturation = cv2.cvtColor(day.render_vis(3.0, 0), cv2.COLOR_BGR2HSV)[..., 1]
    assert saturation.mean() > 40


def centroid(mask, x0, y0):
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    return np.array([x0 + m["m10"] / m["m00"], y0 + m["m01"] / m["m00"]])


def test_ir_and_visible_bodies_agree_through_the_homography(night):
    checked = 0
    for t in np.arange(0.0, 20.0, 2.5):
        ir, mask = night.render_ir(t, 0), night.body_mask_vis(t)
        bodies = night.bodies(t)
        boxes = [cv2.boundingRect(to_ir(b.polygon).astype(np.float32)) for b in bodies]
        for body, (x, y, w, h) in zip(bodies, boxes):
            x0, y0, x1, y1 = x - 4, y - 4, x + w + 4, y + h + 4
            alone = all(b is body or bx > x1 or by > y1 or bx + bw < x0 or by + bh < y0
                        for b, (bx, by, bw, bh) in zip(bodies, boxes))
            inside = x0 >= 0 and y0 >= 0 and x1 <= ir.shape[1] and y1 <= ir.shape[0]
            if body.kind == "vehicle" or not (alone and inside):
                continue   # vehicles have cold windows, so a hot threshold does not find their outline
            hot = centroid(ir[y0:y1, x0:x1] > 29700, x0, y0)   # > 297 K: bodies only, at night
            in_vis = cv2.perspectiveTransform(hot[None, None], DEMO_H_VIS_FROM_IR)[0, 0]
            # Both centroids come from rasterised pixels, so the rasteriser's bias cancels.
            vx, vy, vw, vh = cv2.boundingRect(body.polygon)
            vx, vy = max(vx - 2, 0), max(vy - 2, 0)
            vis = centroid(mask[vy:vy + vh + 4, vx:vx + vw + 4], vx, vy)
            assert np.hypot(*(in_vis - vis)) < 1.5
            checked += 1
    assert checked >= 5


def test_paths_wrap_for_long_runs(day):
    for t in (3600.0, 36000.25):
        vis, ir = day.render_vis(t, 10**6), day.render_ir(t, 10**6)
        assert vis.shape == (480, 640, 3) and ir.shape == (512, 640)
        mask = day.body_mask_vis(t)
        assert 0 < mask.mean() < 0.2
    step = [np.abs(a.polygon.mean(0) - b.polygon.mean(0)).max()
            for a, b in zip(day.bodies(3600.0), day.bodies(3600.04))]
    assert max(d for d in step if d < 100) < 8   # smooth from frame to frame, except a wrap
    x = np.array([[b.polygon[:, 0].mean() for b in day.bodies(t)] for t in np.arange(3600.0, 3660.0, 1.0)])
    assert x.min() > -200 and x.max() < 840   # every body stays near the canvas


@pytest.mark.parametrize("kwargs, words", [
    ({"vis_size": (640,)}, "vis_size"),
    ({"ir_size": (640.0, 512)}, "ir_size"),
    ({"ir_bits": 12}, "ir_bits must be 8 or 16; got 12"),
    ({"H_vis_from_ir": np.zeros((3, 3))}, "invertible"),
    ({"H_vis_from_ir": np.eye(2)}, "3x3"),
    ({"H_vis_from_ir": np.array([[1, 0, 0], [0, 1, 0], [-0.01, 0, 1.0]])}, "infinity"),
    ({"n_people": -1}, "n_people"),
])
def test_bad_arguments_are_rejected_with_a_reason(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SyntheticScene(**kwargs)


def test_bad_time_and_seq_are_rejected(day):
    with pytest.raises(ValueError, match="t_s"):
        day.render_vis(float("nan"), 0)
    with pytest.raises(ValueError, match="seq"):
        day.render_ir(0.0, -1)

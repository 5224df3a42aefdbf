"""The `lite` learned fusion mode: its formula (numpy vs torch), shipped weights, prior, training."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the lite fusion mode needs the `learn` extra (torch)")

from streamfuse.capture.scene import SyntheticScene  # noqa: E402
from streamfuse.errors import UsageError  # noqa: E402
from streamfuse.fuse import FusionConfig, make_fuser  # noqa: E402
from streamfuse.fuse.lite import WEIGHTS, LiteFuser  # noqa: E402
from streamfuse.models import lite  # noqa: E402
from streamfuse.thermal import ir_to_u8  # noqa: E402
from streamfuse import train as training  # noqa: E402


def _lumas(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 2.0)
    b = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 1.0)
    return a, b


def _frame():
    scene = SyntheticScene(seed=3, night=True)
    ir = cv2.warpPerspective(scene.render_ir(1.0, 0), scene.H_vis_from_ir, scene.vis_size)
    return ir, scene.render_vis(1.0, 0)


def test_numpy_and_torch_application_agree():
    torch.manual_seed(1)
    net = lite.build_net()
    for p in net.parameters():  # away from the constant start, so the maps vary per pixel
        torch.nn.init.normal_(p, 0.0, 0.3)
    a, b = _lumas()
    ta, tb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
    feats = lite.features_torch(ta, tb)
    assert np.allclose(lite.features_numpy(a, b), feats[0].numpy(), atol=1e-4)
    with torch.no_grad():
        maps = net(feats)
        fused_torch = lite.apply_torch(ta, tb, maps)[0, 0].numpy()
    assert maps.shape == (1, 3, 8, 12) and float(maps[:, 1:].std()) > 0.01
    fused_numpy = lite.apply_numpy(a, b, maps[0].numpy())
    assert fused_numpy.shape == a.shape
    assert np.abs(fused_numpy - fused_torch).max() < 1e-4


def test_constant_maps_give_the_plain_formula():
    a, b = _lumas()
    maps = np.stack([np.full((8, 12), v, np.float32) for v in (0.25, 1.0, 1.0)])
    base_a = cv2.blur(a, (17, 17), borderType=cv2.BORDER_REFLECT_101)
    base_b = cv2.blur(b, (17, 17), borderType=cv2.BORDER_REFLECT_101)
    expected = 0.25 * base_a + 0.75 * base_b + (a - base_a) + (b - base_b)
    assert np.abs(lite.apply_numpy(a, b, maps) - expected).max() < 1e-4


def test_shipped_weights_fuse_a_frame_keeping_the_visible_chroma():
    fuser = make_fuser(FusionConfig(mode="lite"))
    ir, vis = _frame()
    assert ir.dtype == np.uint16
    out = fuser.fuse(ir, vis)
    assert out.shape == vis.shape and out.dtype == np.uint8
    chroma_out = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)[..., 1:].astype(int)
    chroma_vis = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[..., 1:].astype(int)
    assert np.abs(chroma_out - chroma_vis).mean() < 2.0
    grey = fuser.fuse(ir, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY))
    assert grey.shape == vis.shape and (grey[..., 0] == grey[..., 2]).all()
    # The IR shows through: the fused luma follows the IR more than the visible luma alone.
    y = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float32)
    ir8 = cv2.normalize(ir, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_32F)
    vis_y = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float32)
    assert np.corrcoef(y.ravel(), ir8.ravel())[0, 1] > np.corrcoef(vis_y.ravel(), ir8.ravel())[0, 1]


def test_the_prior_hands_the_marked_region_to_the_ir():
    fuser = LiteFuser(FusionConfig(mode="lite"))
    ir, vis = _frame()
    a = ir_to_u8(ir).astype(np.float32) / 255
    b = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    plain = fuser.maps(a, b)
    emphasis = np.zeros((12, 16), np.float32)
    emphasis[:, 8:] = 1.0   # the right half is marked
    prior = SimpleNamespace(emphasis=emphasis)
    for _ in range(10):     # past the blend-in frames
        marked = fuser.maps(a, b, prior)
    w = marked.shape[2]
    assert np.allclose(marked[:, :, : w // 2 - 2], plain[:, :, : w // 2 - 2], atol=1e-5)
    right = (slice(None), slice(w // 2 + 2, None))
    assert (marked[0][right] > plain[0][right]).all() and np.allclose(marked[0][right], 1.0)
    assert np.allclose(marked[1][right], 1.0) and np.allclose(marked[2][right], 0.0)
    assert (plain[0][right] < 0.99).any()  # so the prior did change the weight
    # Where marked, the fused luma is the IR (to rounding); elsewhere it is not.
    fused_marked = fuser.fuse(ir, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY), prior)[..., 0].astype(int)
    ir8 = np.rint(a * 255).astype(int)
    assert np.abs(fused_marked[:, 360:] - ir8[:, 360:]).max() <= 1
    assert np.abs(fused_marked[:, :280] - ir8[:, :280]).mean() > 5


def test_missing_or_foreign_weights_are_a_one_line_usage_error(tmp_path):
    with pytest.raises(UsageError, match="weights file .*nope.pt not found"):
        LiteFuser(FusionConfig(mode="lite"), weights=tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="does not hold lite weights"):
        LiteFuser(FusionConfig(mode="lite"), weights=junk)


def test_shipped_weights_are_small_and_trained():
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size < 64_000
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert state["steps"] > 0
    assert float(state["model"]["body.6.weight"].abs().sum()) > 0  # moved off the zero start


def _tiny_clips():
    a, b = _lumas(136, 136, seed=5)
    frame = lambda k: np.stack([np.roll(a, k, 1)] + [np.roll(b, k, 1)] * 3)  # noqa: E731  IR, B, G, R
    return [np.stack([frame(k) for k in range(3)])]


def test_train_resumes_from_a_checkpoint_exactly(tmp_path):
    clips = _tiny_clips()
    straight = training.TrainConfig(steps=4, batch=2, every=2, seed=7)
    training.train(straight, clips, tmp_path / "a.pt", tmp_path / "a-ck.pt", progress=False)
    first = training.TrainConfig(steps=2, batch=2, every=2, seed=7)
    training.train(first, clips, tmp_path / "b.pt", tmp_path / "b-ck.pt", progress=False)
    losses = training.train(straight, clips, tmp_path / "b.pt", tmp_path / "b-ck.pt", resume=True, progress=False)
    assert set(losses) >= {"ssim", "gradient", "intensity", "scd", "consistency", "temporal", "total"}
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["steps"] == b["steps"] == 4
    for name, value in a["model"].items():
        assert torch.allclose(value, b["model"][name]), name
    with pytest.raises(UsageError, match="no checkpoint"):
        training.train(straight, clips, tmp_path / "c.pt", tmp_path / "missing.pt", resume=True, progress=False)


def test_train_refuses_evaluation_pairs(tmp_path):
    pairs = tmp_path / "pairs" / "set"
    (pairs / "ir").mkdir(parents=True)
    with pytest.raises(UsageError, match="evaluation set"):
        training.load_clips([pairs])

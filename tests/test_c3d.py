"""`c3d`, CLIPFusion's 3D-convolution generator: the network, training it, and the fusion mode."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the c3d mode needs the `learn` extra (torch)")

from streamfuse.errors import UsageError  # noqa: E402
from streamfuse.fuse import FusionConfig, make_fuser  # noqa: E402
from streamfuse.models.c3d import Conv3dGenerator  # noqa: E402
from streamfuse.thermal import ir_to_u8  # noqa: E402
from streamfuse.train import loop as training  # noqa: E402
from streamfuse.train.data import synthetic_clips  # noqa: E402


def test_the_generator_sees_both_cameras_through_the_same_3d_kernels():
    torch.manual_seed(0)
    net = Conv3dGenerator().eval()
    ir, vis = torch.rand(2, 1, 37, 50), torch.rand(2, 1, 37, 50)
    with torch.inference_mode():
        out = net(ir, vis)
        swapped = net(vis, ir)
    assert out.shape == (2, 1, 37, 50) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert isinstance(net.body[0], torch.nn.Conv3d) and net.body[0].weight.shape[2] == 3
    assert net.collapse.weight.shape[2] == 2  # depth 2 (the cameras) -> 1
    assert not torch.allclose(out, swapped)  # the depth order (which camera) matters


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c3d")
    run = training.TrainConfig(model="c3d", steps=3, batch=2, every=3, seed=1)
    losses = training.train(run, synthetic_clips(2, seed=1), folder / "c3d.pt", folder / "ck.pt", progress=False)
    assert set(losses) == {"vif", "qabf", "scd", "temporal", "total"} and np.isfinite(losses["total"])
    return folder / "c3d.pt"


def test_c3d_mode_fuses_8_and_16_bit_ir_keeping_the_visible_chroma(weights):
    fuser = make_fuser(FusionConfig(mode="c3d", weights=weights))
    rng = np.random.default_rng(0)
    ir16 = cv2.GaussianBlur(rng.integers(20000, 30000, (48, 64)).astype(np.float32), (0, 0), 2).astype(np.uint16)
    vis = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (0, 0), 1.5)
    out8, out16 = fuser.fuse(ir_to_u8(ir16), vis), fuser.fuse(ir16, vis)
    assert out8.shape == (48, 64, 3) and out8.dtype == np.uint8 and np.array_equal(out8, out16)
    chroma = lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[..., 1:].astype(int)  # noqa: E731
    assert np.abs(chroma(out8) - chroma(vis)).mean() < 1.5  # only the luma is fused (rounding aside)
    grey = fuser.fuse(ir16, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_c3d_without_weights_is_a_one_line_usage_error(tmp_path):
    with pytest.raises(UsageError, match="fusion.weights is not set.*streamfuse train --model c3d"):
        make_fuser(FusionConfig(mode="c3d"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(UsageError, match="junk.pt"):
        make_fuser(FusionConfig(mode="c3d", weights=junk))

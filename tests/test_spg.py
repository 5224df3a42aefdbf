"""The `spg` mode: weights round trip, padding, modulation once per prior, training losses, benchmark."""
import io
import re

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the spg fusion mode needs the `learn` extra (torch)")

from streamfuse.bench import models as bench  # noqa: E402
from streamfuse.cli import main  # noqa: E402
from streamfuse.errors import UsageError  # noqa: E402
from streamfuse.fuse import NEEDS_WEIGHTS, FusionConfig, make_fuser  # noqa: E402
from streamfuse.fuse.spg import MULTIPLE, SPGFuser, pad_to_multiple  # noqa: E402
from streamfuse.models import spg  # noqa: E402
from streamfuse.priors import Prior  # noqa: E402
from streamfuse.priors.prior import BLEND_FRAMES  # noqa: E402
from streamfuse.thermal import ir_to_u8  # noqa: E402
from streamfuse.train import losses as L  # noqa: E402
from streamfuse.train import objectives  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
#: Largest mean difference (grey levels) between a bf16 CUDA frame and the fp32 reference.
BF16_MEAN_TOLERANCE = {"cpu": 0.0, "cuda": 2.0}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A freshly initialised net, saved the way `streamfuse train` writes weights; returns (path, net)."""
    torch.manual_seed(0)
    net = spg.build_net().eval()
    path = tmp_path_factory.mktemp("spg") / "spg.pt"
    torch.save({"model": net.state_dict(), "steps": 0, "config": {}}, path)
    return path, net


def _frames(h, w, seed=0):
    rng = np.random.default_rng(seed)
    ir16 = cv2.GaussianBlur(rng.integers(20000, 30000, (h, w)).astype(np.float32), (0, 0), 2).astype(np.uint16)
    vis = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.5)
    return ir16, vis


def _prior(seed, grid=(4, 5), dim=8):
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.random(s, dtype=np.float32)  # noqa: E731
    return Prior(emphasis=r(*grid), semantic_ir=r(*grid, dim), semantic_vis=r(*grid, dim),
                 global_ir=r(dim), global_vis=r(dim), relevance={"person": r(*grid)})


def _reference(net, ir, vis):
    """What the fuser must return on the CPU: the net's fp32 forward on the padded frame, cropped."""
    a = torch.from_numpy(ir_to_u8(ir)).float().mul_(1.0 / 255.0)[None, None]  # the fuser's scaling, bit for bit
    b = torch.from_numpy(vis).float().mul_(1.0 / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = net(pad_to_multiple(a, MULTIPLE), pad_to_multiple(b, MULTIPLE))[0, :, :ir.shape[0], :ir.shape[1]]
    return (out * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


# --- the fusion mode ------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(64, 80), (61, 77)])
def test_saved_weights_round_trip_and_fuse_8_and_16_bit_ir(weights, device, size):
    path, net = weights
    fuser = make_fuser(FusionConfig(mode="spg", weights=path, device=device))
    loaded = fuser.net.state_dict()
    assert all(torch.equal(v, loaded[k].cpu()) for k, v in net.state_dict().items())
    ir16, vis = _frames(*size)
    ir8 = ir_to_u8(ir16)
    expected = _reference(net, ir16, vis)
    for ir in (ir8, ir16):
        before = ir.copy(), vis.copy()
        out = fuser.fuse(ir, vis)
        assert out.shape == size + (3,) and out.dtype == np.uint8
        assert np.array_equal(before[0], ir) and np.array_equal(before[1], vis)
        assert np.abs(out.astype(int) - expected).mean() <= BF16_MEAN_TOLERANCE[device]
        assert np.abs(out.astype(int) - vis).mean() > 0.5  # the IR changed the picture


@pytest.mark.parametrize("device", DEVICES)
def test_grey_visible_gives_a_grey_picture(weights, device):
    ir16, vis = _frames(64, 80)
    out = make_fuser(FusionConfig(mode="spg", weights=weights[0], device=device)).fuse(
        ir16, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY))
    assert out.shape == (64, 80, 3) and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("device", DEVICES)
def test_modulation_is_computed_once_per_prior_and_blended_in(weights, device, monkeypatch):
    fuser = make_fuser(FusionConfig(mode="spg", weights=weights[0], device=device))
    calls = []
    compute = fuser.net.modulation
    monkeypatch.setattr(fuser.net, "modulation", lambda *a: calls.append(a[-2:]) or compute(*a))
    ir, vis = _frames(61, 77)
    plain = [fuser.fuse(ir, vis).astype(int) for _ in range(3)][-1]
    assert calls == [(64, 80)]  # the no-prior modulation, once per (padded) size
    first, second = _prior(1), _prior(2)
    outs = [fuser.fuse(ir, vis, first).astype(int) for _ in range(BLEND_FRAMES + 2)]
    assert calls == [(64, 80)] * 2  # and once per prior
    away = [np.abs(o - plain).mean() for o in outs]
    assert 0 < away[0] < away[BLEND_FRAMES - 1]  # blended in, not switched
    assert np.array_equal(outs[-1], outs[-2]) and np.array_equal(outs[-1], outs[BLEND_FRAMES - 1])
    assert np.array_equal(fuser.fuse(ir, vis).astype(int), outs[-1])  # None keeps the last prior
    fuser.fuse(ir, vis, second)
    for _ in range(3):
        fuser.fuse(ir, vis, second)
    assert len(calls) == 3
    fuser.fuse(*_frames(40, 48), second)  # a new frame size needs its own (and its no-prior one)
    assert calls[-2:] == [(40, 48)] * 2 and len(calls) == 5


def test_missing_unset_or_foreign_weights_are_one_line_usage_errors(tmp_path):
    for cfg, message in [
        (FusionConfig(mode="spg"), "fusion.weights is not set"),
        (FusionConfig(mode="spg", weights=tmp_path / "nope.pt"), "nope.pt not found"),
    ]:
        with pytest.raises(UsageError, match=message) as err:
            make_fuser(cfg)
        assert "\n" not in str(err.value)
        assert "streamfuse train --model spg --out spg.pt" in str(err.value) and "fusion.weights" in str(err.value)
    junk = tmp_path / "junk.pt"
    torch.save({"model": {"head.weight": torch.zeros(1)}}, junk)
    with pytest.raises(UsageError, match="does not hold spg weights"):
        SPGFuser(FusionConfig(mode="spg", weights=junk))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(weights):
    with pytest.raises(UsageError, match="fusion.device: cuda.*set `fusion.device: cpu`"):
        make_fuser(FusionConfig(mode="spg", weights=weights[0], device="cuda"))


def test_config_fields_and_registry(tmp_path):
    assert "spg" in NEEDS_WEIGHTS and FusionConfig().mode == "lite"
    cfg = FusionConfig(mode="spg", weights="w/spg.pt")
    assert cfg.resolved(tmp_path).weights == tmp_path / "w" / "spg.pt"
    assert FusionConfig(weights=tmp_path).resolved(tmp_path / "x").weights == tmp_path  # absolute stays
    with pytest.raises(ValueError, match=r"device: expected one of \['cpu', 'cuda'\]"):
        FusionConfig(device="gpu")


# --- training losses ------------------------------------------------------------------------


def _batch(seed=0, n=2, size=32):
    """n x 2 x 4 x size x size: smooth random IR and a tinted grey visible scene; frame t+1 is
    frame t moved by one pixel."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 2, 4, size, size), np.float32)
    for k in range(n):
        smooth = lambda s: cv2.GaussianBlur(rng.random((size, size + 1), dtype=np.float32), (0, 0), s)  # noqa: E731
        ir, grey = smooth(2.0), smooth(1.0)
        tint = rng.random(3).astype(np.float32) * 0.2 - 0.1
        frame = np.stack([ir] + [np.clip(grey + t, 0, 1) for t in tint])
        out[k, 0], out[k, 1] = frame[..., :-1], frame[..., 1:]
    return torch.from_numpy(out)


def test_spg_losses_are_spgfusion_s_terms_finite_and_decrease():
    torch.manual_seed(0)
    net = spg.build_net()
    batch = _batch(size=64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    totals = []
    for _ in range(8):
        terms = objectives.spg_losses(net, batch)
        assert set(terms) == {"ssim", "gradient", "intensity", "colour", "consistency", "temporal"}
        assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
        total = sum(terms.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert np.mean(totals[-3:]) < 0.96 * totals[0]  # Adam's steps are noisy: the last few, on average


def test_spg_losses_train_the_semantic_path_only_when_a_prior_is_given():
    torch.manual_seed(0)
    net = spg.build_net()
    sem = torch.randn(2, spg.SEMANTIC_DIM, 4, 4)
    sum(objectives.spg_losses(net, _batch(), (sem, sem.flip(1))).values()).backward()
    assert all(c.shared[0].weight.grad.abs().sum() > 0 for c in net.csaf)
    net.zero_grad(set_to_none=True)
    sum(objectives.spg_losses(net, _batch()).values()).backward()
    # The no-prior input is all zeros: the semantic convs' weights get no gradient (their biases
    # and the gamma/beta heads do), so a network trained without priors cannot learn to read one.
    assert all(float(c.shared[0].weight.grad.abs().sum()) == 0 for c in net.csaf)
    assert all(float(c.gamma.weight.grad.abs().sum()) > 0 for c in net.csaf)


def test_spgfusion_loss_terms_against_their_definitions():
    torch.manual_seed(2)
    x = torch.rand(2, 3, 40, 40)
    assert float(L.ssim_loss(x, x)) < 1e-6 and float(L.ssim_loss(x, 1 - x)) > 0.5
    # Separable Gaussian SSIM equals the published 2-d window (sigma 1.5, 48 taps, valid).
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    g = torch.exp(-(torch.arange(40.0) - 20) ** 2 / (2 * 1.5 ** 2))
    win = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 40, 40)
    f = lambda z: torch.nn.functional.conv2d(z, win, groups=3)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    ssim_map = ((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)) / ((mx * mx + my * my + 1e-4) * (vx + vy + 9e-4))
    assert abs(float(L.ssim_loss(x, y)) - float(1 - ssim_map.mean())) < 1e-4
    # Adaptive intensity: a much brighter, busier visible image is the target; a mask makes it the IR.
    vis, ir, fused = torch.full((1, 3, 24, 24), 0.9), torch.full((1, 3, 24, 24), 0.1), torch.full((1, 3, 24, 24), 0.5)
    vis = vis + 0.05 * torch.randn_like(vis)
    assert float(L.intensity_mask_loss(vis, ir, vis)) < 0.5 * float(L.intensity_mask_loss(vis, ir, ir))
    assert float(L.intensity_mask_loss(vis, ir, ir, torch.ones(1, 1, 24, 24))) < 1e-9
    assert float(L.intensity_mask_loss(vis, ir, fused, torch.ones(1, 1, 24, 24))) == pytest.approx(
        float(L.local_mse(ir, fused).mean()))
    # Colour: Cb/Cr of RGB; a grey image has none.
    grey = torch.full((1, 3, 8, 8), 0.4)
    red = grey.clone()
    red[:, 0] = 0.9
    assert float(L.cbcr_loss(grey, grey)) == 0 and float(L.cbcr_loss(grey, red)) == pytest.approx(0.5 * (0.168736 + 0.5))
    # Gradient: the per-axis larger source gradient is the target.
    ramp = torch.linspace(0, 1, 16).expand(1, 1, 16, 16).contiguous()
    assert float(L.max_gradient_loss(ramp, torch.zeros_like(ramp), ramp)) < 1e-6
    assert float(L.max_gradient_loss(ramp, torch.zeros_like(ramp), torch.zeros_like(ramp))) > 0.1


# --- benchmark ------------------------------------------------------------------------------

LINE = re.compile(r"^(.+?)\s+(\d+\.\d+) ms/frame\s+p90\s+(\d+\.\d+) ms\s+min\s+(\d+\.\d+) ms\s+(\d+\.\d+) fps")


def test_bench_prints_a_line_per_item_with_numbers():
    out = io.StringIO()
    times = bench.bench((80, 64), frames=2, device="cpu", out=out)
    lines = out.getvalue().splitlines()
    assert "cpu:" in lines[0] and "80x64" in lines[0] and re.search(r"\d{4}-\d\d-\d\dT", lines[0])
    ratio = [line for line in lines if line.startswith("lite / gff")]
    assert len(ratio) == 1 and re.search(r"\d+\.\d\d x$", ratio[0])
    rows = [LINE.match(line) for line in lines[1:] if line not in ratio]
    assert all(rows) and [r.group(1).strip() for r in rows] == list(times)
    assert len(rows) == 6 and "gff fuse (cpu)" in times and len(times["spg forward fp32"]) == 2
    assert len(times["spg priors every 8 fp32"]) == 8  # at least one refresh cycle
    for r in rows:
        p50, p90, fastest, fps = (float(r.group(i)) for i in (2, 3, 4, 5))
        assert 0 < fastest <= p50 <= p90 and abs(fps - 1e3 / p50) < 0.02 * fps


def test_bench_command_line(capsys):
    assert main(["bench-models", "--size", "80x64", "--frames", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8  # header, 6 items, lite / gff
    with pytest.raises(SystemExit):
        main(["bench-models", "--size", "81x64"])
    assert "multiples of 8" in capsys.readouterr().err

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
from streamfuse.train import objectives  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
#: Largest mean difference (grey levels) between a bf16 CUDA frame and the fp32 reference.
BF16_MEAN_TOLERANCE = {"cpu": 0.0, "cuda": 2.0}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A freshly initialised net (modulation heads nudged off their zero start, so priors act),
    saved the way `streamfuse train` writes weights; returns (path, net)."""
    torch.manual_seed(0)
    net = spg.build_net().eval()
    with torch.no_grad():
        for head in list(net.mod_ir.heads) + list(net.mod_vis.heads):
            head.bias.fill_(0.2)
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
    a = torch.from_numpy(ir_to_u8(ir).astype(np.float32) / 255.0)[None, None]
    b = torch.from_numpy(vis.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
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
    plain = fuser.fuse(ir, vis).astype(int)
    first, second = _prior(1), _prior(2)
    outs = [fuser.fuse(ir, vis, first).astype(int) for _ in range(BLEND_FRAMES + 2)]
    assert calls == [(64, 80)]  # once, at the padded size
    away = [np.abs(o - plain).mean() for o in outs]
    assert 0 < away[0] < away[BLEND_FRAMES - 1]  # blended in, not switched
    assert np.array_equal(outs[-1], outs[-2]) and np.array_equal(outs[-1], outs[BLEND_FRAMES - 1])
    assert np.array_equal(fuser.fuse(ir, vis).astype(int), outs[-1])  # None keeps the last prior
    fuser.fuse(ir, vis, second)
    for _ in range(3):
        fuser.fuse(ir, vis, second)
    assert len(calls) == 2
    fuser.fuse(*_frames(40, 48), second)  # a new frame size needs its own modulation
    assert calls[-1] == (40, 48) and len(calls) == 3


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


# --- prior maps -----------------------------------------------------------------------------


def test_prior_maps_channels():
    prior = _prior(3)
    m_ir, m_vis = spg.prior_maps(prior)
    assert m_ir.shape == m_vis.shape == (spg.PRIOR_CHANNELS, 4, 5) and m_ir.dtype == np.float32
    assert m_ir.min() >= 0 and m_ir.max() <= 1
    assert np.array_equal(m_ir[0], prior.emphasis) and np.array_equal(m_ir[1], prior.relevance["person"])
    assert not np.array_equal(m_ir[2], m_vis[2])  # each camera's own distinctiveness
    same = Prior(emphasis=prior.emphasis, semantic_ir=prior.semantic_ir, semantic_vis=prior.semantic_ir,
                 global_ir=prior.global_ir, global_vis=prior.global_ir)
    assert np.allclose(spg.prior_maps(same)[0][3], 1.0, atol=1e-5)  # both cameras mean the same
    bare = spg.prior_maps(type("P", (), {"emphasis": np.full((3, 3), 2.0, np.float32)})())[0]
    assert np.all(bare[0] == 1.0) and not bare[1:].any()


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


def test_spg_losses_are_finite_and_decrease():
    torch.manual_seed(0)
    net = spg.build_net()
    batch = _batch()
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


def test_spg_losses_train_the_modulation_when_priors_are_given():
    torch.manual_seed(0)
    net = spg.build_net()
    prior = torch.rand(2, spg.PRIOR_CHANNELS, 4, 4)
    sum(objectives.spg_losses(net, _batch(), prior).values()).backward()
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in net.mod_ir.heads)
    net.zero_grad(set_to_none=True)
    sum(objectives.spg_losses(net, _batch(), (prior, prior.flip(1))).values()).backward()
    assert net.mod_vis.heads[0].weight.grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)
    sum(objectives.spg_losses(net, _batch()).values()).backward()
    assert net.mod_ir.heads[0].weight.grad is None  # no prior, no modulation


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
    assert len(rows) == 5 and "gff fuse (cpu)" in times and len(times["spg forward fp32"]) == 2
    for r in rows:
        p50, p90, fastest, fps = (float(r.group(i)) for i in (2, 3, 4, 5))
        assert 0 < fastest <= p50 <= p90 and abs(fps - 1e3 / p50) < 0.02 * fps


def test_bench_command_line(capsys):
    assert main(["bench-models", "--size", "80x64", "--frames", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7  # header, 5 items, lite / gff
    with pytest.raises(SystemExit):
        main(["bench-models", "--size", "81x64"])
    assert "multiples of 8" in capsys.readouterr().err

"""The spg network (SPGFusion made small): shapes, the CSAF modulation contract, the no-prior
input, and the prior -> semantic map path (random weights)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learned-fusion networks need the `learn` extra (torch)")

from streamfuse.models import spg  # noqa: E402
from streamfuse.models.spg import SPGFusionNet  # noqa: E402
from streamfuse.priors.prior import Prior  # noqa: E402


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SPGFusionNet().eval()


@pytest.mark.parametrize("size", [(64, 80), (61, 77)])
def test_spg_fuses_any_size_to_colour(net, size):
    h, w = size
    ir, vis = torch.rand(2, 1, h, w), torch.rand(2, 3, h, w)
    with torch.inference_mode():
        out = net(ir, vis)
    assert out.shape == (2, 3, h, w) and torch.isfinite(out).all()
    assert (out - 0.5 * (ir + vis)).abs().mean() > 1e-3  # the network adds to the sources' mean


def test_without_a_prior_the_network_uses_the_modulation_of_an_all_zero_map(net):
    ir, vis = torch.rand(1, 1, 64, 80), torch.rand(1, 3, 64, 80)
    zeros = torch.zeros(1, spg.SEMANTIC_DIM, 4, 5)
    with torch.inference_mode():
        assert torch.allclose(net(ir, vis), net(ir, vis, net.modulation(zeros, zeros, 64, 80)), atol=1e-6)
        sem = torch.randn(1, spg.SEMANTIC_DIM, 4, 5)
        assert (net(ir, vis, net.modulation(sem, sem, 64, 80)) - net(ir, vis)).abs().max() > 1e-3


def test_modulation_depends_only_on_the_semantic_maps_per_level_and_camera(net):
    sem_ir, sem_vis = torch.randn(1, spg.SEMANTIC_DIM, 8, 10), torch.randn(1, spg.SEMANTIC_DIM, 8, 10)
    with torch.inference_mode():
        a = net.modulation(sem_ir, sem_vis, 64, 80)
        b = net.modulation(sem_ir.clone(), sem_vis.clone(), 64, 80)
    assert len(a) == len(spg.WIDTHS)
    for level, (width, size) in enumerate(zip(spg.WIDTHS, net.feature_sizes(64, 80))):
        (g_ir, b_ir), (g_vis, b_vis) = a[level]
        assert g_ir.shape == b_vis.shape == (1, width, *size)
        assert torch.equal(g_ir, b[level][0][0]) and torch.equal(b_vis, b[level][1][1])
        assert 0 < float(g_ir.min()) and float(g_ir.max()) < 1  # sigmoid gamma, as SPGFusion's
        assert not torch.equal(g_ir, g_vis)  # each camera through its own map, one shared block


def test_csaf_is_spgfusion_s_formula(net):
    torch.manual_seed(1)
    csaf = net.csaf[1]
    f, sem = torch.randn(2, spg.WIDTHS[1], 16, 20), torch.randn(2, spg.SEMANTIC_DIM, 3, 4)
    with torch.inference_mode():
        gamma, beta = csaf.params(sem, (16, 20))
        h = torch.relu(csaf.shared[0](torch.nn.functional.interpolate(sem, size=(16, 20), mode="bilinear")))
        assert torch.allclose(gamma, torch.sigmoid(csaf.gamma(h)), atol=1e-6)
        assert torch.allclose(beta, csaf.beta(h), atol=1e-6)
        normalised = (f - f.mean((2, 3), keepdim=True)) / torch.sqrt(f.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
        expected = csaf.bn(normalised * (1 + gamma)) + beta
        assert torch.allclose(csaf(f, gamma, beta), expected, atol=1e-4)


def _prior(c: int, seed: int = 0) -> Prior:
    rng = np.random.default_rng(seed)
    e = np.zeros(3, np.float32)
    return Prior(emphasis=np.zeros((4, 5), np.float32), global_ir=e, global_vis=e,
                 semantic_ir=rng.normal(size=(4, 5, c)).astype(np.float32),
                 semantic_vis=rng.normal(size=(4, 5, c)).astype(np.float32))


@pytest.mark.parametrize("channels", [48, 384, 768])
def test_semantic_maps_project_clip_features_with_a_fixed_orthonormal_matrix(channels):
    prior = _prior(channels)
    m_ir, m_vis = spg.semantic_maps(prior)
    assert m_ir.shape == m_vis.shape == (spg.SEMANTIC_DIM, 4, 5) and m_ir.dtype == np.float32
    q = spg.projection(channels)
    gram = q.T @ q if channels >= spg.SEMANTIC_DIM else q @ q.T
    assert np.allclose(gram, np.eye(min(channels, spg.SEMANTIC_DIM)), atol=1e-5)
    assert np.array_equal(spg.projection(channels), q)  # the same matrix every time
    # Cosines between patches survive the projection (exactly for a narrow CLIP, closely otherwise).
    f = prior.semantic_ir.reshape(-1, channels)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    g = m_ir.reshape(spg.SEMANTIC_DIM, -1).T
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    assert np.abs(f @ f.T - g @ g.T).max() < (1e-4 if channels <= spg.SEMANTIC_DIM else 0.5)
    # Each patch's feature has norm sqrt(C) before the projection: sqrt(C) after it for a narrow
    # CLIP, about sqrt(D) (unit variance per channel) for a wide one.
    norm = np.linalg.norm(m_ir, axis=0)
    if channels <= spg.SEMANTIC_DIM:
        assert np.allclose(norm, np.sqrt(channels), rtol=1e-4)
    else:
        assert abs(np.median(norm) / np.sqrt(spg.SEMANTIC_DIM) - 1) < 0.2


def test_a_prior_without_semantic_features_is_the_no_prior_input():
    bare = type("P", (), {"emphasis": np.ones((3, 4), np.float32)})()
    m_ir, m_vis = spg.semantic_maps(bare)
    assert m_ir.shape == (spg.SEMANTIC_DIM, 3, 4) and not m_ir.any() and not m_vis.any()


def test_mask_map_puts_the_area_fraction_in_channel_0():
    mask = np.zeros((32, 48), np.uint8)
    mask[:16, :16] = 1
    m = spg.mask_map(mask, (2, 3))
    assert m.shape == (spg.SEMANTIC_DIM, 2, 3) and not m[1:].any()
    assert np.allclose(m[0], [[1, 0, 0], [0, 0, 0]])
    assert not spg.mask_map(np.zeros_like(mask), (2, 3)).any()  # no target: the no-prior input

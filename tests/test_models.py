"""Fusion network architectures: shapes, ranges and the prior-modulation contract (random weights)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the learned-fusion networks need the `learn` extra (torch)")

from streamfuse.models.spg import SPGFusionNet  # noqa: E402


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SPGFusionNet(prior_channels=4).eval()


@pytest.mark.parametrize("size", [(64, 80), (61, 77)])
def test_spg_fuses_any_size_to_colour_in_range(net, size):
    h, w = size
    ir, vis = torch.rand(2, 1, h, w), torch.rand(2, 3, h, w)
    with torch.inference_mode():
        out = net(ir, vis)
    assert out.shape == (2, 3, h, w)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_spg_modulation_starts_as_identity_and_then_steers(net):
    ir, vis = torch.rand(1, 1, 64, 80), torch.rand(1, 3, 64, 80)
    prior = torch.rand(1, 4, 4, 5)
    with torch.inference_mode():
        modulation = net.modulation(prior, prior, 64, 80)
        assert torch.equal(net(ir, vis, modulation), net(ir, vis))  # zero-initialised heads
        for head in list(net.mod_ir.heads) + list(net.mod_vis.heads):
            head.bias.fill_(0.5)
        steered = net(ir, vis, net.modulation(prior, prior, 64, 80))
        for head in list(net.mod_ir.heads) + list(net.mod_vis.heads):
            head.bias.zero_()
    assert not torch.equal(steered, net(ir, vis))


def test_spg_modulation_depends_only_on_the_prior(net):
    prior = torch.rand(1, 4, 8, 10)
    with torch.inference_mode():
        a = net.modulation(prior, prior, 64, 80)
        b = net.modulation(prior.clone(), prior.clone(), 64, 80)
    for (ga, ba), (gb, bb) in zip(a[0], b[0]):
        assert torch.equal(ga, gb) and torch.equal(ba, bb)
    assert [g.shape[-2:] for g, _ in a[0]] == [torch.Size(s) for s in net.feature_sizes(64, 80)]

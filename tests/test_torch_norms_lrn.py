"""Tests of the local response normalisations in bnbook.torch_norms and of the chapter-7
network with LRN (``KerasCifarCNN(lrn=True)``).

References, all float64: ``nn.LocalResponseNorm`` for the cross-channel LRN (which divides
``alpha`` by the window size), a direct loop over channels/positions for both LRNs, and
``torch.autograd.gradcheck`` (finite differences) for their gradients. Inputs are large
enough (``alpha * sum a**2`` comparable to ``k``) that a wrong window or a missing square shows.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnbook.gradcheck import rel_error
from bnbook.models import KerasCifarCNN, keras_cnn
from bnbook.torch_norms import (ALEXNET_LRN, CrossChannelLRN, SpatialLRN, channel_window_sum,
                                cross_channel_lrn, lrn_strength, spatial_lrn, window_sum)

TOL = 1e-12


def big_input(shape, seed, scale=40.0):
    """float64 values of a few tens: ``1e-4 * sum a**2`` over 5 neighbours is of order 1-5."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=g, dtype=torch.float64) + 3.0


def cross_channel_loop(x, size, alpha, beta, k):
    """The paper's formula, one channel at a time (window ``i - size//2 .. i + (size-1)//2``)."""
    out = torch.empty_like(x)
    channels = x.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - size // 2), min(channels - 1, i + (size - 1) // 2)
        energy = sum(x[:, j] ** 2 for j in range(lo, hi + 1))
        out[:, i] = x[:, i] / (k + alpha * energy) ** beta
    return out


def spatial_loop(x, size, alpha, beta, k):
    """The intra-channel formula, one position at a time."""
    n, c, height, width = x.shape
    out = torch.empty_like(x)
    for h in range(height):
        for w in range(width):
            h0, h1 = max(0, h - size // 2), min(height, h + (size - 1) // 2 + 1)
            w0, w1 = max(0, w - size // 2), min(width, w + (size - 1) // 2 + 1)
            energy = (x[:, :, h0:h1, w0:w1] ** 2).sum((-2, -1))
            out[:, :, h, w] = x[:, :, h, w] / (k + alpha * energy) ** beta
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 12])
@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (2, 9), (2, 4, 7), (2, 3, 2, 3, 2)])
def test_cross_channel_matches_torch_local_response_norm(size, shape):
    x = big_input(shape, seed=size)
    alpha, beta, k = 1e-4, 0.75, 2.0
    ours = cross_channel_lrn(x, size, alpha, beta, k)
    theirs = nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)(x) \
        if x.dim() >= 3 else nn.LocalResponseNorm(size, alpha * size, beta, k)(
            x.unsqueeze(-1)).squeeze(-1)
    assert rel_error(ours, theirs) < TOL
    assert rel_error(ours, cross_channel_loop(x, size, alpha, beta, k)) < TOL


@pytest.mark.parametrize("size", [2, 5])
def test_cross_channel_edges_see_only_existing_channels(size):
    """The first and last channels' windows are cut at the edges (zeros, not wrap-around)."""
    x = big_input((2, 6, 3, 3), seed=1)
    y = cross_channel_lrn(x, size, 1e-4, 0.75, 2.0)
    first = x[:, 0] / (2.0 + 1e-4 * sum(x[:, j] ** 2 for j in range(0, (size - 1) // 2 + 1))) ** 0.75
    last = x[:, 5] / (2.0 + 1e-4 * sum(x[:, j] ** 2 for j in range(5 - size // 2, 6))) ** 0.75
    assert rel_error(y[:, 0], first) < TOL and rel_error(y[:, 5], last) < TOL
    # a channel far away does not matter, a neighbour does
    far, near = x.clone(), x.clone()
    far[:, 5] *= 10
    near[:, 1] *= 10
    assert torch.equal(cross_channel_lrn(far, size)[:, 0], cross_channel_lrn(x, size)[:, 0])
    assert not torch.allclose(cross_channel_lrn(near, 5)[:, 0], cross_channel_lrn(x, 5)[:, 0])


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 2, 3, 2), (2, 1, 7, 7)])
def test_spatial_matches_loop(size, shape):
    x = big_input(shape, seed=10 + size, scale=20.0)
    for alpha, beta, k in [(1e-4, 0.75, 2.0), (3e-3, 0.5, 1.0)]:
        assert rel_error(spatial_lrn(x, size, alpha, beta, k),
                         spatial_loop(x, size, alpha, beta, k)) < TOL


def test_spatial_is_within_channel_and_cross_is_within_position():
    x = big_input((2, 4, 6, 6), seed=3)
    other_channel, other_position = x.clone(), x.clone()
    other_channel[:, 1] *= 7
    other_position[:, :, 5, 5] *= 7
    s, c = spatial_lrn(x), cross_channel_lrn(x)
    assert torch.equal(spatial_lrn(other_channel)[:, 0], s[:, 0])       # no channel mixing
    assert torch.equal(cross_channel_lrn(other_position)[:, :, 0, 0], c[:, :, 0, 0])
    assert not torch.allclose(cross_channel_lrn(other_channel)[:, 0], c[:, 0])
    assert not torch.allclose(spatial_lrn(other_position)[:, :, 4, 4], s[:, :, 4, 4])


@pytest.mark.parametrize("function,shape", [(cross_channel_lrn, (2, 5, 3, 3)),
                                            (cross_channel_lrn, (3, 4)),
                                            (spatial_lrn, (2, 2, 4, 5))])
@pytest.mark.parametrize("size", [2, 3])
def test_gradcheck(function, shape, size):
    x = big_input(shape, seed=7, scale=30.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: function(t, size, 1e-3, 0.75, 2.0), (x,))


def test_modules_defaults_are_alexnets_and_float32_works():
    assert ALEXNET_LRN == {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
    for module in (CrossChannelLRN(), SpatialLRN()):
        assert (module.size, module.alpha, module.beta, module.k) == (5, 1e-4, 0.75, 2.0)
        assert list(module.parameters()) == [] and list(module.buffers()) == []
    x = big_input((2, 8, 5, 5), seed=0)
    assert rel_error(CrossChannelLRN()(x.float()).double(), cross_channel_loop(x, 5, 1e-4, 0.75, 2.0)) < 1e-6
    assert rel_error(SpatialLRN(3, 1e-3, 0.5, 1.0)(x), spatial_loop(x, 3, 1e-3, 0.5, 1.0)) < TOL
    assert "size=5, alpha=0.0001, beta=0.75, k=2" in repr(CrossChannelLRN())


@pytest.mark.parametrize("kwargs,match", [(dict(size=0), "size"), (dict(alpha=-1.0), "alpha"),
                                          (dict(beta=float("nan")), "beta"), (dict(k=0.0), "k")])
def test_bad_constants_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossChannelLRN(**kwargs)
    with pytest.raises(ValueError, match=match):
        spatial_lrn(torch.ones(1, 1, 2, 2), **{**ALEXNET_LRN, **kwargs})


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        spatial_lrn(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(N, C, \*\)"):
        cross_channel_lrn(torch.ones(3))


def test_keras_cnn_with_lrn():
    """The baseline with a cross-channel LRN after the ReLU that precedes each max-pool."""
    torch.manual_seed(0)
    net = keras_cnn(lrn=True)
    kinds = [type(m).__name__ for m in net]
    lrn_at = [i for i, kind in enumerate(kinds) if kind == "CrossChannelLRN"]
    assert len(lrn_at) == 2
    for i in lrn_at:
        assert kinds[i - 1] == "ReLU" and kinds[i + 1] == "MaxPool2d"
    assert kinds.count("Dropout") == 3 and "BatchNorm2d" not in kinds
    torch.manual_seed(0)
    baseline = keras_cnn()
    # same weights for one seed (LRN draws nothing), and the same number of parameters
    for a, b in zip(net.parameters(), baseline.parameters()):
        assert torch.equal(a, b)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="lrn"):
        KerasCifarCNN(batch_norm=True, lrn=True)


def test_half_precision_is_normalised_in_float32():
    """In bfloat16, 2 + 1e-3 is 2: the statistics must be accumulated in float32."""
    x = big_input((2, 6, 4, 4), seed=5, scale=3.0)
    for function in (cross_channel_lrn, spatial_lrn):
        exact = function(x, 5, 1e-4, 0.75, 2.0)
        half = function(x.bfloat16(), 5, 1e-4, 0.75, 2.0)
        assert half.dtype == torch.bfloat16
        in_float32 = function(x.bfloat16().float(), 5, 1e-4, 0.75, 2.0).bfloat16()
        assert torch.equal(half, in_float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert function(x.float(), 5, 1e-4, 0.75, 2.0).dtype == torch.float32
        assert not torch.equal(exact, x / 2.0 ** 0.75)
    with pytest.raises(TypeError, match="floating-point"):
        cross_channel_lrn(torch.ones(1, 2, 2, 2, dtype=torch.int64))


@pytest.mark.parametrize("size", [1, 2, 5, 9])
def test_channel_window_sum_is_window_sum_in_any_memory_format(size):
    t = big_input((2, 7, 3, 4), seed=size)
    expected = window_sum(t, 1, size)
    assert rel_error(channel_window_sum(t, size), expected) < TOL
    last = t.contiguous(memory_format=torch.channels_last)
    assert rel_error(channel_window_sum(last, size), expected) < TOL
    flat = t.flatten(2)
    assert rel_error(channel_window_sum(flat, size), window_sum(flat, 1, size)) < TOL


def test_lrn_strength_is_the_energy_term_over_k():
    x = big_input((2, 6, 5, 5), seed=9)
    for module in (CrossChannelLRN(), SpatialLRN(3, 1e-3, 0.5, 1.5)):
        strength = lrn_strength(module, x)
        # y = x / (k (1 + strength)) ** beta, the definition of both layers
        assert rel_error(module(x), x / (module.k * (1 + strength)) ** module.beta) < TOL
        assert float(strength.min()) >= 0
    with pytest.raises(TypeError, match="CrossChannelLRN"):
        lrn_strength(nn.ReLU(), x)

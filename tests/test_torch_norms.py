"""Tests of bnbook.torch_norms: batch renorm, ghost batch norm and weight-standardised convolution.

References, all float64: ``nn.BatchNorm1d/2d/3d`` and ``F.batch_norm`` (outputs, autograd,
running statistics), the hand formulas of batch renorm (with NumPy), ``F.conv2d`` with a weight
standardised in NumPy, and ``torch.autograd.gradcheck`` (finite differences). Inputs have
per-channel means and spreads far from 0 and 1, and ``weight``/``bias`` far from 1 and 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bnbook.gradcheck import rel_error
from bnbook.torch_norms import BatchRenorm2d, GhostBatchNorm2d, WSConv2d

TOL = 1e-12
SHAPES = [(8, 5), (6, 4, 7), (5, 3, 4, 6), (4, 2, 3, 2, 3)]
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def make_input(shape, seed, loc=4.0, scale=2.0):
    """float64 x with a mean and a spread of its own per channel, and an upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    c_shape = (1, shape[1]) + (1,) * (len(shape) - 2)
    x_loc = loc + torch.rand(c_shape, generator=g, dtype=torch.float64) * 6 - 3
    x_scale = scale * (0.5 + 1.5 * torch.rand(c_shape, generator=g, dtype=torch.float64))
    x = torch.randn(shape, generator=g, dtype=torch.float64) * x_scale + x_loc
    dy = torch.randn(shape, generator=g, dtype=torch.float64) + 0.5
    return x, dy


def twins(layer, shape, seed):
    """``layer`` (float64) and a torch batch norm of the same size with the same parameters."""
    reference = TORCH_BN[len(shape)](shape[1]).double()
    layer.double()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        weight = (torch.rand(shape[1], generator=g, dtype=torch.float64) * 3 + 0.5)
        weight *= torch.where(torch.rand(shape[1], generator=g) < 0.5, -1.0, 1.0)
        for module in (layer, reference):
            module.weight.copy_(weight)
            module.bias.copy_(torch.linspace(-2, 2, shape[1], dtype=torch.float64))
    return layer, reference


def run(layer, x, dy):
    """Output and (dx, dweight, dbias) of one forward/backward pass."""
    x = x.clone().requires_grad_(True)
    for p in layer.parameters():
        p.grad = None
    y = layer(x)
    y.backward(dy)
    return y.detach(), (x.grad, layer.weight.grad.clone(), layer.bias.grad.clone())


def assert_same_layer(layer, reference, shape, seed, steps=3):
    """Training steps then eval: outputs, gradients and running statistics agree."""
    for step in range(steps):
        x, dy = make_input(shape, seed + step)
        y, grads = run(layer, x, dy)
        y_ref, grads_ref = run(reference, x, dy)
        assert rel_error(y, y_ref) < TOL
        for g, g_ref in zip(grads, grads_ref):
            assert rel_error(g, g_ref) < TOL
        assert rel_error(layer.running_mean, reference.running_mean) < TOL
        assert rel_error(layer.running_var, reference.running_var) < TOL
    layer.eval()
    reference.eval()
    x, _ = make_input(shape, seed + steps, loc=-3.0)
    with torch.no_grad():
        assert rel_error(layer(x), reference(x)) < TOL


# --- batch renormalisation ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batch_renorm_without_correction_is_batch_norm(shape, momentum):
    layer, reference = twins(BatchRenorm2d(shape[1], momentum=momentum, r_max=1.0, d_max=0.0),
                             shape, seed=1)
    reference.momentum = momentum
    assert_same_layer(layer, reference, shape, seed=1)


def test_rescheduling_r_max_and_d_max_to_the_identity_gives_batch_norm():
    shape = (6, 3, 4, 4)
    layer, reference = twins(BatchRenorm2d(3), shape, seed=2)
    layer.r_max, layer.d_max = 1.0, 0.0
    assert_same_layer(layer, reference, shape, seed=2)


def renorm_by_hand(x, weight, bias, running_mean, running_var, eps, r_max, d_max):
    """Ioffe (2017), Algorithm 1, in NumPy: y, r and d of one training step."""
    x, weight, bias = (t.detach().numpy() for t in (x, weight, bias))
    mean, var = (t.detach().numpy() for t in (running_mean, running_var))
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu_b, sigma_b = x.mean(axis=axes), np.sqrt(x.var(axis=axes) + eps)
    sigma = np.sqrt(var + eps)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu_b - mean) / sigma, -d_max, d_max)
    x_hat = (x - mu_b.reshape(shape)) / sigma_b.reshape(shape) * r.reshape(shape) \
        + d.reshape(shape)
    return weight.reshape(shape) * x_hat + bias.reshape(shape), r, d


@pytest.mark.parametrize("shape", SHAPES[1:3])
@pytest.mark.parametrize("clipped", [False, True])
def test_batch_renorm_corrections_match_the_hand_formula(shape, clipped):
    c = shape[1]
    layer, reference = twins(BatchRenorm2d(c, r_max=3.0, d_max=5.0), shape, seed=3)
    x, dy = make_input(shape, seed=3)
    sigma_b = x.var(dim=(0,) + tuple(range(2, x.dim())), unbiased=False).sqrt()
    mu_b = x.mean(dim=(0,) + tuple(range(2, x.dim())))
    with torch.no_grad():
        if clipped:  # sigma_B / sigma beyond r_max or below 1 / r_max; |d| beyond d_max
            layer.running_var.copy_((sigma_b * torch.tensor([10.0, 0.1] * c)[:c]) ** 2)
            layer.running_mean.copy_(mu_b + 8 * layer.running_var.sqrt())
        else:
            layer.running_var.copy_((sigma_b * torch.linspace(0.5, 2.0, c)) ** 2)
            layer.running_mean.copy_(mu_b + torch.linspace(-1.0, 1.5, c))
    before = (layer.running_mean.clone(), layer.running_var.clone())
    y_hand, r, d = renorm_by_hand(x, layer.weight, layer.bias, *before, layer.eps, 3.0, 5.0)
    r_now, d_now = layer.corrections(mu_b, torch.sqrt(sigma_b ** 2 + layer.eps))
    assert rel_error(r_now, r) < TOL and rel_error(d_now, d) < TOL
    if clipped:
        assert set(np.round(r, 12)) == {3.0, round(1 / 3, 12)} and np.all(np.abs(d) == 5.0)
    else:
        assert np.all((1 / 3 < r) & (r < 3)) and np.all(np.abs(d) < 5)
        # unclipped, the correction turns the batch statistics into the running ones
        eval_output = F.batch_norm(x, before[0], before[1], layer.weight, layer.bias,
                                   training=False, eps=layer.eps)
        assert rel_error(y_hand, eval_output.detach()) < TOL
    y, grads = run(layer, x, dy)
    assert rel_error(y, y_hand) < TOL
    # r and d are constants for autograd: dx is batch norm's dx times r, per channel
    _, (dx_bn, _, dbias_bn) = run(reference, x, dy)
    r_b = torch.tensor(r).reshape((1, -1) + (1,) * (x.dim() - 2))
    assert rel_error(grads[0], dx_bn * r_b) < TOL
    x_hat = (torch.tensor(y_hand) - layer.bias.detach().reshape(r_b.shape)) \
        / layer.weight.detach().reshape(r_b.shape)
    assert rel_error(grads[1], (dy * x_hat).sum(dim=(0,) + tuple(range(2, x.dim())))) < 1e-10
    assert rel_error(grads[2], dbias_bn) < TOL
    # the running statistics do not depend on r and d: batch norm's update
    assert rel_error(layer.running_mean, 0.9 * before[0] + 0.1 * mu_b) < TOL
    n = x.numel() // c
    assert rel_error(layer.running_var, 0.9 * before[1] + 0.1 * sigma_b ** 2 * n / (n - 1)) < TOL


def test_batch_renorm_with_clipping_differs_from_batch_norm_and_keeps_its_running_stats():
    shape = (8, 3, 4, 4)
    layer, reference = twins(BatchRenorm2d(3), shape, seed=4)
    x, dy = make_input(shape, seed=4, loc=10.0)  # far from the initial running mean 0
    y, _ = run(layer, x, dy)
    y_ref, _ = run(reference, x, dy)
    assert rel_error(y, y_ref) > 0.1
    assert rel_error(layer.running_mean, reference.running_mean) < TOL
    assert rel_error(layer.running_var, reference.running_var) < TOL


@pytest.mark.parametrize("kwargs,pattern", [
    ({"num_features": 0}, r"num_features must be a positive int"),
    ({"num_features": 3, "eps": 0.0}, r"eps must be a positive finite number"),
    ({"num_features": 3, "momentum": 1.5}, r"momentum must be in \[0, 1\]"),
    ({"num_features": 3, "r_max": 0.5}, r"r_max must be a number >= 1; got 0.5"),
    ({"num_features": 3, "d_max": -1.0}, r"d_max must be a number >= 0; got -1.0"),
    ({"num_features": 3, "r_max": float("nan")}, r"r_max must be a number >= 1"),
])
def test_batch_renorm_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        BatchRenorm2d(**kwargs)


def test_batch_renorm_rejects_bad_input_and_rescheduled_limits():
    layer = BatchRenorm2d(3).double()
    with pytest.raises(ValueError, match=r"expected an input of shape \(N, 3, \*\).*\(4, 2, 5\)"):
        layer(torch.ones(4, 2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(N, 3, \*\).*got shape \(3,\)"):
        layer(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*gives 1"):
        layer(torch.ones(1, 3, dtype=torch.float64))
    layer.r_max = 0.9
    with pytest.raises(ValueError, match=r"r_max must be a number >= 1; got 0.9"):
        layer(torch.randn(4, 3, dtype=torch.float64))
    assert layer.num_batches_tracked.item() == 0


# --- ghost batch norm ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ghost", [None, 100])  # None: exactly N
def test_ghost_batch_norm_with_one_chunk_is_batch_norm(shape, ghost):
    layer, reference = twins(GhostBatchNorm2d(shape[1], ghost or shape[0]), shape, seed=5)
    assert_same_layer(layer, reference, shape, seed=5)


@pytest.mark.parametrize("shape,ghost", [((10, 3, 4, 4), 4), ((9, 4), 3), ((7, 2, 5), 2),
                                         ((5, 3, 2, 2, 3), 2)])
def test_ghost_batch_norm_normalises_each_chunk_on_its_own(shape, ghost):
    layer, _ = twins(GhostBatchNorm2d(shape[1], ghost, momentum=0.3), shape, seed=6)
    mean, var = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1],
                                                                      dtype=torch.float64)
    weight = layer.weight.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    for step in range(2):
        x, dy = make_input(shape, seed=6 + step)
        y, grads = run(layer, x, dy)
        x_ref = x.clone().requires_grad_(True)
        weight.grad = bias.grad = None
        # the reference: F.batch_norm on each chunk, updating the running statistics in order
        y_ref = torch.cat([F.batch_norm(chunk, mean, var, weight, bias, training=True,
                                        momentum=0.3, eps=layer.eps)
                           for chunk in x_ref.split(ghost)])
        y_ref.backward(dy)
        assert rel_error(y, y_ref.detach()) < TOL
        for g, g_ref in zip(grads, (x_ref.grad, weight.grad, bias.grad)):
            assert rel_error(g, g_ref) < TOL
        assert rel_error(layer.running_mean, mean) < TOL
        assert rel_error(layer.running_var, var) < TOL
    assert layer.num_batches_tracked.item() == 2 * len(x.split(ghost))
    # ... which is not batch norm over the whole batch
    whole = F.batch_norm(x, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
    assert rel_error(y, whole.detach()) > 1e-3
    layer.eval()
    x, _ = make_input(shape, seed=9)
    expected = F.batch_norm(x, mean, var, weight, bias, training=False, eps=layer.eps)
    with torch.no_grad():
        assert rel_error(layer(x), expected.detach()) < TOL


def test_ghost_batch_norm_refuses_a_last_chunk_of_one_value_per_channel():
    layer = GhostBatchNorm2d(3, ghost_batch_size=4).double()
    with pytest.raises(ValueError, match=r"last chunk of 1 sample\(s\), 1 value\(s\) per "
                                         r"channel.*nothing was updated"):
        layer(torch.randn(9, 3, dtype=torch.float64))
    assert layer.num_batches_tracked.item() == 0
    assert torch.all(layer.running_mean == 0) and torch.all(layer.running_var == 1)
    y = layer(torch.randn(9, 3, 2, dtype=torch.float64))  # one sample, 2 positions: fine
    assert y.shape == (9, 3, 2) and layer.num_batches_tracked.item() == 3
    layer.eval()
    assert layer(torch.randn(1, 3, dtype=torch.float64)).shape == (1, 3)  # eval: any N


@pytest.mark.parametrize("ghost", [0, -2, 2.5, True, "4"])
def test_ghost_batch_norm_rejects_bad_ghost_batch_size(ghost):
    with pytest.raises(ValueError, match=r"ghost_batch_size must be a positive integer"):
        GhostBatchNorm2d(3, ghost)


# --- weight standardisation ---------------------------------------------------------------------

def standardise_by_hand(weight, eps):
    w = weight.detach().numpy().reshape(weight.shape[0], -1)
    mu, var = w.mean(axis=1, keepdims=True), w.var(axis=1, keepdims=True)
    return torch.tensor(((w - mu) / np.sqrt(var + eps)).reshape(weight.shape))


@pytest.mark.parametrize("kwargs", [
    {"in_channels": 3, "out_channels": 5, "kernel_size": 3},
    {"in_channels": 4, "out_channels": 2, "kernel_size": (3, 2), "stride": 2, "padding": 1},
    {"in_channels": 2, "out_channels": 3, "kernel_size": 1, "bias": False, "eps": 1e-3},
])
def test_ws_conv_is_conv2d_with_a_standardised_weight(kwargs):
    torch.manual_seed(7)
    conv = WSConv2d(**kwargs).double()
    with torch.no_grad():  # a weight with an offset and a spread per output channel
        conv.weight.mul_(torch.linspace(0.5, 20, conv.out_channels).reshape(-1, 1, 1, 1))
        conv.weight.add_(torch.linspace(-3, 3, conv.out_channels).reshape(-1, 1, 1, 1))
    x, _ = make_input((2, conv.in_channels, 7, 6), seed=7)
    w_hat = standardise_by_hand(conv.weight, conv.eps)
    expected = F.conv2d(x, w_hat, conv.bias, stride=conv.stride, padding=conv.padding)
    assert rel_error(conv(x).detach(), expected.detach()) < TOL
    assert rel_error(conv.standardised_weight().detach(), w_hat) < TOL
    # ... and not the plain convolution
    plain = F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
    assert rel_error(conv(x).detach(), plain.detach()) > 0.1


@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_standardised_weights_have_mean_0_and_variance_1_per_output_channel(eps):
    torch.manual_seed(8)
    conv = WSConv2d(6, 4, 3, eps=eps).double()
    w_hat = conv.standardised_weight().detach().reshape(4, -1)
    var = conv.weight.detach().reshape(4, -1).var(dim=1, unbiased=False)
    assert torch.all(w_hat.mean(dim=1).abs() < 1e-15)
    expected = var / (var + eps)  # 1 up to eps / var
    assert rel_error(w_hat.var(dim=1, unbiased=False), expected) < 1e-13
    if eps == 1e-12:
        assert torch.all((w_hat.var(dim=1, unbiased=False) - 1).abs() < 1e-9)
    else:
        assert torch.all(w_hat.var(dim=1, unbiased=False) < 1 - 1e-4)  # eps is visible


def test_ws_conv_gradients_match_finite_differences():
    torch.manual_seed(9)
    conv = WSConv2d(2, 3, 2, padding=1).double()
    x, _ = make_input((2, 2, 4, 3), seed=9)
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (x, conv.weight, conv.bias))

    def module_output(inp, weight, bias):  # the module's own forward, with these parameters
        return functional_call(conv, {"weight": weight, "bias": bias}, (inp,))

    assert torch.autograd.gradcheck(module_output, inputs)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"in_channels": 0, "out_channels": 2, "kernel_size": 3}, r"in_channels must be a positive"),
    ({"in_channels": 2, "out_channels": 2.5, "kernel_size": 3}, r"out_channels must be a"),
    ({"in_channels": 2, "out_channels": 2, "kernel_size": 0}, r"kernel_size must be a positive"),
    ({"in_channels": 2, "out_channels": 2, "kernel_size": (3, -1)}, r"kernel_size must be"),
    ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "eps": 0.0},
     r"eps must be a positive finite number"),
    ({"in_channels": 2, "out_channels": 2, "kernel_size": 3, "eps": -1e-5},
     r"eps must be a positive finite number"),
])
def test_ws_conv_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        WSConv2d(**kwargs)

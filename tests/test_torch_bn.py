"""The torch port of the book's batch norm: autograd Function and layer, against PyTorch.

References: ``torch.autograd.gradcheck`` (finite differences, float64), PyTorch's own
``F.batch_norm`` / ``nn.BatchNorm1d/2d`` (autograd through its kernels), and the NumPy
functions of :mod:`bnbook.numpy_norms`.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnbook import numpy_norms
from bnbook.gradcheck import rel_error
from bnbook.torch_bn import (BatchNorm, BatchNormFunction, accumulation_dtype, batch_norm,
                             batch_norm_backward, batch_norm_forward, batch_norm_inference)
from bnbook.verify import compare_training, tolerance

SHAPES = [(7, 3), (5, 3, 6), (4, 3, 5, 2)]


def _inputs(shape, dtype=torch.float64, seed=0):
    """Non-trivial inputs: non-zero means per channel, gamma far from 1 and of both signs."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    x = 4.0 * torch.randn(view, generator=g, dtype=torch.float64) + \
        2.5 * torch.randn(shape, generator=g, dtype=torch.float64)
    gamma = torch.tensor([3.0, -0.4, 1.7][:c], dtype=torch.float64)
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(dtype), gamma.to(dtype), beta.to(dtype), dy.to(dtype)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck_float64(shape):
    x, gamma, beta, _ = _inputs(shape)
    args = tuple(t.clone().requires_grad_(True) for t in (x, gamma, beta))
    assert torch.autograd.gradcheck(lambda x, g, b: batch_norm(x, g, b, 1e-5), args,
                                    eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_catches_a_wrong_backward():
    """The check above has teeth: dropping the x_hat * dgamma term fails gradcheck."""

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta):
            y, cache = batch_norm_forward(x, gamma, beta, 1e-5)
            ctx.cache = cache
            return y

        @staticmethod
        def backward(ctx, dy):
            c = ctx.cache
            shape = (1, -1) + (1,) * (dy.dim() - 2)
            dbeta = dy.sum(dim=c.dims)
            dgamma = (dy * c.x_hat).sum(dim=c.dims)
            dx = c.gamma.reshape(shape) * c.inv_std * (dy - dbeta.reshape(shape) / c.m)
            return dx, dgamma, dbeta

    x, gamma, beta, _ = _inputs((6, 3))
    args = tuple(t.clone().requires_grad_(True) for t in (x, gamma, beta))
    assert not torch.autograd.gradcheck(Wrong.apply, args, raise_exception=False)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_pytorch_autograd_float64(shape):
    x, gamma, beta, dy = _inputs(shape)
    ours = [t.clone().requires_grad_(True) for t in (x, gamma, beta)]
    theirs = [t.clone().requires_grad_(True) for t in (x, gamma, beta)]
    y = batch_norm(*ours, 1e-5)
    y.backward(dy)
    y_ref = F.batch_norm(theirs[0], None, None, theirs[1], theirs[2], training=True, eps=1e-5)
    y_ref.backward(dy)
    assert rel_error(y.detach(), y_ref.detach()) < 1e-13
    for a, b in zip(ours, theirs):
        assert rel_error(a.grad, b.grad) < 1e-12


@pytest.mark.parametrize("shape", SHAPES)
def test_same_formulas_as_numpy(shape):
    x, gamma, beta, dy = _inputs(shape)
    y, cache = batch_norm_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = batch_norm_backward(dy, cache)
    y_np, cache_np = numpy_norms.batch_norm_forward(x.numpy().copy(), gamma.numpy().copy(),
                                                    beta.numpy().copy(), 1e-5)
    dx_np, dgamma_np, dbeta_np = numpy_norms.batch_norm_backward(dy.numpy().copy(), cache_np)
    for ours, ref in [(y, y_np), (cache.x_hat, cache_np.x_hat), (cache.mu, cache_np.mu),
                      (cache.var, cache_np.var), (cache.inv_std, cache_np.inv_std),
                      (dx, dx_np), (dgamma, dgamma_np), (dbeta, dbeta_np)]:
        assert rel_error(ours.numpy(), ref) < 1e-13


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_within_tolerance(dtype):
    """Inputs rounded to ``dtype`` (parameters float32); errors against float64 on those inputs."""
    shape = (16, 3, 4, 4)
    x64, gamma64, beta64, dy64 = _inputs(shape, seed=3)
    x, dy = x64.to(dtype), dy64.to(dtype)
    gamma, beta = gamma64.float(), beta64.float()
    xr = x.clone().requires_grad_(True)
    params = [gamma.clone().requires_grad_(True), beta.clone().requires_grad_(True)]
    y = batch_norm(xr, *params, 1e-5)
    y.backward(dy)
    assert y.dtype == dtype and xr.grad.dtype == dtype and params[0].grad.dtype == torch.float32
    ref = [t.double().requires_grad_(True) for t in (x, gamma, beta)]
    y_ref = F.batch_norm(ref[0], None, None, ref[1], ref[2], training=True, eps=1e-5)
    y_ref.backward(dy.double())
    m = 16 * 4 * 4
    assert accumulation_dtype(dtype) == torch.float32
    assert rel_error(y.double().detach(), y_ref.detach()) < tolerance(dtype, m)
    assert rel_error(xr.grad.double(), ref[0].grad) < tolerance(dtype, m)
    # The reductions are float32 sums of exactly representable products; dbeta = sum(dy)
    # has no cancellation problem here because the test compares norm-wise over channels.
    assert rel_error(params[1].grad.double(), ref[2].grad) < tolerance(torch.float32, m)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
def test_layer_matches_nn_batchnorm(shape, momentum):
    torch_cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    ours = BatchNorm(shape[1], momentum=momentum, dtype=torch.float64)
    ref = torch_cls(shape[1], momentum=momentum, dtype=torch.float64)
    _, gamma, beta, _ = _inputs(shape)
    with torch.no_grad():
        for layer in (ours, ref):
            layer.weight.copy_(gamma)
            layer.bias.copy_(beta)
    for step in range(3):
        x, _, _, dy = _inputs(shape, seed=10 + step)
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        y, y_ref = ours(xs[0]), ref(xs[1])
        y.backward(dy)
        y_ref.backward(dy)
        assert rel_error(y.detach(), y_ref.detach()) < 1e-13
        assert rel_error(xs[0].grad, xs[1].grad) < 1e-12
    for name in ("running_mean", "running_var"):
        assert rel_error(getattr(ours, name), getattr(ref, name)) < 1e-13
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    assert rel_error(ours.weight.grad, ref.weight.grad) < 1e-12
    ours.eval()
    ref.eval()
    x, *_ = _inputs(shape, seed=99)
    assert rel_error(ours(x).detach(), ref(x).detach()) < 1e-13
    # Eval mode leaves the running statistics alone.
    before = ours.running_mean.clone()
    ours(x)
    assert torch.equal(before, ours.running_mean)


def test_running_var_is_unbiased_and_state_dicts_are_interchangeable():
    layer = BatchNorm(3, momentum=1.0, dtype=torch.float64)
    x, *_ = _inputs((5, 3, 2))
    layer(x)
    expected = x.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True)
    assert rel_error(layer.running_var, expected) < 1e-14
    ref = nn.BatchNorm1d(3, dtype=torch.float64)
    ref.load_state_dict(layer.state_dict())
    back = BatchNorm(3, dtype=torch.float64)
    back.load_state_dict(ref.state_dict())
    assert torch.equal(back.running_var, layer.running_var)


def test_inference_is_the_affine_map_of_the_running_statistics():
    x, gamma, beta, _ = _inputs((6, 3, 4))
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    var = torch.tensor([0.5, 4.0, 9.0], dtype=torch.float64)
    y = batch_norm_inference(x, mean, var, gamma, beta, 1e-5)
    y_ref = F.batch_norm(x, mean, var, gamma, beta, training=False, eps=1e-5)
    assert rel_error(y, y_ref) < 1e-14


def test_tiny_network_trains_identically_to_nn_batchnorm2d():
    result = compare_training(nn.BatchNorm2d, BatchNorm, steps=5, seed=0)
    assert result["max_loss_rel_diff"] < 1e-12
    assert result["max_param_rel_error"] < 1e-12
    assert result["max_running_stat_rel_error"] < 1e-12
    assert result["eval_output_rel_error"] < 1e-12
    # The losses move, so agreement is not the agreement of two constants.
    assert max(result["losses_a"]) - min(result["losses_a"]) > 1e-2


def test_tiny_network_comparison_detects_a_different_layer():
    result = compare_training(nn.BatchNorm2d, lambda c: BatchNorm(c, eps=1e-1), steps=3)
    assert result["max_loss_rel_diff"] > 1e-6


@pytest.mark.parametrize("bad, match", [
    (lambda: batch_norm(torch.randn(4), torch.ones(4), torch.zeros(4)), "dimension"),
    (lambda: batch_norm(torch.randn(4, 3), torch.ones(2), torch.zeros(3)), "gamma"),
    (lambda: batch_norm(torch.randn(1, 3), torch.ones(3), torch.zeros(3)), "more than 1"),
    (lambda: batch_norm(torch.randn(4, 3), torch.ones(3), torch.zeros(3), 0.0), "eps"),
    (lambda: batch_norm(torch.ones(4, 3, dtype=torch.long), torch.ones(3), torch.zeros(3)),
     "floating"),
    (lambda: BatchNorm(3)(torch.randn(4, 2)), "channels"),
    (lambda: BatchNorm(0), "num_features"),
    (lambda: BatchNorm(3, momentum=1.5), "momentum"),
    (lambda: batch_norm_backward(torch.randn(3, 3),
                                 batch_norm_forward(torch.randn(4, 3), torch.ones(3),
                                                    torch.zeros(3))[1]), "dy"),
])
def test_bad_input_raises_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_statistics_are_returned_without_gradient():
    x, gamma, beta, _ = _inputs((6, 3))
    y, mu, var = BatchNormFunction.apply(x.requires_grad_(True), gamma, beta, 1e-5)
    assert y.requires_grad and not mu.requires_grad and not var.requires_grad
    assert np.allclose(mu.numpy(), x.detach().mean(0).numpy())

"""Tests of bnbook.numpy_norms against independent references.

References: PyTorch's ``F.batch_norm(training=True)`` and its autograd in float64, centred
finite differences (bnbook.gradcheck), the float64 run of the same code for float32 inputs,
NumPy's own ``mean``/``var``, and for the layer and the eval-mode map ``torch.nn.BatchNorm1d/2d``
(float64, random shapes and scales). Inputs have a non-zero mean, a spread far from 1 and
``gamma`` far from 1 (and of both signs), so that a missing term cannot hide.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bn_cases import assert_gradients_close, bn_shapes, make_case, torch_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnbook.gradcheck import THRESHOLDS, numerical_gradient, rel_error
from bnbook.numpy_norms import (
    BatchNorm,
    BatchNormCache,
    batch_norm_backward,
    batch_norm_backward_staged,
    batch_norm_forward,
    batch_norm_inference_affine,
    batch_norm_inference_forward,
    normalise_over,
    normalise_over_backward,
    reduction_axes,
)

BACKWARDS = {"closed": batch_norm_backward, "staged": batch_norm_backward_staged}
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --- forward ---------------------------------------------------------------------------------

@SETTINGS
@given(shape=bn_shapes(), seed=st.integers(0, 2**32 - 1),
       loc=st.floats(-50, 50), log_scale=st.floats(-2, 2))
def test_forward_matches_torch_float64(shape, seed, loc, log_scale):
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    y, cache = batch_norm_forward(x, gamma, beta)
    y_ref, _ = torch_reference(x, gamma, beta, dy)
    assert rel_error(y, y_ref) < THRESHOLDS["float64_analytic"]


@pytest.mark.parametrize("shape", [(7, 5), (4, 3, 6), (3, 4, 5, 2)])
def test_cache_statistics_match_numpy(shape):
    x, gamma, beta, _ = make_case(shape, seed=3, loc=-20.0, scale=0.3)
    axes = reduction_axes(x.ndim)
    y, cache = batch_norm_forward(x, gamma, beta, eps=1e-3)
    assert isinstance(cache, BatchNormCache)
    assert cache.x is x and cache.axes == axes and cache.eps == 1e-3
    np.testing.assert_allclose(cache.mu, x.mean(axis=axes, keepdims=True), rtol=1e-13)
    # biased (ddof=0) variance, not the unbiased one
    np.testing.assert_allclose(cache.var, x.var(axis=axes, keepdims=True, ddof=0), rtol=1e-11)
    np.testing.assert_allclose(cache.inv_std, 1 / np.sqrt(cache.var + 1e-3), rtol=1e-13)
    np.testing.assert_allclose(cache.x_hat, (x - cache.mu) * cache.inv_std, atol=1e-12)
    # x_hat has mean 0 and variance var / (var + eps) per channel
    np.testing.assert_allclose(cache.x_hat.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(cache.x_hat.var(axis=axes, keepdims=True),
                               cache.var / (cache.var + 1e-3), rtol=1e-10)
    np.testing.assert_allclose(y, cache.x_hat * gamma.reshape(cache.mu.shape[1:])
                               + beta.reshape(cache.mu.shape[1:]), atol=1e-12)


def test_forward_uses_biased_variance_with_small_batches():
    # N = 2: the biased and unbiased variances differ by a factor of 2.
    x = np.array([[1.0, -3.0], [5.0, 1.0]])
    y, cache = batch_norm_forward(x, np.ones(2), np.zeros(2), eps=1e-12)
    np.testing.assert_allclose(cache.var.ravel(), [4.0, 4.0])
    np.testing.assert_allclose(y, [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-10)


def test_two_pass_variance_survives_a_large_mean():
    # Var = E[x^2] - E[x]^2 loses every digit at mean 1e8 in float64; two passes do not.
    rng = np.random.default_rng(0)
    x = 1e8 + rng.standard_normal((1000, 3))
    _, cache = batch_norm_forward(x, np.ones(3), np.zeros(3))
    reference = (x - x.mean(axis=0)).var(axis=0)
    assert rel_error(cache.var.ravel(), reference) < 1e-8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 4), (4, 3, 5), (3, 2, 4, 4)])
def test_dtype_is_preserved(dtype, shape):
    x, gamma, beta, dy = make_case(shape, seed=1)
    # gamma/beta/dy in the other precision (or integer gamma) must not change the result dtype
    other = np.float64 if dtype == np.float32 else np.float32
    y, cache = batch_norm_forward(x.astype(dtype), gamma.astype(other), beta.astype(other))
    assert y.dtype == dtype and y.shape == shape
    for a in (cache.x_hat, cache.mu, cache.var, cache.inv_std, cache.gamma):
        assert a.dtype == dtype
    for backward in BACKWARDS.values():
        grads = backward(dy.astype(other), cache)
        assert [g.dtype for g in grads] == [dtype] * 3
        assert [g.shape for g in grads] == [shape, (shape[1],), (shape[1],)]
    y_int, _ = batch_norm_forward(x.astype(dtype), np.full(shape[1], 2), np.zeros(shape[1], int))
    assert y_int.dtype == dtype


@SETTINGS
@given(shape=bn_shapes(max_n=16, max_spatial=6), seed=st.integers(0, 2**32 - 1),
       loc=st.floats(-20, 20), log_scale=st.floats(-1, 1.5))
def test_float32_agrees_with_float64(shape, seed, loc, log_scale):
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    y64, cache64 = batch_norm_forward(x, gamma, beta)
    y32, cache32 = batch_norm_forward(*(a.astype(np.float32) for a in (x, gamma, beta)))
    grads32 = {k: f(dy.astype(np.float32), cache32) for k, f in BACKWARDS.items()}
    assert rel_error(y32, y64) < THRESHOLDS["float32"]
    grads64 = batch_norm_backward(dy, cache64)
    for grads in grads32.values():
        assert_gradients_close(grads, grads64, dy, cache64, THRESHOLDS["float32"])


# test_float32_large_input_agrees_with_float64, test_inputs_are_not_modified and
# test_non_contiguous_inputs_give_the_contiguous_result run over this module and numpy_fast
# in tests/test_numpy_fast.py.


@pytest.mark.parametrize("shape", [(9, 4), (6, 3, 5), (4, 3, 5, 2)])
def test_inline_equations_equal_the_shared_closed_form(shape):
    # batch.py writes the five equations and the backward out; numpy_norms.shared is what
    # layer, instance and group norm run. Over the batch norm axes they must agree.
    x, gamma, beta, dy = make_case(shape, seed=6, loc=3.0, scale=2.0)
    axes, ndim = reduction_axes(x.ndim), x.ndim
    y, cache = batch_norm_forward(x, gamma, beta, 1e-3)
    x_hat, mu, var, inv_std = normalise_over(x, axes, 1e-3)
    per_channel = (1, -1) + (1,) * (ndim - 2)
    y_shared = gamma.reshape(per_channel) * x_hat + beta.reshape(per_channel)
    for ours, shared in ((y, y_shared), (cache.x_hat, x_hat), (cache.mu, mu),
                         (cache.var, var), (cache.inv_std, inv_std)):
        assert rel_error(ours, shared) < THRESHOLDS["float64_analytic"]
    dx = batch_norm_backward(dy, cache)[0]
    dx_shared = normalise_over_backward(dy * gamma.reshape(per_channel), x_hat, inv_std, axes)
    assert rel_error(dx, dx_shared) < THRESHOLDS["float64_analytic"]


# --- backward --------------------------------------------------------------------------------

@SETTINGS
@given(shape=bn_shapes(), seed=st.integers(0, 2**32 - 1), loc=st.floats(-50, 50),
       log_scale=st.floats(-2, 2), log_eps=st.floats(-8, -1))
def test_backward_matches_torch_autograd_float64(shape, seed, loc, log_scale, log_eps):
    eps = 10.0**log_eps
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    _, grads_ref = torch_reference(x, gamma, beta, dy, eps=eps)
    _, cache = batch_norm_forward(x, gamma, beta, eps=eps)
    results = {name: backward(dy, cache) for name, backward in BACKWARDS.items()}
    for grads in results.values():
        assert_gradients_close(grads, grads_ref, dy, cache, THRESHOLDS["float64_analytic"])


@pytest.mark.parametrize("backward", list(BACKWARDS.values()), ids=list(BACKWARDS))
@pytest.mark.parametrize("shape,seed", [((5, 3), 0), ((2, 3), 1), ((3, 2, 4), 2),
                                        ((2, 3, 3, 2), 3), ((4, 1, 2, 3), 4)])
def test_backward_matches_finite_differences(backward, shape, seed):
    x, gamma, beta, dy = make_case(shape, seed, loc=-4.0, scale=1.7)
    _, cache = batch_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dy, cache)
    num_dx = numerical_gradient(lambda v: batch_norm_forward(v, gamma, beta)[0], x, dy)
    num_dgamma = numerical_gradient(lambda g: batch_norm_forward(x, g, beta)[0], gamma, dy)
    num_dbeta = numerical_gradient(lambda b: batch_norm_forward(x, gamma, b)[0], beta, dy)
    assert_gradients_close((dx, dgamma, dbeta), (num_dx, num_dgamma, num_dbeta), dy, cache,
                           THRESHOLDS["float64_finite_difference"])
    if x.size // x.shape[1] > 2:  # away from the m = 2 cancellation the plain test applies
        for g, g_num in ((dx, num_dx), (dgamma, num_dgamma), (dbeta, num_dbeta)):
            assert rel_error(g, g_num) < THRESHOLDS["float64_finite_difference"]


@SETTINGS
@given(shape=bn_shapes(), seed=st.integers(0, 2**32 - 1), loc=st.floats(-50, 50),
       log_scale=st.floats(-2, 2))
def test_staged_equals_closed_form(shape, seed, loc, log_scale):
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    _, cache = batch_norm_forward(x, gamma, beta)
    assert_gradients_close(batch_norm_backward_staged(dy, cache), batch_norm_backward(dy, cache),
                           dy, cache, THRESHOLDS["float64_analytic"])


@SETTINGS
@given(shape=bn_shapes(), seed=st.integers(0, 2**32 - 1), loc=st.floats(-50, 50),
       log_scale=st.floats(-2, 2), log_eps=st.floats(-8, 0))
def test_dx_sums_to_zero_and_is_orthogonal_to_x_hat_up_to_eps(shape, seed, loc, log_scale,
                                                               log_eps):
    """Per channel: sum(dx) = 0 (shift invariance of x_hat) and
    sum(dx * x_hat) = gamma * inv_std * dgamma * eps / (var + eps) (scale invariance, exact
    only when eps = 0)."""
    eps = 10.0**log_eps
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    _, cache = batch_norm_forward(x, gamma, beta, eps=eps)
    axes = cache.axes
    var, inv_std = cache.var.ravel(), cache.inv_std.ravel()
    # Rounding in these sums is relative to the size of the terms that cancel, gamma*inv_std*dy
    # (dx itself can be tiny: with m = 2, x_hat = +-1 and dx ~ 0).
    magnitude = np.abs(gamma * inv_std) * np.abs(dy).sum(axis=axes)
    magnitude *= np.maximum(1.0, np.abs(cache.x_hat).max(axis=axes))
    predicted = gamma * inv_std * (dy * cache.x_hat).sum(axis=axes) * eps / (var + eps)
    for backward in BACKWARDS.values():
        dx, dgamma, _ = backward(dy, cache)
        assert np.all(np.abs(dx.sum(axis=axes)) <= 1e-12 * magnitude)
        inner = (dx * cache.x_hat).sum(axis=axes)
        assert np.all(np.abs(inner - predicted) <= 1e-12 * magnitude)


def test_dx_is_not_orthogonal_to_x_hat_when_eps_is_comparable_to_var():
    # The correction term above is not negligible here: a test of plain orthogonality
    # would be wrong, and this one tells the two statements apart.
    x, gamma, beta, dy = make_case((50, 2), seed=5, loc=0.0, scale=0.1)
    _, cache = batch_norm_forward(x, gamma, beta, eps=1e-2)
    dx, dgamma, _ = batch_norm_backward(dy, cache)
    inner = (dx * cache.x_hat).sum(axis=0)
    assert np.all(np.abs(inner) > 1e-2 * np.abs(dx * cache.x_hat).sum(axis=0))


def test_gamma_zero_gives_zero_dx_but_nonzero_dgamma():
    x, _, beta, dy = make_case((8, 3, 2), seed=6)
    _, cache = batch_norm_forward(x, np.zeros(3), beta)
    for backward in BACKWARDS.values():
        dx, dgamma, dbeta = backward(dy, cache)
        assert np.all(dx == 0)
        assert np.all(np.abs(dgamma) > 0) and np.all(np.abs(dbeta) > 0)


def test_backward_can_be_called_twice_on_one_cache():
    x, gamma, beta, dy = make_case((4, 3, 5), seed=7)
    _, cache = batch_norm_forward(x, gamma, beta)
    first = batch_norm_backward(dy, cache)
    batch_norm_backward_staged(2 * dy, cache)
    for a, b in zip(first, batch_norm_backward(dy, cache)):
        np.testing.assert_array_equal(a, b)


# --- bad input -------------------------------------------------------------------------------

GOOD_X = np.random.default_rng(0).normal(size=(4, 3, 2))


@pytest.mark.parametrize(
    "x,gamma,beta,eps,pattern",
    [
        (np.ones(5), np.ones(5), np.zeros(5), 1e-5, r"\(N, D\).*1 dimension"),
        (np.ones((2, 3, 2, 2, 2)), np.ones(3), np.zeros(3), 1e-5, r"5 dimension"),
        (np.ones((4, 3), dtype=np.int64), np.ones(3), np.zeros(3), 1e-5,
         r"x must have a real floating dtype.*integer dtype int64"),
        (np.ones((4, 3), dtype=bool), np.ones(3), np.zeros(3), 1e-5, r"x must .*dtype bool"),
        (np.full((4, 3), "a"), np.ones(3), np.zeros(3), 1e-5, r"x must .*dtype <U1"),
        (np.ones((4, 3), dtype=np.complex128), np.ones(3), np.zeros(3), 1e-5,
         r"x must .*complex128"),
        (np.ones((4, 3), dtype=np.float16), np.ones(3), np.zeros(3), 1e-5,
         r"x must .*float32 or float64.*float16"),
        (GOOD_X, np.ones(2), np.zeros(3), 1e-5, r"gamma must have shape \(3,\).*got shape \(2,\)"),
        (GOOD_X, np.ones(3), np.zeros((1, 3)), 1e-5,
         r"beta must have shape \(3,\).*got shape \(1, 3\)"),
        (GOOD_X, np.ones(4), np.zeros(4), 1e-5, r"gamma must have shape \(3,\).*channel axis"),
        (GOOD_X, np.array(["a", "b", "c"]), np.zeros(3), 1e-5, r"gamma must be numeric"),
        (GOOD_X, np.ones(3), np.array([None, 1, 2]), 1e-5, r"beta must be numeric"),
        (np.ones((1, 3)), np.ones(3), np.zeros(3), 1e-5,
         r"more than 1 value per channel.*1 value\(s\)"),
        (np.ones((1, 3, 1, 1)), np.ones(3), np.zeros(3), 1e-5,
         r"Expected more than 1 value per channel when training"),
        (np.ones((0, 3, 2)), np.ones(3), np.zeros(3), 1e-5, r"more than 1 value per channel"),
        (GOOD_X, np.ones(3), np.zeros(3), 0.0, r"eps must be a positive finite number; got 0.0"),
        (GOOD_X, np.ones(3), np.zeros(3), -1e-5, r"eps must be a positive.*-1e-05"),
        (GOOD_X, np.ones(3), np.zeros(3), float("nan"), r"eps must be a positive.*nan"),
        (GOOD_X, np.ones(3), np.zeros(3), float("inf"), r"eps must be a positive.*inf"),
        (GOOD_X, np.ones(3), np.zeros(3), "1e-5", r"eps must be a positive.*'1e-5'"),
        (GOOD_X, np.ones(3), np.zeros(3), None, r"eps must be a positive.*None"),
    ],
)
def test_forward_rejects_bad_input(x, gamma, beta, eps, pattern):
    with pytest.raises(ValueError, match=pattern):
        batch_norm_forward(x, gamma, beta, eps)


def test_torch_rejects_the_same_single_value_batch():
    # The message we quote is PyTorch's; check that it still says so.
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(torch.ones(1, 3), None, None, training=True)


@pytest.mark.parametrize("backward", list(BACKWARDS.values()), ids=list(BACKWARDS))
def test_backward_rejects_bad_input(backward):
    _, cache = batch_norm_forward(GOOD_X, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"dy must have the shape of x, \(4, 3, 2\); got \(4, 3\)"):
        backward(np.ones((4, 3)), cache)
    with pytest.raises(ValueError, match=r"dy must have a real floating dtype.*int64"):
        backward(np.ones((4, 3, 2), dtype=np.int64), cache)
    with pytest.raises(ValueError, match=r"cache must be the BatchNormCache.*tuple"):
        backward(np.ones((4, 3, 2)), tuple(cache))


def test_reduction_axes():
    assert reduction_axes(2) == (0,)
    assert reduction_axes(3) == (0, 2)
    assert reduction_axes(4) == (0, 2, 3)
    with pytest.raises(ValueError, match="got an array with 1 dimension"):
        reduction_axes(1)


# --- evaluation mode and the BatchNorm layer, against torch.nn.BatchNorm1d/2d (float64) ----

SEEDS = range(4)
SHAPES = {2: lambda r: (int(r.integers(3, 9)), int(r.integers(1, 6))),
          3: lambda r: (int(r.integers(2, 5)), int(r.integers(1, 5)), int(r.integers(2, 6))),
          4: lambda r: (int(r.integers(2, 4)), int(r.integers(1, 5)), int(r.integers(1, 4)),
                        int(r.integers(2, 5)))}


def random_input(rng, ndim, channels=None):
    """Random input with per-channel offsets and scales far from (0, 1)."""
    shape = SHAPES[ndim](rng)
    if channels is not None:
        shape = (shape[0], channels) + shape[2:]
    channels = shape[1]
    offset = rng.uniform(-5, 5, channels).reshape((1, -1) + (1,) * (ndim - 2))
    scale = rng.uniform(0.1, 20, channels).reshape((1, -1) + (1,) * (ndim - 2))
    return offset + scale * rng.standard_normal(shape)


def twin_layers(rng, channels, ndim, momentum=0.1, eps=1e-5):
    """A NumPy BatchNorm and a float64 torch BatchNorm with the same random gamma/beta."""
    ours = BatchNorm(channels, eps=eps, momentum=momentum)
    ours.gamma = rng.uniform(0.5, 3.0, channels) * rng.choice([-1, 1], channels)
    ours.beta = rng.uniform(-2, 2, channels)
    cls = torch.nn.BatchNorm1d if ndim in (2, 3) else torch.nn.BatchNorm2d
    theirs = cls(channels, eps=eps, momentum=momentum).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.gamma))
        theirs.bias.copy_(torch.from_numpy(ours.beta))
    return ours, theirs


def close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b) / (1e-12 + np.abs(a) + np.abs(b)), initial=0.0) < tol


@pytest.mark.parametrize("ndim", [2, 3, 4])
@pytest.mark.parametrize("seed", SEEDS)
def test_forward_and_backward_match_torch(seed, ndim):
    rng = np.random.default_rng(100 * seed + ndim)
    x = random_input(rng, ndim)
    ours, theirs = twin_layers(rng, x.shape[1], ndim)
    y = ours.forward(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    assert close(y, yt.detach().numpy())
    dy = rng.standard_normal(x.shape) * rng.uniform(0.5, 5)
    dx = ours.backward(dy)
    yt.backward(torch.from_numpy(dy))
    assert close(dx, xt.grad.numpy(), 1e-8)
    assert close(ours.dgamma, theirs.weight.grad.numpy(), 1e-8)
    assert close(ours.dbeta, theirs.bias.grad.numpy(), 1e-8)


@pytest.mark.parametrize("momentum", [0.1, 0.37, 1.0, 0.0, None])
@pytest.mark.parametrize("ndim", [2, 3, 4])
def test_running_stats_over_several_steps_match_torch(momentum, ndim):
    rng = np.random.default_rng(7 + ndim)
    x0 = random_input(rng, ndim)
    channels = x0.shape[1]
    ours, theirs = twin_layers(rng, channels, ndim, momentum=momentum)
    for step in range(6):
        # A new batch size each step, and a drifting distribution, as in training.
        x = (1 + step) * random_input(rng, ndim, channels) + step
        ours.forward(x)
        theirs(torch.from_numpy(x))
        assert close(ours.running_mean, theirs.running_mean.numpy())
        assert close(ours.running_var, theirs.running_var.numpy())
        assert ours.num_batches_tracked == int(theirs.num_batches_tracked)
    # The statistics really moved away from their initial values (unless momentum is 0).
    if momentum != 0.0:
        assert not np.allclose(ours.running_var, 1.0)


def test_momentum_none_is_the_plain_average_of_batch_statistics():
    rng = np.random.default_rng(3)
    layer = BatchNorm(4, momentum=None)
    means, variances = [], []
    for _ in range(5):
        x = 3.0 + 2.0 * rng.standard_normal((int(rng.integers(2, 10)), 4))
        layer.forward(x)
        means.append(x.mean(axis=0))
        variances.append(x.var(axis=0, ddof=1))
    assert close(layer.running_mean, np.mean(means, axis=0))
    assert close(layer.running_var, np.mean(variances, axis=0))


@pytest.mark.parametrize("ndim", [2, 3, 4])
@pytest.mark.parametrize("seed", SEEDS)
def test_eval_mode_matches_torch_and_freezes_statistics(seed, ndim):
    rng = np.random.default_rng(1000 + 10 * seed + ndim)
    x = random_input(rng, ndim)
    ours, theirs = twin_layers(rng, x.shape[1], ndim, momentum=0.3)
    for _ in range(3):
        xb = random_input(rng, ndim, x.shape[1])
        ours.forward(xb)
        theirs(torch.from_numpy(xb))
    assert ours.eval() is ours and ours.training is False
    theirs.eval()
    mean_before, var_before = ours.running_mean.copy(), ours.running_var.copy()
    # One example at a time is fine in eval mode.
    x_one = x[:1]
    assert close(ours.forward(x_one), theirs(torch.from_numpy(x_one)).detach().numpy())
    y = ours.forward(x)
    assert close(y, theirs(torch.from_numpy(x)).detach().numpy())
    assert np.array_equal(ours.running_mean, mean_before)
    assert np.array_equal(ours.running_var, var_before)
    # In eval mode each example's output depends on that example only.
    assert close(ours.forward(x[:1]), y[:1])


def test_float32_stays_float32_and_default_mode_is_training():
    layer = BatchNorm(3)
    assert layer.training is True
    x = np.random.default_rng(0).standard_normal((5, 3, 2)).astype(np.float32)
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32
    assert layer.eval().forward(x).dtype == np.float32
    assert layer.train() is layer and layer.training is True


def test_defaults_are_pytorch_defaults():
    layer, ref = BatchNorm(5), torch.nn.BatchNorm1d(5)
    assert (layer.eps, layer.momentum) == (ref.eps, ref.momentum)
    assert np.array_equal(layer.gamma, ref.weight.detach().numpy())
    assert np.array_equal(layer.beta, ref.bias.detach().numpy())
    assert np.array_equal(layer.running_mean, ref.running_mean.numpy())
    assert np.array_equal(layer.running_var, ref.running_var.numpy())


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), "0.1", True, [0.1]])
def test_bad_momentum_is_rejected(momentum):
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=momentum)


@pytest.mark.parametrize("num_features", [0, -2, 2.5, True, "3"])
def test_bad_num_features_is_rejected(num_features):
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm(num_features)


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("inf")])
def test_bad_eps_is_rejected(eps):
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(3, eps=eps)


def test_clear_errors_for_bad_inputs_and_misuse():
    layer = BatchNorm(3)
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones((4, 3)))
    with pytest.raises(ValueError, match="num_features=3"):
        layer.forward(np.ones((4, 5)))
    with pytest.raises(ValueError, match="dimension"):
        layer.forward(np.ones(3))
    with pytest.raises(ValueError, match="dimension"):
        layer.forward(np.ones((2, 3, 2, 2, 2)))
    with pytest.raises(ValueError, match="floating"):
        layer.forward(np.ones((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(np.ones((1, 3)))
    x = np.random.default_rng(0).standard_normal((4, 3))
    layer.forward(x)
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.ones((4, 2)))
    layer.eval()
    with pytest.raises(ValueError, match="eval mode"):
        layer.backward(np.ones((4, 3)))
    # Eval mode accepts a single example, but still checks the channel count.
    assert layer.forward(x[:1]).shape == (1, 3)
    with pytest.raises(ValueError, match="num_features=3"):
        layer.forward(np.ones((1, 4)))
    # A failed training-mode forward leaves the running statistics untouched.
    layer.train()
    before = layer.running_mean.copy(), layer.num_batches_tracked
    with pytest.raises(ValueError):
        layer.forward(np.ones((1, 3)))
    assert np.array_equal(layer.running_mean, before[0]) and layer.num_batches_tracked == before[1]


def test_inference_affine_is_scale_and_shift():
    gamma, beta = np.array([2.0, -0.5]), np.array([1.0, 3.0])
    mean, var = np.array([4.0, -2.0]), np.array([9.0, 0.25])
    scale, shift = batch_norm_inference_affine(gamma, beta, mean, var, eps=0.0 + 1e-12)
    np.testing.assert_allclose(scale, [2.0 / 3.0, -1.0], rtol=1e-10)
    np.testing.assert_allclose(shift, [1.0 - 8.0 / 3.0, 3.0 - 2.0], rtol=1e-10)


@pytest.mark.parametrize("ndim", [2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_inference_forward_matches_torch_eval(seed, ndim):
    rng = np.random.default_rng(2000 + 10 * seed + ndim)
    x = 3 + 5 * random_input(rng, ndim)
    c = x.shape[1]
    gamma = rng.uniform(0.5, 3.0, c) * rng.choice([-1, 1], c)
    beta = rng.uniform(-2, 2, c)
    running_mean, running_var = rng.uniform(-5, 5, c), rng.uniform(0.01, 50, c)
    y = batch_norm_inference_forward(x, gamma, beta, running_mean, running_var, eps=1e-3)
    y_ref = F.batch_norm(*(torch.from_numpy(a) for a in (x, running_mean, running_var, gamma,
                                                         beta)), training=False, eps=1e-3)
    assert rel_error(y, y_ref.numpy()) < 2e-14


def test_inference_rejects_bad_input():
    with pytest.raises(ValueError, match="eps"):
        batch_norm_inference_affine(np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), eps=0.0)
    with pytest.raises(ValueError, match="running_var"):
        batch_norm_inference_affine(np.ones(2), np.zeros(2), np.zeros(2), -np.ones(2))
    with pytest.raises(ValueError, match="dimension"):
        batch_norm_inference_forward(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="gamma must have shape"):
        batch_norm_inference_forward(np.ones((2, 3)), np.ones(4), np.zeros(4), np.zeros(4),
                                     np.ones(4))

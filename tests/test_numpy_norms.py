"""Tests of bnbook.numpy_norms against independent references.

References: PyTorch's ``F.batch_norm(training=True)`` and its autograd in float64, centred
finite differences (bnbook.gradcheck), the float64 run of the same code for float32 inputs,
and NumPy's own ``mean``/``var``. Inputs have a non-zero mean, a spread far from 1 and
``gamma`` far from 1 (and of both signs), so that a missing term cannot hide.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnbook.numpy_norms as numpy_norms
from bnbook.gradcheck import THRESHOLDS, numerical_gradient, rel_error
from bnbook.numpy_norms import (
    BatchNormCache,
    batch_norm_backward,
    batch_norm_backward_staged,
    batch_norm_forward,
    reduction_axes,
)

BACKWARDS = {"closed": batch_norm_backward, "staged": batch_norm_backward_staged}
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def bn_shapes(draw, max_n=6, max_c=5, max_spatial=5):
    """(N, D), (N, C, L) or (N, C, H, W) with at least 2 values per channel."""
    ndim = draw(st.sampled_from([2, 3, 4]))
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, max_c))
    spatial = tuple(draw(st.integers(1, max_spatial)) for _ in range(ndim - 2))
    if n * int(np.prod(spatial, dtype=int)) < 2:
        n = 2
    return (n, c) + spatial


def make_case(shape, seed, loc=3.0, scale=2.5, dtype=np.float64):
    """x with mean ``loc`` and spread ``scale`` per channel (each channel its own), gamma of
    both signs with |gamma| in [0.2, 4], beta ~ N(0, 4), dy ~ N(0.5, 1)."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    channel_loc = loc + rng.uniform(-1, 1, size=bshape) * abs(loc) * 0.5
    channel_scale = scale * rng.uniform(0.5, 2.0, size=bshape)
    x = rng.standard_normal(shape) * channel_scale + channel_loc
    gamma = rng.uniform(0.2, 4.0, size=c) * rng.choice([-1.0, 1.0], size=c)
    beta = rng.normal(0.0, 2.0, size=c)
    dy = rng.normal(0.5, 1.0, size=shape)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, dy))


def torch_reference(x, gamma, beta, dy, eps=1e-5):
    """y and (dx, dgamma, dbeta) from PyTorch's batch norm and autograd, in float64."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    gt = torch.tensor(gamma, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    y = F.batch_norm(xt, None, None, gt, bt, training=True, eps=eps)
    y.backward(torch.tensor(dy, dtype=torch.float64))
    return y.detach().numpy(), (xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy())


def assert_gradients_close(grads, grads_ref, dy, cache, tol):
    """(dx, dgamma, dbeta) against a reference, relative to the terms that get cancelled.

    dx, dgamma and dbeta are sums of terms that can cancel (with m = 2 values per channel
    x_hat = +-1 whatever x is, and dx is almost zero), and no finite precision is relatively
    accurate about a cancellation: its rounding error is relative to the size of the terms,
    so that is the yardstick, ``max|g - g_ref| < tol * scale``. On well-conditioned inputs
    scale ~ max|g_ref| and this is the book's rel_error.
    """
    axes = cache.axes
    s = np.abs(cache.gamma * cache.inv_std.ravel()).astype(np.float64)
    x_hat = cache.x_hat.astype(np.float64)
    dy = dy.astype(np.float64)
    scales = (
        (s * np.abs(dy).max(axis=axes) * (1 + np.abs(x_hat).max(axis=axes))).max(),  # dx
        np.abs(dy * x_hat).sum(axis=axes).max(),  # dgamma
        np.abs(dy).sum(axis=axes).max(),  # dbeta
    )
    for name, g, g_ref, scale in zip(("dx", "dgamma", "dbeta"), grads, grads_ref, scales):
        err = np.abs(np.asarray(g, np.float64) - np.asarray(g_ref, np.float64)).max()
        assert err < tol * scale, f"{name}: {err:.3e} >= {tol:.0e} * {scale:.3e}"


def small_blocks(block_bytes=96):
    """Force the blocked loops of numpy_norms to use many blocks (and a ragged last one)."""
    return mock.patch.object(numpy_norms, "_BLOCK_BYTES", block_bytes)


# --- forward ---------------------------------------------------------------------------------

@SETTINGS
@given(shape=bn_shapes(), seed=st.integers(0, 2**32 - 1),
       loc=st.floats(-50, 50), log_scale=st.floats(-2, 2), blocked=st.booleans())
def test_forward_matches_torch_float64(shape, seed, loc, log_scale, blocked):
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    with small_blocks() if blocked else contextlib.nullcontext():
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


@pytest.mark.parametrize("shape", [(4096, 25), (512, 25, 8)])
def test_float32_variance_survives_a_mean_far_above_the_std(shape):
    # Row-by-row float32 sums make the first estimate of mu wrong by more than the standard
    # deviation at mean/std ~ 5e4; the corrected second pass must repair it.
    rng = np.random.default_rng(11)
    ratios = np.logspace(-1, 5, shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2))
    x = (ratios + rng.standard_normal(shape)).astype(np.float32)
    axes = (0,) + tuple(range(2, len(shape)))
    ref = x.astype(np.float64).var(axis=axes)
    _, cache = batch_norm_forward(x, np.ones(shape[1]), np.zeros(shape[1]))
    err = np.abs(cache.var.reshape(-1).astype(np.float64) - ref) / ref
    assert err.max() < 1e-4
    mu_err = np.abs(cache.mu.reshape(-1) - x.astype(np.float64).mean(axis=axes))
    assert np.all(mu_err < 1e-2 * np.sqrt(ref))


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
       loc=st.floats(-20, 20), log_scale=st.floats(-1, 1.5), blocked=st.booleans())
def test_float32_agrees_with_float64(shape, seed, loc, log_scale, blocked):
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    y64, cache64 = batch_norm_forward(x, gamma, beta)
    with small_blocks(64) if blocked else contextlib.nullcontext():
        y32, cache32 = batch_norm_forward(*(a.astype(np.float32) for a in (x, gamma, beta)))
        grads32 = {k: f(dy.astype(np.float32), cache32) for k, f in BACKWARDS.items()}
    assert rel_error(y32, y64) < THRESHOLDS["float32"]
    grads64 = batch_norm_backward(dy, cache64)
    for grads in grads32.values():
        assert_gradients_close(grads, grads64, dy, cache64, THRESHOLDS["float32"])


def test_float32_large_input_agrees_with_float64():
    # Many blocks and 64 * 16 * 16 = 16384 values per channel: the float64 accumulation
    # across blocks keeps the float32 sums accurate.
    x, gamma, beta, dy = make_case((64, 8, 16, 16), seed=11, loc=40.0, scale=0.5)
    y64, cache64 = batch_norm_forward(x, gamma, beta)
    with small_blocks(1 << 13):
        y32, cache32 = batch_norm_forward(*(a.astype(np.float32) for a in (x, gamma, beta)))
        grads32 = batch_norm_backward(dy.astype(np.float32), cache32)
    assert rel_error(y32, y64) < THRESHOLDS["float32"]
    grads64 = batch_norm_backward(dy, cache64)
    for g32, g64 in zip(grads32, grads64):  # well conditioned here: the plain test applies
        assert rel_error(g32, g64) < THRESHOLDS["float32"]


def test_inputs_are_not_modified():
    x, gamma, beta, dy = make_case((5, 3, 4), seed=2)
    copies = [a.copy() for a in (x, gamma, beta, dy)]
    _, cache = batch_norm_forward(x, gamma, beta)
    x_hat = cache.x_hat.copy()
    for backward in BACKWARDS.values():
        backward(dy, cache)
    for a, b in zip((x, gamma, beta, dy), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cache.x_hat, x_hat)


def test_non_contiguous_inputs_give_the_contiguous_result():
    x, gamma, beta, dy = make_case((6, 5, 4, 3), seed=4)
    x_t = np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)  # F-order
    dy_s = np.repeat(dy, 2, axis=3)[..., ::2]  # strided view
    assert not x_t.flags.c_contiguous and not dy_s.flags.c_contiguous
    y, cache = batch_norm_forward(x, gamma, beta)
    y_t, cache_t = batch_norm_forward(x_t, gamma, beta)
    np.testing.assert_allclose(y_t, y, rtol=0, atol=1e-13)
    for backward in BACKWARDS.values():
        for g_t, g in zip(backward(dy_s, cache_t), backward(dy, cache)):
            np.testing.assert_allclose(g_t, g, rtol=0, atol=1e-12)


# --- backward --------------------------------------------------------------------------------

@SETTINGS
@given(shape=bn_shapes(), seed=st.integers(0, 2**32 - 1), loc=st.floats(-50, 50),
       log_scale=st.floats(-2, 2), log_eps=st.floats(-8, -1), blocked=st.booleans())
def test_backward_matches_torch_autograd_float64(shape, seed, loc, log_scale, log_eps,
                                                 blocked):
    eps = 10.0**log_eps
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale)
    _, grads_ref = torch_reference(x, gamma, beta, dy, eps=eps)
    with small_blocks() if blocked else contextlib.nullcontext():
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

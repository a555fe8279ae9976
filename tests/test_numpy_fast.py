"""Tests of bnbook.numpy_fast against the plain functions of bnbook.numpy_norms.

The fast kernels reorder the work (blocks of rows, ``einsum`` sums in the input dtype
accumulated in float64, the corrected two-pass variance); they must compute the same function.
Random shapes (2-D, 3-D, 4-D), float32 and float64, means far from 0, spreads and ``gamma``
far from 1, and blocks forced small so that every loop runs many times with a ragged last
block.

Tolerance: the two agree to a few rounding units of the dtype, ``u``, measured against the
size of what is rounded. Centring costs accuracy when ``|mu| >> sigma`` (the rounding of ``x``
and of ``mu`` is relative to ``|mu|``, the result to ``sigma``), so every bound carries the
factor ``cond = 1 + |mu| / sigma``. :data:`ULPS` is four times the worst seen over thousands of
random cases.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
from bn_cases import bn_shapes, make_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnbook.numpy_fast as numpy_fast
import bnbook.numpy_norms as numpy_norms
from bnbook.gradcheck import THRESHOLDS, rel_error

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float32, np.float64]
ULPS = 16


def small_blocks(block_bytes=96):
    """Force the blocked loops of numpy_fast to use many blocks (and a ragged last one)."""
    return mock.patch.object(numpy_fast, "_BLOCK_BYTES", block_bytes)


def within_ulps(name, got, want, scale, u):
    """``|got - want| <= ULPS * u * scale`` elementwise (``scale`` broadcasts)."""
    err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    ratio = (err / (u * np.asarray(scale, np.float64))).max() if err.size else 0.0
    assert ratio <= ULPS, f"{name}: {ratio:.1f} rounding units > {ULPS}"


# Random shapes, seeds, means, scales, dtypes, with and without small blocks.
RANDOM_CASES = given(shape=bn_shapes(max_n=16, max_spatial=6), seed=st.integers(0, 2**32 - 1),
                     loc=st.floats(-50, 50), log_scale=st.floats(-2, 2),
                     dtype=st.sampled_from(DTYPES), blocked=st.booleans())


def conditioning(cache):
    """``1 + |mu| / sigma`` per channel, shaped like ``cache.mu``."""
    return 1 + np.abs(cache.mu.astype(np.float64)) / np.sqrt(cache.var.astype(np.float64))


@SETTINGS
@RANDOM_CASES
def test_forward_matches_plain(shape, seed, loc, log_scale, dtype, blocked):
    x, gamma, beta, _ = make_case(shape, seed, loc=loc, scale=10.0**log_scale, dtype=dtype)
    with small_blocks() if blocked else contextlib.nullcontext():
        y, cache = numpy_fast.batch_norm_forward(x, gamma, beta)
    y_ref, ref = numpy_norms.batch_norm_forward(x, gamma, beta)
    u, cond = np.finfo(dtype).eps, conditioning(ref)
    sigma = np.sqrt(ref.var.astype(np.float64))
    g, b = (numpy_norms.per_channel(np.abs(p.astype(np.float64)), x.ndim) for p in (gamma, beta))
    assert y.dtype == cache.x_hat.dtype == cache.mu.dtype == dtype and cache.x is x
    assert cache.axes == ref.axes and cache.eps == ref.eps and cache.mu.shape == ref.mu.shape
    within_ulps("mu", cache.mu, ref.mu, np.abs(ref.mu) + sigma, u)
    within_ulps("var", cache.var, ref.var, ref.var, u)
    within_ulps("inv_std", cache.inv_std, ref.inv_std, ref.inv_std, u)
    within_ulps("x_hat", cache.x_hat, ref.x_hat, cond + np.abs(ref.x_hat), u)
    within_ulps("y", y, y_ref, g * (cond + np.abs(ref.x_hat)) + b, u)
    np.testing.assert_array_equal(cache.gamma, ref.gamma)


@SETTINGS
@RANDOM_CASES
def test_backward_matches_plain(shape, seed, loc, log_scale, dtype, blocked):
    x, gamma, beta, dy = make_case(shape, seed, loc=loc, scale=10.0**log_scale, dtype=dtype)
    with small_blocks() if blocked else contextlib.nullcontext():
        _, cache = numpy_fast.batch_norm_forward(x, gamma, beta)
        grads = numpy_fast.batch_norm_backward(dy, cache)
    _, ref = numpy_norms.batch_norm_forward(x, gamma, beta)
    grads_ref = numpy_norms.batch_norm_backward(dy, ref)
    assert [g.dtype for g in grads] == [dtype] * 3
    # Each gradient to within rounding of the terms it sums (see the module docstring).
    u, axes, cond = np.finfo(dtype).eps, ref.axes, conditioning(ref)
    dy64, x_hat = dy.astype(np.float64), np.abs(ref.x_hat.astype(np.float64))
    x_hat_max = x_hat.max(axis=axes, keepdims=True)
    s = numpy_norms.per_channel(np.abs(gamma.astype(np.float64)), x.ndim) * ref.inv_std
    dy_max, dy_sum = np.abs(dy64).max(axis=axes, keepdims=True), np.abs(dy64).sum(axis=axes)
    within_ulps("dx", grads[0], grads_ref[0], s * dy_max * (1 + x_hat_max) * cond, u)
    within_ulps("dgamma", grads[1], grads_ref[1], dy_sum * (cond + x_hat_max).ravel(), u)
    within_ulps("dbeta", grads[2], grads_ref[2], dy_sum, u)


@pytest.mark.parametrize("dtype", DTYPES)
def test_either_backward_takes_either_cache(dtype):
    x, gamma, beta, dy = make_case((5, 3, 4, 2), seed=3, loc=-7.0, dtype=dtype)
    _, fast_cache = numpy_fast.batch_norm_forward(x, gamma, beta)
    _, plain_cache = numpy_norms.batch_norm_forward(x, gamma, beta)
    reference = numpy_norms.batch_norm_backward(dy, plain_cache)
    for backward, cache in ((numpy_fast.batch_norm_backward, plain_cache),
                            (numpy_norms.batch_norm_backward, fast_cache),
                            (numpy_norms.batch_norm_backward_staged, fast_cache)):
        for g, g_ref in zip(backward(dy, cache), reference):
            assert rel_error(g, g_ref) < 100 * np.finfo(dtype).eps


@pytest.mark.parametrize("forward", [numpy_norms.batch_norm_forward,
                                     numpy_fast.batch_norm_forward], ids=["plain", "fast"])
@pytest.mark.parametrize("shape", [(4096, 25), (512, 25, 8)])
def test_float32_variance_survives_a_mean_far_above_the_std(shape, forward):
    # Row-by-row float32 sums make the mean wrong by more than the standard deviation at
    # mean/std ~ 5e4: the plain function's float64 statistics must not be, and the fast
    # kernel's corrected second pass must repair its first estimate.
    rng = np.random.default_rng(11)
    ratios = np.logspace(-1, 5, shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2))
    x = (ratios + rng.standard_normal(shape)).astype(np.float32)
    axes = (0,) + tuple(range(2, len(shape)))
    ref = x.astype(np.float64).var(axis=axes)
    _, cache = forward(x, np.ones(shape[1]), np.zeros(shape[1]))
    err = np.abs(cache.var.reshape(-1).astype(np.float64) - ref) / ref
    assert err.max() < 1e-4
    mu_err = np.abs(cache.mu.reshape(-1) - x.astype(np.float64).mean(axis=axes))
    assert np.all(mu_err < 1e-2 * np.sqrt(ref))


# The plain functions (both backward passes) and the fast kernels (forced into many blocks):
# the tests below hold for both modules.
IMPLEMENTATIONS = {
    "numpy_norms": (numpy_norms.batch_norm_forward,
                    (numpy_norms.batch_norm_backward, numpy_norms.batch_norm_backward_staged),
                    contextlib.nullcontext),
    "numpy_fast": (numpy_fast.batch_norm_forward, (numpy_fast.batch_norm_backward,),
                   small_blocks),
}
BOTH_MODULES = pytest.mark.parametrize("module", IMPLEMENTATIONS)


@BOTH_MODULES
def test_float32_large_input_agrees_with_float64(module):
    # 64 * 16 * 16 = 16384 values per channel near a mean of 80 times their spread (and for
    # numpy_fast many blocks): the float64 sums keep the float32 statistics accurate.
    forward, backwards, blocks = IMPLEMENTATIONS[module]
    x, gamma, beta, dy = make_case((64, 8, 16, 16), seed=11, loc=40.0, scale=0.5)
    y64, cache64 = numpy_norms.batch_norm_forward(x, gamma, beta)
    grads64 = numpy_norms.batch_norm_backward(dy, cache64)
    with blocks(1 << 13) if module == "numpy_fast" else blocks():
        y32, cache32 = forward(*(a.astype(np.float32) for a in (x, gamma, beta)))
        grads32 = backwards[0](dy.astype(np.float32), cache32)
    assert rel_error(y32, y64) < THRESHOLDS["float32"]
    for g32, g64 in zip(grads32, grads64):  # well conditioned here: the plain test applies
        assert rel_error(g32, g64) < THRESHOLDS["float32"]


@BOTH_MODULES
def test_non_contiguous_inputs_give_the_contiguous_result(module):
    forward, backwards, _ = IMPLEMENTATIONS[module]
    x, gamma, beta, dy = make_case((6, 5, 4, 3), seed=4)
    x_t = np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)  # F-order
    dy_s = np.repeat(dy, 2, axis=3)[..., ::2]  # strided view
    assert not x_t.flags.c_contiguous and not dy_s.flags.c_contiguous
    y, cache = forward(x, gamma, beta)
    y_t, cache_t = forward(x_t, gamma, beta)
    np.testing.assert_allclose(y_t, y, rtol=0, atol=1e-13)
    for backward in backwards:
        for g_t, g in zip(backward(dy_s, cache_t), backward(dy, cache)):
            np.testing.assert_allclose(g_t, g, rtol=0, atol=1e-12)


@BOTH_MODULES
def test_inputs_are_not_modified(module):
    forward, backwards, blocks = IMPLEMENTATIONS[module]
    x, gamma, beta, dy = make_case((5, 3, 4), seed=2)
    copies = [a.copy() for a in (x, gamma, beta, dy)]
    with blocks():
        _, cache = forward(x, gamma, beta)
        x_hat = cache.x_hat.copy()
        for backward in backwards:
            backward(dy, cache)
    for a, b in zip((x, gamma, beta, dy), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cache.x_hat, x_hat)


GOOD_X = np.random.default_rng(0).normal(size=(4, 3, 2))


@pytest.mark.parametrize("x,gamma,beta,eps", [
    (np.ones(5), np.ones(5), np.zeros(5), 1e-5),
    (np.ones((4, 3), dtype=np.int64), np.ones(3), np.zeros(3), 1e-5),
    (GOOD_X, np.ones(2), np.zeros(3), 1e-5),
    (np.ones((1, 3, 1, 1)), np.ones(3), np.zeros(3), 1e-5),
    (GOOD_X, np.ones(3), np.zeros(3), 0.0),
])
def test_forward_rejects_bad_input_like_the_plain_function(x, gamma, beta, eps):
    with pytest.raises(ValueError) as plain:
        numpy_norms.batch_norm_forward(x, gamma, beta, eps)
    with pytest.raises(ValueError) as fast:
        numpy_fast.batch_norm_forward(x, gamma, beta, eps)
    assert str(fast.value) == str(plain.value)


def test_backward_rejects_bad_input_like_the_plain_function():
    _, cache = numpy_fast.batch_norm_forward(GOOD_X, np.ones(3), np.zeros(3))
    for dy, c in ((np.ones((4, 3)), cache), (np.ones((4, 3, 2), dtype=np.int64), cache),
                  (np.ones((4, 3, 2)), tuple(cache))):
        with pytest.raises(ValueError) as plain:
            numpy_norms.batch_norm_backward(dy, c)
        with pytest.raises(ValueError) as fast:
            numpy_fast.batch_norm_backward(dy, c)
        assert str(fast.value) == str(plain.value)

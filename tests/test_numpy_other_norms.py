"""Tests of layer, instance and group norm in bnbook.numpy_norms, and of the index sets that say
which values share statistics.

References: ``torch.nn.functional.layer_norm``/``instance_norm``/``group_norm`` and their
autograd in float64, centred finite differences (bnbook.gradcheck), means and variances taken
by hand over explicit index sets, and the float64 run of the same code for float32 inputs.
Inputs have a mean and a spread of their own for every ``(sample, channel)``, far from 0 and 1,
and ``gamma`` far from 1 with both signs, so that an average over a wrong axis, a wrong group
layout or a missing term changes the result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bnbook.gradcheck import THRESHOLDS, numerical_gradient, rel_error
from bnbook.numpy_norms import (
    METHODS,
    NormCache,
    batch_norm_forward,
    group_norm_backward,
    group_norm_forward,
    instance_norm_backward,
    instance_norm_forward,
    layer_norm_backward,
    layer_norm_forward,
    normalisation_axes,
    normalisation_view,
    statistics_groups,
)
from bnbook.verify import available_devices

FLOAT64_DEVICES = [d for d in available_devices() if d != "mps"]
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
BACKWARDS = {"layer": layer_norm_backward, "instance": instance_norm_backward,
             "group": group_norm_backward}


def forward(method, x, gamma, beta, eps=1e-5, num_groups=None):
    if method == "layer":
        return layer_norm_forward(x, gamma, beta, eps)
    if method == "instance":
        return instance_norm_forward(x, gamma, beta, eps)
    return group_norm_forward(x, gamma, beta, num_groups, eps)


def make_case(method, shape, seed, loc=3.0, scale=2.5, dtype=np.float64):
    """x with its own mean (around ``loc``) and spread (around ``scale``) per (sample,
    channel); gamma with |gamma| in [0.2, 4] of both signs and beta ~ N(0, 4), of shape
    x.shape[1:] for layer norm and (C,) otherwise; dy ~ N(0.5, 1)."""
    rng = np.random.default_rng(seed)
    nc_shape = shape[:2] + (1,) * (len(shape) - 2)
    x_loc = loc + rng.uniform(-1, 1, size=nc_shape) * max(abs(loc), 1.0) * 0.5
    x_scale = scale * rng.uniform(0.5, 2.0, size=nc_shape)
    x = rng.standard_normal(shape) * x_scale + x_loc
    param_shape = shape[1:] if method == "layer" else shape[1:2]
    gamma = rng.uniform(0.2, 4.0, size=param_shape) * rng.choice([-1.0, 1.0], size=param_shape)
    beta = rng.normal(0.0, 2.0, size=param_shape)
    dy = rng.normal(0.5, 1.0, size=shape)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, dy))


def torch_reference(method, x, gamma, beta, dy, eps=1e-5, num_groups=None, device="cpu"):
    """y and (dx, dgamma, dbeta) from torch.nn.functional and autograd, in float64 on
    ``device``, returned as NumPy arrays."""
    xt, gt, bt = (torch.tensor(a, dtype=torch.float64, device=device, requires_grad=True)
                  for a in (x, gamma, beta))
    if method == "layer":
        y = F.layer_norm(xt, xt.shape[1:], gt, bt, eps)
    elif method == "instance":
        y = F.instance_norm(xt, weight=gt, bias=bt, eps=eps)
    else:
        y = F.group_norm(xt, num_groups, gt, bt, eps)
    y.backward(torch.tensor(dy, dtype=torch.float64, device=device))
    return y.detach().cpu().numpy(), tuple(t.grad.cpu().numpy() for t in (xt, gt, bt))


def values_per_statistic(method, shape, num_groups=None):
    view_shape, axes = normalisation_view(method, shape, num_groups)
    return int(np.prod([view_shape[a] for a in axes]))


@st.composite
def cases(draw, methods=("layer", "instance", "group"), min_m=4):
    """(method, shape, num_groups) with at least ``min_m`` values per set of statistics."""
    method = draw(st.sampled_from(methods))
    ndim = draw(st.sampled_from(METHODS[method]))
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 6)))
    shape += tuple(draw(st.integers(1, 6)) for _ in range(ndim - 2))
    num_groups = None
    if method == "group":
        num_groups = draw(st.sampled_from([g for g in range(1, shape[1] + 1)
                                           if shape[1] % g == 0]))
    assume(values_per_statistic(method, shape, num_groups) >= min_m)
    return method, shape, num_groups


# --- against PyTorch ---------------------------------------------------------------------------

@SETTINGS
@given(case=cases(), seed=st.integers(0, 2**32 - 1), loc=st.floats(-50, 50),
       log_scale=st.floats(-2, 2), log_eps=st.floats(-8, -1))
def test_forward_and_backward_match_torch_float64(case, seed, loc, log_scale, log_eps):
    method, shape, num_groups = case
    eps = 10.0**log_eps
    x, gamma, beta, dy = make_case(method, shape, seed, loc=loc, scale=10.0**log_scale)
    y, cache = forward(method, x, gamma, beta, eps, num_groups)
    grads = BACKWARDS[method](dy, cache)
    y_ref, grads_ref = torch_reference(method, x, gamma, beta, dy, eps, num_groups)
    assert rel_error(y, y_ref) < THRESHOLDS["float64_analytic"]
    for name, g, g_ref in zip(("dx", "dgamma", "dbeta"), grads, grads_ref):
        assert g.shape == g_ref.shape, name
        assert rel_error(g, g_ref) < THRESHOLDS["float64_analytic"], name


@pytest.mark.parametrize("method,shape,num_groups", [
    ("layer", (7, 5), None), ("layer", (3, 4, 5), None), ("layer", (2, 3, 4, 5), None),
    ("instance", (3, 4, 9), None), ("instance", (2, 3, 4, 5), None),
    ("group", (3, 6), 2), ("group", (2, 8, 5), 4), ("group", (2, 6, 3, 4), 3),
    ("group", (2, 6, 3, 4), 2),
])
@pytest.mark.parametrize("device", FLOAT64_DEVICES)
def test_matches_torch_on_fixed_shapes(method, shape, num_groups, device):
    """Against PyTorch on every device it has here that computes float64: the CPU always,
    CUDA when present (MPS has no float64)."""
    x, gamma, beta, dy = make_case(method, shape, seed=sum(shape), loc=-30.0, scale=0.2)
    y, cache = forward(method, x, gamma, beta, 1e-5, num_groups)
    y_ref, grads_ref = torch_reference(method, x, gamma, beta, dy, 1e-5, num_groups, device)
    assert rel_error(y, y_ref) < THRESHOLDS["float64_analytic"]
    for g, g_ref in zip(BACKWARDS[method](dy, cache), grads_ref):
        assert rel_error(g, g_ref) < THRESHOLDS["float64_analytic"]


@pytest.mark.parametrize("method,shape,num_groups", [
    ("layer", (4, 5), None), ("layer", (2, 3, 4), None), ("instance", (2, 3, 5), None),
    ("instance", (2, 2, 3, 2), None), ("group", (2, 6, 2), 3), ("group", (2, 4, 2, 2), 2),
    ("group", (3, 6), 2),
])
def test_backward_matches_finite_differences(method, shape, num_groups):
    x, gamma, beta, dy = make_case(method, shape, seed=len(shape), loc=-4.0, scale=1.7)
    _, cache = forward(method, x, gamma, beta, 1e-5, num_groups)
    grads = BACKWARDS[method](dy, cache)
    numeric = (
        numerical_gradient(lambda v: forward(method, v, gamma, beta, 1e-5, num_groups)[0], x, dy),
        numerical_gradient(lambda g: forward(method, x, g, beta, 1e-5, num_groups)[0], gamma, dy),
        numerical_gradient(lambda b: forward(method, x, gamma, b, 1e-5, num_groups)[0], beta, dy),
    )
    for name, g, g_num in zip(("dx", "dgamma", "dbeta"), grads, numeric):
        assert rel_error(g, g_num) < THRESHOLDS["float64_finite_difference"], name


# --- what the cache holds, and which values share statistics ------------------------------------

def hand_statistics(method, x, num_groups=None):
    """Means and biased variances over explicitly listed index sets, in label order."""
    n, c = x.shape[:2]
    if method == "batch":
        sets = [x[:, k] for k in range(c)]
    elif method == "layer":
        sets = [x[i] for i in range(n)]
    elif method == "instance":
        sets = [x[i, k] for i in range(n) for k in range(c)]
    else:
        width = c // num_groups
        sets = [x[i, g * width:(g + 1) * width] for i in range(n) for g in range(num_groups)]
    return np.array([s.mean() for s in sets]), np.array([s.var() for s in sets])


def hand_labels(method, shape, num_groups=None):
    n_index, c_index = np.indices(shape)[:2]
    return {"batch": c_index, "layer": n_index, "instance": n_index * shape[1] + c_index,
            "group": n_index * (num_groups or 1) + c_index // (shape[1] // (num_groups or 1))
            }[method]


ALL_CASES = [("batch", (4, 6, 3, 2), None), ("batch", (5, 3), None),
             ("layer", (4, 6, 3, 2), None), ("layer", (5, 3), None), ("layer", (3, 4, 5), None),
             ("instance", (4, 6, 3, 2), None), ("instance", (3, 4, 5), None),
             ("group", (4, 6, 3, 2), 3), ("group", (4, 6, 3, 2), 2), ("group", (4, 6, 3, 2), 1),
             ("group", (4, 6, 3, 2), 6), ("group", (3, 8, 5), 4), ("group", (5, 6), 3)]


@pytest.mark.parametrize("method,shape,num_groups", ALL_CASES)
def test_cache_statistics_match_hand_computed_index_sets(method, shape, num_groups):
    x, gamma, beta, _ = make_case("instance" if method == "batch" else method, shape, seed=5,
                                  loc=20.0, scale=0.3)
    if method == "batch":
        y, cache = batch_norm_forward(x, gamma, beta, eps=1e-3)
    else:
        y, cache = forward(method, x, gamma, beta, 1e-3, num_groups)
        assert isinstance(cache, NormCache) and cache.method == method
        assert cache.num_groups == num_groups and cache.x is x
        assert (cache.view_shape, cache.axes) == normalisation_view(method, shape, num_groups)
    mu, var = hand_statistics(method, x, num_groups)
    assert cache.mu.size == mu.size and cache.eps == 1e-3
    np.testing.assert_allclose(cache.mu.ravel(), mu, rtol=1e-13)
    np.testing.assert_allclose(cache.var.ravel(), var, rtol=1e-10)
    np.testing.assert_allclose(cache.inv_std, 1 / np.sqrt(cache.var + 1e-3), rtol=1e-13)
    labels = statistics_groups(method, shape, num_groups)
    np.testing.assert_allclose(cache.x_hat, (x - mu[labels]) / np.sqrt(var[labels] + 1e-3),
                               atol=1e-11)


@pytest.mark.parametrize("method,shape,num_groups", ALL_CASES)
def test_statistics_groups_are_the_forward_index_sets(method, shape, num_groups):
    labels = statistics_groups(method, shape, num_groups)
    assert labels.shape == shape and np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, hand_labels(method, shape, num_groups))
    # the forward's statistics, label by label (x with one offset per value, so that a label
    # pointing at the wrong mean cannot agree by accident)
    x = np.random.default_rng(1).normal(size=shape) + np.arange(np.prod(shape)).reshape(shape)
    gamma_shape = shape[1:] if method == "layer" else shape[1:2]
    if method == "batch":
        _, cache = batch_norm_forward(x, np.ones(gamma_shape), np.zeros(gamma_shape))
    else:
        _, cache = forward(method, x, np.ones(gamma_shape), np.zeros(gamma_shape), 1e-5,
                           num_groups)
    counts = np.bincount(labels.ravel())
    assert counts.size == cache.mu.size
    assert np.all(counts == counts[0]) and counts[0] * counts.size == x.size
    means = np.bincount(labels.ravel(), x.ravel()) / counts
    np.testing.assert_allclose(cache.mu.ravel(), means, rtol=1e-12)


def test_normalisation_axes_and_views():
    assert normalisation_axes("batch", 4) == (0, 2, 3)
    assert normalisation_axes("batch", 2) == (0,)
    assert normalisation_axes("layer", 4) == (1, 2, 3)
    assert normalisation_axes("layer", 2) == (1,)
    assert normalisation_axes("instance", 3) == (2,)
    assert normalisation_axes("instance", 4) == (2, 3)
    assert normalisation_axes("group", 4, num_groups=2) == (2, 3, 4)
    assert normalisation_axes("group", 2, num_groups=2) == (2,)
    assert normalisation_view("group", (2, 6, 3, 4), 3) == ((2, 3, 2, 3, 4), (2, 3, 4))
    assert normalisation_view("layer", (2, 6, 3, 4)) == ((2, 6, 3, 4), (1, 2, 3))
    for args, pattern in [(("weight", 4), r"method must be one of 'batch'"),
                          (("group", 4), r"group norm needs num_groups"),
                          (("layer", 4, 2), r"num_groups is for group norm only"),
                          (("instance", 2), r"instance norm expects .*\(N, C, L\) or"),
                          (("group", 4, 0), r"num_groups must be a positive integer")]:
        with pytest.raises(ValueError, match=pattern):
            normalisation_axes(*args)
    with pytest.raises(ValueError, match=r"num_groups=4 must divide .* C=6"):
        statistics_groups("group", (2, 6, 3), 4)


@SETTINGS
@given(case=cases(min_m=2), seed=st.integers(0, 2**32 - 1), loc=st.floats(-50, 50),
       log_eps=st.floats(-8, 0))
def test_dx_sums_to_zero_over_each_set_of_shared_statistics(case, seed, loc, log_eps):
    method, shape, num_groups = case
    x, gamma, beta, dy = make_case(method, shape, seed, loc=loc)
    _, cache = forward(method, x, gamma, beta, 10.0**log_eps, num_groups)
    dx = BACKWARDS[method](dy, cache)[0]
    labels = statistics_groups(method, shape, num_groups).ravel()
    # rounding is relative to the terms that cancel, |gamma * dy| * inv_std summed per set
    gamma_b = np.broadcast_to(cache.gamma.reshape(((1,) + shape[1:]) if method == "layer"
                                                  else (1, -1) + (1,) * (len(shape) - 2)), shape)
    terms = np.abs(gamma_b * dy).ravel() * cache.inv_std.ravel()[labels]
    sums, magnitude = np.bincount(labels, dx.ravel()), np.bincount(labels, terms)
    assert np.all(np.abs(sums) <= 1e-12 * magnitude)


# --- the limits of group norm ------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (4, 4, 7), (5, 6)])
def test_one_group_is_layer_norm_with_a_per_channel_affine_map(shape):
    x, gamma, beta, dy = make_case("group", shape, seed=2, loc=-8.0, scale=0.4)
    y, cache = group_norm_forward(x, gamma, beta, num_groups=1)
    dx, dgamma, dbeta = group_norm_backward(dy, cache)
    spread = (-1,) + (1,) * (len(shape) - 2)
    gamma_ln = np.broadcast_to(gamma.reshape(spread), shape[1:]).copy()
    beta_ln = np.broadcast_to(beta.reshape(spread), shape[1:]).copy()
    y_ln, cache_ln = layer_norm_forward(x, gamma_ln, beta_ln)
    dx_ln, dgamma_ln, dbeta_ln = layer_norm_backward(dy, cache_ln)
    assert rel_error(y, y_ln) < 1e-14 and rel_error(dx, dx_ln) < 1e-13
    sum_positions = tuple(range(1, len(shape) - 1))
    assert rel_error(dgamma, dgamma_ln.sum(axis=sum_positions)) < 1e-13
    assert rel_error(dbeta, dbeta_ln.sum(axis=sum_positions)) < 1e-13


@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (4, 4, 7)])
def test_one_group_per_channel_is_instance_norm(shape):
    x, gamma, beta, dy = make_case("group", shape, seed=3, loc=12.0, scale=3.0)
    y, cache = group_norm_forward(x, gamma, beta, num_groups=shape[1])
    y_in, cache_in = instance_norm_forward(x, gamma, beta)
    assert rel_error(y, y_in) < 1e-14
    np.testing.assert_allclose(cache.mu.ravel(), cache_in.mu.ravel(), rtol=1e-14)
    for g, g_in in zip(group_norm_backward(dy, cache), instance_norm_backward(dy, cache_in)):
        assert rel_error(g, g_in) < 1e-13


def test_group_norm_differs_from_instance_and_layer_norm_in_between():
    # guards the two limit tests: with 1 < G < C the results are neither
    x, gamma, beta, _ = make_case("group", (2, 6, 3, 3), seed=4)
    y = group_norm_forward(x, gamma, beta, num_groups=3)[0]
    assert rel_error(y, group_norm_forward(x, gamma, beta, num_groups=1)[0]) > 1e-2
    assert rel_error(y, instance_norm_forward(x, gamma, beta)[0]) > 1e-2


# --- dtypes, inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("method,shape,num_groups", [
    ("layer", (6, 10), None), ("layer", (4, 3, 5, 5), None), ("instance", (4, 3, 16), None),
    ("instance", (2, 3, 5, 5), None), ("group", (4, 6, 5, 5), 3), ("group", (8, 6), 2),
])
def test_float32_in_float32_out_and_close_to_float64(method, shape, num_groups):
    x, gamma, beta, dy = make_case(method, shape, seed=6, loc=25.0, scale=0.5)
    y64, cache64 = forward(method, x, gamma, beta, 1e-5, num_groups)
    x32, gamma32, beta32, dy32 = (a.astype(np.float32) for a in (x, gamma, beta, dy))
    y32, cache32 = forward(method, x32, gamma32.astype(np.float64), beta32, 1e-5, num_groups)
    assert y32.dtype == np.float32 and y32.shape == shape
    for a in (cache32.x_hat, cache32.mu, cache32.var, cache32.inv_std, cache32.gamma):
        assert a.dtype == np.float32
    grads32 = BACKWARDS[method](dy, cache32)  # float64 dy is cast to float32
    assert [g.dtype for g in grads32] == [np.float32] * 3
    assert rel_error(y32, y64) < THRESHOLDS["float32"]
    for g32, g64 in zip(grads32, BACKWARDS[method](dy, cache64)):
        assert rel_error(g32, g64) < THRESHOLDS["float32"]


@pytest.mark.parametrize("method", ["layer", "instance", "group"])
def test_inputs_are_not_modified_and_an_empty_batch_gives_empty_results(method):
    x, gamma, beta, dy = make_case(method, (3, 4, 5), seed=7)
    copies = [a.copy() for a in (x, gamma, beta, dy)]
    num_groups = 2 if method == "group" else None
    _, cache = forward(method, x, gamma, beta, 1e-5, num_groups)
    BACKWARDS[method](dy, cache)
    for a, b in zip((x, gamma, beta, dy), copies):
        np.testing.assert_array_equal(a, b)
    empty = np.zeros((0, 4, 5))
    y, cache = forward(method, empty, gamma, beta, 1e-5, num_groups)  # no sample, no statistic
    assert y.shape == (0, 4, 5) and cache.mu.size == 0
    assert [g.shape for g in BACKWARDS[method](empty, cache)] == [(0, 4, 5)] + [gamma.shape] * 2


def test_nan_is_treated_as_batch_norm_treats_it():
    # batch_norm_forward does not refuse NaN (only the BatchNorm layer refuses a non-finite
    # training batch): the other methods do the same, and the NaN spreads to its own set only.
    x, gamma, beta, _ = make_case("group", (2, 4, 3), seed=8)
    x[0, 1, 2] = np.nan
    y_bn = batch_norm_forward(x, gamma, beta)[0]
    y_gn = group_norm_forward(x, gamma, beta, num_groups=2)[0]
    np.testing.assert_array_equal(np.isnan(y_bn), statistics_groups("batch", x.shape) == 1)
    nan_set = statistics_groups("group", x.shape, 2) == 0
    np.testing.assert_array_equal(np.isnan(y_gn), nan_set)


# --- bad input ---------------------------------------------------------------------------------

GOOD = np.random.default_rng(0).normal(size=(4, 6, 2))
C_ONES, C_ZEROS = np.ones(6), np.zeros(6)
LN_ONES, LN_ZEROS = np.ones((6, 2)), np.zeros((6, 2))


@pytest.mark.parametrize("method,x,gamma,beta,eps,num_groups,pattern", [
    ("group", GOOD, C_ONES, C_ZEROS, 1e-5, 4,
     r"num_groups=4 must divide the number of channels C=6 .*divisors of 6 are 1, 2, 3, 6"),
    ("group", GOOD, C_ONES, C_ZEROS, 1e-5, 0, r"num_groups must be a positive integer; got 0"),
    ("group", GOOD, C_ONES, C_ZEROS, 1e-5, 2.0, r"num_groups must be a positive integer"),
    ("group", GOOD, C_ONES, C_ZEROS, 1e-5, True, r"num_groups must be a positive integer"),
    ("group", GOOD, C_ONES, C_ZEROS, 1e-5, None, r"group norm needs num_groups"),
    ("group", GOOD, np.ones(3), C_ZEROS, 1e-5, 3,
     r"gamma must have shape \(6,\) to match the channel axis \(axis 1\).*got shape \(3,\)"),
    ("group", GOOD, C_ONES, LN_ZEROS, 1e-5, 3, r"beta must have shape \(6,\).*\(6, 2\)"),
    ("group", np.ones((2, 4)), np.ones(4), np.zeros(4), 1e-5, 4,
     r"group norm needs more than 1 value per group of a sample; .*1 value\(s\).*num_groups=4"),
    ("group", np.ones((2, 3, 2, 2, 2)), np.ones(3), np.zeros(3), 1e-5, 1,
     r"group norm expects an input of shape \(N, D\), \(N, C, L\) or \(N, C, H, W\); got an "
     r"array with 5 dimension"),
    ("layer", GOOD, C_ONES, C_ZEROS, 1e-5, None,
     r"gamma must have shape \(6, 2\) to match x.shape\[1:\].*got shape \(6,\)"),
    ("layer", np.ones(5), np.ones(()), np.zeros(()), 1e-5, None,
     r"layer norm expects an input of shape .*1 dimension"),
    ("layer", np.ones((4, 1)), np.ones(1), np.zeros(1), 1e-5, None,
     r"layer norm needs more than 1 value per sample"),
    ("instance", GOOD, LN_ONES, LN_ZEROS, 1e-5, None, r"gamma must have shape \(6,\)"),
    ("instance", np.ones((4, 6)), C_ONES, C_ZEROS, 1e-5, None,
     r"instance norm expects an input of shape \(N, C, L\) or \(N, C, H, W\); .*2 dimension"),
    ("instance", np.ones((4, 6, 1, 1)), C_ONES, C_ZEROS, 1e-5, None,
     r"instance norm needs more than 1 value per channel of a sample"),
])
def test_method_specific_bad_input_is_rejected(method, x, gamma, beta, eps, num_groups,
                                               pattern):
    with pytest.raises(ValueError, match=pattern):
        forward(method, x, gamma, beta, eps, num_groups)


@pytest.mark.parametrize("x,gamma,beta,eps", [
    (GOOD.astype(np.int64), C_ONES, C_ZEROS, 1e-5),
    (GOOD.astype(np.float16), C_ONES, C_ZEROS, 1e-5),
    (GOOD.astype(np.complex128), C_ONES, C_ZEROS, 1e-5),
    (GOOD.astype(bool), C_ONES, C_ZEROS, 1e-5),
    (GOOD, np.array(["a"] * 6), C_ZEROS, 1e-5),
    (GOOD, C_ONES, np.array([None] * 6), 1e-5),
    (GOOD, C_ONES, C_ZEROS, 0.0),
    (GOOD, C_ONES, C_ZEROS, -1e-5),
    (GOOD, C_ONES, C_ZEROS, float("nan")),
    (GOOD, C_ONES, C_ZEROS, float("inf")),
    (GOOD, C_ONES, C_ZEROS, "1e-5"),
    (GOOD, C_ONES, C_ZEROS, None),
])
@pytest.mark.parametrize("method", ["layer", "instance", "group"])
def test_bad_input_gets_batch_norms_message(method, x, gamma, beta, eps):
    with pytest.raises(ValueError) as bn_error:
        batch_norm_forward(x, gamma, beta, eps)
    if method == "layer" and gamma.shape == (6,):
        gamma, beta = (np.broadcast_to(p[:, None], (6, 2)) for p in (gamma, beta))
    with pytest.raises(ValueError) as error:
        forward(method, x, gamma, beta, eps, 3)
    assert str(error.value) == str(bn_error.value)


@pytest.mark.parametrize("method", ["layer", "instance", "group"])
def test_backward_rejects_bad_input(method):
    gamma_shape = (6, 2) if method == "layer" else (6,)
    _, cache = forward(method, GOOD, np.ones(gamma_shape), np.zeros(gamma_shape), 1e-5, 3)
    with pytest.raises(ValueError, match=r"dy must have the shape of x, \(4, 6, 2\); got \(4, 6\)"):
        BACKWARDS[method](np.ones((4, 6)), cache)
    with pytest.raises(ValueError, match=r"dy must have a real floating dtype.*int64"):
        BACKWARDS[method](np.ones((4, 6, 2), dtype=np.int64), cache)
    with pytest.raises(ValueError, match=rf"cache must be the NormCache returned by "
                                         rf"{method}_norm_forward; got tuple"):
        BACKWARDS[method](np.ones((4, 6, 2)), tuple(cache))
    other = "layer" if method != "layer" else "group"
    with pytest.raises(ValueError, match=rf"comes from {method}_norm_forward; pass it to "
                                         rf"{method}_norm_backward, not {other}_norm_backward"):
        BACKWARDS[other](np.ones((4, 6, 2)), cache)
    _, bn_cache = batch_norm_forward(GOOD, np.ones(6), np.zeros(6))
    with pytest.raises(ValueError, match=r"cache must be the NormCache.*got BatchNormCache"):
        BACKWARDS[method](np.ones((4, 6, 2)), bn_cache)

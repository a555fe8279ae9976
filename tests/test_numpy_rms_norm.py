"""Tests of RMS norm in bnbook.numpy_norms (``rms_norm_forward``, ``rms_norm_backward``).

References: ``torch.nn.functional.rms_norm`` and its autograd in float64, centred finite
differences (bnbook.gradcheck), and the float64 run of the same code for float32 inputs. Inputs
have a mean far from 0 per sample and a spread far from 1, and ``gamma`` far from 1 with both
signs, so that a missing term (or a subtracted mean) changes the result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnbook.gradcheck import THRESHOLDS, numerical_gradient, rel_error
from bnbook.numpy_norms import (
    RMSNormCache,
    layer_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
)

SHAPES = [(7, 12), (5, 4, 6), (3, 4, 5, 2)]


def make_rms_case(shape, seed):
    """``(x, gamma, dy)``, float64: per-sample means of both signs, ``gamma`` far from 1."""
    rng = np.random.default_rng(seed)
    loc = rng.uniform(-3, 3, size=(shape[0],) + (1,) * (len(shape) - 1))
    x = loc + rng.uniform(0.5, 4) * rng.standard_normal(shape)
    gamma = rng.uniform(0.5, 2.0, size=shape[1:]) * rng.choice([-1, 1], size=shape[1:])
    return x, gamma, rng.standard_normal(shape)


def torch_rms(x, gamma, dy, eps):
    """``(y, dx, dgamma)`` of ``F.rms_norm`` by autograd in float64 (``dgamma`` None without
    ``gamma``)."""
    xt = torch.tensor(x, requires_grad=True)
    gt = None if gamma is None else torch.tensor(gamma, requires_grad=True)
    y = F.rms_norm(xt, x.shape[1:], gt, eps)
    y.backward(torch.tensor(dy))
    return (y.detach().numpy(), xt.grad.numpy(),
            None if gamma is None else gt.grad.numpy())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-1])
def test_forward_and_backward_match_torch_float64(shape, with_weight, eps):
    x, gamma, dy = make_rms_case(shape, seed=len(shape) + 10 * with_weight)
    gamma = gamma if with_weight else None
    y, cache = rms_norm_forward(x, gamma, eps)
    dx, dgamma = rms_norm_backward(dy, cache)
    y_ref, dx_ref, dgamma_ref = torch_rms(x, gamma, dy, eps)
    assert y.shape == x.shape and dx.shape == x.shape
    assert rel_error(y, y_ref) < THRESHOLDS["float64_analytic"]
    assert rel_error(dx, dx_ref) < THRESHOLDS["float64_analytic"]
    if with_weight:
        assert dgamma.shape == x.shape[1:]
        assert rel_error(dgamma, dgamma_ref) < THRESHOLDS["float64_analytic"]
    else:
        assert dgamma is None


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_finite_differences_float64(shape):
    x, gamma, dy = make_rms_case(shape, seed=3)
    dx, dgamma = rms_norm_backward(dy, rms_norm_forward(x, gamma)[1])
    dx_num = numerical_gradient(lambda v: rms_norm_forward(v, gamma)[0], x, dy)
    dgamma_num = numerical_gradient(lambda g: rms_norm_forward(x, g)[0], gamma, dy)
    assert rel_error(dx, dx_num) < THRESHOLDS["float64_finite_difference"]
    assert rel_error(dgamma, dgamma_num) < THRESHOLDS["float64_finite_difference"]


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_agrees_with_float64_and_stays_float32(shape):
    x, gamma, dy = make_rms_case(shape, seed=5)
    y64, cache64 = rms_norm_forward(x, gamma)
    y32, cache32 = rms_norm_forward(x.astype(np.float32), gamma.astype(np.float32))
    grads32 = rms_norm_backward(dy.astype(np.float32), cache32)
    assert y32.dtype == np.float32 and all(g.dtype == np.float32 for g in grads32)
    assert rel_error(y32, y64) < THRESHOLDS["float32"]
    for g32, g64 in zip(grads32, rms_norm_backward(dy, cache64)):
        assert rel_error(g32, g64) < THRESHOLDS["float32"]


def test_the_root_mean_square_of_each_sample_is_one_and_a_shift_is_not_removed():
    x, _, _ = make_rms_case((6, 40), seed=7)
    y, cache = rms_norm_forward(x, eps=1e-12)
    assert isinstance(cache, RMSNormCache)
    np.testing.assert_allclose(np.sqrt((y ** 2).mean(axis=1)), 1.0, rtol=1e-9)
    ones, zeros = np.ones(40), np.zeros(40)
    shifted = rms_norm_forward(x + 5.0)[0]
    assert np.abs(shifted - y).max() > 0.1  # RMS norm sees the shift
    np.testing.assert_allclose(layer_norm_forward(x + 5.0, ones, zeros)[0],
                               layer_norm_forward(x, ones, zeros)[0], atol=1e-9)


@pytest.mark.parametrize("args,match", [
    ((np.ones(5),), r"RMS norm expects an input of shape"),
    ((np.ones((4, 3), dtype=np.int64),), r"x must .*float32 or float64"),
    ((np.ones((4, 3)), np.ones(4)), r"gamma must have shape \(3,\)"),
    ((np.ones((4, 3)), None, 0.0), r"eps must be a positive finite number"),
])
def test_bad_inputs_are_refused_with_batch_norms_messages(args, match):
    with pytest.raises(ValueError, match=match):
        rms_norm_forward(*args)


def test_backward_refuses_another_cache_and_a_wrong_dy():
    x, gamma, dy = make_rms_case((4, 6), seed=1)
    _, ln_cache = layer_norm_forward(x, gamma, gamma)
    with pytest.raises(ValueError, match="RMSNormCache"):
        rms_norm_backward(dy, ln_cache)
    with pytest.raises(ValueError, match="dy must have the shape of x"):
        rms_norm_backward(dy[:2], rms_norm_forward(x, gamma)[1])

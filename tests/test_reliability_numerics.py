"""Issue 23, "Numerics that are silently wrong" (items 13-17) and the torch modules' errors
(item 28): each test fails on bbad2e6."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnbook import numpy_fast, numpy_norms, torch_bn
from bnbook.checks.running_stats import check_running_stats
from bnbook.gradcheck import rel_error
from bnbook.torch_norms import BatchRenorm2d, WSConv2d


def _batch_norm64(x: torch.Tensor) -> torch.Tensor:
    """Independent float64 reference: per-channel batch norm of ``x`` (N, C, H, W)."""
    xd = x.double()
    mu = xd.mean((0, 2, 3), keepdim=True)
    var = xd.var((0, 2, 3), unbiased=False, keepdim=True)
    return (xd - mu) / torch.sqrt(var + 1e-5)


# --- item 13 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("autocast", [False, True])
def test_batch_renorm_bf16_uses_float32_statistics_and_returns_bf16(autocast):
    torch.manual_seed(0)
    x = (10 + torch.randn(64, 3, 8, 8)).bfloat16()
    layer = BatchRenorm2d(3, momentum=1.0, r_max=1.0, d_max=0.0)  # plain batch norm
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.no_grad():
        y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = _batch_norm64(x)
    # bf16 output: within one rounding of the float64 result (bf16 statistics gave 0.02-0.04)
    assert torch.all((y.double() - ref).abs() <= ref.abs() * 2.0 ** -8 + 1e-3)
    mean64 = x.double().mean((0, 2, 3))
    assert layer.running_mean.dtype == torch.float32
    np.testing.assert_allclose(layer.running_mean.double(), mean64, rtol=1e-6)


# --- item 14 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [1e4, 1e5, 3e6])
def test_fast_float32_forward_is_accurate_when_the_mean_dwarfs_the_spread(ratio):
    rng = np.random.default_rng(1)
    x = (ratio + rng.standard_normal((64, 8, 16, 16))).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean((0, 2, 3), keepdims=True)) / np.sqrt(
        x64.var((0, 2, 3), keepdims=True) + 1e-5)
    y_fast, _ = numpy_fast.batch_norm_forward(x, np.ones(8), np.zeros(8))
    y_plain, _ = numpy_norms.batch_norm_forward(x, np.ones(8), np.zeros(8))
    plain = np.abs(y_plain - ref).max()
    assert plain < 1e-6
    # a few float32 roundings of |x_hat| <~ 5 (it was 1e-4 to 9e-3)
    assert np.abs(y_fast - ref).max() < 3e-6


# --- item 15 ------------------------------------------------------------------------------------

def _staged_reference(x64, dy64):
    """Autograd in float64 on a rescaled copy: batch norm is scale invariant in x."""
    scale = np.abs(x64).max()
    xt = torch.tensor(x64 / scale, requires_grad=True)
    y = torch.nn.functional.batch_norm(xt, None, None, training=True, eps=1e-5 / scale ** 2)
    y.backward(torch.tensor(dy64))
    return xt.grad.numpy() / scale


def test_staged_backward_float32_large_input_matches_float64():
    rng = np.random.default_rng(2)
    x = (1e18 * rng.standard_normal((16, 3))).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, cache = numpy_norms.batch_norm_forward(x, np.ones(3), np.zeros(3))
    dx = numpy_norms.batch_norm_backward_staged(dy, cache)[0]
    ref = _staged_reference(x.astype(np.float64), dy.astype(np.float64))
    assert rel_error(dx, ref) < 1e-5


@pytest.mark.parametrize("forward", [numpy_norms.batch_norm_forward,
                                     numpy_fast.batch_norm_forward])
@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e20), (np.float64, 1e155)])
def test_forward_refuses_a_variance_that_overflows(forward, dtype, scale):
    x = (scale * np.random.default_rng(3).standard_normal((8, 3, 4))).astype(dtype)
    with pytest.raises(ValueError,
                       match=r"variance of channel \d overflows .*PyTorch returns beta"):
        forward(x, np.ones(3), np.zeros(3))


def test_staged_backward_refuses_a_variance_it_cannot_differentiate():
    x = 1e120 * np.random.default_rng(4).standard_normal((8, 3))
    _, cache = numpy_norms.batch_norm_forward(x, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="use batch_norm_backward"):
        numpy_norms.batch_norm_backward_staged(np.ones_like(x), cache)
    numpy_norms.batch_norm_backward(np.ones_like(x), cache)  # the closed form still works


# --- item 16 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [(1, 4, 1), (1, 4, (1, 1))])
def test_ws_conv_refuses_a_filter_with_a_single_weight(args):
    with pytest.raises(ValueError, match="more than 1 weight per output channel"):
        WSConv2d(*args)
    WSConv2d(2, 4, 1)  # two weights per filter are fine


# --- item 17 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_inference_forward_refuses_the_dtypes_training_refuses(dtype):
    if np.dtype(dtype) == np.float64:
        pytest.fail("this platform has no float128; the test needs one")
    x = np.ones((4, 3), dtype=dtype)
    with pytest.raises(ValueError, match=r"float32 or float64"):
        numpy_norms.batch_norm_inference_forward(x, np.ones(3), np.zeros(3),
                                                 np.full(3, 1e5), np.ones(3))


@pytest.mark.parametrize("eps,running_var,pattern", [
    (0.0, torch.ones(3), "eps must be a positive"),
    (-1e-5, torch.ones(3), "eps must be a positive"),
    (1e-5, torch.tensor([1.0, -1.0, 1.0]), "running_var must be finite and non-negative"),
    (1e-5, torch.tensor([1.0, float("nan"), 1.0]), "running_var must be finite"),
])
def test_torch_inference_refuses_bad_eps_and_running_var(eps, running_var, pattern):
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=pattern):
        torch_bn.batch_norm_inference(x, torch.zeros(3), running_var, torch.ones(3),
                                      torch.zeros(3), eps)


# --- item 28 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
def test_batch_renorm_refuses_integer_input_naming_the_dtype(training):
    layer = BatchRenorm2d(3).train(training)
    with pytest.raises(TypeError, match=r"floating-point input.*torch\.int64"):
        layer(torch.ones(4, 3, 2, 2, dtype=torch.int64))


@pytest.mark.parametrize("momentum", [True, "0.1", float("nan")])
def test_torch_batch_norm_refuses_a_momentum_that_is_not_a_number(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\] \(a number"):
        torch_bn.BatchNorm(3, momentum=momentum)


def test_torch_backward_names_a_numpy_cache():
    _, cache = numpy_norms.batch_norm_forward(np.ones((4, 3)) + np.eye(4, 3), np.ones(3),
                                              np.zeros(3))
    with pytest.raises(ValueError, match=r"BatchNormCache of bnbook\.torch_bn.*got a "
                                         r"bnbook\.numpy_norms.*numpy_norms\.batch_norm_backward"):
        torch_bn.batch_norm_backward(torch.ones(4, 3), cache)


def test_numpy_backward_names_a_torch_cache():
    _, cache = torch_bn.batch_norm_forward(torch.randn(4, 3), torch.ones(3), torch.zeros(3))
    for backward in (numpy_norms.batch_norm_backward, numpy_norms.batch_norm_backward_staged,
                     numpy_fast.batch_norm_backward):
        with pytest.raises(ValueError, match=r"BatchNormCache of bnbook\.numpy_norms.*got a "
                                             r"bnbook\.torch_bn\.BatchNormCache.*torch_bn\."
                                             r"batch_norm_backward"):
            backward(np.ones((4, 3)), cache)


def test_check_running_stats_given_an_instance_says_to_pass_the_class():
    # CheckFailed is an AssertionError (the checkers' failure type)
    with pytest.raises(AssertionError, match="pass the class itself"):
        check_running_stats(numpy_norms.BatchNorm(3))


def test_torch_batch_norm_refuses_a_bool_num_features():
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        torch_bn.BatchNorm(True)


@pytest.mark.parametrize("method,kwargs", [("layer", {}), ("instance", {}),
                                           ("group", {"num_groups": 1})])
def test_other_norms_refuse_a_variance_that_overflows(method, kwargs):
    # the rule of item 15 for layer, instance and group norm (they returned beta)
    x = (1e20 * np.random.default_rng(5).standard_normal((2, 3, 4))).astype(np.float32)
    forward = getattr(numpy_norms, f"{method}_norm_forward")
    shape = (3, 4) if method == "layer" else (3,)
    with pytest.raises(ValueError, match=r"variance of .* overflows float32"):
        forward(x, np.ones(shape), np.zeros(shape), **kwargs)

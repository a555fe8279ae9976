"""The NumPy BatchNorm layer against torch.nn.BatchNorm1d/2d (float64, random shapes and scales)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import bnbook.layers
import bnbook.numpy_norms
from bnbook.numpy_norms import BatchNorm

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


def test_reexport_and_import_order():
    assert bnbook.numpy_norms.BatchNorm is bnbook.layers.BatchNorm
    assert "BatchNorm" in bnbook.numpy_norms.__all__
    # numpy_norms re-exports the class from its last line: every import order must work.
    for first in ("bnbook.layers", "bnbook.numpy_norms", "bnbook.folding"):
        code = (f"import {first}\nfrom bnbook.numpy_norms import BatchNorm\n"
                f"import bnbook.layers\nassert BatchNorm is bnbook.layers.BatchNorm\n")
        subprocess.run([sys.executable, "-c", code], check=True)

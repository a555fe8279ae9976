"""Scale invariance of BN and the effective learning rate (bnbook.experiments.why.scale), against closed
forms, PyTorch's batch norm in float64 and a direct simulation of SGD on a sphere."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bnbook.experiments.why.scale import (angle_between, bn_loss_grad, bn_of_product, effective_lr,
                                          equilibrium_angle, run_scale)

torch.set_num_threads(1)


def case(seed=0, m=32, n_in=20, n_out=8):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(m, n_in, generator=g, dtype=torch.float64) * 2.0 + 1.5
    W = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    dy = torch.randn(m, n_out, generator=g, dtype=torch.float64)
    return W, u, dy


def test_bn_of_product_is_pytorchs_batch_norm_in_float64():
    W, u, dy = case()
    ours = bn_of_product(W, u, eps=1e-3)
    theirs = F.batch_norm(u @ W.T, None, None, training=True, eps=1e-3)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    Wt = W.clone().requires_grad_(True)
    (grad_torch,) = torch.autograd.grad(
        (dy * F.batch_norm(u @ Wt.T, None, None, training=True, eps=1e-3)).sum(), Wt)
    assert torch.allclose(bn_loss_grad(W, u, dy, eps=1e-3)[1], grad_torch, rtol=0, atol=1e-11)


@pytest.mark.parametrize("a", [1e-3, 0.37, 7.5, 1e3])
def test_scaling_w_leaves_bn_unchanged_and_divides_the_gradient(a):
    W, u, dy = case(seed=1)
    assert (bn_of_product(a * W, u, eps=0.0) - bn_of_product(W, u, eps=0.0)).abs().max() < 1e-12
    _, g1 = bn_loss_grad(W, u, dy, eps=0.0)
    _, ga = bn_loss_grad(a * W, u, dy, eps=0.0)
    assert torch.allclose(ga * a, g1, rtol=1e-10, atol=1e-12)       # grad L(aW) = grad L(W) / a
    assert not torch.allclose(ga, g1, rtol=1e-3) or a == 1.0         # it does change with a
    cos = float((W * g1).sum() / (W.norm() * g1.norm()))
    assert abs(cos) < 1e-12                                          # <W, grad> = 0


@pytest.mark.parametrize("a", [0.1, 10.0])
def test_with_eps_scaling_w_is_the_same_as_dividing_eps_by_a_squared(a):
    # BN_eps(a z) = (z - mu) / sqrt(var + eps / a^2): the closed form of the eps effect.
    W, u, _ = case(seed=2)
    eps = 1e-2
    assert torch.allclose(bn_of_product(a * W, u, eps), bn_of_product(W, u, eps / a ** 2),
                          rtol=0, atol=1e-12)
    assert (bn_of_product(a * W, u, eps) - bn_of_product(W, u, eps)).abs().max() > 1e-6


def test_bad_shapes_and_eps_are_refused():
    W, u, _ = case()
    with pytest.raises(ValueError, match="n_in"):
        bn_of_product(W, u[:, :5])
    with pytest.raises(ValueError, match="eps"):
        bn_of_product(W, u, eps=-1.0)


@pytest.mark.parametrize("theta", [1e-7, 0.3, 2.5])
def test_angle_between_a_known_rotation(theta):
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(50, 2, generator=g, dtype=torch.float64))
    a = 3.0 * q[:, 0]
    b = 0.5 * (math.cos(theta) * q[:, 0] + math.sin(theta) * q[:, 1])
    assert angle_between(a, b) == pytest.approx(theta, rel=1e-9, abs=1e-15)
    assert angle_between(a.reshape(5, 10), b.reshape(5, 10)) == pytest.approx(theta, rel=1e-9)
    with pytest.raises(ValueError, match="zero"):
        angle_between(a, torch.zeros(50))


def test_effective_lr():
    assert effective_lr(0.5, torch.full((4,), 2.0)) == pytest.approx(0.5 / 16)


def test_equilibrium_angle_matches_a_simulation_of_sgd_on_a_scale_invariant_weight():
    # A scale-invariant loss has gradient g orthogonal to W with ||g|| = c / ||W||. Simulate
    # W <- (1 - lr wd) W - lr g with random such g and measure the RMS angle per step.
    rng = np.random.default_rng(0)
    lr, wd, c, d = 0.5, 1e-2, 1.0, 200
    W = rng.standard_normal(d) * 3.0
    angles = []
    for t in range(6000):
        g = rng.standard_normal(d)
        g -= (g @ W) / (W @ W) * W
        g *= c / np.linalg.norm(W) / np.linalg.norm(g)
        new = (1 - lr * wd) * W - lr * g
        if t >= 3000:
            angles.append(angle_between(torch.from_numpy(W), torch.from_numpy(new)))
        W = new
    rms = math.sqrt(np.mean(np.square(angles)))
    assert rms == pytest.approx(equilibrium_angle(lr, wd), rel=0.03)
    assert equilibrium_angle(lr, wd) == pytest.approx(math.sqrt(2 * lr * wd), rel=0.01)
    with pytest.raises(ValueError, match="lr"):
        equilibrium_angle(1.0, 2.0)


def _tiny_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(300, 12, generator=g)
    y = (x[:, :3].sum(1) > 1.5).long() + (x[:, 3] > 0.5).long()
    return x[:200].numpy(), y[:200].numpy(), x[200:].numpy(), y[200:].numpy()


def test_run_scale_norm_grows_as_the_sum_of_squared_steps_without_weight_decay():
    out = run_scale(_tiny_data(), lr=0.5, weight_decay=0.0, n_steps=60, batch_size=20,
                    record_every=20)
    assert out["steps"] == [0, 20, 40, 60]
    measured = np.square(np.array(out["weight_norm"]))
    predicted = np.array(out["norm_growth_predicted"])
    assert np.all(measured[-1] > measured[0] * (1 + 1e-4))           # it grows
    assert np.allclose(measured, predicted, rtol=1e-4)               # by exactly that much
    assert all(a is None for a in out["rms_angle"][0])
    assert all(0 < a < 1 for row in out["rms_angle"][1:] for a in row)


def test_run_scale_weight_decay_shrinks_the_weights():
    base = run_scale(_tiny_data(), lr=0.5, weight_decay=0.0, n_steps=40, batch_size=20,
                     record_every=40)
    decayed = run_scale(_tiny_data(), lr=0.5, weight_decay=0.5, n_steps=40, batch_size=20,
                        record_every=40)
    assert all(d < b for d, b in zip(decayed["weight_norm"][-1], base["weight_norm"][-1]))
    # the angle per step is larger when the weights are smaller (effective lr = lr / ||W||^2)
    assert all(d > b for d, b in zip(decayed["rms_angle"][-1], base["rms_angle"][-1]))


def test_scaled_weights_with_scaled_lr_train_identically():
    # W -> a W with lr -> a^2 lr on W is the same trajectory of the direction (eps aside).
    plain = run_scale(_tiny_data(), lr=0.1, n_steps=30, batch_size=20, record_every=10)
    scaled = run_scale(_tiny_data(), lr=0.1, n_steps=30, batch_size=20, record_every=10,
                       init_scale=10.0, weight_lr=0.1 * 100.0)
    slow = run_scale(_tiny_data(), lr=0.1, n_steps=30, batch_size=20, record_every=10,
                     init_scale=10.0)
    assert np.allclose(plain["train_loss"][1:], scaled["train_loss"][1:], atol=1e-4)
    assert np.allclose(10.0 * np.array(plain["weight_norm"]), scaled["weight_norm"], rtol=1e-3)
    assert not np.allclose(plain["train_loss"][1:], slow["train_loss"][1:], atol=1e-3)

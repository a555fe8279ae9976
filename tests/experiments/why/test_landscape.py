"""The loss and gradient along the gradient direction (bnbook.experiments.why.landscape) against the closed
form of a quadratic and against a brute-force computation on a small BN network."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bnbook.experiments.why.landscape import (landscape_summary, loss_and_grad, parameters_set,
                                              probe_gradient_direction)

torch.set_num_threads(1)


class Quadratic(nn.Module):
    """L(w) = w^T A w / 2 - b^T w, with the 'batch' ignored."""

    def __init__(self, A, b, w):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.w = nn.Parameter(w.clone())


def quadratic_loss(model, batch):
    return 0.5 * model.w @ model.A @ model.w - model.b @ model.w


def test_probe_matches_the_closed_form_of_a_quadratic():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = M @ M.T + torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    model = Quadratic(A, b, w)
    etas = [0.01, 0.1, 0.5]
    probe = probe_gradient_direction(model, quadratic_loss, None, etas)
    grad = A @ w - b
    L = lambda v: float(0.5 * v @ A @ v - b @ v)
    assert probe["loss0"] == pytest.approx(L(w), rel=1e-12)
    assert probe["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-12)
    for eta, loss, diff in zip(etas, probe["losses"], probe["grad_diffs"]):
        # L(w - eta g) = L(w) - eta |g|^2 + eta^2 g^T A g / 2; grad change = -eta A g
        assert loss == pytest.approx(L(w) - eta * float(grad @ grad)
                                     + 0.5 * eta ** 2 * float(grad @ A @ grad), rel=1e-10)
        assert diff == pytest.approx(eta * float((A @ grad).norm()), rel=1e-10)
    summary = landscape_summary(probe)
    assert summary["beta"] == pytest.approx(float((A @ grad).norm() / grad.norm()), rel=1e-10)
    assert summary["loss_range"] == pytest.approx(max(probe["losses"]) - min(probe["losses"]))
    assert torch.equal(model.w.detach(), w)                 # the model is where it was


def small_bn_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 3))


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def brute_force(model, batch, w0, eta):
    """Loss and flattened gradient at w0 - eta * grad(w0), with a fresh copy and backward()."""
    def at(values):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(values[n])
        loss = ce_loss(m, batch)
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in m.named_parameters()}

    _, g0 = at(w0)
    loss, g = at({n: w0[n] - eta * g0[n] for n in w0})
    diff = torch.cat([(g[n] - g0[n]).flatten() for n in g0]).double().norm()
    return loss, float(diff), g0


def test_probe_matches_brute_force_on_a_small_bn_network_and_leaves_it_unchanged():
    model = small_bn_net()
    x, y = torch.randn(16, 5) * 2 + 1, torch.randint(0, 3, (16,))
    model(x)                                                # move the running stats off 0/1
    state = copy.deepcopy(model.state_dict())
    w0 = {n: p.detach().clone() + 0.01 for n, p in model.named_parameters()}
    probe = probe_gradient_direction(model, ce_loss, (x, y), [0.05, 0.3], start=w0)
    for eta, loss, diff in zip([0.05, 0.3], probe["losses"], probe["grad_diffs"]):
        want_loss, want_diff, g0 = brute_force(model, (x, y), w0, eta)
        assert loss == pytest.approx(want_loss, rel=1e-5)
        assert diff == pytest.approx(want_diff, rel=1e-4)
    assert probe["grad_norm"] == pytest.approx(
        float(torch.cat([g.flatten() for g in g0.values()]).norm()), rel=1e-5)
    for k, v in model.state_dict().items():                 # parameters and buffers
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_loss_and_grad_and_parameters_set():
    model = small_bn_net()
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    loss, grads = loss_and_grad(model, ce_loss, (x, y))
    ref = copy.deepcopy(model)
    ce_loss(ref, (x, y)).backward()
    assert loss == pytest.approx(float(ce_loss(copy.deepcopy(model), (x, y)).detach()), rel=1e-6)
    assert all(torch.allclose(grads[n], p.grad) for n, p in ref.named_parameters())
    with pytest.raises(ValueError, match="no parameters named"):
        with parameters_set(model, {"nope": torch.zeros(1)}):
            pass
    with pytest.raises(ValueError, match="positive"):
        probe_gradient_direction(model, ce_loss, (x, y), [0.0])


def test_overflowing_measurements_are_stored_as_none():
    from bnbook.experiments.why.run_landscape import _json_safe

    got = _json_safe({"losses": [1.0, float("inf")], "beta": float("nan"), "step": 3,
                      "ics": [{"rel": 0.5, "cos": float("-inf")}]})
    assert got == {"losses": [1.0, None], "beta": None, "step": 3,
                   "ics": [{"rel": 0.5, "cos": None}]}

"""Hessian-vector products and power iteration (bnbook.experiments.why.hessian) against closed forms: a
quadratic loss with a known Hessian, and torch.autograd.functional.hessian of a tiny BN net."""

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from bnbook.data.subsets import Cifar10Subset
from bnbook.experiments.why.hessian import (HessianOperator, lanczos, power_iteration, run_sharpness,
                                sharpness)

torch.set_num_threads(1)


class Quadratic(nn.Module):
    """L(w) = w^T A w / 2 - b^T w, the 'batch' ignored: Hessian A, gradient A w - b."""

    def __init__(self, A, b, w):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.w = nn.Parameter(w.clone())


def quadratic_loss(model, batch):
    return 0.5 * model.w @ model.A @ model.w - model.b @ model.w


def known_quadratic(eigenvalues, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ Q.T
    b = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.randn(n, generator=g, dtype=torch.float64)
    return Quadratic(A, b, w), A, b, w


def test_hessian_vector_products_of_a_quadratic_are_A_times_v():
    model, A, b, w = known_quadratic([5.0, 2.0, 1.0, 0.5, -0.3, 0.1])
    v = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with HessianOperator(model, quadratic_loss, None) as op:
        assert torch.allclose(op.matvec([v])[0], A @ v, rtol=1e-12, atol=1e-12)
        assert torch.allclose(op.grad[0], A @ w - b, rtol=1e-12, atol=1e-12)
        assert op.loss == pytest.approx(float(0.5 * w @ A @ w - b @ w), rel=1e-12)


def test_power_iteration_finds_the_known_largest_eigenvalue_and_gradient_curvature():
    eigenvalues = [7.0, 2.5, 1.0, 0.5, -1.5, 0.2, 0.05, 3.0]
    model, A, b, w = known_quadratic(eigenvalues, seed=3)
    m = sharpness(model, quadratic_loss, None, n_iter=40, seed=0, method="power")
    assert m["lambda_max"] == pytest.approx(7.0, rel=1e-6)
    assert m["residual"] < 1e-3
    lz = sharpness(model, quadratic_loss, None, n_iter=8, seed=0)     # Lanczos: exact in 8
    assert lz["lambda_max"] == pytest.approx(7.0, rel=1e-9)
    assert lz["lambda_min"] == pytest.approx(-1.5, rel=1e-9) and lz["residual"] < 1e-8
    g = A @ w - b
    assert m["grad_curvature"] == pytest.approx(float(g @ A @ g / (g @ g)), rel=1e-10)
    assert m["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-12)
    assert torch.equal(model.w.detach(), w)                  # the point is where it was


def test_lanczos_beats_power_iteration_when_the_top_eigenvalues_are_close():
    eigenvalues = torch.linspace(0.0, 1.0, 200, dtype=torch.float64)
    eigenvalues[-1] = 1.02
    op = lambda v: [eigenvalues * v[0]]
    start = [torch.ones(200, dtype=torch.float64)]
    lz, pw = lanczos(op, start, n_iter=20), power_iteration(op, start, n_iter=20)
    assert abs(lz["largest"] - 1.02) < 1e-3 < abs(pw["eigenvalue"] - 1.02)
    assert len(lz["history"]) == 20 and lz["history"] == sorted(lz["history"])


def test_power_iteration_returns_the_largest_magnitude_even_when_negative():
    op = lambda v: [torch.diag(torch.tensor([1.0, -4.0, 2.0], dtype=torch.float64)) @ v[0]]
    out = power_iteration(op, [torch.ones(3, dtype=torch.float64)], n_iter=60)
    assert out["eigenvalue"] == pytest.approx(-4.0, rel=1e-6)
    with pytest.raises(ValueError, match="zero"):
        power_iteration(op, [torch.zeros(3, dtype=torch.float64)])


def tiny_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()


def test_tiny_bn_net_matches_autograd_functional_hessian():
    net = tiny_bn_net()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in net.parameters()])

    def loss_of_flat(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = flat[i:i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(net, parts, (x,)), y)

    running = net[1].running_mean.clone()
    H = torch.autograd.functional.hessian(loss_of_flat, flat0)
    net[1].running_mean.copy_(running)
    loss_fn = lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])
    v = torch.randn(flat0.numel(), generator=g, dtype=torch.float64)
    parts = list(torch.split(v, [s.numel() for s in shapes]))
    with HessianOperator(net, loss_fn, (x, y)) as op:
        hv = torch.cat([h.flatten() for h in op.matvec([p.view(s) for p, s in
                                                        zip(parts, shapes)])])
    assert torch.allclose(hv, H @ v, rtol=1e-9, atol=1e-11)
    eig = torch.linalg.eigvalsh(H)
    top = eig[eig.abs().argmax()]
    m = sharpness(net, loss_fn, (x, y), n_iter=300, seed=0, method="power")
    assert m["lambda_max"] == pytest.approx(float(top), rel=1e-4)
    lz = sharpness(net, loss_fn, (x, y), n_iter=30, seed=0)
    assert lz["lambda_max"] == pytest.approx(float(eig.max()), rel=1e-6)
    assert torch.equal(net[1].running_mean, running)         # buffers restored


def test_run_sharpness_measures_at_the_start_every_k_steps_and_at_the_end():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (80,), generator=g)
    data = Cifar10Subset(x[:64], y[:64], x[64:], y[64:], torch.zeros(3), torch.ones(3))
    out = run_sharpness(data, "batch", lr=0.05, width=2, epochs=2, batch_size=16,
                        measure_every=3, n_iter=3, hessian_batch=32)
    assert out["steps"] == 8 and [m["step"] for m in out["measurements"]] == [0, 3, 6, 8]
    assert len(out["test_acc"]) == 2 and out["two_over_lr"] == pytest.approx(40.0)
    assert all(len(m["lambda_history"]) == 3 for m in out["measurements"])
    with pytest.raises(ValueError, match="hessian_batch"):
        run_sharpness(data, "batch", lr=0.05, hessian_batch=100)

"""Scale invariance of batch norm, and the effective learning rate it creates.

For a weight matrix ``W`` whose output feeds a BN layer, ``BN(a W u) = BN(W u)`` for every
``a > 0``: the batch mean and standard deviation scale with ``a`` and divide it out (exactly
when ``eps = 0``; with ``eps``, ``BN(a z) = (z - mu) / sqrt(var + eps / a**2)``, an error of
order ``eps / (a**2 var)``). So the loss satisfies ``L(a W) = L(W)``, and differentiating
that identity gives two laws:

* ``grad L(a W) = grad L(W) / a`` - the gradient shrinks as the weights grow;
* ``<W, grad L(W)> = 0`` - the gradient is orthogonal to ``W``.

One SGD step ``W' = W - eta g`` therefore never shrinks ``W``: ``||W'||^2 = ||W||^2 +
eta^2 ||g||^2``. What the network computes depends only on the direction ``W / ||W||``, which
turns per step by an angle ``theta`` with ``tan(theta) = eta ||g|| / ||W||``; in terms of the
gradient at the unit-norm point, ``eta ||g(W/||W||)|| / ||W||^2``. The *effective learning
rate* is ``eta / ||W||^2`` (van Laarhoven, 2017; Hoffer et al., 2018): without weight decay it
falls as ``||W||`` grows; weight decay ``lambda`` shrinks ``W`` by ``1 - eta lambda`` per step,
and the norm settles where shrinking and growing balance,
``(1 - eta lambda)^2 ||W||^2 + eta^2 ||g||^2 = ||W||^2``, where the angle per step is
``tan(theta) = sqrt(2 eta lambda - (eta lambda)^2) / (1 - eta lambda)``, about
``sqrt(2 eta lambda)`` (:func:`equilibrium_angle`), whatever the loss.

* :func:`bn_of_product` and :func:`bn_loss_grad` - ``BN(W u)`` and the gradient with respect
  to ``W`` of a linear function of it, to check the laws numerically;
* :func:`angle_between`, :func:`effective_lr`, :func:`equilibrium_angle`;
* :func:`run_scale` - the Figure-1 BN network trained with plain SGD and weight decay on its
  scale-invariant weights, tracking ``||W||`` and the angle turned per step.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from bnbook.experiments.motivation import covariate_shift as cs
from bnbook.training import cross_entropy_loss, fit

__all__ = ["bn_of_product", "bn_loss_grad", "angle_between", "effective_lr",
           "equilibrium_angle", "run_scale"]


def bn_of_product(W: torch.Tensor, u: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``BN(u W^T)`` in training mode without ``gamma``/``beta``: ``u`` is ``(m, n_in)``,
    ``W`` ``(n_out, n_in)``; each of the ``n_out`` outputs is normalised over the batch with
    the biased variance (``eps = 0`` allowed, unlike ``F.batch_norm``). Returns
    ``(m, n_out)``."""
    if u.ndim != 2 or W.ndim != 2 or u.shape[1] != W.shape[1] or u.shape[0] < 2:
        raise ValueError(f"need u (m >= 2, n_in) and W (n_out, n_in); got {tuple(u.shape)} "
                         f"and {tuple(W.shape)}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    z = u @ W.T
    mu, var = z.mean(dim=0), z.var(dim=0, unbiased=False)
    return (z - mu) / torch.sqrt(var + eps)


def bn_loss_grad(W: torch.Tensor, u: torch.Tensor, dy: torch.Tensor, eps: float = 1e-5):
    """``(L, dL/dW)`` for ``L = sum(dy * BN(u W^T))``: a loss whose gradient with respect to
    the BN output is ``dy`` ``(m, n_out)``, as in a backward pass."""
    W = W.detach().clone().requires_grad_(True)
    loss = (dy * bn_of_product(W, u, eps)).sum()
    (grad,) = torch.autograd.grad(loss, W)
    return loss.detach(), grad


def angle_between(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle (radians) between ``a`` and ``b`` as flattened vectors, computed as
    ``2 atan2(||a/|a| - b/|b|||, ||a/|a| + b/|b|||)``, accurate for tiny angles too (the
    arccos of a cosine near 1 is not)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        raise ValueError("the angle of a zero vector is undefined")
    ua, ub = a / na, b / nb
    return 2.0 * math.atan2(float((ua - ub).norm()), float((ua + ub).norm()))


def effective_lr(lr: float, W: torch.Tensor) -> float:
    """``lr / ||W||^2``: the step size that the direction of a scale-invariant ``W`` sees."""
    return lr / float(W.detach().double().norm() ** 2)


def equilibrium_angle(lr: float, weight_decay: float) -> float:
    """Angle per step at the norm equilibrium of SGD with weight decay on a scale-invariant
    weight: ``atan(sqrt(2 eta lambda - (eta lambda)^2) / (1 - eta lambda))``, about
    ``sqrt(2 eta lambda)`` (module docstring). Needs ``0 < eta lambda < 1``."""
    x = lr * weight_decay
    if not 0 < x < 1:
        raise ValueError(f"need 0 < lr * weight_decay < 1, got {x}")
    return math.atan(math.sqrt(2 * x - x * x) / (1 - x))


def _batches(x, y, batch_size, n_steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        b = torch.as_tensor(rng.choice(x.shape[0], size=batch_size, replace=False))
        yield x[b], y[b]


def run_scale(data, *, lr: float = 0.5, weight_decay: float = 0.0, n_steps: int = 20_000,
              batch_size: int = 60, init_std: float = 0.1, init_scale: float = 1.0,
              weight_lr: float | None = None, record_every: int = 250, seed: int = 0) -> dict:
    """Train the Figure-1 BN network (:class:`bnbook.experiments.motivation.covariate_shift.SigmoidMLP`) with plain
    SGD, watching its scale-invariant hidden weights ``W_1..W_3``.

    ``data`` is ``(x_train, y_train, x_test, y_test)`` (e.g. ``Figure1Data.arrays()``).
    ``weight_decay`` and ``weight_lr`` (default ``lr``) apply to the hidden weights only;
    ``gamma``, ``beta`` and the read-out use ``lr`` without decay. ``init_scale`` multiplies
    the hidden weights at the start. Every step the angle each ``W_l`` turns is measured
    (:func:`angle_between`). Returns a JSON-ready dict with, per logged step (every
    ``record_every``, and 0): ``steps``, ``weight_norm`` (``||W_l||``),
    ``rms_angle`` (root mean square of the per-step angles since the last log),
    ``norm_growth_predicted`` (``||W_l||^2`` predicted from the start by summing
    ``eta^2 ||g||^2``, exact for ``weight_decay = 0``), ``train_loss`` (mean since the last
    log), ``test_acc``; and ``seconds``.
    """
    x, y, x_test, y_test = (torch.as_tensor(a) for a in data)
    net = cs.SigmoidMLP(x.shape[1], 100, 3, 10, True, init_std, seed)
    weights = [lin.weight for lin in net.linears]
    with torch.no_grad():
        for w in weights:
            w.mul_(init_scale)
    w_lr = lr if weight_lr is None else weight_lr
    others = [p for p in net.parameters() if all(p is not w for w in weights)]
    opt = torch.optim.SGD([{"params": weights, "lr": w_lr, "weight_decay": weight_decay},
                           {"params": others, "lr": lr, "weight_decay": 0.0}], lr=lr)
    prev = [w.detach().clone() for w in weights]
    predicted = [float(w.detach().double().norm() ** 2) for w in weights]
    acc_sq, acc_loss, n_acc = np.zeros(len(weights)), 0.0, 0
    log = {k: [] for k in ("steps", "weight_norm", "rms_angle", "norm_growth_predicted",
                           "train_loss", "test_acc")}

    def record(step, loss=None, *_):
        nonlocal acc_sq, acc_loss, n_acc
        if loss is not None:
            for k, w in enumerate(weights):
                acc_sq[k] += angle_between(prev[k], w) ** 2
                predicted[k] += w_lr ** 2 * float(w.grad.double().norm() ** 2)
                prev[k].copy_(w.detach())
            acc_loss, n_acc = acc_loss + loss.item(), n_acc + 1
        if step % record_every == 0 or step == n_steps:
            log["steps"].append(step)
            log["weight_norm"].append([round(float(w.detach().norm()), 5) for w in weights])
            log["rms_angle"].append([float(np.sqrt(s / n_acc)) if n_acc else None
                                     for s in acc_sq])
            log["norm_growth_predicted"].append([round(p, 5) for p in predicted])
            log["train_loss"].append(acc_loss / n_acc if n_acc else None)
            with torch.no_grad():
                net.eval()
                log["test_acc"].append(float((net(x_test).argmax(1) == y_test).float().mean()))
                net.train()
            acc_sq, acc_loss, n_acc = np.zeros(len(weights)), 0.0, 0

    start = time.perf_counter()
    record(0)
    fit(net, _batches(x, y, batch_size, n_steps, seed), cross_entropy_loss, opt, on_step=record)
    return {**log, "seconds": round(time.perf_counter() - start, 2)}

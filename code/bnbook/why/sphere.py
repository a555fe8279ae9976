"""The equilibrium angle of a scale-invariant weight, with and without momentum, simulated.

:mod:`bnbook.why.scale` derives the angle a weight vector ``w`` in front of a BN layer turns
per step once weight decay and gradient growth balance: ``tan(theta) ~ sqrt(2 eta lambda)``
for plain SGD. With heavy-ball momentum ``mu`` (PyTorch's ``SGD(momentum=mu)``, the decay
added to the gradient) the same balance gives ``theta ~ sqrt(2 eta lambda / (1 + mu))``
(Wan et al., 2021, "spherical motion dynamics"). Neither derivation uses the loss, only the
two laws of scale invariance: the gradient is orthogonal to ``w`` and scales as ``1 / ||w||``.

:func:`simulate_sphere_sgd` checks both forms on exactly that situation and nothing else: the
gradient at step ``t`` is a random direction orthogonal to ``w_t``, of length
``1 / ||w_t||`` times a Gaussian vector's, so any loss whose weights are scale-invariant and
whose gradients are noisy behaves this way on average. :func:`equilibrium_angle_momentum` is
the prediction it is compared with.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["equilibrium_angle_momentum", "simulate_sphere_sgd"]


def equilibrium_angle_momentum(lr: float, weight_decay: float, momentum: float) -> float:
    """``sqrt(2 lr weight_decay / (1 + momentum))`` radians, the angle per step at equilibrium
    to first order in ``lr * weight_decay`` (Wan et al., 2021); ``momentum = 0`` gives plain
    SGD's ``sqrt(2 lr weight_decay)``."""
    if lr <= 0 or weight_decay <= 0 or not 0 <= momentum < 1:
        raise ValueError(f"need lr > 0, weight_decay > 0 and 0 <= momentum < 1; got {lr}, "
                         f"{weight_decay}, {momentum}")
    return math.sqrt(2 * lr * weight_decay / (1 + momentum))


def simulate_sphere_sgd(lr: float, weight_decay: float, momentum: float, *,
                        n_steps: int = 20_000, dim: int = 256, last: int = 5_000,
                        seed: int = 0) -> dict:
    """SGD with momentum on one scale-invariant weight vector of ``dim`` entries, fed random
    gradients that obey the two laws of scale invariance.

    Each step: ``g = P(xi) / ||w||`` with ``xi ~ N(0, I)`` and ``P`` the projection
    orthogonal to ``w``; then, as ``torch.optim.SGD`` does, ``v <- momentum v + g +
    weight_decay w`` and ``w <- w - lr v``. Returns ``rms_angle`` (radians, the root mean
    square over the last ``last`` steps of the angle between ``w_t`` and ``w_{t+1}``) and
    ``norm_end`` (``||w||`` at the end; it starts at 1).
    """
    if n_steps < 1 or not 0 < last <= n_steps or dim < 2:
        raise ValueError(f"need n_steps >= 1, 0 < last <= n_steps and dim >= 2; got "
                         f"{n_steps}, {last}, {dim}")
    equilibrium_angle_momentum(lr, weight_decay, momentum)       # validates the rest
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)
    w /= np.linalg.norm(w)
    v = np.zeros(dim)
    squares = []
    for step in range(n_steps):
        norm = np.linalg.norm(w)
        xi = rng.standard_normal(dim)
        g = (xi - (xi @ w) / norm ** 2 * w) / norm
        v = momentum * v + g + weight_decay * w
        w_new = w - lr * v
        if step >= n_steps - last:
            cos = (w @ w_new) / (norm * np.linalg.norm(w_new))
            squares.append(math.acos(min(1.0, max(-1.0, cos))) ** 2)
        w = w_new
    return {"rms_angle": math.sqrt(float(np.mean(squares))), "norm_end": float(np.linalg.norm(w))}

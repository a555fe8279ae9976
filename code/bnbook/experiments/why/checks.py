"""Checkers for the coding exercises of the why-BN chapter.

* :func:`check_gradient_probe` - the reader's probe of the loss and gradient along the
  gradient direction, against :func:`bnbook.experiments.why.landscape.probe_gradient_direction` on a
  quadratic (whose answer is also known in closed form) and on a small network with batch
  norm in training mode.

A checker prints one line with the largest relative error next to the threshold and returns
``None``; on failure it raises :class:`bnbook.checks.CheckFailed` (an ``AssertionError`` that
IPython shows without the checker's traceback) naming the case and, when the reader's output
matches a known mistake, the mistake. A stub that still raises ``NotImplementedError`` gets
:class:`bnbook.checks.NotWrittenYet`, as the other chapters' checkers do.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bnbook.checks._errors import CheckFailed
from bnbook.checks._harness import call
from bnbook.gradcheck import rel_error
from bnbook.experiments.why.landscape import loss_and_grad, probe_gradient_direction, trainable

__all__ = ["check_gradient_probe"]

#: float32 networks: the reader's loss and gradient may be summed in another order.
PROBE_THRESHOLD = 1e-4


class _Quadratic(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        m = torch.randn(5, 5, generator=g, dtype=torch.float64)
        self.register_buffer("A", m @ m.T + torch.eye(5, dtype=torch.float64))
        self.register_buffer("b", torch.randn(5, generator=g, dtype=torch.float64))
        self.w = nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))


def _quadratic_loss(model, batch):
    return 0.5 * model.w @ model.A @ model.w - model.b @ model.w


def _cross_entropy(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _cases():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(20, 6, generator=g) * 2 + 1, torch.randint(0, 3, (20,), generator=g))
    return [("a quadratic", _Quadratic(2), _quadratic_loss, None, [0.01, 0.1, 0.3]),
            ("a BN network", net, _cross_entropy, batch, [0.05, 0.2, 1.0])]


def _wrong_variants(model, loss_fn, batch, etas) -> dict:
    """What the usual mistakes would return: (losses, grad_diffs) per mistake."""
    w0 = {n: p.detach().clone() for n, p in trainable(model).items()}
    _, g0 = loss_and_grad(model, loss_fn, batch)
    out = {"moving along +g (uphill) instead of -g": ([], []),
           "the norm of the new gradient instead of its change": ([], [])}
    for eta in etas:
        up, gu = loss_and_grad(model, loss_fn, batch, {n: w0[n] + eta * g0[n] for n in w0})
        down, gd = loss_and_grad(model, loss_fn, batch, {n: w0[n] - eta * g0[n] for n in w0})
        norm = float(torch.cat([(gu[n] - g0[n]).flatten() for n in g0]).double().norm())
        out["moving along +g (uphill) instead of -g"][0].append(up)
        out["moving along +g (uphill) instead of -g"][1].append(norm)
        new_norm = float(torch.cat([gd[n].flatten() for n in gd]).double().norm())
        out["the norm of the new gradient instead of its change"][0].append(down)
        out["the norm of the new gradient instead of its change"][1].append(new_norm)
    return out


def check_gradient_probe(probe_fn) -> None:
    """Check ``probe_fn(model, loss_fn, batch, etas) -> (losses, grad_diffs)``.

    ``losses[k]`` must be the loss at ``w - etas[k] * g`` and ``grad_diffs[k]`` the norm of
    the change of the whole gradient (all parameters as one vector) between ``w`` and that
    point, with ``g`` the gradient at the model's current parameters ``w``; the model must
    be left as it was (parameters and running statistics).
    """
    worst = 0.0
    for name, model, loss_fn, batch, etas in _cases():
        state = copy.deepcopy(model.state_dict())
        ref = probe_gradient_direction(model, loss_fn, batch, etas)
        losses, diffs = call(probe_fn, name, model, loss_fn, batch, etas)
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
        if changed:
            raise CheckFailed(f"on {name}, your probe left {changed} changed: restore the "
                                 f"parameters and the running statistics after probing")
        got = np.array([losses, diffs], dtype=np.float64)
        want = np.array([ref["losses"], ref["grad_diffs"]])
        if got.shape != want.shape:
            raise CheckFailed(f"on {name}, expected two lists of {len(etas)} numbers, got "
                                 f"shape {got.shape}")
        err = max(rel_error(got[0], want[0]), rel_error(got[1], want[1]))
        if err > PROBE_THRESHOLD:
            hint = next((m for m, v in _wrong_variants(model, loss_fn, batch, etas).items()
                         if rel_error(got, np.array(v)) < PROBE_THRESHOLD), None)
            raise CheckFailed(f"on {name} (etas {etas}) the relative error is {err:.2e} "
                                 f"(threshold {PROBE_THRESHOLD:g})"
                                 + (f"; it looks like {hint}" if hint else ""))
        worst = max(worst, err)
    print(f"gradient probe: largest relative error {worst:.1e} (threshold "
          f"{PROBE_THRESHOLD:g}) on a quadratic and a BN network: OK")

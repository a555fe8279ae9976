"""The loss and its gradient along the gradient direction (Santurkar et al., 2018, section 3).

Santurkar et al. argue that batch norm helps because it makes the loss, and above all its
gradient, change more slowly: the gradient at one point then predicts the gradient a step
away, so larger steps are safe. They measure it during training: at a point ``w`` with the
gradient ``g`` of the current batch, move along ``-g`` by several step sizes ``eta`` and
record

* the loss ``L(w - eta g)``; its variation over ``eta`` is their "loss landscape" plot;
* ``||grad L(w - eta g) - grad L(w)||``, their "gradient predictiveness": small means the
  gradient here is a good guide to the gradient there;
* ``max_eta ||grad L(w - eta g) - grad L(w)|| / (eta ||g||)``, their "effective
  beta-smoothness": the largest rate at which the gradient changes along the step, a local
  Lipschitz constant of the gradient in the direction the optimiser moves.

Everything is computed on one batch (the batch that produced ``g``) with the model in the
mode the caller left it (training mode: batch statistics), and leaves the model as it was:
parameters and buffers (running statistics) are restored.

* :func:`parameters_set` - a block of code in which some parameters hold other values;
* :func:`loss_and_grad` - the loss and the gradient of every trainable parameter;
* :func:`probe_gradient_direction` - the measurements above at the current (or a given) point;
* :func:`landscape_summary` - the three numbers the chapter plots from one probe.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from bnbook.experiments.why.noise import buffers_restored

__all__ = ["trainable", "parameters_set", "loss_and_grad", "probe_gradient_direction",
           "landscape_summary"]


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: parameter}`` for every parameter of ``model`` with ``requires_grad``."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def parameters_set(model: nn.Module, values: Mapping[str, torch.Tensor]):
    """Inside the block, each parameter named in ``values`` holds that value (copied in);
    afterwards every one holds its old value again."""
    params = dict(model.named_parameters())
    unknown = set(values) - set(params)
    if unknown:
        raise ValueError(f"model has no parameters named {sorted(unknown)}")
    saved = {n: params[n].detach().clone() for n in values}
    with torch.no_grad():
        for n, v in values.items():
            params[n].copy_(v)
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                params[n].copy_(v)


def loss_and_grad(model: nn.Module, loss_fn: Callable, batch,
                  values: Mapping[str, torch.Tensor] | None = None):
    """``(loss, {name: gradient})`` of ``loss_fn(model, batch)`` (a scalar, or a tuple whose
    first item is) for every trainable parameter, at the current parameters or with
    ``values`` put in; the model's parameters, buffers and ``.grad`` are left untouched."""
    names = list(trainable(model))
    with parameters_set(model, values or {}), buffers_restored(model):
        out = loss_fn(model, batch)
        loss = out[0] if isinstance(out, tuple) else out
        params = trainable(model)
        grads = torch.autograd.grad(loss, [params[n] for n in names])
    return float(loss.detach()), {n: g.detach() for n, g in zip(names, grads)}


def _norm(tensors) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def probe_gradient_direction(model: nn.Module, loss_fn: Callable, batch,
                             etas: Sequence[float],
                             start: Mapping[str, torch.Tensor] | None = None) -> dict:
    """Loss and gradient at ``w - eta * g`` for each ``eta``, with ``g`` the gradient at ``w``.

    ``w`` is ``start`` (``{name: value}`` for every trainable parameter) or the model's
    current parameters. Returns ``{"etas", "loss0", "grad_norm", "losses", "grad_diffs"}``:
    the loss and ``||g||`` at ``w``, and per ``eta`` the loss at ``w - eta g`` and
    ``||grad(w - eta g) - g||`` (all parameters flattened into one vector, float64 norms).
    """
    etas = [float(e) for e in etas]
    if not etas or min(etas) <= 0:
        raise ValueError(f"etas must be positive step sizes, got {etas}")
    w0 = {n: p.detach().clone() for n, p in trainable(model).items()} if start is None \
        else {n: v.detach() for n, v in start.items()}
    loss0, g0 = loss_and_grad(model, loss_fn, batch, w0)
    losses, diffs = [], []
    for eta in etas:
        loss, g = loss_and_grad(model, loss_fn, batch, {n: w0[n] - eta * g0[n] for n in w0})
        losses.append(loss)
        diffs.append(_norm(g[n] - g0[n] for n in g0))
    return {"etas": etas, "loss0": loss0, "grad_norm": _norm(g0.values()), "losses": losses,
            "grad_diffs": diffs}


def landscape_summary(probe: Mapping) -> dict:
    """The three numbers Santurkar et al. plot, from one :func:`probe_gradient_direction`:

    ``loss_range`` (max minus min of the loss over the probed steps), ``grad_diff_max``
    (the largest ``||grad(w - eta g) - g||``) and ``beta`` (the effective smoothness,
    ``max_eta ||grad(w - eta g) - g|| / (eta ||g||)``; ``nan`` when ``g = 0``).
    """
    losses, diffs, etas = probe["losses"], probe["grad_diffs"], probe["etas"]
    gnorm = probe["grad_norm"]
    beta = max(d / (e * gnorm) for d, e in zip(diffs, etas)) if gnorm > 0 else math.nan
    return {"loss_range": max(losses) - min(losses), "grad_diff_max": max(diffs),
            "beta": beta}

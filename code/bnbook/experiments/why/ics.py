"""Santurkar et al.'s measure of internal covariate shift: how much the gradient of one
layer changes because the layers before it were updated.

Their Definition 2.1: at step ``t`` with parameters ``(W_1, ..., W_k)`` and batch
``(x_t, y_t)``, let ``G_i = grad_{W_i} L(W_1, ..., W_k)`` be the gradient the optimiser uses
for layer ``i``, and ``G'_i = grad_{W_i} L(W_1', ..., W_{i-1}', W_i, ..., W_k)`` the
gradient it would get if the layers before ``i`` had already taken their step (primes: after
the update), on the same batch. The internal covariate shift of layer ``i`` is
``||G_i - G'_i||``. If a layer's input distribution changing under it mattered, it would show
here: ``G'_i`` is what layer ``i`` "should" follow given where the layers below went. The
raw difference scales with the gradient, which BN changes, so we also report it relative to
``||G_i||`` and the cosine between ``G_i`` and ``G'_i`` (both scale-free).

* :func:`layer_groups` - a ``nn.Sequential``'s parameters grouped by layer in forward order;
* :func:`gradient_change` - the measure for every layer, given the parameters before and
  after one update.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from bnbook.experiments.why.landscape import loss_and_grad

__all__ = ["layer_groups", "gradient_change"]


def layer_groups(model: nn.Sequential) -> list[list[str]]:
    """Trainable parameter names of ``model`` grouped by layer, in forward order.

    Each group starts with the weight of a ``Conv``/``Linear`` module and holds that module's
    parameters and those of the modules after it up to the next ``Conv``/``Linear`` (its
    normalisation layer's ``gamma`` and ``beta``). Parameters before the first weight layer
    are refused.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"layer_groups needs an nn.Sequential, got {type(model).__name__}")
    groups: list[list[str]] = []
    for index, module in model.named_children():
        names = [f"{index}.{n}" for n, p in module.named_parameters() if p.requires_grad]
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            groups.append([f"{index}.weight"] + [n for n in names if n != f"{index}.weight"])
        elif names:
            if not groups:
                raise ValueError(f"parameters {names} come before the first weight layer")
            groups[-1].extend(names)
    if not groups:
        raise ValueError("model has no Linear or Conv layer")
    return groups


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else math.nan


def gradient_change(model: nn.Module, loss_fn: Callable, batch,
                    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor],
                    groups: Sequence[Sequence[str]]) -> list[dict]:
    """Santurkar et al.'s internal covariate shift of every layer (module docstring).

    ``before`` and ``after`` hold every trainable parameter (``{name: value}``) before and
    after one update; ``groups`` lists the layers in forward order (:func:`layer_groups`),
    the first name of each being the weight whose gradient is compared. Returns one dict per
    layer: ``l2`` (``||G - G'||``), ``rel`` (``l2 / ||G||``) and ``cos`` (cosine of the angle
    between ``G`` and ``G'``). The first layer has nothing before it: ``l2 = 0``, ``cos = 1``.
    The model is left as it was.
    """
    names = [n for group in groups for n in group]
    missing = [n for n in names if n not in before or n not in after]
    if missing:
        raise ValueError(f"before/after lack the parameters {missing}")
    _, g = loss_and_grad(model, loss_fn, batch, before)
    rows = []
    for i, group in enumerate(groups):
        earlier = [n for grp in groups[:i] for n in grp]
        values = {**before, **{n: after[n] for n in earlier}}
        _, g_shifted = loss_and_grad(model, loss_fn, batch, values) if earlier else (None, g)
        G, G2 = g[group[0]], g_shifted[group[0]]
        l2 = float((G - G2).double().norm())
        gnorm = float(G.double().norm())
        rows.append({"l2": l2, "rel": l2 / gnorm if gnorm > 0 else math.nan,
                     "cos": _cosine(G, G2)})
    return rows

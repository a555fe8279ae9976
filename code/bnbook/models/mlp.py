"""The Fashion-MNIST MLP of chapters 4 and 6.

:func:`make_mlp` builds ``Standardise -> [Linear, Norm, activation, Dropout] x depth -> Linear``
with an optional normalisation layer (batch, group, layer norm) placed before or after each
activation (ReLU, sigmoid, tanh), optional dropout, optional bias before the norm and a scale
on the initial weights; :class:`Standardise` flattens the images and standardises them with
fixed constants (so a shift of the input distribution reaches the network unchanged).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

__all__ = ["NORMS", "PLACEMENTS", "ACTIVATIONS", "Standardise", "make_mlp"]

#: The normalisations :func:`make_mlp` can put in each hidden block.
NORMS = ("none", "batch", "group", "layer")
#: Where the normalisation goes relative to the activation.
PLACEMENTS = ("before", "after")
#: The activations :func:`make_mlp` knows, by name.
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class Standardise(nn.Module):
    """Flatten ``(N, 28, 28)`` (or any ``(N, ...)``) to ``(N, D)`` and apply ``(x - mean) / std``
    with fixed scalar constants (not learned, not re-estimated)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean:.4f}, std={self.std:.4f}"


def _norm_layer(norm: str, width: int, groups: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(width)
    if norm == "group":
        if width % groups:
            raise ValueError(f"group norm needs the width ({width}) divisible by groups ({groups})")
        return nn.GroupNorm(groups, width)
    if norm == "layer":
        return nn.LayerNorm(width)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def make_mlp(hidden: Sequence[int] = (256, 256), norm: str = "batch",
             placement: str = "before", dropout: float = 0.0, bias: bool | None = None,
             activation: str = "relu", init_scale: float = 1.0,
             in_features: int = 784, num_classes: int = 10, groups: int = 16,
             pixel_mean: float = 0.2860, pixel_std: float = 0.3530,
             seed: int | None = 0) -> nn.Sequential:
    """A multilayer perceptron ``Standardise -> [hidden block] x len(hidden) -> Linear``.

    Each hidden block of width ``w`` is, for ``placement="before"`` (the paper's choice)::

        Linear(w_in, w, bias) -> Norm(w) -> ReLU -> Dropout(dropout)

    and for ``placement="after"``::

        Linear(w_in, w, bias) -> ReLU -> Norm(w) -> Dropout(dropout)

    ``norm`` is ``"batch"`` (``nn.BatchNorm1d``), ``"group"`` (``nn.GroupNorm`` with
    ``groups`` groups), ``"layer"`` (``nn.LayerNorm``) or ``"none"``. ``bias=None`` gives the
    linear layers a bias exactly when it is not cancelled by a following normalisation (no
    bias for ``placement="before"`` with a norm). Dropout after the activation means that in
    a BN net dropout feeds the next block's linear layer and then its BN: the order whose
    train/test "variance shift" Li et al. (2019) analyse. The output layer is a plain
    ``Linear(w_last, num_classes)`` producing logits (the softmax lives in the loss).

    ``seed`` seeds the weight initialisation (PyTorch's defaults); ``None`` uses the global
    generator as it is. For one seed, every linear layer's weight is the same whatever
    ``norm``, ``placement``, ``dropout``, ``bias`` and ``activation`` are, so variants differ
    only in those. ``activation`` is ``"relu"``, ``"sigmoid"`` or ``"tanh"`` (the diagrams
    above show ReLU); ``init_scale`` multiplies every hidden linear layer's initial weights
    (``1`` is PyTorch's default initialisation). Input: pixels ``(N, 28, 28)`` or
    ``(N, 784)``; output ``(N, 10)``.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    hidden = tuple(int(w) for w in hidden)
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         f"{tuple(ACTIVATIONS)}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    if bias is None:
        bias = norm == "none" or placement == "after"
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = [Standardise(pixel_mean, pixel_std)]
        width_in = in_features
        for width in hidden:
            linear = nn.Linear(width_in, width)
            if init_scale != 1.0:
                with torch.no_grad():
                    linear.weight.mul_(init_scale)
            if not bias:
                # Drawn, then dropped: every variant consumes the same random numbers, so the
                # weights are identical across norms and placements for one seed.
                linear.bias = None
            layers.append(linear)
            block = [ACTIVATIONS[activation]()]
            if norm != "none":
                block.insert(0 if placement == "before" else 1, _norm_layer(norm, width, groups))
            layers.extend(block)
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        return nn.Sequential(*layers)

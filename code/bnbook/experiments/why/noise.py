"""Noisy batch norm: distribution shifts injected after every BN layer, and how far the
inputs of a layer move during training.

Santurkar et al. (2018) asked whether batch norm helps *because* it keeps the distribution of
each layer's input steady. They trained networks whose BN outputs were perturbed, at every
step, by noise with a non-zero mean and a non-unit variance that changed from step to step,
so that the inputs of the next layers moved *more* than without BN, and the networks still
trained about as well as with plain BN. This module builds that experiment:

* :class:`NoisyBatchNorm` - wraps one BN layer: in training mode its output is
  ``scale * bn(x) + shift``, with one ``scale`` and one ``shift`` per channel (unit) held in
  buffers; in evaluation mode it is ``bn(x)``;
* :class:`BatchNormNoise` - wraps every BN layer of a model in place and redraws the noise:
  call :meth:`BatchNormNoise.resample` once per training step. Per channel and step,
  ``shift ~ U(-shift_max, shift_max)`` and ``log(scale) ~ U(-log(scale_max), log(scale_max))``,
  independent across channels, layers and steps, from the injector's own seeded generator;
* :func:`buffers_restored` - run a model in training mode without changing its running
  statistics (for monitoring);
* :func:`channel_moments` - per-channel mean and standard deviation of the inputs of chosen
  modules (e.g. every ReLU) on a fixed batch;
* :func:`distribution_movement` - how far per-unit distributions move between logged steps,
  in units of their own spread: the injected movement is measured, not assumed.

Conventions: a "channel" is a unit of a ``(N, C)`` input or a channel of ``(N, C, H, W)``;
statistics are taken over every other axis. Standard deviations are the biased ones (over the
batch), as BN uses.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["NoisyBatchNorm", "BatchNormNoise", "wrap_batch_norms", "buffers_restored", "channel_moments",
           "distribution_movement", "percentile_location_spread"]


class NoisyBatchNorm(nn.Module):
    """``bn(x)`` followed, in training mode, by a per-channel affine perturbation.

    ``forward(x)``: ``x`` of shape ``(N, C)`` or ``(N, C, H, W)``; returns
    ``scale[c] * bn(x)[:, c] + shift[c]`` in training mode and ``bn(x)`` in evaluation mode.
    ``scale`` and ``shift`` are ``(C,)`` buffers, set by :class:`BatchNormNoise`; they start at
    1 and 0 (no noise). The wrapped layer is ``self.bn``, unchanged.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"NoisyBatchNorm wraps a batch norm layer, got {type(bn).__name__}")
        self.bn = bn
        self.register_buffer("scale", torch.ones(bn.num_features))
        self.register_buffer("shift", torch.zeros(bn.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        if not self.training:
            return y
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.scale.view(shape) * y + self.shift.view(shape)


def wrap_batch_norms(model: nn.Module, wrapper_type: type, *args) -> list[nn.Module]:
    """Replace every batch norm layer of ``model`` in place by ``wrapper_type(bn, *args)`` and
    return the wrappers in module order; ``ValueError`` if there is none or one is already
    wrapped by ``wrapper_type``."""
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not targets:
        raise ValueError("model has no batch norm layer to make noisy")
    wrappers = []
    for name, bn in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, wrapper_type):
            raise ValueError(f"{name} is already noisy")
        wrapper = wrapper_type(bn, *args)
        setattr(parent, child, wrapper)
        wrappers.append(wrapper)
    return wrappers


class BatchNormNoise:
    """Wrap every batch norm layer of ``model`` in a :class:`NoisyBatchNorm`, in place.

    ``shift_max`` >= 0 bounds the per-channel shift, ``scale_max`` >= 1 the per-channel scale
    factor (``scale`` is log-uniform in ``[1/scale_max, scale_max]``). ``seed`` seeds the
    injector's own generator, so the noise never touches global random state. The first noise
    is drawn at construction; :meth:`resample` draws the next (call it before every training
    step). ``layers`` lists the wrappers in the order of ``model.named_modules()``.
    """

    def __init__(self, model: nn.Module, shift_max: float, scale_max: float, seed: int = 0):
        if not (shift_max >= 0 and scale_max >= 1 and math.isfinite(shift_max + scale_max)):
            raise ValueError(f"need shift_max >= 0 and scale_max >= 1, got {shift_max}, "
                             f"{scale_max}")
        self.shift_max, self.scale_max = float(shift_max), float(scale_max)
        self.generator = torch.Generator().manual_seed(seed)
        self.layers: list[NoisyBatchNorm] = wrap_batch_norms(model, NoisyBatchNorm)
        self.resample()

    @torch.no_grad()
    def resample(self) -> None:
        """Draw a new shift and scale for every channel of every wrapped layer."""
        log_max = math.log(self.scale_max)
        for layer in self.layers:
            c = layer.shift.numel()
            u = torch.rand(2, c, generator=self.generator, dtype=torch.float64)
            layer.shift.copy_((2.0 * u[0] - 1.0) * self.shift_max)
            layer.scale.copy_(torch.exp((2.0 * u[1] - 1.0) * log_max))


@contextlib.contextmanager
def buffers_restored(model: nn.Module):
    """Every buffer of ``model`` (BN running statistics, batch counters) is put back as it
    was when the block ends, so that a forward pass in training mode changes nothing."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


@torch.no_grad()
def channel_moments(model: nn.Module, x: torch.Tensor,
                    modules: Sequence[nn.Module]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) standard deviation, per channel, of the input of each of
    ``modules`` when ``model`` runs on ``x`` in its current mode (buffers left unchanged).

    Returns ``(mean, std)``: lists with one float64 array ``(C_k,)`` per module, in the
    order given. For a ``(N, C, H, W)`` input the statistics are over ``N, H, W``.
    """
    seen: dict[int, torch.Tensor] = {}

    def hook(k):
        def record(module, inputs):
            seen[k] = inputs[0].detach().transpose(0, 1).flatten(1).to(torch.float64)
        return record

    handles = [m.register_forward_pre_hook(hook(k)) for k, m in enumerate(modules)]
    try:
        with buffers_restored(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    if len(seen) != len(modules):
        raise ValueError("some of the modules were not called by the model's forward pass")
    means = [seen[k].mean(dim=1).numpy() for k in range(len(modules))]
    stds = [seen[k].std(dim=1, unbiased=False).numpy() for k in range(len(modules))]
    return means, stds


def percentile_location_spread(percentiles) -> tuple[np.ndarray, np.ndarray]:
    """Location and spread from the 15th, 50th and 85th percentiles of each unit.

    ``percentiles`` has shape ``(T, 3, units)`` (as :func:`bnbook.experiments.motivation.covariate_shift.train_sigmoid_mlp`
    records them for one layer). Returns ``(median, half_range)``, each ``(T, units)``:
    the 50th percentile, and half the distance from the 15th to the 85th (for a Gaussian
    that is about 1.04 standard deviations).
    """
    p = np.asarray(percentiles, dtype=np.float64)
    if p.ndim != 3 or p.shape[1] != 3:
        raise ValueError(f"percentiles must have shape (T, 3, units); got {p.shape}")
    return p[:, 1, :], (p[:, 2, :] - p[:, 0, :]) / 2.0


def distribution_movement(location, spread) -> dict:
    """How far per-unit distributions move from one logged step to the next.

    Args:
        location, spread: arrays ``(T, units)``: a location (mean or median) and a spread
            (standard deviation or half the 15-85 range) of each unit at ``T >= 2`` logged
            steps; spreads must be positive.

    Returns a dict of medians over units (each unit first averaged over the ``T - 1``
    intervals):

    * ``location_shift`` - ``|location[k] - location[k-1]|``: how far the distribution moved,
      in the units of the data (for a sigmoid's input, in units of the sigmoid's own scale);
    * ``location_shift_rel`` - the same divided by ``spread[k-1]``, in units of its own spread;
    * ``spread_change`` - ``|log(spread[k] / spread[k-1])|``: how much it widened or narrowed
      (0.69 is a factor of two);
    * ``location_range`` - ``max_k location - min_k location``: how far it wandered over the
      whole run.
    """
    loc = np.asarray(location, dtype=np.float64)
    spr = np.asarray(spread, dtype=np.float64)
    if loc.ndim != 2 or loc.shape != spr.shape or loc.shape[0] < 2:
        raise ValueError(f"location and spread must be (T >= 2, units) arrays of one shape; "
                         f"got {loc.shape} and {spr.shape}")
    if not np.all(spr > 0):
        raise ValueError("every spread must be positive (a unit with a constant input cannot "
                         "be measured in units of its spread)")
    shift = np.abs(np.diff(loc, axis=0))
    change = np.abs(np.diff(np.log(spr), axis=0))
    return {"location_shift": float(np.median(shift.mean(axis=0))),
            "location_shift_rel": float(np.median((shift / spr[:-1]).mean(axis=0))),
            "spread_change": float(np.median(change.mean(axis=0))),
            "location_range": float(np.median(loc.max(axis=0) - loc.min(axis=0)))}

"""Two more kinds of noise after batch norm, beside :class:`bnbook.experiments.why.noise.BatchNormNoise`.

:class:`~bnbook.experiments.why.noise.BatchNormNoise` (the "jitter") draws, at every step, one shift and one
scale per channel, shared by the whole batch, independent from step to step: the distribution
of a channel jumps around a fixed centre and does not accumulate. Two other readings of
"internal covariate shift injected by hand" are:

* :class:`DriftingBatchNormNoise` - the *drift*: the per-channel shift and log-scale are random
  walks, so the distribution moves away from where it was and keeps going, as the median of
  the sigmoid input does in Ioffe and Szegedy's Figure 1(b) (and Santurkar et al.'s
  Figure 1(b)). Per step, ``shift += shift_end_std / sqrt(n_steps) * xi`` and
  ``log(scale) += log_scale_end_std / sqrt(n_steps) * xi'`` with standard normal ``xi, xi'``
  independent across channels, layers and steps; after ``n_steps`` steps the shift of a
  channel has the standard deviation ``shift_end_std`` (and its log-scale
  ``log_scale_end_std``). It uses the same wrapper, :class:`~bnbook.experiments.why.noise.NoisyBatchNorm`.
* :class:`ActivationNoise` - Santurkar et al.'s (2018) noise: "we perturb each activation for
  each sample in the batch using i.i.d. noise sampled from a non-zero mean and non-unit
  variance distribution", the distribution changing at every step. Here, in training mode,
  ``y = a * bn(x) + b`` with ``a`` and ``b`` drawn for every activation of every sample
  (every entry of the ``(N, C, ...)`` output): ``log(a) ~ U(-log(scale_max), log(scale_max))``
  and ``b ~ m_c + U(-shift_max, shift_max)``, where the mean ``m_c ~ U(-mean_max, mean_max)``
  of channel ``c`` is redrawn at every step (:meth:`ActivationNoise.resample`).

:func:`make_noise` builds any of the three (or none) from a kind name and its parameters, the
form the experiment settings store.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnbook.experiments.why.noise import BatchNormNoise, wrap_batch_norms

__all__ = ["NOISE_KINDS", "DriftingBatchNormNoise", "ActivationNoisyBatchNorm",
           "ActivationNoise", "make_noise"]

#: The noise kinds :func:`make_noise` knows, with the parameters each one takes.
NOISE_KINDS = {"jitter": ("shift_max", "scale_max"),
               "drift": ("shift_end_std", "log_scale_end_std"),
               "per-activation": ("shift_max", "scale_max", "mean_max")}


class DriftingBatchNormNoise(BatchNormNoise):
    """Every BN layer of ``model`` wrapped (in place) with a per-channel shift and scale that
    follow random walks (module docstring), reaching the standard deviations
    ``shift_end_std`` (shift) and ``log_scale_end_std`` (log of the scale) after ``n_steps``
    calls of :meth:`resample`. The first step is taken at construction."""

    def __init__(self, model: nn.Module, shift_end_std: float, log_scale_end_std: float,
                 n_steps: int, seed: int = 0):
        if not (shift_end_std >= 0 and log_scale_end_std >= 0 and n_steps >= 1
                and math.isfinite(shift_end_std + log_scale_end_std)):
            raise ValueError(f"need shift_end_std >= 0, log_scale_end_std >= 0 and n_steps >= 1,"
                             f" got {shift_end_std}, {log_scale_end_std}, {n_steps}")
        self.shift_step = float(shift_end_std) / math.sqrt(n_steps)
        self.log_scale_step = float(log_scale_end_std) / math.sqrt(n_steps)
        self.log_scales: list[torch.Tensor] = []
        super().__init__(model, 0.0, 1.0, seed)

    @torch.no_grad()
    def resample(self) -> None:
        """One step of every channel's random walk."""
        if not self.log_scales:
            self.log_scales = [torch.zeros(layer.scale.numel(), dtype=torch.float64)
                               for layer in self.layers]
        for layer, log_scale in zip(self.layers, self.log_scales):
            xi = torch.randn(2, layer.shift.numel(), generator=self.generator,
                             dtype=torch.float64)
            layer.shift.add_((self.shift_step * xi[0]).to(layer.shift.dtype))
            log_scale.add_(self.log_scale_step * xi[1])
            layer.scale.copy_(torch.exp(log_scale))


class ActivationNoisyBatchNorm(nn.Module):
    """``bn(x)`` followed, in training mode, by noise drawn for every activation.

    ``forward(x)``: ``x`` ``(N, C)`` or ``(N, C, H, W)``; in training mode returns
    ``a * bn(x) + b`` with ``a = exp(log_scale_max * U(-1, 1))`` and
    ``b = mean[c] + shift_max * U(-1, 1)`` drawn independently for every entry from
    ``self.generator``; in evaluation mode ``bn(x)``. ``mean`` is a ``(C,)`` buffer set by
    :class:`ActivationNoise`.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, shift_max: float,
                 scale_max: float, generator: torch.Generator):
        super().__init__()
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"ActivationNoisyBatchNorm wraps a batch norm layer, got "
                             f"{type(bn).__name__}")
        self.bn, self.shift_max = bn, float(shift_max)
        self.log_scale_max = math.log(scale_max)
        self.generator = generator
        self.register_buffer("mean", torch.zeros(bn.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        if not self.training:
            return y
        u = torch.rand((2,) + tuple(y.shape), generator=self.generator, dtype=y.dtype)
        a = torch.exp((2.0 * u[0] - 1.0) * self.log_scale_max)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return a * y + self.mean.view(shape) + (2.0 * u[1] - 1.0) * self.shift_max


class ActivationNoise:
    """Wrap every BN layer of ``model`` in an :class:`ActivationNoisyBatchNorm`, in place.

    ``shift_max >= 0``, ``scale_max >= 1`` and ``mean_max >= 0`` as in the module docstring;
    ``seed`` seeds the injector's own generator (global random state is never touched).
    :meth:`resample` (call it before every training step) redraws each channel's mean; the
    per-activation draws come from the same generator during the forward passes.
    """

    def __init__(self, model: nn.Module, shift_max: float, scale_max: float,
                 mean_max: float = 0.0, seed: int = 0):
        if not (shift_max >= 0 and scale_max >= 1 and mean_max >= 0
                and math.isfinite(shift_max + scale_max + mean_max)):
            raise ValueError(f"need shift_max >= 0, scale_max >= 1 and mean_max >= 0, got "
                             f"{shift_max}, {scale_max}, {mean_max}")
        self.mean_max = float(mean_max)
        self.generator = torch.Generator().manual_seed(seed)
        self.layers: list[ActivationNoisyBatchNorm] = wrap_batch_norms(
            model, ActivationNoisyBatchNorm, shift_max, scale_max, self.generator)
        self.resample()

    @torch.no_grad()
    def resample(self) -> None:
        """Draw a new mean for every channel of every wrapped layer."""
        for layer in self.layers:
            u = torch.rand(layer.mean.numel(), generator=self.generator, dtype=torch.float64)
            layer.mean.copy_((2.0 * u - 1.0) * self.mean_max)


def make_noise(model: nn.Module, kind: str | None, params: dict | None, n_steps: int,
               seed: int):
    """The injector of ``kind`` (a key of :data:`NOISE_KINDS`, or ``None`` for none) on every BN
    layer of ``model``, with ``params`` (``{name: value}``, exactly the names
    :data:`NOISE_KINDS` lists); ``n_steps`` is the length of the run (the drift's scale);
    ``seed`` the injector's seed. Returns the injector (``resample()`` before every step) or
    ``None``."""
    if kind is None:
        return None
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {sorted(NOISE_KINDS)}")
    params = dict(params or {})
    if set(params) != set(NOISE_KINDS[kind]):
        raise ValueError(f"noise {kind!r} takes the parameters {NOISE_KINDS[kind]}, got "
                         f"{sorted(params)}")
    if kind == "jitter":
        return BatchNormNoise(model, params["shift_max"], params["scale_max"], seed)
    if kind == "drift":
        return DriftingBatchNormNoise(model, params["shift_end_std"],
                                      params["log_scale_end_std"], n_steps, seed)
    return ActivationNoise(model, params["shift_max"], params["scale_max"],
                           params["mean_max"], seed)

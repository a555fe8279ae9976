"""The control for the step-size story: weight normalisation, with and without batch
statistics, on the narrow CNN.

Chapter 9's scale section shows that BN makes the weights in front of it scale-invariant, so
the direction of each filter sees the effective learning rate ``eta / ||w_c||^2``, which
falls by itself as ``||w_c||`` grows. If *that* were why BN trains faster, any
parametrisation with the same invariance and no batch statistics should do as well. Weight
normalisation (Salimans and Kingma, 2016) is one: each conv filter is ``w_c = g_c v_c /
||v_c||`` with ``v_c`` and ``g_c`` trained, so the loss is invariant to the scale of ``v_c``
and ``v_c`` sees ``eta / ||v_c||^2``, exactly as a filter before BN does, but a sample's output
depends on that sample alone. The arms (:data:`WN_ARMS`):

=============  ===============================================================================
``none``       no normalisation (the narrow CNN as it is)
``batch``      BN after every convolution
``wn``         weight normalisation of every convolution, no batch statistics
``wn-mean``    weight normalisation and mean-only batch norm (Salimans and Kingma's recipe:
               subtract the batch mean per channel, no division; running mean at evaluation)
``wn-batch``   weight normalisation and BN (both invariances; WN's ``g`` is then redundant)
=============  ===============================================================================

Weight normalisation is :func:`torch.nn.utils.parametrizations.weight_norm` (``dim=0``: one
``g`` per output filter), initialised to the Glorot weights of the plain network, so for one
seed every arm starts from the same function of its conv layers (``g_c = ||v_c||``; no
data-dependent initialisation).

* :class:`MeanOnlyBatchNorm2d`; :func:`make_wn_cnn` - the network of an arm;
* :func:`filter_direction_norms` - ``||v_c||`` (or ``||w_c||``) per filter of every conv layer;
* :func:`run_weightnorm` - one arm, one learning rate, one seed.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["WN_ARMS", "MeanOnlyBatchNorm2d", "make_wn_cnn", "filter_direction_norms",
           "run_weightnorm"]

#: The arms of the control experiment (module docstring).
WN_ARMS = ("none", "batch", "wn", "wn-mean", "wn-batch")


class MeanOnlyBatchNorm2d(nn.Module):
    """``x - mean + beta`` per channel: in training mode the mean is the batch's over
    ``(N, H, W)`` (and updates ``running_mean`` with ``momentum``), in evaluation mode
    ``running_mean``. ``x`` ``(N, C, H, W)``; ``beta`` ``(C,)`` starts at 0."""

    def __init__(self, channels: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = float(momentum)
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
        else:
            mean = self.running_mean
        return x - mean.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def make_wn_cnn(arm: str, width: int = 16, seed: int = 0) -> nn.Sequential:
    """The narrow CNN (:func:`bnbook.models.small_cnn.small_cifar_cnn`, ``width``, ``seed``) of one
    of :data:`WN_ARMS` (module docstring)."""
    from bnbook.models.small_cnn import small_cifar_cnn

    if arm not in WN_ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {WN_ARMS}")
    model = small_cifar_cnn(width, "batch" if arm in ("batch", "wn-batch") else "none",
                            seed=seed)
    if arm == "wn-mean":
        for i, m in enumerate(model):
            if isinstance(m, nn.Conv2d):
                model[i + 1] = MeanOnlyBatchNorm2d(m.out_channels)
    if arm.startswith("wn"):
        for m in model:
            if isinstance(m, nn.Conv2d):
                weight_norm(m, "weight", dim=0)
    return model


@torch.no_grad()
def filter_direction_norms(model: nn.Module) -> list[np.ndarray]:
    """Per conv layer, the norm of each filter's scale-free part: ``||v_c||`` for a
    weight-normalised convolution, ``||w_c||`` otherwise; float64 arrays ``(C_out,)``."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.parametrizations.weight.original1 if parametrize.is_parametrized(m, "weight") \
                else m.weight
            out.append(w.detach().double().flatten(1).norm(dim=1).numpy())
    return out


def run_weightnorm(data, arm: str, *, lr: float, width: int = 16, momentum: float = 0.9,
                   epochs: int = 12, batch_size: int = 128, seed: int = 0,
                   clean_train_size: int | None = None, progress: bool = False) -> dict:
    """Train one arm (:func:`make_wn_cnn`) with SGD (``lr``, ``momentum``, no weight decay).

    Returns the history of :func:`bnbook.experiments.why.cnn_runs.train_cnn` (per epoch: test accuracy
    and loss, the evaluation-mode training loss and accuracy) and ``direction_norm`` (per
    epoch, and at the start, per conv layer the median over filters of
    :func:`filter_direction_norms`: the effective learning rate of a filter's direction is
    ``lr / norm**2``) and ``seconds``.
    """
    from bnbook.experiments.why.cnn_runs import train_cnn

    model = make_wn_cnn(arm, width, seed)
    steps_per_epoch = data.x_train.shape[0] // batch_size
    norms = [[round(float(np.median(n)), 5) for n in filter_direction_norms(model)]]

    def on_step(step, *_):
        if step % steps_per_epoch == 0:
            norms.append([round(float(np.median(n)), 5) for n in filter_direction_norms(model)])

    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    hist = train_cnn(model, data, opt, epochs=epochs, batch_size=batch_size, seed=seed,
                     clean_train_size=clean_train_size, on_step=on_step, progress=progress,
                     desc=f"{arm} lr {lr} seed {seed}")
    return {**hist, "direction_norm": norms, "seconds": round(time.perf_counter() - start, 2)}

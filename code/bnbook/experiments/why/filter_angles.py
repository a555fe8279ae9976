"""The equilibrium angle measured on a trained network's filters, against
``sqrt(2 eta lambda / (1 + mu))``.

:mod:`bnbook.experiments.why.sphere` checks the momentum form of the equilibrium angle (Wan et al., 2021)
on a simulated scale-invariant weight. Here the same prediction meets a network: the narrow
CNN with BN, trained with SGD (learning rate ``eta``, heavy-ball momentum ``mu``) and weight
decay ``lambda`` on its conv weights only (each conv filter, one output channel, feeds its own
BN channel, so each filter is separately scale-invariant; the BN ``gamma``/``beta``, the
conv biases, which BN cancels, and the dense head get no decay). After every update, for
every filter ``w_c``:

* the angle between ``w_c`` before and after the update
  (``2 atan2(||u - u'||, ||u + u'||)`` with ``u = w_c / ||w_c||``, accurate for tiny angles);
* ``||w_c' - w_c|| / ||w_c||``, the relative step.

The per-epoch record keeps, per conv layer, the median over filters of each filter's root
mean square angle in that epoch, so the approach to equilibrium is visible;
:func:`run_filter_angles` also returns every filter's RMS angle over the last
``window_steps`` updates and the two predictions.

* :func:`filter_angles` - the per-filter angle and relative step between two weight tensors;
* :func:`run_filter_angles` - one training run, measured.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from bnbook.experiments.why.sphere import equilibrium_angle_momentum

__all__ = ["filter_angles", "run_filter_angles"]


def filter_angles(before: torch.Tensor, after: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(angle, relative_step)`` per output filter between two conv weights
    ``(C_out, C_in, k, k)`` (any shape with the filters first): float64 arrays ``(C_out,)``;
    the angle in radians."""
    a, b = before.detach().double().flatten(1), after.detach().double().flatten(1)
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    if bool((na == 0).any() or (nb == 0).any()):
        raise ValueError("a filter is zero: its angle is undefined")
    ua, ub = a / na, b / nb
    angle = 2.0 * torch.atan2((ua - ub).norm(dim=1), (ua + ub).norm(dim=1))
    return angle.numpy(), ((b - a).norm(dim=1) / na[:, 0]).numpy()


def run_filter_angles(data, *, lr: float, momentum: float, weight_decay: float,
                      width: int = 16, epochs: int = 15, batch_size: int = 128,
                      window_steps: int = 390, seed: int = 0, progress: bool = False) -> dict:
    """Train the narrow CNN with BN (module docstring) and measure every filter's angle per
    update.

    Returns the history of :func:`bnbook.experiments.why.cnn_runs.train_cnn`; ``epoch_rms_angle`` and
    ``epoch_rms_rel_step`` (per epoch, per conv layer: median over filters of the RMS over
    that epoch's updates); ``window_rms_angle`` (per conv layer, every filter's RMS angle
    over the last ``window_steps`` updates, rounded to 1e-6); ``window_median`` (per conv
    layer, the median of those); ``predicted_momentum`` (``sqrt(2 eta lambda / (1 + mu))``)
    and ``predicted_plain`` (``sqrt(2 eta lambda)``); ``seconds``.
    """
    from bnbook.models.small_cnn import small_cifar_cnn
    from bnbook.experiments.why.cnn_runs import train_cnn

    steps_per_epoch = data.x_train.shape[0] // batch_size
    total = epochs * steps_per_epoch
    if not 1 <= window_steps <= total:
        raise ValueError(f"window_steps must be in 1..{total} (the run's updates), got "
                         f"{window_steps}")
    predicted = equilibrium_angle_momentum(lr, weight_decay, momentum)
    model = small_cifar_cnn(width, "batch", seed=seed)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    conv_weights = [m.weight for m in convs]
    others = [p for p in model.parameters() if all(p is not w for w in conv_weights)]
    opt = torch.optim.SGD([{"params": conv_weights, "weight_decay": weight_decay},
                           {"params": others, "weight_decay": 0.0}], lr=lr, momentum=momentum)
    prev = [w.detach().clone() for w in conv_weights]
    sq_angle = [np.zeros(m.out_channels) for m in convs]
    sq_rel = [np.zeros(m.out_channels) for m in convs]
    window = [np.zeros(m.out_channels) for m in convs]
    log = {"epoch_rms_angle": [], "epoch_rms_rel_step": []}

    def on_step(step, *_):
        for k, w in enumerate(conv_weights):
            angle, rel = filter_angles(prev[k], w)
            sq_angle[k] += angle ** 2
            sq_rel[k] += rel ** 2
            if step > total - window_steps:
                window[k] += angle ** 2
            prev[k].copy_(w.detach())
        if step % steps_per_epoch == 0:
            log["epoch_rms_angle"].append(
                [float(np.median(np.sqrt(s / steps_per_epoch))) for s in sq_angle])
            log["epoch_rms_rel_step"].append(
                [float(np.median(np.sqrt(s / steps_per_epoch))) for s in sq_rel])
            for s in sq_angle + sq_rel:
                s[:] = 0.0

    start = time.perf_counter()
    hist = train_cnn(model, data, opt, epochs=epochs, batch_size=batch_size, seed=seed,
                     on_step=on_step, progress=progress,
                     desc=f"angles lr {lr} mu {momentum} wd {weight_decay} seed {seed}")
    rms = [np.sqrt(w / window_steps) for w in window]
    return {**hist, **log, "window_steps": window_steps,
            "window_rms_angle": [np.round(r, 6).tolist() for r in rms],
            "window_median": [float(np.median(r)) for r in rms],
            "predicted_momentum": predicted,
            "predicted_plain": math.sqrt(2 * lr * weight_decay),
            "seconds": round(time.perf_counter() - start, 2)}

"""Chapter 6's untested advice, "decay the learning rate faster", on the narrow CNN with BN.

Ioffe and Szegedy decayed their Inception network's learning rate exponentially and, with BN,
six times faster. Here the narrow CNN with BN (:func:`bnbook.models.small_cnn.small_cifar_cnn`) trains
on a CIFAR-10 subset with SGD and momentum under an exponential decay per update,

    ``lr(t) = lr0 * final_factor ** (speed * t / T)``,  ``T`` = the run's updates,

so that the default schedule (``speed = 1``) ends at ``final_factor * lr0`` and a schedule
``speed`` times faster reaches that rate after ``T / speed`` updates and keeps falling. Without
weight decay the BN network's conv weights grow, which lowers their effective learning rate
by itself (:mod:`bnbook.experiments.why.scale`); the experiment asks whether an explicit faster decay
helps on top of that.

* :func:`exponential_lr_factor` - the factor ``lr(t) / lr0``;
* :func:`run_decay` - one schedule, one seed.
"""

from __future__ import annotations

import time

import torch

__all__ = ["exponential_lr_factor", "run_decay"]


def exponential_lr_factor(step: int, total_steps: int, speed: float,
                          final_factor: float) -> float:
    """``final_factor ** (speed * step / total_steps)`` (module docstring)."""
    if total_steps < 1 or speed < 0 or not 0 < final_factor <= 1:
        raise ValueError(f"need total_steps >= 1, speed >= 0 and 0 < final_factor <= 1; got "
                         f"{total_steps}, {speed}, {final_factor}")
    return final_factor ** (speed * step / total_steps)


def run_decay(data, *, speed: float, lr: float = 0.05, final_factor: float = 0.1,
              width: int = 16, momentum: float = 0.9, weight_decay: float = 0.0,
              epochs: int = 10, batch_size: int = 128, seed: int = 0,
              clean_train_size: int | None = None, progress: bool = False) -> dict:
    """Train the narrow CNN with BN under the exponential schedule of ``speed`` (module
    docstring); ``weight_decay`` applies to every parameter (0 by default, as chapter 9's
    runs). Returns the history of :func:`bnbook.experiments.why.cnn_runs.train_cnn` (per epoch the test
    accuracy and loss, the evaluation-mode training loss and accuracy, the learning rate at
    the epoch's end) and ``seconds``."""
    from bnbook.models.small_cnn import small_cifar_cnn
    from bnbook.experiments.why.cnn_runs import train_cnn

    total = epochs * (data.x_train.shape[0] // batch_size)
    exponential_lr_factor(0, total, speed, final_factor)          # validates the schedule
    model = small_cifar_cnn(width, "batch", seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: exponential_lr_factor(t, total, speed, final_factor))
    start = time.perf_counter()
    hist = train_cnn(model, data, opt, epochs=epochs, batch_size=batch_size, seed=seed,
                     scheduler=sched, clean_train_size=clean_train_size, progress=progress,
                     desc=f"decay x{speed:g} seed {seed}")
    return {**hist, "seconds": round(time.perf_counter() - start, 2)}

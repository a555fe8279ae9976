"""Training the narrow chapter-7 CNN on a CIFAR-10 subset, with hooks around every step.

The why-BN experiments on images (noisy BN, the loss landscape, Santurkar et al.'s
internal-covariate-shift measure) all train :func:`bnbook.models.small_cnn.small_cifar_cnn` on a
seeded subset (:func:`bnbook.data.subsets.prepare_cifar10`) with the book's one loop,
:func:`bnbook.training.fit`, and differ only in what they do around each step:

* :func:`train_small_cnn` - SGD on shuffled mini-batches for some epochs; ``before_step(k)``
  runs before step ``k + 1`` draws its batch (``k`` updates done so far: resample noise,
  snapshot the weights), ``on_step(k, loss, logits, batch)`` after update ``k`` (measure);
  the test accuracy (evaluation mode) and mean training loss are recorded every epoch;
* :func:`relu_inputs` - the ReLUs that follow the convolutions, whose inputs are the
  distributions whose movement the noisy-BN experiment measures;
* :func:`run_noisy_cnn` - one network of the noisy-BN experiment: ``"none"``, ``"batch"``
  or ``"noisy-batch"``, with the per-channel moments of every conv ReLU's input logged on a
  fixed batch and summarised by :func:`bnbook.experiments.why.noise.distribution_movement`.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from bnbook.data.subsets import Cifar10Subset
from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.training import NonFiniteLoss, cross_entropy_loss, epoch_batches, evaluate_accuracy, fit
from bnbook.experiments.why.noise import BatchNormNoise, channel_moments, distribution_movement

__all__ = ["CNN_VARIANTS", "train_small_cnn", "train_epochs", "relu_inputs", "run_noisy_cnn"]

#: The networks of the noisy-BN experiment on images.
CNN_VARIANTS = ("none", "batch", "noisy-batch")


def train_small_cnn(model: nn.Module, data: Cifar10Subset, *, lr: float, epochs: int,
                    momentum: float = 0.0, batch_size: int = 128, seed: int = 0,
                    before_step: Callable | None = None, on_step: Callable | None = None,
                    progress: bool = False, desc: str = "cnn") -> dict:
    """Train ``model`` in place with SGD (``momentum``) and cross-entropy on ``data``.

    Each epoch is a fresh permutation of the training subset from a generator seeded by
    ``seed``, in batches of ``batch_size`` (the last incomplete batch dropped). Returns
    ``{"epoch_train_loss": [...], "test_acc": [...], "diverged": bool, "steps": int}`` with
    one entry per finished epoch (test accuracy on ``data.x_test`` in evaluation mode). A
    non-finite loss stops training with ``diverged=True``.
    """
    if epochs < 1 or not lr > 0 or not 1 <= batch_size <= data.x_train.shape[0]:
        raise ValueError(f"need epochs >= 1, lr > 0 and 1 <= batch_size <= "
                         f"{data.x_train.shape[0]}; got {epochs}, {lr}, {batch_size}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    out = {"epoch_train_loss": [], "test_acc": [], "diverged": False, "steps": 0}

    def record_epoch(out):
        out["test_acc"].append(evaluate_accuracy(model, data.x_test, data.y_test))

    return train_epochs(model, data, opt, out, record_epoch, epochs=epochs,
                        batch_size=batch_size, seed=seed, before_step=before_step,
                        on_step=on_step, progress=progress, desc=desc)


def train_epochs(model: nn.Module, data: Cifar10Subset, optimizer: torch.optim.Optimizer,
                 out: dict, record_epoch: Callable, *, epochs: int, batch_size: int,
                 seed: int, scheduler=None, before_step: Callable | None = None,
                 on_step: Callable | None = None, progress: bool = False,
                 desc: str = "cnn") -> dict:
    """The loop both CNN trainers share: ``epochs`` epochs of :func:`bnbook.training.fit`
    over a fresh permutation of the training images (generator seeded by ``seed``, last
    incomplete batch dropped), ``before_step(k)`` before update ``k + 1`` draws its batch and
    ``on_step(k, loss, logits, batch)`` after update ``k``. Per finished epoch it appends the
    running mean of the training loss to ``out["epoch_train_loss"]`` and calls
    ``record_epoch(out)``; it keeps ``out["steps"]`` and sets ``out["diverged"]`` when a loss
    is not finite. Returns ``out``."""
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = data.x_train.shape[0] // batch_size
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, desc=desc, leave=False)
    total = [0.0]

    def batches():
        for batch in epoch_batches(data.x_train, data.y_train, batch_size, gen):
            if before_step is not None:
                before_step(out["steps"])
            yield batch

    def after(step, loss, logits, batch):
        out["steps"] = step
        total[0] += loss.item()
        if bar is not None:
            bar.update(1)
        return on_step(step, loss, logits, batch) if on_step is not None else None

    model.train()
    for _ in range(epochs):
        total[0] = 0.0
        try:
            fit(model, batches(), cross_entropy_loss, optimizer, scheduler=scheduler,
                on_step=after, check_finite=True, start_step=out["steps"])
        except NonFiniteLoss:
            out["diverged"] = True
            break
        out["epoch_train_loss"].append(total[0] / steps_per_epoch)
        record_epoch(out)
    if bar is not None:
        bar.close()
    return out


def relu_inputs(model: nn.Sequential, n: int = 4) -> list[nn.Module]:
    """The first ``n`` ReLU modules of ``model`` (in the narrow CNN: the four after the
    convolutions, whose inputs are the normalised, noisy or raw conv outputs)."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if len(relus) < n:
        raise ValueError(f"model has {len(relus)} ReLUs, fewer than {n}")
    return relus[:n]


def _movements(logged: list, n_layers: int, log_every: int) -> dict:
    """Per conv layer: movement between the logged multiples of ``log_every`` and, averaged
    over them, from each multiple ``s`` to ``s + 1`` (one update)."""
    at = {step: (means, stds) for step, means, stds in logged}
    grid = [s for s in sorted(at) if s % log_every == 0]
    pairs = [s for s in grid if s + 1 in at]

    def series(steps, k):
        return (np.stack([at[s][0][k] for s in steps]), np.stack([at[s][1][k] for s in steps]))

    between, per_update = [], []
    for k in range(n_layers):
        between.append(distribution_movement(*series(grid, k)))
        rows = [distribution_movement(*series([s, s + 1], k)) for s in pairs]
        per_update.append({key: float(np.mean([r[key] for r in rows])) for key in rows[0]})
    return {"movement": between, "movement_per_update": per_update}


def run_noisy_cnn(data: Cifar10Subset, variant: str, *, width: int = 16, lr: float = 0.05,
                  momentum: float = 0.0, epochs: int = 10, batch_size: int = 128,
                  seed: int = 0, shift_max: float = 0.0, scale_max: float = 1.0,
                  log_every: int = 20, monitor_size: int = 256,
                  progress: bool = False) -> dict:
    """Train one network of the noisy-BN experiment and return a JSON-ready record.

    ``variant`` is one of :data:`CNN_VARIANTS`; ``"noisy-batch"`` is BN with
    :class:`bnbook.experiments.why.noise.BatchNormNoise` (``shift_max``, ``scale_max``, noise seed
    ``seed + 1000``) redrawn before every step. At step 0 and after every update ``s`` with
    ``s % log_every`` equal to 0 or 1, the per-channel mean and standard deviation of each
    conv ReLU's input are measured on the first ``monitor_size`` test images in training
    mode (the noise of the step just taken included, running statistics untouched). Returns
    the training history of :func:`train_small_cnn`, ``movement`` (per conv layer, a
    :func:`distribution_movement` dict between the logged multiples of ``log_every``),
    ``movement_per_update`` (per conv layer, from each multiple ``s`` to ``s + 1``, averaged),
    ``mean_abs_channel_mean`` (per logged multiple and layer) and ``seconds``.
    """
    if variant not in CNN_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {CNN_VARIANTS}")
    if log_every < 2:
        raise ValueError(f"log_every must be at least 2, got {log_every}")
    model = small_cifar_cnn(width, "none" if variant == "none" else "batch", seed=seed)
    noise = BatchNormNoise(model, shift_max, scale_max, seed + 1000) \
        if variant == "noisy-batch" else None
    relus, monitor = relu_inputs(model), data.x_test[:monitor_size]
    logged: list[tuple[int, list, list]] = []

    def log(step, *_):
        if step % log_every in (0, 1):
            logged.append((step, *channel_moments(model, monitor, relus)))

    def before(step):
        if noise is not None:
            noise.resample()

    start = time.perf_counter()
    log(0)
    hist = train_small_cnn(model, data, lr=lr, epochs=epochs, momentum=momentum,
                           batch_size=batch_size, seed=seed, before_step=before, on_step=log,
                           progress=progress, desc=f"{variant} seed {seed}")
    seconds = time.perf_counter() - start
    moved = _movements(logged, len(relus), log_every) if not hist["diverged"] else \
        {"movement": None, "movement_per_update": None}
    return {**hist, **moved,
            "mean_abs_channel_mean": [[round(float(np.abs(m).mean()), 4) for m in means]
                                      for s, means, _ in logged if s % log_every == 0],
            "seconds": round(seconds, 2)}

"""Training the narrow CNN with any optimiser and schedule, recording what the noise-free
network does on the training set, and the noisy-BN arms on it.

:func:`bnbook.experiments.why.cnn.train_small_cnn` records the training loss as the running mean over the
epoch's batches, in training mode: with injected noise that is the loss *with the noise on*.
The experiments added for chapter 9 also need the loss of the network itself. This module
trains the same way (the same batches for one seed: :func:`bnbook.training.epoch_batches`
from a generator seeded by ``seed``) and adds, after every epoch:

* ``clean_train_loss`` and ``clean_train_acc`` - cross-entropy and accuracy on the first
  ``clean_train_size`` training images in *evaluation mode* (BN with its running statistics,
  no noise: every noisy wrapper is the identity around ``bn`` in evaluation mode);
* ``test_loss`` and ``test_acc`` - the same on the test subset.

* :func:`eval_loss_accuracy` - loss and accuracy of a model in evaluation mode;
* :func:`train_cnn` - the loop, with an optimiser (and scheduler) the caller builds;
* :func:`run_cnn_noise_arm` - one network of the noise comparison: no BN, BN, or BN with one of
  the noise kinds of :func:`bnbook.experiments.why.noise_kinds.make_noise`.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bnbook.data.subsets import Cifar10Subset
from bnbook.diagnostics import eval_mode
from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.experiments.why.cnn import relu_inputs, train_epochs
from bnbook.experiments.why.noise import channel_moments, distribution_movement

__all__ = ["eval_loss_accuracy", "train_cnn", "run_cnn_noise_arm"]


@torch.no_grad()
def eval_loss_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       batch_size: int = 1000) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``model`` on ``x`` ``(n, ...)``, ``y`` ``(n,)``,
    in evaluation mode (modes restored afterwards). A non-finite loss is returned as it is."""
    total, correct = 0.0, 0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            logits = model(x[i:i + batch_size])
            total += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
            correct += int((logits.argmax(dim=1) == y[i:i + batch_size]).sum())
    return total / x.shape[0], correct / x.shape[0]


def _record_epoch(out: dict, model, data: Cifar10Subset, n_clean: int, optimizer) -> None:
    loss, acc = eval_loss_accuracy(model, data.x_train[:n_clean], data.y_train[:n_clean])
    out["clean_train_loss"].append(loss if math.isfinite(loss) else None)
    out["clean_train_acc"].append(acc)
    loss, acc = eval_loss_accuracy(model, data.x_test, data.y_test)
    out["test_loss"].append(loss if math.isfinite(loss) else None)
    out["test_acc"].append(acc)
    out["lr"].append(optimizer.param_groups[0]["lr"])


def train_cnn(model: nn.Module, data: Cifar10Subset, optimizer: torch.optim.Optimizer, *,
              epochs: int, batch_size: int = 128, seed: int = 0, scheduler=None,
              clean_train_size: int | None = None, before_step: Callable | None = None,
              on_step: Callable | None = None, progress: bool = False,
              desc: str = "cnn") -> dict:
    """Train ``model`` in place with ``optimizer`` (and ``scheduler``, stepped per update) on
    ``data``, ``epochs`` epochs of batches of ``batch_size`` (last incomplete batch dropped).

    ``before_step(k)`` runs before update ``k + 1`` draws its batch, ``on_step(k, loss,
    logits, batch)`` after update ``k`` (as in :func:`bnbook.experiments.why.cnn.train_small_cnn`).
    Returns ``{"epoch_train_loss", "clean_train_loss", "clean_train_acc", "test_loss",
    "test_acc", "lr", "diverged", "steps"}``: per finished epoch the running mean of the
    training-mode loss, the evaluation-mode loss and accuracy on the first
    ``clean_train_size`` training images (default all) and on the test set (module
    docstring), and the learning rate of the first parameter group at the epoch's end. A
    non-finite loss stops training with ``diverged=True``.
    """
    n_train = data.x_train.shape[0]
    if epochs < 1 or not 1 <= batch_size <= n_train:
        raise ValueError(f"need epochs >= 1 and 1 <= batch_size <= {n_train}; got {epochs}, "
                         f"{batch_size}")
    n_clean = n_train if clean_train_size is None else int(clean_train_size)
    if not 1 <= n_clean <= n_train:
        raise ValueError(f"clean_train_size must be in 1..{n_train}, got {clean_train_size}")
    keys = ("epoch_train_loss", "clean_train_loss", "clean_train_acc", "test_loss",
            "test_acc", "lr")
    out: dict = {**{k: [] for k in keys}, "diverged": False, "steps": 0}
    return train_epochs(model, data, optimizer, out,
                        lambda out: _record_epoch(out, model, data, n_clean, optimizer),
                        epochs=epochs, batch_size=batch_size, seed=seed, scheduler=scheduler,
                        before_step=before_step, on_step=on_step, progress=progress,
                        desc=desc)


def run_cnn_noise_arm(data: Cifar10Subset, norm: str, noise_kind: str | None = None,
                      noise_params: dict | None = None, *, width: int = 16, lr: float = 0.05,
                      momentum: float = 0.9, epochs: int = 12, batch_size: int = 128,
                      seed: int = 0, log_every: int = 20, monitor_size: int = 256,
                      clean_train_size: int | None = None, progress: bool = False) -> dict:
    """One network of the noise comparison on the narrow CNN, as a JSON-ready record.

    ``norm`` is ``"none"`` or ``"batch"`` (:func:`bnbook.models.small_cnn.small_cifar_cnn`); with
    ``"batch"``, ``noise_kind`` and ``noise_params`` choose the noise after every BN layer
    (:func:`bnbook.experiments.why.noise_kinds.make_noise`, noise seed ``seed + 1000``, redrawn before
    every step). SGD with ``momentum``. Returns the history of :func:`train_cnn` and, from the
    per-channel moments of every conv ReLU's input on the first ``monitor_size`` test images
    (training mode, the noise of the step just taken included) at step 0 and every
    ``log_every`` steps: ``movement`` (per conv layer, :func:`distribution_movement` between
    those logs; its ``location_range`` says how far a channel's mean wandered over the run),
    ``mean_abs_channel_mean`` (per log and layer) and ``log_steps``; and ``seconds``.
    """
    from bnbook.experiments.why.noise_kinds import make_noise

    if norm not in ("none", "batch") or (norm == "none" and noise_kind is not None):
        raise ValueError(f"norm must be 'none' or 'batch' (noise only with 'batch'), got "
                         f"{norm!r} with noise {noise_kind!r}")
    model = small_cifar_cnn(width, norm, seed=seed)
    n_steps = epochs * (data.x_train.shape[0] // batch_size)
    noise = make_noise(model, noise_kind, noise_params, n_steps, seed + 1000)
    relus, monitor = relu_inputs(model), data.x_test[:monitor_size]
    logged: list = []

    def log(step, *_):
        if step % log_every == 0:
            logged.append((step, *channel_moments(model, monitor, relus)))

    def before(step):
        if noise is not None:
            noise.resample()

    start = time.perf_counter()
    log(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    hist = train_cnn(model, data, opt, epochs=epochs, batch_size=batch_size, seed=seed,
                     clean_train_size=clean_train_size, before_step=before, on_step=log,
                     progress=progress, desc=f"{norm} {noise_kind or ''} seed {seed}")
    movement = None
    if not hist["diverged"] and len(logged) >= 2:
        movement = [distribution_movement(np.stack([m[1][k] for m in logged]),
                                          np.maximum(np.stack([m[2][k] for m in logged]), 1e-12))
                    for k in range(len(relus))]
    return {**hist, "movement": movement, "log_steps": [m[0] for m in logged],
            "mean_abs_channel_mean": [[round(float(abs(c).mean()), 4) for c in m[1]]
                                      for m in logged],
            "seconds": round(time.perf_counter() - start, 2)}

"""The book's one training loop, and the Fashion-MNIST classifier trained with it.

* :func:`fit` - the loop: for every batch, forward (a ``loss_fn``), backward, optimizer step,
  scheduler step, then a per-step callback that records whatever the experiment records.
  Every trainer in the book builds its batches and calls it: :func:`train_classifier`,
  :func:`bnbook.experiments.motivation.covariate_shift.train_flower_classifier` and
  :func:`~bnbook.experiments.motivation.covariate_shift.train_sigmoid_mlp`, :func:`bnbook.verify.compare_training`,
  the CIFAR-10 trainer :func:`bnbook.experiments.cifar.train.train` and chapter 4's small CNN;
* :func:`cross_entropy_loss`, :func:`epoch_batches` - the usual ``loss_fn`` and batches;
* :func:`train_classifier` - plain SGD with heavy-ball momentum and cross-entropy: shuffled
  and seeded (the same seed gives the same batches and dropout masks), divergence detected,
  optionally with every batch norm layer's statistics frozen;
* :func:`evaluate_accuracy` - accuracy in evaluation mode, each module's mode restored.

The CIFAR-10 run (Keras schedule, augmentation, checkpoints) is :mod:`bnbook.experiments.cifar.train`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from bnbook.diagnostics import batchnorm_modules, eval_mode

__all__ = ["fit", "NonFiniteLoss", "cross_entropy_loss", "epoch_batches", "TrainResult",
           "train_classifier", "evaluate_accuracy"]


class NonFiniteLoss(FloatingPointError):
    """Raised by :func:`fit` with ``check_finite=True`` before updating on a non-finite loss;
    ``step`` is the number of updates done before it."""

    def __init__(self, step: int):
        super().__init__(f"loss is not finite at update {step + 1}")
        self.step = step


def fit(model: nn.Module, batches: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
        *, scheduler=None, scaler=None, on_step: Callable | None = None,
        check_finite: bool = False, start_step: int = 0) -> int:
    """Train ``model`` in place on ``batches``, one update per batch; return the update count.

    For each ``batch`` (drawn lazily, so a generator may draw its random numbers as it goes):

    1. ``loss_fn(model, batch)`` returns the scalar loss, or ``(loss, output)``;
    2. with ``check_finite=True`` a non-finite loss raises :class:`NonFiniteLoss` before any
       update (this reads the loss on the host: a synchronisation per step);
    3. ``optimizer.zero_grad(set_to_none=True)``, backward, ``optimizer.step()`` - through
       ``scaler`` (a ``torch.amp.GradScaler``) when one is given;
    4. ``scheduler.step()`` when given: a scheduler here counts updates, not epochs;
    5. ``on_step(step, loss, output, batch)`` with ``step`` the updates done so far
       (``start_step + 1`` after the first); a true return value stops training.

    The model's mode (train/eval, frozen batch norm) is the caller's: ``fit`` does not touch it.
    """
    step = start_step
    for batch in batches:
        out = loss_fn(model, batch)
        loss, output = out if isinstance(out, tuple) else (out, None)
        if check_finite and not torch.isfinite(loss):
            raise NonFiniteLoss(step)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            scheduler.step()
        step += 1
        if on_step is not None and on_step(step, loss, output, batch):
            break
    return step


def cross_entropy_loss(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_fn`` for :func:`fit` on ``batch = (x, y)``: ``(cross-entropy, logits)``."""
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator):
    """One epoch of ``(x[idx], y[idx])`` batches in a fresh order from ``generator``.

    The permutation is drawn when the first batch is asked for; the last incomplete batch is
    dropped (a batch of one cannot be batch-normalised in training mode).
    """
    order = torch.randperm(x.shape[0], generator=generator)
    for b in range(x.shape[0] // batch_size):
        idx = order[b * batch_size:(b + 1) * batch_size]
        yield x[idx], y[idx]


@dataclass
class TrainResult:
    """What :func:`train_classifier` reports.

    ``epoch_loss`` is the mean training loss of each completed epoch (training mode, i.e.
    with batch statistics and dropout); ``diverged`` is true when a loss or a parameter
    became non-finite (training stops there); ``steps`` counts SGD updates; ``seconds`` is
    the wall time.
    """

    epoch_loss: list = field(default_factory=list)
    diverged: bool = False
    steps: int = 0
    seconds: float = 0.0


def _check_xy(x: torch.Tensor, y: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} and its labels must be torch tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} examples but the labels have {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")


def _set_bn_eval(model: nn.Module) -> None:
    for _, bn in batchnorm_modules(model):
        bn.eval()


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3,
                     batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9,
                     weight_decay: float = 0.0, seed: int = 0, freeze_bn_stats: bool = False,
                     progress: bool = False, desc: str = "train") -> TrainResult:
    """Train ``model`` in place with SGD (heavy-ball ``momentum``) and cross-entropy.

    ``x`` is ``(N, ...)`` input, ``y`` ``(N,)`` int64 labels. Every epoch visits a fresh
    permutation drawn from a generator seeded by ``seed`` (which also seeds dropout), in
    batches of ``batch_size``; the last incomplete batch is dropped (a batch of one cannot be
    batch-normalised in training mode). ``freeze_bn_stats=True`` keeps every batch norm layer
    in evaluation mode while the rest trains: the layers normalise with their stored running
    statistics and do not update them (see :func:`bnbook.diagnostics.freeze_batchnorm` for
    ``gamma``/``beta``).
    Only parameters with ``requires_grad`` are optimised. Training stops early, with
    ``diverged=True``, as soon as the loss or a parameter is not finite.
    """
    _check_xy(x, y)
    if batch_size < 1 or batch_size > x.shape[0]:
        raise ValueError(f"batch_size must be in 1..{x.shape[0]} (the number of examples), "
                         f"got {batch_size}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n_batches = x.shape[0] // batch_size
    result = TrainResult()
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * n_batches, desc=desc, leave=False)
    epoch_total = [0.0]

    def record(step, loss, logits, batch):
        result.steps = step
        epoch_total[0] += loss.detach().item()
        if bar is not None:
            bar.update(1)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        if freeze_bn_stats:
            _set_bn_eval(model)
        for _ in range(epochs):
            epoch_total[0] = 0.0
            try:
                fit(model, epoch_batches(x, y, batch_size, gen), cross_entropy_loss, opt,
                    on_step=record, check_finite=True, start_step=result.steps)
            except NonFiniteLoss:
                result.diverged = True
            if result.diverged or not all(torch.isfinite(p).all() for p in params):
                result.diverged = True
                break
            result.epoch_loss.append(epoch_total[0] / n_batches)
    if bar is not None:
        bar.close()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      batch_size: int = 1000) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``, in evaluation mode.

    The model's modes are restored afterwards (see :func:`bnbook.diagnostics.eval_mode`). A
    model whose outputs are not finite scores as wrong on those examples.
    """
    _check_xy(x, y)
    correct = 0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            logits = model(x[i:i + batch_size])
            ok = torch.isfinite(logits).all(dim=1)
            correct += int(((logits.argmax(dim=1) == y[i:i + batch_size]) & ok).sum())
    return correct / x.shape[0]


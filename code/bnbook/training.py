"""The training loop of the small Fashion-MNIST experiments (chapters 4 and 6).

* :func:`train_classifier` - plain SGD with heavy-ball momentum and cross-entropy: shuffled
  and seeded (the same seed gives the same batches and dropout masks), divergence detected,
  optionally with every batch norm layer's statistics frozen;
* :func:`evaluate_accuracy` - accuracy in evaluation mode, each module's mode restored.

The CIFAR-10 network has its own loop, with the Keras schedule, in :mod:`bnbook.train`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from bnbook.diagnostics import batchnorm_modules, eval_mode

__all__ = ["TrainResult", "train_classifier", "evaluate_accuracy"]


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
    n = x.shape[0]
    n_batches = n // batch_size
    result = TrainResult()
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * n_batches, desc=desc, leave=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        if freeze_bn_stats:
            _set_bn_eval(model)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                if not torch.isfinite(loss):
                    result.diverged = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                result.steps += 1
                total += loss.detach().item()
                if bar is not None:
                    bar.update(1)
            if result.diverged or not all(torch.isfinite(p).all() for p in params):
                result.diverged = True
                break
            result.epoch_loss.append(total / n_batches)
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


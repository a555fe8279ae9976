"""Small, seeded training experiments on Fashion-MNIST: batch norm in practice.

Everything here is sized for a laptop CPU: a multilayer perceptron on a subset of
Fashion-MNIST, a few epochs, seconds per run. The chapter *Batch norm in practice* uses it
to test, one by one, the practical advice that circulates about batch norm:

* :func:`make_mlp` - an MLP with an optional normalisation layer (batch, group, layer norm)
  placed before or after each activation (ReLU, sigmoid, tanh), optional dropout, optional
  bias before the norm, a scale on the initial weights;
* :func:`train_classifier` / :func:`evaluate_accuracy` - a plain SGD loop (shuffled,
  seeded, divergence detected) and accuracy in evaluation mode;
* :func:`batch_statistics_spread` - how noisy the batch mean and variance are for a batch of
  ``m`` examples, with the closed forms beside the measurement;
* :func:`batchnorm_input_shift` - the "variance shift" between the statistics a BN layer
  stored in training and the statistics of its input at test time (dropout before BN);
* :func:`recalibrate_batchnorm` / :func:`freeze_batchnorm` - re-estimate the population
  statistics on given data; keep them (and ``gamma``, ``beta``) fixed while fine-tuning;
* :func:`check_batchnorm_health` - a debugging report: NaN or degenerate running statistics,
  layers left in training mode, statistics never updated, a Keras-style momentum, a bias
  before BN, BN on the logits, an ``eps`` that half precision cannot hold, statistics that do
  not match the data.

Experiments that take more than a few seconds run from the command line and write JSON
result files with provenance under ``data/results/practice/``::

    python -m bnbook.experiments all            # every experiment, full settings
    python -m bnbook.experiments batch-size     # one of them
    python -m bnbook.experiments all --quick    # the small version, in seconds

Runs are reproducible from their seed (same machine, same thread count), show progress
with tqdm, and a partial result is saved after every run, so an interrupted command resumes
where it stopped.

Conventions: images are pixels in ``[0, 1]`` of shape ``(N, 28, 28)`` (or ``(N, 784)``);
the MLP standardises them itself with fixed constants (the training subset's pixel mean and
standard deviation), so a shift of the input distribution reaches the network unchanged.
PyTorch's batch norm conventions hold throughout: ``momentum`` is the weight of the new
batch, ``running_var`` stores the unbiased batch variance, the batch itself is normalised
with the biased one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "NORMS",
    "PLACEMENTS",
    "FashionMNISTSubset",
    "prepare_fashion_mnist",
    "fashion_mnist_checksums",
    "brightness_shift",
    "Standardize",
    "make_mlp",
    "batchnorm_modules",
    "TrainResult",
    "train_classifier",
    "evaluate_accuracy",
    "eval_mode",
    "batch_statistics_spread",
    "batchnorm_input_shift",
    "recalibrate_batchnorm",
    "freeze_batchnorm",
    "HealthIssue",
    "BatchNormHealthReport",
    "check_batchnorm_health",
    "run_placement",
    "run_batch_size",
    "run_lr_tolerance",
    "run_dropout",
    "run_finetune",
    "run_depth_init",
    "FINETUNE_VARIANTS",
    "EXPERIMENTS",
    "main",
]

NORMS = ("none", "batch", "group", "layer")
PLACEMENTS = ("before", "after")
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

class FashionMNISTSubset(NamedTuple):
    """A seeded subset of Fashion-MNIST as float32 tensors.

    ``x_train`` ``(n_train, 28, 28)`` and ``x_test`` ``(n_test, 28, 28)`` hold pixels in
    ``[0, 1]``; ``y_*`` are int64 labels in ``0..9``; ``pixel_mean`` and ``pixel_std`` are the
    training subset's pixel statistics (scalars), which :func:`make_mlp` uses to standardise.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    pixel_mean: float
    pixel_std: float


def fashion_mnist_checksums(root=None) -> dict:
    """SHA-256 of the decompressed IDX bytes of each Fashion-MNIST file the loader reads,
    keyed by ``.gz`` file name: the data's own checksum, the same for the published files
    and Debian's re-made ones (:func:`bnbook.data.fashion_mnist_info` also gives the
    variant, ``"canonical-gz"`` or ``"repacked-gz"``)."""
    from bnbook.data import fashion_mnist_info

    return fashion_mnist_info(root)["idx_sha256"]


def prepare_fashion_mnist(n_train: int = 10000, n_test: int = 2000, seed: int = 0,
                          root=None) -> FashionMNISTSubset:
    """Load Fashion-MNIST (:func:`bnbook.data.load_fashion_mnist`) and draw a seeded subset.

    The ``n_train`` training and ``n_test`` test examples are drawn without replacement from
    the official training and test splits with a NumPy generator seeded by ``seed``.
    """
    from bnbook.data import load_fashion_mnist

    if not (1 <= n_train <= 60000) or not (1 <= n_test <= 10000):
        raise ValueError(f"n_train must be in 1..60000 and n_test in 1..10000, "
                         f"got n_train={n_train}, n_test={n_test}")
    x_train, y_train, x_test, y_test = load_fashion_mnist(root)
    rng = np.random.default_rng(seed)
    i_train = np.sort(rng.choice(len(x_train), size=n_train, replace=False))
    i_test = np.sort(rng.choice(len(x_test), size=n_test, replace=False))
    xtr = torch.from_numpy(x_train[i_train].astype(np.float32) / 255.0)
    xte = torch.from_numpy(x_test[i_test].astype(np.float32) / 255.0)
    return FashionMNISTSubset(xtr, torch.from_numpy(y_train[i_train]),
                              xte, torch.from_numpy(y_test[i_test]),
                              float(xtr.mean()), float(xtr.std()))


def brightness_shift(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Pixels ``x`` in ``[0, 1]`` made brighter by ``delta`` (clipped to ``[0, 1]``).

    A simple covariate shift: the labels mean the same, the input distribution moves (the
    black background of Fashion-MNIST becomes grey).
    """
    if not -1.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [-1, 1] (a change of pixel value), got {delta}")
    return (x + delta).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------

class Standardize(nn.Module):
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
    """A multilayer perceptron ``Standardize -> [hidden block] x len(hidden) -> Linear``.

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
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         f"{tuple(_ACTIVATIONS)}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    if bias is None:
        bias = norm == "none" or placement == "after"
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = [Standardize(pixel_mean, pixel_std)]
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
            block = [_ACTIVATIONS[activation]()]
            if norm != "none":
                block.insert(0 if placement == "before" else 1, _norm_layer(norm, width, groups))
            layers.extend(block)
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        return nn.Sequential(*layers)


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` for every batch norm layer of ``model``, in order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BN_TYPES)]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put every module of ``model`` in evaluation mode, restoring each one's own mode after.

    ``model.train()`` / ``model.eval()`` set all sub-modules at once; this context manager
    remembers them one by one, so a model with deliberately frozen BN layers stays that way.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.train(training)


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------

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
    statistics and do not update them (see :func:`freeze_batchnorm` for ``gamma``/``beta``).
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

    The model's modes are restored afterwards (see :func:`eval_mode`). A model whose outputs
    are not finite scores as wrong on those examples.
    """
    _check_xy(x, y)
    correct = 0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            logits = model(x[i:i + batch_size])
            ok = torch.isfinite(logits).all(dim=1)
            correct += int(((logits.argmax(dim=1) == y[i:i + batch_size]) & ok).sum())
    return correct / x.shape[0]


# --------------------------------------------------------------------------------------
# Batch statistics noise
# --------------------------------------------------------------------------------------

@torch.no_grad()
def batch_statistics_spread(features: torch.Tensor, batch_sizes: Sequence[int],
                            n_batches: int = 2000, seed: int = 0) -> list[dict]:
    """How much the batch mean and biased batch variance vary from batch to batch.

    ``features`` is ``(N, D)``: ``N`` examples of ``D`` features (e.g. the pre-activations a
    BN layer sees). For each ``m`` in ``batch_sizes`` we draw ``n_batches`` batches of ``m``
    rows *with replacement* (so the rows are i.i.d. draws from the empirical distribution and
    the closed forms below are exact), and compute per feature the batch mean ``mu_B`` and the
    biased batch variance ``var_B`` (divide by ``m``, as BN does in training).

    With the population (all ``N`` rows) mean ``mu``, variance ``sigma2`` and fourth central
    moment ``mu4`` of a feature, the closed forms are::

        std(mu_B)  = sigma / sqrt(m)
        E[var_B]   = (m - 1) / m * sigma2
        Var(var_B) = ((m - 1) / m)**2 * (mu4 / m - sigma2**2 * (m - 3) / (m * (m - 1)))

    Each returned row (one per ``m``) holds these quantities measured and predicted,
    relative to ``sigma`` (for the mean) or ``sigma2`` (for the variance), averaged over the
    features with ``sigma2 > 0``: ``mean_std`` / ``mean_std_closed``, ``var_mean`` /
    ``var_mean_closed``, ``var_std`` / ``var_std_closed``.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if any(int(m) < 2 for m in batch_sizes):
        raise ValueError(f"batch sizes must be at least 2, got {list(batch_sizes)}")
    if n_batches < 2:
        raise ValueError(f"n_batches must be at least 2, got {n_batches}")
    f = features.to(torch.float64)
    mu = f.mean(0)
    sigma2 = f.var(0, unbiased=False)
    keep = sigma2 > 1e-12 * sigma2.max().clamp_min(1e-300)
    if not keep.any():
        raise ValueError("every feature is constant; nothing to measure")
    f, mu, sigma2 = f[:, keep], mu[keep], sigma2[keep]
    mu4 = ((f - mu) ** 4).mean(0)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for m in batch_sizes:
        m = int(m)
        means, vars_ = [], []
        chunk = max(1, min(n_batches, 2_000_000 // (m * f.shape[1]) or 1))
        done = 0
        while done < n_batches:
            k = min(chunk, n_batches - done)
            idx = torch.randint(f.shape[0], (k, m), generator=gen)
            batch = f[idx]  # (k, m, D)
            means.append(batch.mean(1))
            vars_.append(batch.var(1, unbiased=False))
            done += k
        mean_b = torch.cat(means)
        var_b = torch.cat(vars_)
        sigma = sigma2.sqrt()
        var_var_closed = ((m - 1) / m) ** 2 * (mu4 / m - sigma2 ** 2 * (m - 3) / (m * (m - 1)))
        rows.append({
            "m": m,
            "mean_std": float((mean_b.std(0) / sigma).mean()),
            "mean_std_closed": 1.0 / math.sqrt(m),
            "var_mean": float((var_b.mean(0) / sigma2).mean()),
            "var_mean_closed": (m - 1) / m,
            "var_std": float((var_b.std(0) / sigma2).mean()),
            "var_std_closed": float((var_var_closed.sqrt() / sigma2).mean()),
        })
    return rows


# --------------------------------------------------------------------------------------
# Statistics at test time: variance shift, recalibration, freezing
# --------------------------------------------------------------------------------------

@torch.no_grad()
def batchnorm_input_shift(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> list[dict]:
    """Compare each BN layer's stored statistics with the statistics of its actual input.

    Runs ``model`` on ``x`` in evaluation mode (dropout off, BN layers using their running
    statistics: what happens at test time), records the input of every BN layer, and returns
    one row per BN layer with, per channel, ``var_ratio = var_test / running_var`` (``var_test``
    the unbiased variance of the layer's input over ``x``) and ``mean_shift = |mean_test -
    running_mean| / sqrt(running_var + eps)``, summarised as ``var_ratio_median``,
    ``var_ratio_q10``, ``var_ratio_q90`` and ``mean_shift_median``. A ratio near 1 and a small
    shift mean the stored statistics describe this data; a ratio below 1 after training with
    dropout before the layer is the variance shift of Li et al. (2019).
    """
    bns = batchnorm_modules(model)
    if not bns:
        raise ValueError("model has no batch norm layers")
    sums = {name: None for name, _ in bns}
    hooks = []

    def make_hook(name):
        def hook(module, inputs):
            z = inputs[0].transpose(0, 1).flatten(1).to(torch.float64)  # (C, m)
            s = torch.stack([z.sum(1), (z * z).sum(1), torch.full_like(z[:, 0], z.shape[1])])
            sums[name] = s if sums[name] is None else sums[name] + s
        return hook

    for name, bn in bns:
        hooks.append(bn.register_forward_pre_hook(make_hook(name)))
    try:
        with eval_mode(model):
            for i in range(0, x.shape[0], batch_size):
                model(x[i:i + batch_size])
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for name, bn in bns:
        s1, s2, n = sums[name]
        mean = s1 / n
        var = (s2 - n * mean * mean) / (n - 1)
        rv = bn.running_var.to(torch.float64)
        ratio = var / rv
        shift = (mean - bn.running_mean.to(torch.float64)).abs() / (rv + bn.eps).sqrt()
        q = torch.quantile(ratio, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        rows.append({"layer": name, "var_ratio_q10": float(q[0]), "var_ratio_median": float(q[1]),
                     "var_ratio_q90": float(q[2]), "mean_shift_median": float(shift.median())})
    return rows


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """Re-estimate every BN layer's running statistics on ``x``, changing nothing else.

    Resets the running statistics, then runs ``x`` through the model in batches with the BN
    layers in training mode and ``momentum=None`` (PyTorch's cumulative average: after ``k``
    batches the running statistics are the plain average of the ``k`` batch statistics) and
    every other module (dropout!) in evaluation mode. Restores momenta and modes; returns
    ``model``. This is the remedy for dropout's variance shift (Li et al., 2019) and, run on
    data from a new domain, the "adaptive BN" of domain adaptation. Batches smaller than 2
    are skipped.
    """
    bns = batchnorm_modules(model)
    if not bns:
        raise ValueError("model has no batch norm layers")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 examples to estimate statistics, got {x.shape[0]}")
    momenta = [bn.momentum for _, bn in bns]
    with eval_mode(model):
        for _, bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        try:
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size]
                if xb.shape[0] >= 2:
                    model(xb)
        finally:
            for (_, bn), mom in zip(bns, momenta):
                bn.momentum = mom
    return model


def freeze_batchnorm(model: nn.Module, affine: bool = True) -> nn.Module:
    """Freeze every BN layer of ``model`` for fine-tuning: evaluation mode (normalise with, and
    stop updating, the running statistics) and, if ``affine``, ``requires_grad=False`` on
    ``gamma`` (``weight``) and ``beta`` (``bias``). Returns ``model``.

    Caution: a later ``model.train()`` puts the layers back in training mode; pass
    ``freeze_bn_stats=True`` to :func:`train_classifier`, or call this again after it.
    """
    bns = batchnorm_modules(model)
    if not bns:
        raise ValueError("model has no batch norm layers")
    for _, bn in bns:
        bn.eval()
        if affine and bn.affine:
            bn.weight.requires_grad_(False)
            bn.bias.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------
# Debugging: a health report
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HealthIssue:
    """One finding of :func:`check_batchnorm_health`.

    ``severity`` is ``"error"`` (the model will compute wrong numbers), ``"warning"``
    (likely a mistake) or ``"info"`` (legal but wasteful or worth knowing).
    """

    module: str
    check: str
    severity: str
    message: str


@dataclass
class BatchNormHealthReport:
    """The findings of :func:`check_batchnorm_health`; ``ok`` when no error or warning."""

    n_batchnorm: int
    issues: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(i.severity in ("error", "warning") for i in self.issues)

    @property
    def checks(self) -> set:
        """The names of the checks that found something."""
        return {i.check for i in self.issues}

    def __str__(self) -> str:
        head = f"{self.n_batchnorm} batch norm layer(s): " + (
            "no problems found" if not self.issues else f"{len(self.issues)} finding(s)")
        lines = [head] + [f"  [{i.severity}] {i.module or '<model>'}: {i.check}: {i.message}"
                          for i in self.issues]
        return "\n".join(lines)


_HALF_TYPES = (torch.float16, torch.bfloat16)


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


def check_batchnorm_health(model: nn.Module, x: torch.Tensor | None = None, *,
                           expect_eval: bool = True, batch_size: int = 1000,
                           var_floor: float | None = None, shift_threshold: float = 0.5,
                           ratio_bounds: tuple[float, float] = (0.5, 2.0)) -> BatchNormHealthReport:
    """Look for the usual batch norm mistakes in ``model`` (and, given ``x``, in its data).

    Checks, by name (``severity``):

    * ``nonfinite-running-stats`` (error): NaN or inf in ``running_mean``/``running_var``;
    * ``nonfinite-affine`` (error): NaN or inf in ``gamma``/``beta``;
    * ``degenerate-variance`` (warning): channels whose ``running_var`` is below
      ``var_floor`` (default: the layer's ``eps``), i.e. constant (dead) inputs;
    * ``stats-never-updated`` (error if ``expect_eval``): running statistics still at their
      initial zeros and ones, ``num_batches_tracked == 0``;
    * ``no-running-stats`` (warning): ``track_running_stats=False``, so evaluation uses batch
      statistics and a prediction depends on the rest of its batch;
    * ``train-mode`` (error if ``expect_eval``): a BN layer left in training mode;
    * ``momentum-convention`` (warning): ``momentum > 0.5``, almost always a Keras/TensorFlow
      momentum (weight of the *old* value, e.g. 0.99) pasted into PyTorch (weight of the new);
    * ``half-precision-eps`` (warning): parameters in float16/bfloat16 and an ``eps`` that the
      dtype rounds to zero or stores as a subnormal;
    * ``bias-before-bn`` (info): a linear/convolution layer with a bias immediately before a BN
      layer (the BN subtracts it again; it is a wasted parameter);
    * ``bn-on-output`` (warning): a BN layer is the model's last layer, normalising the logits;
    * ``per-replica-stats`` (info): a ``DataParallel``/``DistributedDataParallel`` model whose
      BN layers are not ``SyncBatchNorm`` (each replica normalises with its own sub-batch);
    * with ``x`` (the model's input, run in evaluation mode in batches of ``batch_size``):
      ``nonfinite-input`` (error) when a BN layer receives NaN/inf, and ``stats-mismatch``
      (warning) when a layer's median standardised mean shift exceeds ``shift_threshold`` or its
      median variance ratio (data over running) leaves ``ratio_bounds`` (stale statistics,
      shifted data, dropout's variance shift; see :func:`batchnorm_input_shift`).

    The model is not changed (modes are restored). Returns a :class:`BatchNormHealthReport`.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if x is not None and (not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1):
        raise ValueError("x must be a tensor of shape (N, ...) with N >= 1")
    lo, hi = ratio_bounds
    if not 0 < lo < 1 < hi:
        raise ValueError(f"ratio_bounds must satisfy 0 < low < 1 < high, got {ratio_bounds}")
    bns = batchnorm_modules(model)
    report = BatchNormHealthReport(n_batchnorm=len(bns))

    def add(name, check, severity, message):
        report.issues.append(HealthIssue(name, check, severity, message))

    mode_sev = "error" if expect_eval else "info"

    for name, bn in bns:
        tracked = bn.track_running_stats and bn.running_mean is not None
        if tracked:
            bad = (~torch.isfinite(bn.running_mean)).sum() + (~torch.isfinite(bn.running_var)).sum()
            if bad:
                add(name, "nonfinite-running-stats", "error",
                    f"{int(bad)} running statistic value(s) are NaN or inf")
            floor = bn.eps if var_floor is None else var_floor
            finite_var = torch.where(torch.isfinite(bn.running_var), bn.running_var,
                                     torch.ones_like(bn.running_var))
            n_low = int((finite_var < floor).sum())
            if n_low:
                add(name, "degenerate-variance", "warning",
                    f"{n_low} of {bn.num_features} channel(s) have running_var < {floor:.1e} "
                    f"(constant or dead inputs)")
            fresh = (int(bn.num_batches_tracked) == 0 and bool((bn.running_mean == 0).all())
                     and bool((bn.running_var == 1).all()))
            if fresh:
                add(name, "stats-never-updated", mode_sev,
                    "running statistics are still the initial zeros and ones "
                    "(the layer never saw a training batch)")
        else:
            add(name, "no-running-stats", "warning",
                "track_running_stats=False: evaluation normalises with batch statistics, so a "
                "prediction depends on the other examples in its batch")
        if bn.affine:
            bad = (~torch.isfinite(bn.weight)).sum() + (~torch.isfinite(bn.bias)).sum()
            if bad:
                add(name, "nonfinite-affine", "error", f"{int(bad)} gamma/beta value(s) are NaN or inf")
        if bn.training and expect_eval:
            add(name, "train-mode", mode_sev,
                "layer is in training mode: it normalises with batch statistics and updates "
                "its running statistics (call model.eval() before evaluating)")
        if bn.momentum is not None and bn.momentum > 0.5:
            add(name, "momentum-convention", "warning",
                f"momentum={bn.momentum}: PyTorch's momentum is the weight of the NEW batch; "
                f"a Keras/TensorFlow momentum of {bn.momentum} corresponds to "
                f"{1 - bn.momentum:.3g} here")
        dtype = bn.weight.dtype if bn.affine else (
            bn.running_var.dtype if tracked else torch.float32)
        if dtype in _HALF_TYPES:
            fi = torch.finfo(dtype)
            stored = torch.tensor(bn.eps, dtype=dtype).item()
            if stored == 0.0 or abs(stored) < fi.tiny:
                add(name, "half-precision-eps", "warning",
                    f"eps={bn.eps:g} is {'zero' if stored == 0 else 'subnormal'} in {dtype} "
                    f"(smallest normal {fi.tiny:.2e}); keep BN in float32 (autocast does) or "
                    f"raise eps")

    leaves = _leaf_modules(model)
    for (prev_name, prev), (name, mod) in zip(leaves, leaves[1:]):
        if isinstance(mod, _BN_TYPES) and isinstance(prev, (nn.Linear, nn.Conv1d, nn.Conv2d,
                                                            nn.Conv3d)) \
                and prev.bias is not None:
            add(prev_name, "bias-before-bn", "info",
                f"bias of {type(prev).__name__} is cancelled by the batch norm {name} that "
                f"follows (its mean subtraction removes it; beta plays its role)")
    if leaves and isinstance(leaves[-1][1], _BN_TYPES):
        add(leaves[-1][0], "bn-on-output", "warning",
            "the last layer is a batch norm: the logits are normalised per class over the "
            "batch before the softmax")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        plain = [n for n, m in bns if not isinstance(m, nn.SyncBatchNorm)]
        if plain:
            add("", "per-replica-stats", "info",
                f"{len(plain)} BN layer(s) under data parallelism compute statistics per "
                f"replica; nn.SyncBatchNorm.convert_sync_batchnorm(model) makes them global")

    if x is not None and bns:
        nonfinite = {}
        hooks = []

        def make_hook(name):
            def hook(module, inputs):
                if not torch.isfinite(inputs[0]).all():
                    nonfinite[name] = True
            return hook

        for name, bn in bns:
            hooks.append(bn.register_forward_pre_hook(make_hook(name)))
        try:
            with torch.no_grad(), eval_mode(model):
                for i in range(0, x.shape[0], batch_size):
                    model(x[i:i + batch_size])
        finally:
            for h in hooks:
                h.remove()
        for name in nonfinite:
            add(name, "nonfinite-input", "error", "the layer receives NaN or inf values")
        tracked = [(n, m) for n, m in bns if m.track_running_stats and m.running_var is not None
                   and n not in nonfinite and torch.isfinite(m.running_var).all()
                   and torch.isfinite(m.running_mean).all()]
        if tracked and x.shape[0] >= 2:
            rows = {r["layer"]: r for r in batchnorm_input_shift(model, x, batch_size)}
            for name, _ in tracked:
                r = rows[name]
                ratio, shift = r["var_ratio_median"], r["mean_shift_median"]
                if not (lo <= ratio <= hi) or shift > shift_threshold:
                    add(name, "stats-mismatch", "warning",
                        f"running statistics do not describe this data: median variance "
                        f"ratio {ratio:.3g} (data/running), median mean shift {shift:.3g} "
                        f"running std")
    return report


# --------------------------------------------------------------------------------------
# Experiments (functions return plain dicts; the command line writes them with provenance)
# --------------------------------------------------------------------------------------

def _mlp_for(data: FashionMNISTSubset, **kwargs) -> nn.Sequential:
    return make_mlp(pixel_mean=data.pixel_mean, pixel_std=data.pixel_std, **kwargs)


def _run_one(data: FashionMNISTSubset, model_kw: dict, train_kw: dict, seed: int) -> dict:
    model = _mlp_for(data, seed=seed, **model_kw)
    res = train_classifier(model, data.x_train, data.y_train, seed=seed, **train_kw)
    acc = evaluate_accuracy(model, data.x_test, data.y_test) if not res.diverged else None
    return {"test_acc": acc, "diverged": res.diverged,
            "final_train_loss": res.epoch_loss[-1] if res.epoch_loss else None,
            "steps": res.steps, "seconds": round(res.seconds, 3)}


def _iterate(runs: list[tuple[str, Callable[[], dict]]], done: dict, progress: bool, desc: str,
             on_result=None) -> dict:
    """Run ``runs`` (key, thunk) not yet in ``done``; call ``on_result(done)`` after each."""
    todo = [(k, f) for k, f in runs if k not in done]
    it = todo
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc=desc)
    for key, thunk in it:
        done[key] = thunk()
        if on_result is not None:
            on_result(done)
    return {k: done[k] for k, _ in runs}


def run_placement(data: FashionMNISTSubset, seeds=(0, 1, 2), epochs: int = 3,
                  batch_size: int = 64, lr: float = 0.05, hidden=(256, 256),
                  progress: bool = False, done: dict | None = None, on_result=None) -> dict:
    """BN before vs after the ReLU vs no BN: test accuracy per seed (same seed, same data
    order and same initial weights of the linear layers for the three variants).

    Returns ``{"settings": ..., "runs": {"<variant>/seed<s>": run dict}}`` with variants
    ``bn-before``, ``bn-after``, ``no-bn``.
    """
    variants = {"bn-before": dict(norm="batch", placement="before"),
                "bn-after": dict(norm="batch", placement="after"),
                "no-bn": dict(norm="none")}
    train_kw = dict(epochs=epochs, batch_size=batch_size, lr=lr)
    runs = [(f"{v}/seed{s}", (lambda kw=kw, s=s: _run_one(data, dict(hidden=hidden, **kw),
                                                            train_kw, s)))
            for s in seeds for v, kw in variants.items()]
    out = _iterate(runs, {} if done is None else done, progress, "placement", on_result)
    return {"settings": dict(seeds=list(seeds), hidden=list(hidden), **train_kw),
            "runs": out}


def run_batch_size(data: FashionMNISTSubset, batch_sizes=(2, 4, 8, 32, 128), seeds=(0, 1),
                   norms=("batch", "none", "group"), epochs: int = 2, lr_at_128: float = 0.1,
                   hidden=(256, 256), progress: bool = False, done: dict | None = None,
                   on_result=None) -> dict:
    """Test accuracy of the MLP with each ``norm`` trained with each batch size ``m``.

    Every run sees the same number of examples (``epochs`` passes). The learning rate follows
    the linear scaling rule, ``lr = lr_at_128 * m / 128`` (Goyal et al., 2017), which keeps
    the distance SGD travels per epoch roughly independent of ``m``; the ``"none"`` column is
    the control that shows what the batch size alone does under this rule, the ``"group"``
    column a batch-independent normalisation. For BN runs we also record the accuracy with
    statistics re-estimated on the training set (:func:`recalibrate_batchnorm`), separating
    bad running averages from a badly trained network.
    """
    train_kw = dict(epochs=epochs)

    def one(norm, m, s):
        model = _mlp_for(data, hidden=hidden, norm=norm, seed=s)
        res = train_classifier(model, data.x_train, data.y_train, batch_size=m, seed=s,
                               lr=lr_at_128 * m / 128, **train_kw)
        row = {"test_acc": None, "diverged": res.diverged, "steps": res.steps,
               "seconds": round(res.seconds, 3)}
        if not res.diverged:
            row["test_acc"] = evaluate_accuracy(model, data.x_test, data.y_test)
            if norm == "batch":
                recalibrate_batchnorm(model, data.x_train)
                row["test_acc_recalibrated"] = evaluate_accuracy(model, data.x_test, data.y_test)
        return row

    runs = [(f"{norm}/m{m}/seed{s}", (lambda norm=norm, m=m, s=s: one(norm, m, s)))
            for s in seeds for m in batch_sizes for norm in norms]
    out = _iterate(runs, {} if done is None else done, progress, "batch size", on_result)
    return {"settings": dict(batch_sizes=list(batch_sizes), seeds=list(seeds), norms=list(norms),
                             hidden=list(hidden), lr_at_128=lr_at_128, **train_kw),
            "runs": out}


def run_lr_tolerance(data: FashionMNISTSubset, lrs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
                     seeds=(0, 1), epochs: int = 2, batch_size: int = 64,
                     hidden=(256, 256, 256), progress: bool = False, done: dict | None = None,
                     on_result=None) -> dict:
    """The same MLP with and without BN trained with SGD (momentum 0.9) at each learning rate.

    Returns runs keyed ``"<bn|no-bn>/lr<lr>/seed<s>"``; a run that produced a non-finite
    loss is marked ``diverged`` (accuracy ``None``).
    """
    train_kw = dict(epochs=epochs, batch_size=batch_size)
    variants = {"bn": dict(norm="batch"), "no-bn": dict(norm="none")}
    runs = [(f"{v}/lr{lr:g}/seed{s}",
             (lambda kw=kw, lr=lr, s=s: _run_one(data, dict(hidden=hidden, **kw),
                                                 dict(lr=lr, **train_kw), s)))
            for s in seeds for lr in lrs for v, kw in variants.items()]
    out = _iterate(runs, {} if done is None else done, progress, "learning rate", on_result)
    return {"settings": dict(lrs=list(lrs), seeds=list(seeds), hidden=list(hidden), **train_kw),
            "runs": out}


def run_dropout(data: FashionMNISTSubset, rates=(0.0, 0.5), seeds=(0, 1), epochs: int = 3,
                batch_size: int = 64, lr: float = 0.05, hidden=(256, 256),
                progress: bool = False, done: dict | None = None, on_result=None) -> dict:
    """BN nets trained with dropout ``p`` in ``rates`` (dropout after each ReLU, so it feeds
    the next BN): test accuracy as trained, the variance ratio of the second BN layer's test
    input to its running variance (:func:`batchnorm_input_shift`), and accuracy after
    re-estimating the statistics with dropout off (:func:`recalibrate_batchnorm`)."""
    train_kw = dict(epochs=epochs, batch_size=batch_size, lr=lr)

    def one(p, s):
        model = _mlp_for(data, hidden=hidden, norm="batch", dropout=p, seed=s)
        res = train_classifier(model, data.x_train, data.y_train, seed=s, **train_kw)
        if res.diverged:
            return {"diverged": True}
        shift = batchnorm_input_shift(model, data.x_train)
        acc = evaluate_accuracy(model, data.x_test, data.y_test)
        recalibrate_batchnorm(model, data.x_train)
        shift_after = batchnorm_input_shift(model, data.x_train)
        return {"diverged": False, "test_acc": acc,
                "test_acc_recalibrated": evaluate_accuracy(model, data.x_test, data.y_test),
                "shift": shift, "shift_recalibrated": shift_after,
                "seconds": round(res.seconds, 3)}

    runs = [(f"p{p:g}/seed{s}", (lambda p=p, s=s: one(p, s))) for s in seeds for p in rates]
    out = _iterate(runs, {} if done is None else done, progress, "dropout", on_result)
    return {"settings": dict(rates=list(rates), seeds=list(seeds), hidden=list(hidden),
                             **train_kw), "runs": out}


def run_depth_init(data: FashionMNISTSubset, depths=(2, 8), activations=("relu", "sigmoid"),
                   init_scales=(0.25, 1.0, 4.0), seeds=(0, 1), epochs: int = 2,
                   batch_size: int = 64, lr: float = 0.05, width: int = 128,
                   progress: bool = False, done: dict | None = None, on_result=None) -> dict:
    """Claims about depth, saturating activations and initialisation, with and without BN.

    For each number of hidden layers in ``depths`` (all of width ``width``), each
    ``activation`` and each ``init_scale`` (a multiplier on PyTorch's default initial
    weights), train the MLP with and without BN (before the activation) with the same SGD
    settings. Runs are keyed ``"<bn|no-bn>/<activation>/depth<d>/scale<s>/seed<k>"``.
    """
    train_kw = dict(epochs=epochs, batch_size=batch_size, lr=lr)
    variants = {"bn": "batch", "no-bn": "none"}
    runs = [(f"{v}/{act}/depth{d}/scale{sc:g}/seed{s}",
             (lambda norm=norm, act=act, d=d, sc=sc, s=s: _run_one(
                 data, dict(hidden=(width,) * d, norm=norm, activation=act, init_scale=sc),
                 train_kw, s)))
            for s in seeds for d in depths for act in activations for sc in init_scales
            for v, norm in variants.items()]
    out = _iterate(runs, {} if done is None else done, progress, "depth/init", on_result)
    return {"settings": dict(depths=list(depths), activations=list(activations),
                             init_scales=list(init_scales), seeds=list(seeds), width=width,
                             **train_kw), "runs": out}


FINETUNE_VARIANTS = ("pretrained", "recalibrate-only", "finetune-update-stats",
                     "finetune-frozen-stats", "finetune-frozen-bn")


def run_finetune(data: FashionMNISTSubset, delta: float = 0.4, n_new: int = 500,
                 seeds=(0, 1), epochs: int = 3, finetune_epochs: int = 5,
                 batch_size: int = 64, lr: float = 0.05, finetune_lr: float = 0.01,
                 hidden=(256, 256), progress: bool = False, done: dict | None = None,
                 on_result=None) -> dict:
    """Pre-train a BN MLP on ``data``, then adapt it to brightness-shifted images.

    The new domain is ``brightness_shift(x, delta)``; the fine-tuning set is ``n_new``
    shifted training images (taken from the end of the training subset). Variants:

    * ``pretrained``: no adaptation;
    * ``recalibrate-only``: no gradient step, BN statistics re-estimated on the new images;
    * ``finetune-update-stats``: SGD on the new images, BN in training mode (statistics move);
    * ``finetune-frozen-stats``: SGD with BN in evaluation mode (stored statistics kept),
      ``gamma``/``beta`` still trained;
    * ``finetune-frozen-bn``: as above, and ``gamma``/``beta`` frozen too.

    Each run reports accuracy on the old (original) and new (shifted) test images.
    """
    if not 0 < n_new < data.x_train.shape[0]:
        raise ValueError(f"n_new must be in 1..{data.x_train.shape[0] - 1}, got {n_new}")
    x_new = brightness_shift(data.x_train[-n_new:], delta)
    y_new = data.y_train[-n_new:]
    x_test_new = brightness_shift(data.x_test, delta)
    fb = min(batch_size, n_new)

    def one(s):
        base = _mlp_for(data, hidden=hidden, norm="batch", seed=s)
        train_classifier(base, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                         lr=lr, seed=s)
        out = {}
        for variant in FINETUNE_VARIANTS:
            model = copy.deepcopy(base)
            if variant == "recalibrate-only":
                recalibrate_batchnorm(model, x_new)
            elif variant != "pretrained":
                if variant == "finetune-frozen-bn":
                    freeze_batchnorm(model)
                train_classifier(model, x_new, y_new, epochs=finetune_epochs, batch_size=fb,
                                 lr=finetune_lr, seed=s + 1000,
                                 freeze_bn_stats=variant != "finetune-update-stats")
            out[variant] = {"old_acc": evaluate_accuracy(model, data.x_test, data.y_test),
                            "new_acc": evaluate_accuracy(model, x_test_new, data.y_test)}
        return out

    runs = [(f"seed{s}", (lambda s=s: one(s))) for s in seeds]
    out = _iterate(runs, {} if done is None else done, progress, "fine-tuning", on_result)
    return {"settings": dict(delta=delta, n_new=n_new, seeds=list(seeds), epochs=epochs,
                             finetune_epochs=finetune_epochs, batch_size=batch_size, lr=lr,
                             finetune_lr=finetune_lr, hidden=list(hidden)), "runs": out}


EXPERIMENTS = {
    "placement": (run_placement, dict(seeds=(0, 1, 2, 3, 4), epochs=5),
                  dict(seeds=(0,), epochs=1)),
    "batch-size": (run_batch_size, dict(seeds=(0, 1, 2)),
                   dict(seeds=(0,), batch_sizes=(4, 128), epochs=1)),
    "lr-tolerance": (run_lr_tolerance, dict(seeds=(0, 1, 2)),
                     dict(seeds=(0,), lrs=(0.1, 3.0), epochs=1)),
    "dropout": (run_dropout, dict(seeds=(0, 1, 2)), dict(seeds=(0,), epochs=1)),
    "finetune": (run_finetune, dict(seeds=(0, 1, 2)),
                 dict(seeds=(0,), epochs=1, finetune_epochs=1)),
    "depth-init": (run_depth_init, dict(seeds=(0, 1)),
                   dict(seeds=(0,), depths=(2,), init_scales=(1.0,), epochs=1)),
}
"""name -> (function, full settings, ``--quick`` settings)."""


def main(argv=None) -> int:
    """Command line: run experiments and write ``<out>/<name>.json`` with provenance."""
    import json
    from pathlib import Path

    from bnbook.data import fashion_mnist_info
    from bnbook.provenance import (RESULTS_DIR, atomic_write_json, collect_provenance, now_iso,
                                   write_result)

    parser = argparse.ArgumentParser(prog="python -m bnbook.experiments",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS_DIR / "practice"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    data = prepare_fashion_mnist(args.n_train, args.n_test, seed=args.data_seed)
    checksums = fashion_mnist_checksums()
    variant = fashion_mnist_info()["variant"]  # "canonical-gz" or "repacked-gz"
    out_dir = Path(args.out)
    for name in names:
        fn, full, quick = EXPERIMENTS[name]
        settings = quick if args.quick else full
        stem = f"{name}-quick" if args.quick else name
        partial_path = out_dir / f"{stem}.partial.json"
        done = {}
        if partial_path.exists():
            with open(partial_path) as f:
                done = json.load(f)
            print(f"{name}: resuming, {len(done)} run(s) already done", file=sys.stderr)
        start = time.perf_counter()
        started = now_iso()
        payload = fn(data, progress=not args.no_progress, done=done,
                     on_result=lambda d: atomic_write_json(partial_path, d), **settings)
        prov = collect_provenance(
            device="cpu", precision="float32", started=started,
            wall_time_s=round(time.perf_counter() - start, 2), threads=args.threads,
            dataset="fashion-mnist", dataset_variant=variant,
            dataset_subset=dict(n_train=args.n_train, n_test=args.n_test, seed=args.data_seed),
            dataset_sha256=checksums)
        path = write_result(stem, payload, prov, results_dir=out_dir)
        if partial_path.exists():
            partial_path.unlink()
        print(f"{name}: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

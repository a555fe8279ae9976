"""Batch norm diagnostics and repairs: what the running statistics say, and fixing them.

* :func:`batchnorm_modules` - every batch norm layer of a model, by name;
* :func:`eval_mode` - evaluation mode for a block of code, each module's own mode restored;
* :func:`batch_statistics_spread` - how noisy the batch mean and variance are for a batch of
  ``m`` examples, with the closed forms beside the measurement (chapter 6);
* :func:`batchnorm_input_shift` - the "variance shift" between the statistics a BN layer
  stored in training and the statistics of its input at test time (dropout before BN);
* :func:`recalibrate_batchnorm` / :func:`freeze_batchnorm` - re-estimate the population
  statistics on given data; keep them (and ``gamma``, ``beta``) fixed while fine-tuning;
* :func:`check_batchnorm_health` - a debugging report: NaN or degenerate running statistics,
  layers left in training mode, statistics never updated, a Keras-style momentum, a bias
  before BN, BN on the logits, an ``eps`` that half precision cannot hold, statistics that do
  not match the data. Each check is one small ``_check_*`` function; the report collects them.

PyTorch's batch norm conventions hold throughout: ``momentum`` is the weight of the new
batch, ``running_var`` stores the unbiased batch variance, the batch itself is normalised
with the biased one.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "batchnorm_modules",
    "eval_mode",
    "batch_statistics_spread",
    "batchnorm_input_shift",
    "recalibrate_batchnorm",
    "freeze_batchnorm",
    "HealthIssue",
    "BatchNormHealthReport",
    "check_batchnorm_health",
]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_HALF_TYPES = (torch.float16, torch.bfloat16)


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


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]



def _check_running_stats(name: str, bn: nn.Module, var_floor: float | None,
                         fresh_severity: str) -> list[HealthIssue]:
    """``nonfinite-running-stats``, ``degenerate-variance``, ``stats-never-updated``, or
    ``no-running-stats`` for a layer that keeps none."""
    if not (bn.track_running_stats and bn.running_mean is not None):
        return [HealthIssue(name, "no-running-stats", "warning",
                            "track_running_stats=False: evaluation normalises with batch "
                            "statistics, so a prediction depends on the other examples in "
                            "its batch")]
    issues = []
    bad = (~torch.isfinite(bn.running_mean)).sum() + (~torch.isfinite(bn.running_var)).sum()
    if bad:
        issues.append(HealthIssue(name, "nonfinite-running-stats", "error",
                                  f"{int(bad)} running statistic value(s) are NaN or inf"))
    floor = bn.eps if var_floor is None else var_floor
    finite_var = torch.where(torch.isfinite(bn.running_var), bn.running_var,
                             torch.ones_like(bn.running_var))
    n_low = int((finite_var < floor).sum())
    if n_low:
        issues.append(HealthIssue(name, "degenerate-variance", "warning",
                                  f"{n_low} of {bn.num_features} channel(s) have running_var < "
                                  f"{floor:.1e} (constant or dead inputs)"))
    fresh = (int(bn.num_batches_tracked) == 0 and bool((bn.running_mean == 0).all())
             and bool((bn.running_var == 1).all()))
    if fresh:
        issues.append(HealthIssue(name, "stats-never-updated", fresh_severity,
                                  "running statistics are still the initial zeros and ones "
                                  "(the layer never saw a training batch)"))
    return issues


def _check_affine(name: str, bn: nn.Module) -> list[HealthIssue]:
    """``nonfinite-affine``: NaN or inf in ``gamma``/``beta``."""
    if not bn.affine:
        return []
    bad = (~torch.isfinite(bn.weight)).sum() + (~torch.isfinite(bn.bias)).sum()
    if not bad:
        return []
    return [HealthIssue(name, "nonfinite-affine", "error",
                        f"{int(bad)} gamma/beta value(s) are NaN or inf")]


def _check_mode(name: str, bn: nn.Module, expect_eval: bool) -> list[HealthIssue]:
    """``train-mode``: a layer left in training mode where evaluation is expected."""
    if not (bn.training and expect_eval):
        return []
    return [HealthIssue(name, "train-mode", "error",
                        "layer is in training mode: it normalises with batch statistics and "
                        "updates its running statistics (call model.eval() before evaluating)")]


def _check_momentum(name: str, bn: nn.Module) -> list[HealthIssue]:
    """``momentum-convention``: a Keras/TensorFlow momentum (weight of the old value)."""
    if bn.momentum is None or bn.momentum <= 0.5:
        return []
    return [HealthIssue(name, "momentum-convention", "warning",
                        f"momentum={bn.momentum}: PyTorch's momentum is the weight of the NEW "
                        f"batch; a Keras/TensorFlow momentum of {bn.momentum} corresponds to "
                        f"{1 - bn.momentum:.3g} here")]


def _check_half_precision_eps(name: str, bn: nn.Module) -> list[HealthIssue]:
    """``half-precision-eps``: an ``eps`` that float16/bfloat16 rounds to zero or a subnormal."""
    tracked = bn.track_running_stats and bn.running_mean is not None
    dtype = bn.weight.dtype if bn.affine else (
        bn.running_var.dtype if tracked else torch.float32)
    if dtype not in _HALF_TYPES:
        return []
    fi = torch.finfo(dtype)
    stored = torch.tensor(bn.eps, dtype=dtype).item()
    if stored != 0.0 and abs(stored) >= fi.tiny:
        return []
    return [HealthIssue(name, "half-precision-eps", "warning",
                        f"eps={bn.eps:g} is {'zero' if stored == 0 else 'subnormal'} in {dtype} "
                        f"(smallest normal {fi.tiny:.2e}); keep BN in float32 (autocast does) "
                        f"or raise eps")]


def _check_bias_before_bn(leaves: list[tuple[str, nn.Module]]) -> list[HealthIssue]:
    """``bias-before-bn``: a Linear/Conv bias that the following BN subtracts again."""
    issues = []
    for (prev_name, prev), (name, mod) in zip(leaves, leaves[1:]):
        if (isinstance(mod, _BN_TYPES) and prev.bias is not None
                and isinstance(prev, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))):
            issues.append(HealthIssue(
                prev_name, "bias-before-bn", "info",
                f"bias of {type(prev).__name__} is cancelled by the batch norm {name} that "
                f"follows (its mean subtraction removes it; beta plays its role)"))
    return issues


def _check_bn_on_output(leaves: list[tuple[str, nn.Module]]) -> list[HealthIssue]:
    """``bn-on-output``: the model's last layer is a batch norm (normalised logits)."""
    if not (leaves and isinstance(leaves[-1][1], _BN_TYPES)):
        return []
    return [HealthIssue(leaves[-1][0], "bn-on-output", "warning",
                        "the last layer is a batch norm: the logits are normalised per class "
                        "over the batch before the softmax")]


def _check_per_replica(model: nn.Module, bns: list[tuple[str, nn.Module]]) -> list[HealthIssue]:
    """``per-replica-stats``: data parallelism with plain (not synchronised) BN layers."""
    if not isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return []
    plain = [n for n, m in bns if not isinstance(m, nn.SyncBatchNorm)]
    if not plain:
        return []
    return [HealthIssue("", "per-replica-stats", "info",
                        f"{len(plain)} BN layer(s) under data parallelism compute statistics "
                        f"per replica; nn.SyncBatchNorm.convert_sync_batchnorm(model) makes "
                        f"them global")]


def _layers_with_nonfinite_input(model: nn.Module, x: torch.Tensor,
                                 bns: list[tuple[str, nn.Module]], batch_size: int) -> list[str]:
    """Names of the BN layers that receive NaN or inf when ``model`` runs ``x`` in eval mode."""
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
    return list(nonfinite)


def _check_data(model: nn.Module, x: torch.Tensor, bns: list[tuple[str, nn.Module]],
                batch_size: int, shift_threshold: float,
                ratio_bounds: tuple[float, float]) -> list[HealthIssue]:
    """``nonfinite-input`` and ``stats-mismatch``: the running statistics against ``x``."""
    nonfinite = _layers_with_nonfinite_input(model, x, bns, batch_size)
    issues = [HealthIssue(name, "nonfinite-input", "error", "the layer receives NaN or inf values")
              for name in nonfinite]
    tracked = [n for n, m in bns if m.track_running_stats and m.running_var is not None
               and n not in nonfinite and torch.isfinite(m.running_var).all()
               and torch.isfinite(m.running_mean).all()]
    if not tracked or x.shape[0] < 2:
        return issues
    lo, hi = ratio_bounds
    rows = {r["layer"]: r for r in batchnorm_input_shift(model, x, batch_size)}
    for name in tracked:
        ratio, shift = rows[name]["var_ratio_median"], rows[name]["mean_shift_median"]
        if not (lo <= ratio <= hi) or shift > shift_threshold:
            issues.append(HealthIssue(
                name, "stats-mismatch", "warning",
                f"running statistics do not describe this data: median variance ratio "
                f"{ratio:.3g} (data/running), median mean shift {shift:.3g} running std"))
    return issues


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
    * ``stats-never-updated`` (error if ``expect_eval``, else info): running statistics still
      at their initial zeros and ones, ``num_batches_tracked == 0``;
    * ``no-running-stats`` (warning): ``track_running_stats=False``, so evaluation uses batch
      statistics and a prediction depends on the rest of its batch;
    * ``train-mode`` (error, only if ``expect_eval``): a BN layer left in training mode;
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

    The model is not changed (modes are restored). Returns a :class:`BatchNormHealthReport`
    whose issues come layer by layer, then the model-wide checks, then the data checks.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if x is not None and (not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1):
        raise ValueError("x must be a tensor of shape (N, ...) with N >= 1")
    lo, hi = ratio_bounds
    if not 0 < lo < 1 < hi:
        raise ValueError(f"ratio_bounds must satisfy 0 < low < 1 < high, got {ratio_bounds}")
    bns = batchnorm_modules(model)
    issues = []
    for name, bn in bns:
        issues += _check_running_stats(name, bn, var_floor, "error" if expect_eval else "info")
        issues += _check_affine(name, bn)
        issues += _check_mode(name, bn, expect_eval)
        issues += _check_momentum(name, bn)
        issues += _check_half_precision_eps(name, bn)
    leaves = _leaf_modules(model)
    issues += _check_bias_before_bn(leaves) + _check_bn_on_output(leaves)
    issues += _check_per_replica(model, bns)
    if x is not None and bns:
        issues += _check_data(model, x, bns, batch_size, shift_threshold, ratio_bounds)
    return BatchNormHealthReport(n_batchnorm=len(bns), issues=issues)

"""Small experiments behind the motivation chapter: why normalising inputs helps training.

Three ideas, each a few seconds on a laptop CPU and reproducible from a seed:

1. **Standardised inputs and gradient descent** (LeCun et al., *Efficient BackProp*, 1998).
   For least squares the loss is a quadratic whose Hessian is ``A.T @ A / n`` (``A`` is the
   input matrix with a column of ones for the bias). Inputs with a large mean or very
   different scales make that Hessian ill-conditioned, and gradient descent then needs
   about ``kappa * ln(1/tol)`` steps. :func:`gradient_descent_least_squares` counts them.
2. **Covariate shift between sub-populations** (the "roses" example). A 2-D two-class
   problem made of two sub-populations that sit in different regions of feature space.
   :func:`minibatch_schedule` draws mini-batches either from one sub-population at a time
   (``"alternating"``) or from both (``"shuffled"``); :func:`train_flower_classifier` trains the
   same small network on either schedule and records the loss on the whole training set.
3. **Sigmoid inputs over training** (the spirit of Figure 1 of Ioffe & Szegedy, 2015).
   A deep sigmoid MLP with or without batch normalisation before each sigmoid;
   :func:`train_sigmoid_mlp` records the 15th, 50th and 85th percentiles of every sigmoid's
   input on a fixed monitoring batch as training proceeds, the test accuracy, and the
   fraction of saturated sigmoids (:func:`saturated_fraction`).

Conventions: data arrays are NumPy, ``X`` has shape ``(n, d)`` (float32 for the networks),
labels are int64 of shape ``(n,)``. Every function that draws random numbers takes a
``seed`` and uses its own generator (NumPy ``default_rng`` / ``torch.Generator``), so a
call never depends on, or changes, global random state.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bnbook.training import cross_entropy_loss, fit

__all__ = [
    # 1. standardised inputs
    "make_linear_regression_data", "standardise", "least_squares_hessian", "condition_number",
    "gd_steps_bound", "GradientDescentResult", "gradient_descent_least_squares",
    # 2. covariate shift between sub-populations
    "make_flower_data", "minibatch_schedule", "make_small_classifier", "ClassifierRun",
    "train_flower_classifier", "steps_to_reach",
    # 3. sigmoid inputs over training
    "SATURATION_THRESHOLD", "make_prototype_data", "SigmoidMLP", "SigmoidRun",
    "train_sigmoid_mlp", "saturated_fraction", "percentile_drift",
]


@contextlib.contextmanager
def _one_thread():
    """Run PyTorch on one thread for the duration: these networks are so small that
    thread start-up dominates, and on a busy machine two spinning threads can be ten
    times slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------
# 1. Standardised inputs and the conditioning of gradient descent
# ---------------------------------------------------------------------------------------

def make_linear_regression_data(n: int = 200, means: Sequence[float] = (10.0, 0.0),
                                scales: Sequence[float] = (1.0, 10.0), noise: float = 0.1,
                                seed: int = 0):
    """A linear regression problem whose inputs have chosen means and scales.

    Feature ``j`` is drawn from ``N(means[j], scales[j]**2)`` independently; the target is
    ``t = X @ w_true + b_true + noise * N(0, 1)`` with ``w_true`` drawn so that every feature
    contributes about equally (``w_true[j] ~ N(0, 1) / scales[j]``) and ``b_true = 1``.

    Returns:
        ``(X, t)``: float64 arrays of shapes ``(n, d)`` and ``(n,)`` with ``d = len(means)``.
    """
    means = np.asarray(means, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    if means.shape != scales.shape or means.ndim != 1:
        raise ValueError(f"means and scales must be 1-D sequences of one length; got shapes "
                         f"{means.shape} and {scales.shape}")
    if np.any(scales <= 0):
        raise ValueError(f"scales must be positive; got {scales.tolist()}")
    if n < 2:
        raise ValueError(f"n must be at least 2; got {n}")
    rng = np.random.default_rng(seed)
    X = means + scales * rng.standard_normal((n, means.size))
    w_true = rng.standard_normal(means.size) / scales
    t = X @ w_true + 1.0 + noise * rng.standard_normal(n)
    return X, t


def standardise(X, mean=None, std=None):
    """Per-feature standardisation ``(X - mean) / std`` (biased std over axis 0).

    Args:
        X: array of shape ``(n, d)``.
        mean, std: optional statistics of shape ``(d,)`` (e.g. the training set's, to apply
            to a test set); computed from ``X`` when omitted.

    Returns:
        ``(X_std, mean, std)``.

    Raises:
        ValueError: if ``X`` is not 2-D or a feature has zero standard deviation.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d); got shape {X.shape}")
    mean = X.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    std = X.std(axis=0) if std is None else np.asarray(std, dtype=np.float64)
    if np.any(std == 0):
        raise ValueError(f"feature(s) {np.flatnonzero(std == 0).tolist()} are constant "
                         f"(zero standard deviation) and cannot be standardised")
    return (X - mean) / std, mean, std


def _with_bias_column(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d); got shape {X.shape}")
    return np.hstack([X, np.ones((X.shape[0], 1))])


def least_squares_hessian(X) -> np.ndarray:
    """Hessian ``A.T @ A / n`` of ``L(w) = ||A w - t||^2 / (2 n)``, ``A = [X, 1]``.

    Returns a ``(d + 1, d + 1)`` array; the last row/column belongs to the bias.
    """
    A = _with_bias_column(X)
    return A.T @ A / A.shape[0]


def condition_number(H) -> float:
    """Ratio of the largest to the smallest eigenvalue of a symmetric positive definite ``H``."""
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be a square matrix; got shape {H.shape}")
    eig = np.linalg.eigvalsh(H)
    if eig[0] <= 0:
        raise ValueError(f"H must be positive definite; its smallest eigenvalue is {eig[0]:.3g}")
    return float(eig[-1] / eig[0])


def gd_steps_bound(kappa: float, tol: float) -> int:
    """Steps after which gradient descent with step ``1/L`` has surely cut the excess loss by ``tol``.

    On a quadratic the excess loss of each eigen-direction shrinks by ``(1 - lambda_i/L)**2``
    per step, at worst ``(1 - 1/kappa)**2``; so ``k >= ln(tol) / (2 ln(1 - 1/kappa))`` steps
    suffice. For large ``kappa`` this is about ``kappa * ln(1/tol) / 2``.
    """
    if kappa < 1 or not 0 < tol < 1:
        raise ValueError(f"need kappa >= 1 and 0 < tol < 1; got kappa={kappa}, tol={tol}")
    if kappa == 1:
        return 1
    return int(math.ceil(math.log(tol) / (2.0 * math.log1p(-1.0 / kappa))))


class GradientDescentResult(NamedTuple):
    """What :func:`gradient_descent_least_squares` returns.

    ``steps`` is the first step at which the excess loss ``L(w) - L(w*)`` fell below
    ``tol * (L(w0) - L(w*))`` (``None`` if it never did within ``max_steps``); ``w`` the final
    parameters ``(d + 1,)`` (bias last); ``excess_loss`` the excess loss after every step
    ``(n_steps + 1,)``, starting at ``w0 = 0``; ``lr`` the step size used.
    """

    steps: int | None
    w: np.ndarray
    excess_loss: np.ndarray
    lr: float


def gradient_descent_least_squares(X, t, tol: float = 1e-6, max_steps: int = 100_000,
                                   lr: float | None = None) -> GradientDescentResult:
    """Full-batch gradient descent on ``L(w) = ||[X, 1] w - t||^2 / (2 n)`` from ``w = 0``.

    Args:
        X: inputs ``(n, d)``; t: targets ``(n,)``.
        tol: relative reduction of the excess loss that counts as converged.
        max_steps: give up after this many steps.
        lr: step size; default ``1 / L`` with ``L`` the largest Hessian eigenvalue, the
            largest step that never increases any eigen-component of the error.

    The exact minimiser ``w*`` comes from ``numpy.linalg.lstsq`` so the excess loss is
    measured against an independent solution, not against the iteration itself.
    """
    A = _with_bias_column(X)
    t = np.asarray(t, dtype=np.float64)
    if t.shape != (A.shape[0],):
        raise ValueError(f"t must have shape ({A.shape[0]},); got {t.shape}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1); got {tol}")
    n = A.shape[0]
    H = A.T @ A / n
    g0 = A.T @ t / n  # the gradient is H w - g0
    if lr is None:
        lr = 1.0 / float(np.linalg.eigvalsh(H)[-1])
    w_star = np.linalg.lstsq(A, t, rcond=None)[0]

    def excess(w):
        d = w - w_star
        return 0.5 * float(d @ H @ d)  # L(w) - L(w*) exactly, for a quadratic

    w = np.zeros(A.shape[1])
    history = [excess(w)]
    target = tol * history[0]
    steps = None
    for k in range(1, max_steps + 1):
        w = w - lr * (H @ w - g0)
        history.append(excess(w))
        if history[-1] <= target:
            steps = k
            break
    return GradientDescentResult(steps, w, np.asarray(history), float(lr))


# ---------------------------------------------------------------------------------------
# 2. Covariate shift between two sub-populations (the roses)
# ---------------------------------------------------------------------------------------

def make_flower_data(n_per_subset: int = 500, radius: float = 2.0, spread: float = 0.8,
                     seed: int = 0):
    """Two sub-populations of one 2-D two-class problem.

    The class is fixed by one rule everywhere: a point is a "rose" (label 1) when it lies
    inside the circle of ``radius`` about the origin. The two sub-populations sample
    different stretches of that boundary: subset 0 is a Gaussian blob centred at
    ``(-radius, 0)`` (there the boundary is nearly vertical), subset 1 a blob centred at
    ``(0, radius)`` (there it is nearly horizontal); both have standard deviation ``spread``.
    A classifier that sees only one subset learns a boundary that is wrong for the other.

    Returns:
        ``(X, label, subset)``: float32 ``(2 n, 2)``, int64 ``(2 n,)``, int64 ``(2 n,)``.
    """
    if n_per_subset < 1:
        raise ValueError(f"n_per_subset must be positive; got {n_per_subset}")
    if radius <= 0 or spread <= 0:
        raise ValueError(f"radius and spread must be positive; got {radius}, {spread}")
    rng = np.random.default_rng(seed)
    centres = np.array([[-radius, 0.0], [0.0, radius]])
    X = np.concatenate([c + spread * rng.standard_normal((n_per_subset, 2)) for c in centres])
    label = (np.hypot(X[:, 0], X[:, 1]) < radius).astype(np.int64)
    subset = np.repeat(np.arange(2, dtype=np.int64), n_per_subset)
    return X.astype(np.float32), label, subset


def minibatch_schedule(subset, batch_size: int, n_steps: int, mode: str, block: int = 100,
                       seed: int = 0) -> np.ndarray:
    """Indices of the examples in every mini-batch of a training run.

    Args:
        subset: int array ``(n,)`` naming the sub-population (0 or 1) of every example.
        batch_size: examples per mini-batch (drawn without replacement within a batch).
        n_steps: number of mini-batches.
        mode: ``"shuffled"`` draws every batch from all examples; ``"alternating"`` draws
            ``block`` consecutive batches from subset 0, then ``block`` from subset 1, and so on.
        block: length of one run of single-subset batches in ``"alternating"`` mode.

    Returns:
        int64 array ``(n_steps, batch_size)``.
    """
    subset = np.asarray(subset)
    if mode not in ("shuffled", "alternating"):
        raise ValueError(f"mode must be 'shuffled' or 'alternating'; got {mode!r}")
    if batch_size < 1 or n_steps < 1 or block < 1:
        raise ValueError(f"batch_size, n_steps and block must be positive; got {batch_size}, "
                         f"{n_steps}, {block}")
    pools = [np.flatnonzero(subset == s) for s in (0, 1)]
    smallest = min(p.size for p in pools) if mode == "alternating" else subset.size
    if batch_size > smallest:
        raise ValueError(f"batch_size {batch_size} exceeds the {smallest} examples available "
                         f"to one batch in {mode!r} mode")
    rng = np.random.default_rng(seed)
    everything = np.arange(subset.size)
    out = np.empty((n_steps, batch_size), dtype=np.int64)
    for k in range(n_steps):
        pool = pools[(k // block) % 2] if mode == "alternating" else everything
        out[k] = rng.choice(pool, size=batch_size, replace=False)
    return out


def make_small_classifier(hidden: int = 16, seed: int = 0) -> nn.Sequential:
    """A 2 -> ``hidden`` -> 1 tanh network (logit output), initialised from ``seed``.

    Weights are uniform in ``+-1/sqrt(fan_in)`` (PyTorch's default scale), biases zero.
    """
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.weight, -bound, bound, generator=g)
            layer.bias.zero_()
    return net


class ClassifierRun(NamedTuple):
    """Record of one :func:`train_flower_classifier` run.

    ``steps`` ``(T,)``: the steps at which the model was evaluated (0 = before training);
    ``loss`` ``(T,)``: mean cross-entropy on the whole training set; ``loss_by_subset``
    ``(T, 2)``: the same on each sub-population; ``accuracy`` ``(T,)``;
    ``snapshots``: ``{step: model copy}`` for the requested steps; ``model``: the final model.
    """

    steps: np.ndarray
    loss: np.ndarray
    loss_by_subset: np.ndarray
    accuracy: np.ndarray
    snapshots: dict
    model: nn.Module


@_one_thread()
def train_flower_classifier(X, label, subset, schedule, hidden: int = 16, lr: float = 0.3,
                            seed: int = 0, eval_every: int = 10,
                            snapshot_steps: Sequence[int] = ()) -> ClassifierRun:
    """Train :func:`make_small_classifier` on the flower data by plain SGD on the mini-batches
    in ``schedule`` (with :func:`bnbook.training.fit`).

    Args:
        X, label, subset: from :func:`make_flower_data`.
        schedule: int array ``(n_steps, batch_size)`` from :func:`minibatch_schedule`.
        lr: SGD step size; the loss is binary cross-entropy on the logit.
        eval_every: evaluate on the whole training set every this many steps (and at the end).
        snapshot_steps: steps after which to keep a copy of the model (e.g. to draw its
            decision boundary).
    """
    import copy

    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(label), dtype=torch.float32)
    subset = np.asarray(subset)
    schedule = np.asarray(schedule)
    if Xt.ndim != 2 or Xt.shape[1] != 2 or yt.shape != (Xt.shape[0],) or subset.shape != yt.shape:
        raise ValueError(f"X must be (n, 2) with label and subset of shape (n,); got "
                         f"{tuple(Xt.shape)}, {tuple(yt.shape)}, {subset.shape}")
    if schedule.ndim != 2 or schedule.size == 0:
        raise ValueError(f"schedule must be a non-empty (n_steps, batch_size) array; got "
                         f"shape {schedule.shape}")
    if schedule.min() < 0 or schedule.max() >= Xt.shape[0]:
        raise ValueError("schedule holds indices outside the data")
    masks = [torch.as_tensor(subset == s) for s in (0, 1)]
    net = make_small_classifier(hidden, seed)
    wanted = set(int(s) for s in snapshot_steps)
    steps, losses, by_subset, accs, snaps = [], [], [], [], {}
    n_steps = schedule.shape[0]

    def record(step, *_):
        if step % eval_every == 0 or step == n_steps:
            with torch.no_grad():
                logits = net(Xt).squeeze(1)
                per_example = F.binary_cross_entropy_with_logits(logits, yt, reduction="none")
                steps.append(step)
                losses.append(per_example.mean().item())
                by_subset.append([per_example[m].mean().item() for m in masks])
                accs.append(((logits > 0).float() == yt).float().mean().item())
        if step in wanted:
            snaps[step] = copy.deepcopy(net)

    def bce_loss(model, idx):
        return F.binary_cross_entropy_with_logits(model(Xt[idx]).squeeze(1), yt[idx])

    record(0)
    fit(net, (torch.as_tensor(b) for b in schedule), bce_loss,
        torch.optim.SGD(net.parameters(), lr=lr), on_step=record)
    return ClassifierRun(np.asarray(steps), np.asarray(losses), np.asarray(by_subset),
                         np.asarray(accs), snaps, net)


def steps_to_reach(steps, values, threshold: float) -> int | None:
    """First entry of ``steps`` from which ``values`` stays at or below ``threshold`` to the end.

    ``None`` if the last value is above ``threshold``. "Stays" matters for a loss curve
    that dips below the threshold and climbs back, as under an alternating schedule.
    """
    steps = np.asarray(steps)
    values = np.asarray(values)
    if steps.shape != values.shape or steps.ndim != 1 or steps.size == 0:
        raise ValueError(f"steps and values must be non-empty 1-D arrays of one shape; got "
                         f"{steps.shape} and {values.shape}")
    above = np.flatnonzero(values > threshold)
    if above.size == 0:
        return int(steps[0])
    if above[-1] == values.size - 1:
        return None
    return int(steps[above[-1] + 1])


# ---------------------------------------------------------------------------------------
# 3. The inputs of sigmoids over training, with and without batch normalisation
# ---------------------------------------------------------------------------------------

#: A sigmoid counts as saturated when its output is within 0.05 of 0 or 1, i.e. when
#: ``|z| > ln(19)``; there its derivative ``s (1 - s)`` is below 0.0475, under a fifth of its
#: maximum 0.25 at ``z = 0``.
SATURATION_THRESHOLD = math.log(19.0)


def make_prototype_data(n_train: int = 6000, n_test: int = 2000, n_features: int = 64,
                        n_classes: int = 10, noise: float = 0.8, seed: int = 0):
    """A small image-like classification problem (a stand-in for MNIST).

    Each class has a prototype "image": a random 30% of the ``n_features`` pixels are on,
    with brightness uniform in [0.5, 1]. An example is its class prototype plus Gaussian
    noise of standard deviation ``noise``, clipped to [0, 1], so inputs are non-negative
    with non-zero mean, like pixel intensities. Train and test examples share prototypes.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: float32 ``(n, n_features)`` and int64 ``(n,)``.
    """
    if min(n_train, n_test, n_features) < 1 or n_classes < 2 or noise < 0:
        raise ValueError("need n_train, n_test, n_features >= 1, n_classes >= 2, noise >= 0; "
                         f"got {n_train}, {n_test}, {n_features}, {n_classes}, {noise}")
    rng = np.random.default_rng(seed)
    on = rng.random((n_classes, n_features)) < 0.3
    prototypes = on * rng.uniform(0.5, 1.0, (n_classes, n_features))
    y = rng.integers(0, n_classes, n_train + n_test)
    X = np.clip(prototypes[y] + noise * rng.standard_normal((y.size, n_features)), 0.0, 1.0)
    X = X.astype(np.float32)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


class SigmoidMLP(nn.Module):
    """``n_layers`` fully connected sigmoid layers of width ``hidden``, then a linear read-out.

    With ``batch_norm=True`` each hidden layer is ``sigmoid(BN(W x))``: batch normalisation
    between the affine map and the nonlinearity, and no bias (BN's ``beta`` replaces it).
    Without it each layer is ``sigmoid(W x + b)``. Hidden weights are drawn from
    ``N(0, init_std**2)`` ("small random Gaussian values", as in the paper's MNIST
    experiment), biases start at zero, BN starts at ``gamma = 1, beta = 0``.

    ``forward(x)`` returns logits ``(n, n_classes)``; :meth:`sigmoid_inputs` returns the
    input of every sigmoid, a list of ``n_layers`` tensors ``(n, hidden)``.
    """

    def __init__(self, n_in: int, hidden: int = 100, n_layers: int = 3, n_classes: int = 10,
                 batch_norm: bool = False, init_std: float = 0.1, seed: int = 0):
        super().__init__()
        if min(n_in, hidden, n_layers) < 1 or n_classes < 2 or init_std <= 0:
            raise ValueError("need n_in, hidden, n_layers >= 1, n_classes >= 2, init_std > 0")
        g = torch.Generator().manual_seed(seed)
        widths = [n_in] + [hidden] * n_layers
        self.batch_norm = batch_norm
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for a, b in zip(widths[:-1], widths[1:]):
            layer = nn.Linear(a, b, bias=not batch_norm)
            with torch.no_grad():
                nn.init.normal_(layer.weight, 0.0, init_std, generator=g)
                if layer.bias is not None:
                    layer.bias.zero_()
            self.linears.append(layer)
            self.norms.append(nn.BatchNorm1d(b) if batch_norm else nn.Identity())
        self.readout = nn.Linear(hidden, n_classes)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(hidden)
            nn.init.uniform_(self.readout.weight, -bound, bound, generator=g)
            self.readout.bias.zero_()

    def _run(self, x):
        zs = []
        for linear, norm in zip(self.linears, self.norms):
            z = norm(linear(x))
            zs.append(z)
            x = torch.sigmoid(z)
        return self.readout(x), zs

    def forward(self, x):
        return self._run(x)[0]

    def sigmoid_inputs(self, x) -> list:
        """The input ``z`` of every sigmoid, one ``(n, hidden)`` tensor per layer."""
        return self._run(x)[1]


@contextlib.contextmanager
def _running_stats_frozen(model: nn.Module):
    """Batch-norm layers keep normalising with batch statistics but stop updating their
    running averages (momentum 0), so that monitoring does not change the model."""
    saved = [(m, m.momentum) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


class SigmoidRun(NamedTuple):
    """Record of one :func:`train_sigmoid_mlp` run.

    ``steps`` ``(T,)``; ``percentiles`` ``(T, n_layers, 3, hidden)``: the 15th, 50th and 85th
    percentile of each sigmoid's input over the monitoring batch; ``test_accuracy`` ``(T,)``
    (batch-norm layers in evaluation mode, using their running statistics);
    ``saturated`` ``(T, n_layers)``: fraction of (example, unit) pairs of each layer whose
    sigmoid is saturated; ``model``: the trained network.
    """

    steps: np.ndarray
    percentiles: np.ndarray
    test_accuracy: np.ndarray
    saturated: np.ndarray
    model: nn.Module


def saturated_fraction(z, threshold: float = SATURATION_THRESHOLD) -> float:
    """Fraction of the entries of ``z`` (sigmoid inputs) with ``|z| > threshold``."""
    z = torch.as_tensor(z)
    if z.numel() == 0:
        raise ValueError("z is empty")
    return float((z.abs() > threshold).float().mean())


@_one_thread()
def train_sigmoid_mlp(data, batch_norm: bool, lr: float = 0.5, n_steps: int = 3000,
                      batch_size: int = 60, hidden: int = 100, n_layers: int = 3,
                      init_std: float = 0.1, record_every: int = 50, monitor_size: int = 500,
                      seed: int = 0, model=None, before_step=None) -> SigmoidRun:
    """Train a :class:`SigmoidMLP` with plain SGD and watch its sigmoid inputs.

    Args:
        data: ``(X_train, y_train, X_test, y_test)`` from :func:`make_prototype_data`.
        batch_norm: insert batch normalisation before every sigmoid.
        lr, n_steps, batch_size: SGD step size, number of steps, examples per step
            (drawn uniformly without replacement within a batch).
        record_every: record every this many steps (and at step 0 and the end).
        monitor_size: the first ``monitor_size`` test examples form the fixed monitoring
            batch. With batch normalisation it is normalised with its own batch statistics
            (training mode), exactly what a training batch sees; running averages are left
            untouched while monitoring.
        model: train this network instead of a new ``SigmoidMLP(..., batch_norm, init_std,
            seed)``; before_step: called (no arguments) before each step draws its batch.
    """
    X, y, X_test, y_test = data
    X = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    X_test = torch.as_tensor(X_test, dtype=torch.float32)
    y_test = torch.as_tensor(y_test, dtype=torch.int64)
    if X.ndim != 2 or y.shape != (X.shape[0],) or X_test.shape[1:] != X.shape[1:]:
        raise ValueError(f"data must be (X (n, d), y (n,), X_test (m, d), y_test (m,)); got "
                         f"{tuple(X.shape)}, {tuple(y.shape)}, {tuple(X_test.shape)}")
    if batch_size > X.shape[0] or monitor_size > X_test.shape[0] or min(batch_size, monitor_size) < 2:
        raise ValueError(f"need 2 <= batch_size <= {X.shape[0]} and 2 <= monitor_size <= "
                         f"{X_test.shape[0]}; got {batch_size}, {monitor_size}")
    n_classes = int(max(y.max(), y_test.max())) + 1
    net = model if model is not None else SigmoidMLP(X.shape[1], hidden, n_layers, n_classes,
                                                     batch_norm, init_std, seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    monitor = X_test[:monitor_size]
    q = torch.tensor([0.15, 0.50, 0.85])
    steps, percentiles, acc, sat = [], [], [], []

    def record(step, *_):
        if step % record_every == 0 or step == n_steps:
            with torch.no_grad(), _running_stats_frozen(net):
                zs = net.sigmoid_inputs(monitor)
                percentiles.append(torch.stack([torch.quantile(z, q, dim=0) for z in zs]).numpy())
                sat.append([saturated_fraction(z) for z in zs])
                net.eval()
                acc.append((net(X_test).argmax(1) == y_test).float().mean().item())
                net.train()
            steps.append(step)

    def batches():  # drawn one step at a time, after the previous step's record
        for _ in range(n_steps):
            if before_step is not None:
                before_step()
            b = torch.as_tensor(rng.choice(X.shape[0], size=batch_size, replace=False))
            yield X[b], y[b]

    record(0)
    fit(net, batches(), cross_entropy_loss, opt, on_step=record)
    return SigmoidRun(*map(np.asarray, (steps, percentiles, acc, sat)), net)


def percentile_drift(percentiles, which: int = 1) -> np.ndarray:
    """How far each unit's percentile wandered from its start: ``max_t |p(t) - p(0)|``.

    Args:
        percentiles: array ``(T, 3, units)`` (one layer of :attr:`SigmoidRun.percentiles`).
        which: 0, 1, 2 for the 15th, 50th, 85th percentile.

    Returns:
        ``(units,)`` array in the units of the sigmoid input.
    """
    p = np.asarray(percentiles)
    if p.ndim != 3 or p.shape[1] != 3:
        raise ValueError(f"percentiles must have shape (T, 3, units); got {p.shape}")
    track = p[:, which, :]
    return np.abs(track - track[0]).max(axis=0)

"""Checking the from-scratch NumPy layer against PyTorch on every device and dtype at hand.

The reference is always :class:`bnbook.numpy_norms.BatchNorm` in float64. The thing checked
is ``torch.nn.BatchNorm1d``/``2d`` on a device (CPU always; CUDA with cuDNN and Apple's MPS
when present) in a dtype (float64, float32, and float16/bfloat16 where the device runs them).
Both see *the same numbers*: the random float64 inputs are first rounded to the dtype under
test, and the reference receives those rounded values. What remains in the comparison is the
rounding error of the computation itself, which :func:`tolerance` bounds.

Precision convention for half types: ``x`` (and therefore ``y``, ``dy``, ``dx``) are float16
or bfloat16, while ``weight``, ``bias`` and the running statistics stay float32, which is how
mixed-precision training (``torch.autocast``) and cuDNN run batch norm.

Errors are :func:`bnbook.gradcheck.rel_error` (norm-wise): ``max|a-b| / max(max|a|, max|b|)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bnbook.gradcheck import rel_error
from bnbook.numpy_norms import BatchNorm as NumpyBatchNorm
from bnbook.numpy_norms import batch_norm_forward, reduction_axes
from bnbook.training import cross_entropy_loss, fit

__all__ = [
    "QUANTITIES",
    "DTYPES",
    "DTYPE_NAMES",
    "available_devices",
    "supported_dtypes",
    "parameter_dtype",
    "unit_roundoff",
    "accumulation_dtype",
    "growth_factor",
    "tolerance",
    "Case",
    "random_cases",
    "quantity_dtype",
    "scaled_error",
    "error_scales",
    "compare_case",
    "sweep",
    "error_table",
    "format_error_table",
    "tiny_convnet",
    "compare_training",
    "KerasMomentum",
    "BiasedRunningVar",
]

#: What one comparison measures: training-mode output and gradients of the last step, the
#: running statistics after all steps, and the evaluation-mode output that uses them.
QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "y_eval")

#: The dtypes the book verifies batch norm in, widest first (a device runs some or all of them).
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
#: Their short names, as tables and result records print them: ``{torch.float64: "float64", ...}``.
DTYPE_NAMES = {dt: str(dt).replace("torch.", "") for dt in DTYPES}


def available_devices() -> list[str]:
    """Devices PyTorch can use here: ``"cpu"`` always, then ``"cuda"`` and ``"mps"`` if present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def parameter_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of gamma, beta and the running statistics for inputs of ``dtype`` (float32 for halves)."""
    return torch.promote_types(dtype, torch.float32)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype in which PyTorch accumulates sums for inputs of ``dtype`` (float32 for halves)."""
    return torch.promote_types(dtype, torch.float32)


def _runs_batch_norm(device: str, dtype: torch.dtype) -> bool:
    """Whether a training-mode BatchNorm2d forward and backward runs on ``device`` in ``dtype``."""
    try:
        layer = nn.BatchNorm2d(2).to(device=device, dtype=parameter_dtype(dtype))
        x = torch.linspace(-2.0, 3.0, 24).reshape(3, 2, 2, 2).to(dtype).to(device)
        x.requires_grad_(True)
        layer(x).sum().backward()
        return bool(torch.isfinite(x.grad.float()).all())
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def supported_dtypes(device: str) -> list[torch.dtype]:
    """Of float64, float32, float16 and bfloat16, those batch norm runs in on ``device`` (tried)."""
    return [dt for dt in DTYPES if _runs_batch_norm(device, dt)]


def unit_roundoff(dtype) -> float:
    """``u = 2**-p`` for a ``p``-bit significand: half the distance from 1 to the next number.

    float64 ``2**-53``, float32 ``2**-24``, float16 ``2**-11``, bfloat16 ``2**-8``. Accepts a
    torch or NumPy floating dtype.
    """
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"unit_roundoff needs a floating dtype; got {dtype}")
        return torch.finfo(dtype).eps / 2
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise ValueError(f"unit_roundoff needs a floating dtype; got {dt}")
    return float(np.finfo(dt).eps) / 2


def growth_factor(m: int) -> float:
    """How rounding errors of the per-channel reductions grow with their length ``m``: ``sqrt(m)``.

    A sum of ``m`` terms has a worst-case error bound proportional to ``(m - 1) u`` for
    recursive summation and ``log2(m) u`` for pairwise summation (Higham 1993). The worst
    case needs every rounding error to have the same sign; when they behave like independent
    zero-mean variables the error grows like ``sqrt(m) u`` with overwhelming probability
    (Higham and Mary 2019), which is what the comparisons observe. ``sqrt(m) >= log2(m)``
    for every ``m >= 16``, so it covers pairwise and blocked sums too; the constants of
    :func:`tolerance` cover smaller ``m``.
    """
    if m < 1:
        raise ValueError(f"m (values per channel) must be >= 1; got {m}")
    return math.sqrt(m)


def tolerance(dtype, m: int) -> float:
    """Largest relative error accepted for batch norm in ``dtype`` with ``m`` values per channel.

    ``tolerance = 4 * (u_out + u_acc * (4 + growth_factor(m)))``:

    * ``u_out`` (the dtype's unit round-off): every output is rounded once to the dtype;
    * ``u_acc`` (float32's for float16/bfloat16, whose sums PyTorch accumulates in float32;
      the dtype's own otherwise) times ``growth_factor(m)``: the reductions for the mean,
      variance, ``sum(dy)`` and ``sum(dy * x_hat)``, plus about four more roundings for the
      elementwise work (centre, scale, shift; or the three terms of ``dx``);
    * the factor 4 absorbs the chaining of these errors (mean into variance into ``inv_std``
      into ``x_hat`` into ``dx``) and the constants the rule of thumb leaves out.

    The inputs are exactly representable on both sides (see the module docstring), so input
    rounding does not enter. The tolerance must still be small enough to catch real mistakes:
    using the unbiased instead of the biased variance changes the output by about ``1/(2m)``,
    which stays above the float64 and float32 tolerances for every ``m`` used in the book.

    Args:
        dtype: torch (or NumPy) floating dtype of the data.
        m: number of values per channel (``N``, ``N*L`` or ``N*H*W``).
    """
    if isinstance(dtype, torch.dtype):
        acc = accumulation_dtype(dtype)
    else:
        acc = np.promote_types(np.dtype(dtype), np.float32)
    u_out, u_acc = unit_roundoff(dtype), unit_roundoff(acc)
    return 4.0 * (u_out + u_acc * (4.0 + growth_factor(m)))


@dataclass(frozen=True)
class Case:
    """One random configuration: ``shape`` of ``x``, its per-channel ``shift`` scale and ``scale``,
    the magnitude of ``gamma``, and the ``seed`` of its data.

    ``x = shift * s_c + scale * z`` with ``s_c`` a per-channel standard normal shift and ``z``
    standard normal noise, so ``|mu| / sigma`` is about ``shift / scale``.
    """

    shape: tuple[int, ...]
    shift: float
    scale: float
    gamma_scale: float
    seed: int

    @property
    def m(self) -> int:
        """Values per channel."""
        return int(np.prod(self.shape)) // self.shape[1]


def random_cases(n: int, seed: int = 0, max_m: int = 2048) -> list[Case]:
    """``n`` random :class:`Case` s: shapes ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, scales
    ``10**U(-2, 2)``, ``|mu|/sigma`` up to 4, gamma magnitudes ``10**U(-1, 1)``; ``m <= max_m``."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        ndim = int(rng.choice([2, 3, 4]))
        c = int(rng.integers(1, 9))
        n_batch = int(rng.integers(2, 33))
        shape = (n_batch, c) + tuple(int(rng.integers(1, 9)) for _ in range(ndim - 2))
        if int(np.prod(shape)) // c > max_m or int(np.prod(shape)) // c < 2:
            continue
        scale = float(10.0 ** rng.uniform(-2, 2))
        shift = float(scale * rng.uniform(0, 4))
        gamma_scale = float(10.0 ** rng.uniform(-1, 1))
        cases.append(Case(shape, shift, scale, gamma_scale, int(rng.integers(2**31))))
    return cases


def _case_data(case: Case, steps: int):
    """float64 arrays for a case: ``steps`` batches ``xs`` and ``dys``, ``gamma`` and ``beta``."""
    rng = np.random.default_rng(case.seed)
    c = case.shape[1]
    channel_shift = case.shift * rng.standard_normal(c).reshape((1, c) + (1,) * (len(case.shape) - 2))
    xs = [channel_shift + case.scale * rng.standard_normal(case.shape) for _ in range(steps)]
    dys = [rng.standard_normal(case.shape) for _ in range(steps)]
    signs = rng.choice([-1.0, 1.0], size=c)
    gamma = signs * case.gamma_scale * rng.uniform(0.5, 2.0, size=c)
    beta = case.scale * rng.standard_normal(c)
    return xs, dys, gamma, beta


def _rounded(a: np.ndarray, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``a`` rounded to ``dtype`` on the CPU, then moved (MPS, for one, has no float64)."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype=dtype).to(device)


def _float64(t: torch.Tensor) -> np.ndarray:
    """A float64 NumPy copy (never a view: the two sides must not share memory)."""
    return np.array(t.detach().cpu().to(torch.float64).numpy(), copy=True)


def quantity_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a compared quantity is stored in: the data's for ``y``, ``dx``, ``y_eval``;
    :func:`parameter_dtype` for the parameter gradients and running statistics."""
    if name not in QUANTITIES:
        raise ValueError(f"unknown quantity {name!r}; expected one of {QUANTITIES}")
    return dtype if name in ("y", "dx", "y_eval") else parameter_dtype(dtype)


def scaled_error(ours, reference, scale) -> float:
    """``max|ours - reference| / scale``: the error measured against the size of what produced it."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        raise ValueError(f"scaled_error needs arrays of one shape; got {ours.shape} and "
                         f"{reference.shape}")
    scale = max(float(scale), np.finfo(np.float64).tiny)
    return float(np.abs(ours - reference).max() / scale) if ours.size else 0.0


def error_scales(xs: list[np.ndarray], dy: np.ndarray, ref: NumpyBatchNorm,
                 momentum: float, eps: float) -> dict:
    """The size each compared quantity's rounding error is proportional to (float64 scalars).

    A sum's rounding error is bounded by ``u * growth * sum(|terms|)`` (Higham 1993), not by
    its result: when positive and negative terms cancel, the result can be far smaller than
    the error it carries in any precision. So the reductions are measured against the same
    formula evaluated on absolute values, the bound's own scale:

    * ``dbeta = sum(dy)``: ``max_c sum|dy|``; ``dgamma = sum(dy * x_hat)``:
      ``max_c sum|dy * x_hat|``;
    * ``dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat))``: the maximum of
      ``|gamma * inv_std| * (|dy| + mean|dy| + |x_hat| * mean|dy * x_hat|)``;
    * ``running_mean``: the running-average recursion applied to ``mean|x|``;
    * ``y`` and ``running_var`` (no cancelling sums): ``max|value|``, as in
      :func:`bnbook.gradcheck.rel_error`.

    Args:
        xs: the training batches, as float64 arrays, in order; ``dy``: the last one's gradient.
        ref: the NumPy layer after those training steps (it supplies ``gamma``, ``beta``,
            ``running_var``).

    Returns:
        ``{quantity: scale}`` for every name in :data:`QUANTITIES` but ``y_eval``.
    """
    x = xs[-1]
    axes = reduction_axes(x.ndim)
    channels = x.shape[1]
    _, cache = batch_norm_forward(x, ref.gamma, ref.beta, eps)
    x_hat = cache.x_hat
    abs_dy_x_hat = np.abs(dy * x_hat)
    shape = (1, channels) + (1,) * (x.ndim - 2)
    dx_scale = (np.abs(ref.gamma.reshape(shape) * cache.inv_std)
                * (np.abs(dy) + np.abs(dy).mean(axis=axes, keepdims=True)
                   + np.abs(x_hat) * abs_dy_x_hat.mean(axis=axes, keepdims=True)))
    running_abs_mean = np.zeros(channels)
    for k, xk in enumerate(xs, start=1):
        w = 1.0 / k if momentum is None else momentum
        running_abs_mean = (1 - w) * running_abs_mean + w * np.abs(xk).mean(axis=axes)
    return {
        "y": np.abs(ref.gamma.reshape(shape) * x_hat + ref.beta.reshape(shape)).max(),
        "dx": dx_scale.max(),
        "dgamma": abs_dy_x_hat.sum(axis=axes).max(),
        "dbeta": np.abs(dy).sum(axis=axes).max(),
        "running_mean": running_abs_mean.max(),
        "running_var": np.abs(ref.running_var).max(),
    }


def compare_case(case: Case, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 steps: int = 2, momentum: float = 0.1, eps: float = 1e-5,
                 reference_cls=NumpyBatchNorm) -> dict:
    """Run ``torch.nn.BatchNorm1d/2d`` on ``device`` in ``dtype`` and the NumPy layer in float64.

    Both layers start from the same (rounded) ``gamma``/``beta`` and take ``steps`` training
    steps on the same (rounded) batches; the last step is back-propagated with the same
    (rounded) ``dy``; then both switch to evaluation mode and normalise the last batch again.
    ``reference_cls`` builds the reference layer (the NumPy layer; pass a variant to see the
    comparison fail).

    Returns:
        ``{"device", "dtype", "shape", "m", <quantity>: error, "tol_<quantity>": tolerance}``
        for each name in :data:`QUANTITIES`; errors are :func:`scaled_error` with the scales
        of :func:`error_scales`, tolerances :func:`tolerance` of :func:`quantity_dtype`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    xs, dys, gamma, beta = _case_data(case, steps)
    pdt = parameter_dtype(dtype)
    torch_cls = nn.BatchNorm2d if len(case.shape) == 4 else nn.BatchNorm1d
    layer = torch_cls(case.shape[1], eps=eps, momentum=momentum).to(device=device, dtype=pdt)
    ref = reference_cls(case.shape[1], eps=eps, momentum=momentum)
    with torch.no_grad():
        layer.weight.copy_(_rounded(gamma, pdt, device))
        layer.bias.copy_(_rounded(beta, pdt, device))
    ref.gamma = _float64(layer.weight)
    ref.beta = _float64(layer.bias)
    xs_used = []
    for x, dy in zip(xs, dys):
        x_t = _rounded(x, dtype, device).requires_grad_(True)
        xs_used.append(x_t.detach())
        dy_t = _rounded(dy, dtype, device)
        layer.zero_grad(set_to_none=True)
        y_t = layer(x_t)
        y_t.backward(dy_t)
        y_ref = ref.forward(_float64(x_t))
        dx_ref = ref.backward(_float64(dy_t))
    layer.eval()
    ref.eval()
    with torch.no_grad():
        y_eval_t = layer(x_t.detach())
    y_eval_ref = ref.forward(_float64(x_t))
    scales = error_scales([_float64(x) for x in xs_used], _float64(dy_t), ref, momentum, eps)
    scales["y_eval"] = np.abs(y_eval_ref).max()
    pairs = {
        "y": (y_t, y_ref), "dx": (x_t.grad, dx_ref),
        "dgamma": (layer.weight.grad, ref.dgamma), "dbeta": (layer.bias.grad, ref.dbeta),
        "running_mean": (layer.running_mean, ref.running_mean),
        "running_var": (layer.running_var, ref.running_var),
        "y_eval": (y_eval_t, y_eval_ref),
    }
    record = {"device": device, "dtype": str(dtype).replace("torch.", ""),
              "shape": list(case.shape), "m": case.m}
    for name, (ours, theirs) in pairs.items():
        record[name] = scaled_error(_float64(ours), theirs, scales[name])
        record[f"tol_{name}"] = tolerance(quantity_dtype(name, dtype), case.m)
    return record


def sweep(cases: list[Case], devices: list[str] | None = None, dtypes=None,
          progress: bool = True, threads: int | None = 1, **kwargs) -> list[dict]:
    """:func:`compare_case` for every case, device and dtype the device supports.

    Args:
        cases: from :func:`random_cases`.
        devices: defaults to :func:`available_devices`.
        dtypes: candidate dtypes (default: all four); each device keeps those it supports.
        progress: show a tqdm bar.
        threads: CPU threads for torch during the sweep (restored afterwards); ``None``
            leaves the setting alone. The tensors are small, so one thread is fastest: more
            threads cost more in start-up and contention than they save.
        kwargs: passed to :func:`compare_case` (``steps``, ``momentum``, ``eps``).

    Returns:
        One record per (case, device, dtype), each with a ``"seconds"`` field (wall time).
    """
    devices = available_devices() if devices is None else list(devices)
    jobs = []
    for device in devices:
        ok = supported_dtypes(device)
        for dt in (ok if dtypes is None else [d for d in dtypes if d in ok]):
            jobs.extend((case, device, dt) for case in cases)
    records = []
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None; got {threads}")
        torch.set_num_threads(threads)
    if progress:
        from tqdm.auto import tqdm  # only for the bar: a GPU machine's image may lack tqdm

        jobs = tqdm(jobs, desc="BN vs NumPy")
    try:
        for case, device, dt in jobs:
            start = time.perf_counter()
            record = compare_case(case, device, dt, **kwargs)
            record["seconds"] = time.perf_counter() - start
            records.append(record)
    finally:
        torch.set_num_threads(old_threads)
    return records


def error_table(records: list[dict]) -> list[dict]:
    """One row per (device, dtype): the largest error of each quantity over all cases, the
    largest ``m``, the tolerance at that ``m``, and the worst ratio ``error / tolerance(dtype, m)``
    (below 1 means every comparison passed)."""
    rows: dict[tuple[str, str], dict] = {}
    for r in records:
        key = (r["device"], r["dtype"])
        row = rows.setdefault(key, {"device": r["device"], "dtype": r["dtype"], "cases": 0,
                                    "max_m": 0, "worst_ratio": 0.0,
                                    **{q: 0.0 for q in QUANTITIES}})
        row["cases"] += 1
        row["max_m"] = max(row["max_m"], r["m"])
        for q in QUANTITIES:
            row[q] = max(row[q], r[q])
            row["worst_ratio"] = max(row["worst_ratio"], r[q] / r[f"tol_{q}"])
    out = []
    for row in rows.values():
        dt = getattr(torch, row["dtype"])
        row["u"] = unit_roundoff(dt)
        row["tolerance_at_max_m"] = tolerance(dt, row["max_m"])
        row["max_error"] = max(row[q] for q in QUANTITIES)
        out.append(row)
    return out


def format_error_table(rows: list[dict], markdown: bool = False) -> str:
    """Table of :func:`error_table` rows, errors to 2 significant digits.

    Plain text by default; ``markdown=True`` gives a Markdown table (for
    ``IPython.display.Markdown``), with the quantities as columns.
    """
    cols = (["device", "dtype", "u", "cases", "max m"] + list(QUANTITIES)
            + ["tol(max m)", "worst err/tol"])

    def cells(r):
        return ([r["device"], r["dtype"], f"{r['u']:.1e}", str(r["cases"]), str(r["max_m"])]
                + [f"{r[q]:.1e}" for q in QUANTITIES]
                + [f"{r['tolerance_at_max_m']:.1e}", f"{r['worst_ratio']:.2f}"])

    if markdown:
        lines = ["| " + " | ".join(f"`{c}`" if c in QUANTITIES else c for c in cols) + " |",
                 "|" + "|".join(["---"] * 2 + ["--:"] * (len(cols) - 2)) + "|"]
        lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(c), 9) for c in cols]
    lines = [" ".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
    lines.append("-" * len(lines[0]))
    lines += [" ".join(f"{c:>{w}}" for c, w in zip(cells(r), widths)) for r in rows]
    return "\n".join(lines)


def tiny_convnet(norm_layer, seed: int = 0, channels: int = 4, classes: int = 3,
                 dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """conv3x3 -> norm -> ReLU -> conv3x3 -> norm -> ReLU -> global average pool -> linear.

    ``norm_layer(num_features)`` builds each normalisation layer. The weights are drawn from
    a torch generator seeded with ``seed`` (the global one is left as it was) before, and
    independently of, the norm layers, so two networks built with different norm layers
    start from identical weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        head = nn.Linear(channels, classes)
    net = nn.Sequential(conv1, norm_layer(channels), nn.ReLU(), conv2, norm_layer(channels),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return net.to(dtype)


def compare_training(norm_a, norm_b, steps: int = 5, seed: int = 0, batch: int = 8,
                     lr: float = 0.1, dtype: torch.dtype = torch.float64) -> dict:
    """Train :func:`tiny_convnet` with two norm layers from the same seed on the same batches.

    SGD with momentum 0.9 on cross-entropy, random inputs ``(batch, 3, 8, 8)`` with a non-zero
    mean and random labels. Batch-norm weights are set to non-trivial values (identical in
    both networks) before training.

    Returns:
        ``{"losses_a", "losses_b", "max_loss_rel_diff", "max_param_rel_error",
        "max_running_stat_rel_error", "eval_output_rel_error"}``.
    """
    nets = [tiny_convnet(norm, seed=seed, dtype=dtype) for norm in (norm_a, norm_b)]
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for bn_a, bn_b in zip(*(
                [mod for mod in net if hasattr(mod, "running_var")] for net in nets)):
            gamma = 0.5 + 2.0 * torch.rand(bn_a.weight.shape, generator=g, dtype=dtype)
            beta = torch.randn(bn_a.bias.shape, generator=g, dtype=dtype)
            for bn in (bn_a, bn_b):
                bn.weight.copy_(gamma)
                bn.bias.copy_(beta)
    xs = [2.0 + 3.0 * torch.randn(batch, 3, 8, 8, generator=g, dtype=dtype) for _ in range(steps)]
    labels = [torch.randint(0, 3, (batch,), generator=g) for _ in range(steps)]
    losses: list[list[float]] = [[], []]
    for net, trace in zip(nets, losses):
        fit(net, zip(xs, labels), cross_entropy_loss,
            torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9),
            on_step=lambda step, loss, *_, trace=trace: trace.append(loss.detach().item()))
    state_a, state_b = nets[0].state_dict(), nets[1].state_dict()
    if state_a.keys() != state_b.keys():
        raise ValueError("the two norm layers do not share PyTorch's parameter and buffer names")
    params = [rel_error(_float64(state_a[k]), _float64(state_b[k]))
              for k, _ in nets[0].named_parameters()]
    stats = [rel_error(_float64(state_a[k]), _float64(state_b[k]))
             for k in state_a if k.endswith(("running_mean", "running_var"))]
    for net in nets:
        net.eval()
    with torch.no_grad():
        eval_x = xs[-1]
        eval_err = rel_error(_float64(nets[0](eval_x)), _float64(nets[1](eval_x)))
    diffs = [abs(a - b) / max(abs(a), abs(b)) for a, b in zip(*losses)]
    return {"losses_a": losses[0], "losses_b": losses[1], "max_loss_rel_diff": max(diffs),
            "max_param_rel_error": max(params), "max_running_stat_rel_error": max(stats),
            "eval_output_rel_error": eval_err}


# Planted bugs: two plausible, wrong references. A harness that passes everything proves
# nothing until it has been seen to fail; passed as ``reference_cls`` to :func:`compare_case`,
# each must fail on the running statistics it gets wrong and pass on everything else (the
# training-mode output and gradients do not involve the running statistics).

class KerasMomentum(NumpyBatchNorm):
    """Planted bug: ``momentum`` read as the weight of the *old* running value (Keras's
    convention), so PyTorch's 0.1 becomes 0.9. Wrong ``running_mean`` and ``running_var``
    (and therefore ``y_eval``)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps=eps, momentum=1.0 - momentum)


class BiasedRunningVar(NumpyBatchNorm):
    """Planted bug: the *biased* batch variance folded into ``running_var``, without the
    ``m / (m - 1)`` correction. Wrong ``running_var`` (by a relative ``1/(m-1)``) and
    ``y_eval``; ``running_mean`` is right."""

    def forward(self, x):
        old = self.running_var.copy()
        y = super().forward(x)
        if self.training:
            batch_var = x.var(axis=reduction_axes(x.ndim))
            self.running_var = (1 - self.momentum) * old + self.momentum * batch_var
        return y

"""The checker for the batch norm backward pass (closed-form or node by node).

The student's ``dx`` is compared with the reference's and, when it is wrong, split per channel
into the three parts every batch norm gradient is made of: the direct path ``dy`` (times
``gamma * inv_std``), the path through the mean and the path through the variance. The
coefficients of that split name the mistake in terms of the graph (a missing path, a path
with the wrong size, a missing factor), not in terms of the closed form.
"""

from __future__ import annotations

import numpy as np

from bnbook.checks import _reference as ref
from bnbook.checks._harness import (ANALYTIC, CheckFailed, as_output, call, checker, copies,
                                    float32_like, inputs_summary, label, locate, make_case,
                                    passed, reduced_shape_hint, section, unpack)
from bnbook.checks.forward import _FLOAT32_HINTS
from bnbook.gradcheck import rel_error

_OUTPUTS = ("dx", "dgamma", "dbeta")
_MEAN_STEPS = (f"{section('node-by-node')}, steps Centre and Mean: dmu = -(the sum of "
               f"dx_centred over the channel), and each x_i receives dmu / m on top of "
               f"dx_centred_i.")
_VAR_STEPS = (f"{section('node-by-node')}, steps Inverse standard deviation and Variance: "
              f"dvar = -1/2 * (var + eps)^(-3/2) * dinv_std, and each x_centred_i receives "
              f"2 * x_centred_i / m * dvar on top of dx_hat_i * inv_std.")


def _cases():
    return [
        make_case(30, (6, 4), (4,), with_dy=True),
        make_case(31, (5, 3), (3,), with_dy=True),
        make_case(32, (4, 3, 3, 3), (3,), with_dy=True),
        make_case(33, (2, 2, 3, 4), (2,), with_dy=True),
        make_case(34, (3, 2, 2, 2), (2,), with_dy=True, eps=1e-3, spread=0.05),
    ]


def _channels_first(a, ndim):
    return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1) if ndim > 1 else a


def _path_coefficients(case, dx):
    """Per channel, ``(direct, mean, variance)`` with ``dx = gamma * inv_std * (direct * dy
    + mean * mean(dy) + variance * x_hat * mean(dy * x_hat))`` (right: ``1, -1, -1``), or
    ``None`` when ``dx`` is not of that form."""
    axes = ref.channel_axes(case.x.ndim)
    x_hat = ref.normalise(case.x, axes, case.eps)
    scale = ref.per_channel(case.gamma, case.x.ndim) / np.sqrt(
        case.x.var(axis=axes, keepdims=True) + case.eps)
    dy = case.dy
    parts = [scale * dy, scale * dy.mean(axis=axes, keepdims=True) + 0 * dy,
             scale * x_hat * (dy * x_hat).mean(axis=axes, keepdims=True)]
    parts = [_channels_first(p, case.x.ndim) for p in parts]
    target = _channels_first(dx, case.x.ndim)
    coefficients = []
    for k in range(target.shape[0]):
        basis = np.stack([p[k] for p in parts], axis=1)
        solution = np.linalg.lstsq(basis, target[k], rcond=None)[0]
        if np.linalg.norm(basis @ solution - target[k]) > 1e-7 * np.linalg.norm(target[k]):
            return None
        coefficients.append(solution)
    return np.array(coefficients)


def _near(values, target, tol=1e-6):
    return bool(np.allclose(values, target, rtol=tol, atol=tol))


def _scale_mistake(case, direct):
    inv_std = 1.0 / np.sqrt(case.x.var(axis=ref.channel_axes(case.x.ndim)) + case.eps)
    if _near(direct, 1.0):
        return None
    if _near(direct, -1.0):
        return ("dx has the wrong sign.", f"{section('graph')}: the chain rule multiplies "
                f"the local derivatives along each path; none of them flips the sign.")
    if _near(direct, 1.0 / case.gamma):
        return ("dx is not multiplied by gamma: the step Scale (z = gamma * x_hat) passes "
                "gamma on to everything upstream of it.",
                f"{section('node-by-node')}, step Scale: dx_hat_i = gamma * dy_i.")
    if _near(direct, 1.0 / inv_std):
        return ("dx misses the factor inv_std of the step Normalise (x_hat = x_centred * "
                "inv_std) on every path.",
                f"{section('node-by-node')}, step Normalise: dx_centred_i receives "
                f"dx_hat_i * inv_std.")
    return ("dx is off by a factor that differs from channel to channel.",
            f"{section('node-by-node')}: check each local derivative's factor.")


def _path_mistake(case, mean, variance):
    m, n = case.values_per_channel, case.x.shape[0]
    both = f"{_MEAN_STEPS} {_VAR_STEPS}"
    if _near(mean, -1.0) and _near(variance, -1.0):
        return None
    if _near(mean, 0.0) and _near(variance, 0.0):
        return ("mu and var are treated as constants: both depend on x, and each adds a path "
                "from the output back to x (the graph has two nodes with two users).", both)
    if _near(mean, 0.0) and _near(variance, -1.0):
        return ("dx misses the term through the mean: the path from x through mu is missing "
                "(x has two users in the graph, the centring x - mu and the mean mu, and its "
                "gradient collects both).", _MEAN_STEPS)
    if _near(mean, -1.0) and _near(variance, 0.0):
        return ("dx misses the term through the variance: the path through var is missing "
                "(x_centred has two users in the graph, x_hat and var, and its gradient "
                "collects both).", _VAR_STEPS)
    if _near(mean, -1.0) and _near(variance, -m / (m - 1)):
        return ("the path through the variance uses m - 1 where the biased variance has m.",
                _VAR_STEPS)
    if case.x.ndim > 2 and (_near(mean, -m / n) or _near(variance, -m / n)):
        which = ("nodes mu and var" if _near(mean, -m / n) and _near(variance, -m / n)
                 else "node mu" if _near(mean, -m / n) else "node var")
        return (f"m = N where the 1/m of the {which} counts the values per channel: for "
                f"x of shape {case.x.shape} m = {m}, not N = {n}, so "
                f"{'each path is' if which.startswith('nodes') else 'the path is'} {m // n} "
                f"times too large.", f"{both} ({section('bn-conv')}: m = N*H*W.)")
    off = [(node, k, steps) for node, k, steps in (("mu", np.mean(mean), _MEAN_STEPS),
                                                    ("var", np.mean(variance), _VAR_STEPS))
           if not _near(k, -1.0)]
    return ("; ".join(f"the path through {node} carries {-k:.4g} times the right gradient"
                      for node, k, _ in off) + ": a factor in the local derivatives along it "
            "is off.", " ".join(steps for _, _, steps in off))


def _dx_diagnosis(case, dx):
    coefficients = _path_coefficients(case, dx)
    if coefficients is None:
        return None
    direct = coefficients[:, 0]
    scale = _scale_mistake(case, direct)
    path = _path_mistake(case, coefficients[:, 1] / direct, coefficients[:, 2] / direct)
    if scale and path:
        return (f"{scale[0]} Also: {path[0]}", f"{scale[1]} {path[1]}")
    return scale or path


def _dx_facts(case, dx, expected):
    """The two facts of chapter 3 for the student's ``dx``: it sums to zero per channel and
    is (for eps -> 0) orthogonal to ``x_hat``."""
    axes = ref.channel_axes(case.x.ndim)
    x_hat = ref.normalise(case.x, axes, case.eps)
    facts = []
    size = np.abs(dx).sum(axis=axes)
    sums = dx.sum(axis=axes)
    bad = np.abs(sums) > 1e-8 * size
    if bad.any():
        k = int(np.argmax(np.abs(sums) / size))
        facts.append(f"Your dx does not sum to zero over a channel (channel {k}: {sums[k]:.4g}); "
                     f"the right one does, in every channel.")
    dots, right = (dx * x_hat).sum(axis=axes), (expected * x_hat).sum(axis=axes)
    off = np.abs(dots - right) > 1e-4 * np.abs(dx * x_hat).sum(axis=axes)
    if off.any():
        k = int(np.argmax(np.abs(dots - right)))
        facts.append(f"sum(dx * x_hat) over channel {k} is {dots[k]:.4g}; for the right dx it is "
                     f"{right[k]:.2g} (zero but for eps).")
    if not facts:
        facts.append("Your dx does sum to zero per channel and has the right sum(dx * x_hat).")
    return " ".join(facts)


def _vector_variants(case):
    axes = ref.channel_axes(case.x.ndim)
    x_hat = ref.normalise(case.x, axes, case.eps)
    dy, m = case.dy, case.values_per_channel
    dgamma, dbeta = (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)
    scale_eq = (f"{section('node-by-node')}, step Scale: dgamma = the sum of dy_i * x_hat_i "
                f"over the channel's m values (the batch and the positions).")
    shift_eq = (f"{section('node-by-node')}, step Shift: dbeta = the sum of dy_i over the "
                f"channel's m values.")
    swapped = ("dgamma and dbeta are swapped.", f"{scale_eq} {shift_eq}")
    return {
        "dgamma": [("dgamma is a mean over the batch instead of a sum.", scale_eq, dgamma / m),
                   ("dgamma uses x where the step Scale multiplies x_hat.", scale_eq,
                    (dy * case.x).sum(axis=axes)),
                   (*swapped, dbeta)],
        "dbeta": [("dbeta is a mean over the batch instead of a sum.", shift_eq, dbeta / m),
                  (*swapped, dgamma)],
    }


def _vector_facts(got, expected):
    ratio = got / np.where(expected == 0, np.nan, expected)
    if np.isfinite(ratio).all() and np.ptp(ratio) < 1e-8 * np.abs(ratio).max():
        return f"Yours is {ratio[0]:.4g} times the right one in every channel."
    return ""


def _diagnosis(case, output, got, expected, err):
    """``(first-message lines, hints)`` for one wrong gradient."""
    where = locate(output, got, expected, case, "channel" if output == "dx" else None,
                   ANALYTIC)
    if output == "dx":
        facts = _dx_facts(case, got, expected)
        known = _dx_diagnosis(case, got)
    else:
        facts = _vector_facts(got, expected)
        known = next(((mistake, eq) for mistake, eq, wrong in _vector_variants(case)[output]
                      if rel_error(got, wrong) < 1e-8), None)
    if known is not None:
        hints = list(known)
    elif float32_like(err):
        hints = _FLOAT32_HINTS
    else:
        hints = [f"no single common mistake explains this {output}. Chapter 3's method finds "
                 f"it: check each node's gradient on its own against finite differences.",
                 f"the node-by-node steps are in {section('node-by-node')}; the two facts a "
                 f"right dx satisfies are in {section('two-facts')}."]
    return "\n".join(line for line in (where, facts) if line), hints


def _gradients(name, forward_fn, backward_fn, case):
    """The student's ``(dx, dgamma, dbeta)`` on the cache of the student's forward."""
    where = case.describe()
    x, gamma, beta = copies(case)
    y, cache = unpack(name, forward_fn, call(forward_fn, where, x, gamma, beta, case.eps),
                      ("y", "cache"), where)
    y = as_output(name, "the forward's y", y, case.x.shape, where)
    if not rel_error(y, ref.batch_norm(case.x, case.gamma, case.beta, case.eps)) < ANALYTIC:
        raise CheckFailed(
            f"{name}: your forward {label(forward_fn)} is wrong for {where}, and the backward "
            f"is checked on its cache; run check_batch_norm_forward({forward_fn.__name__}) "
            f"first.")
    result = call(backward_fn, where, case.dy.copy(), cache, exercise="batch_norm_backward")
    grads = unpack(name, backward_fn, result, _OUTPUTS, where)
    channels = (case.x.shape[1],)
    shapes = (case.x.shape, channels, channels)
    shape_hints = (None, reduced_shape_hint(channels), reduced_shape_hint(channels))
    return [as_output(name, output, g, s, where, h)
            for output, g, s, h in zip(_OUTPUTS, grads, shapes, shape_hints)]


@checker
def check_batch_norm_backward(forward_fn, backward_fn) -> None:
    """Check ``backward_fn(dy, cache) -> (dx, dgamma, dbeta)`` on the cache of ``forward_fn``.

    ``forward_fn`` must be a right forward (the book's, or one that passes
    :func:`check_batch_norm_forward`); the three gradients must match the float64 reference
    to ``1e-10`` (relative error), with shapes ``x.shape``, ``(C,)``, ``(C,)``.
    """
    name = "check_batch_norm_backward"
    cases = _cases()
    outcomes, errors = [], []
    for case in cases:
        grads = _gradients(name, forward_fn, backward_fn, case)
        expected = ref.batch_norm_gradients(case.x, case.gamma, case.eps, case.dy)
        errs = [rel_error(g, e) for g, e in zip(grads, expected)]
        errors += errs
        outcomes.append((case, grads, expected, errs))
    for k, output in enumerate(_OUTPUTS):
        failing = [o for o in outcomes if not o[3][k] < ANALYTIC]
        if not failing:
            continue
        case, grads, expected, errs = failing[0]
        number = [o[0] for o in outcomes].index(case) + 1
        details, hints = _diagnosis(case, output, grads[k], expected[k], errs[k])
        others = [o for j, o in enumerate(_OUTPUTS) if j != k
                  and all(out[3][j] < ANALYTIC for out in outcomes)]
        results = [(o[0], o[3][k] < ANALYTIC) for o in outcomes]
        raise CheckFailed(
            f"{name}: {output} is wrong for {case.describe()} (input {number} of {len(cases)}): "
            f"relative error {errs[k]:.1e}, threshold {ANALYTIC:.0e}.\n{details}\n"
            f"{inputs_summary(results)}"
            + (f" {' and '.join(others)} {'are' if len(others) > 1 else 'is'} right."
               if others else ""), hints)
    passed(name, max(errors), ANALYTIC, len(cases))

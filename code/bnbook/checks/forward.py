"""Checkers for forward passes: batch, layer and group norm."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bnbook.checks._harness import (
    ANALYTIC,
    _as_output,
    _bn_variants,
    _call,
    _check_unchanged,
    _copies,
    _failure,
    _gn_variants,
    _ln_variants,
    _make_case,
    _passed,
    _unpack,
)
from bnbook.gradcheck import rel_error
from bnbook.numpy_norms import reduction_axes

# --- forward checkers --------------------------------------------------------------------------

def _check_forward(name, fn, cases, call, reference, variants, generic):
    errors, failures = [], []
    for case in cases:
        x, gamma, beta = _copies(case)
        where = case.describe()
        result = _call(fn, where, *call(case, x, gamma, beta))
        _check_unchanged(name, fn, case, x, gamma, beta)
        y, _cache = _unpack(name, fn, result, 2, ("y", "cache"), where)
        y = _as_output(name, "y", y, case.x.shape, where)
        err = rel_error(y, reference(case))
        errors.append(err)
        if not err < ANALYTIC:
            failures.append((case, y, err))
    if failures:
        raise AssertionError(_failure(name, "y", failures, variants, ANALYTIC, generic))
    _passed(name, max(errors), ANALYTIC, len(cases))


def _torch_reference(op):
    def reference(case):
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return op(case, t).numpy()
    return reference


def _bn_cases():
    return [
        _make_case(0, (16, 5), (5,)),
        _make_case(1, (7, 3), (3,)),
        _make_case(2, (4, 3, 5, 5), (3,)),
        _make_case(3, (2, 4, 3, 6), (4,)),
        _make_case(4, (5, 2, 8), (2,)),
        _make_case(5, (6, 4, 3, 3), (4,), eps=1e-3, spread=0.05),  # eps comparable to var
    ]


def check_batch_norm_forward(fn) -> None:
    """Check a training-mode batch norm forward ``fn(x, gamma, beta, eps=1e-5) -> (y, cache)``.

    ``x`` is ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)`` float64; ``gamma``, ``beta`` are
    ``(C,)``; ``y`` must match PyTorch's ``F.batch_norm(..., training=True)`` in float64 to
    ``1e-10`` (relative error). Raises ``AssertionError`` with the likely mistake.
    """
    reference = _torch_reference(lambda c, t: F.batch_norm(
        t(c.x), None, None, t(c.gamma), t(c.beta), training=True, eps=c.eps))
    _check_forward(
        "check_batch_norm_forward", fn, _bn_cases(),
        lambda case, x, gamma, beta: (x, gamma, beta, case.eps), reference, _bn_variants(),
        "no common mistake matches exactly. Each channel of y should have mean beta and "
        "standard deviation |gamma| * sqrt(var / (var + eps)); compare yours with "
        "bnbook.numpy_norms.batch_norm_forward on this input")


def check_layer_norm_forward(fn) -> None:
    """Check a layer norm forward ``fn(x, gamma, beta, eps=1e-5) -> (y, cache)``.

    Each sample is normalised over all axes but the first (biased variance); ``gamma`` and
    ``beta`` have shape ``x.shape[1:]``; ``y`` must match ``F.layer_norm`` in float64 to
    ``1e-10``. Raises ``AssertionError`` with the likely mistake.
    """
    cases = [
        _make_case(10, (6, 8), (8,)),
        _make_case(11, (3, 5), (5,)),
        _make_case(12, (4, 3, 5, 5), (3, 5, 5)),
        _make_case(13, (2, 4, 3, 6), (4, 3, 6)),
        _make_case(14, (5, 3, 7), (3, 7)),
        _make_case(15, (3, 2, 4, 4), (2, 4, 4), eps=1e-3, spread=0.05),
    ]
    reference = _torch_reference(lambda c, t: F.layer_norm(
        t(c.x), c.x.shape[1:], t(c.gamma), t(c.beta), eps=c.eps))
    _check_forward(
        "check_layer_norm_forward", fn, cases,
        lambda case, x, gamma, beta: (x, gamma, beta, case.eps), reference, _ln_variants(),
        "no common mistake matches exactly. Each sample x[n] should be normalised with its own "
        "mean and biased variance over all of its values, then scaled by gamma and shifted by "
        "beta elementwise (both of shape x.shape[1:])")


def check_group_norm_forward(fn) -> None:
    """Check a group norm forward ``fn(x, gamma, beta, num_groups, eps=1e-5) -> (y, cache)``.

    Channels are split into ``num_groups`` contiguous groups; each (sample, group) is
    normalised with its own mean and biased variance; ``gamma``, ``beta`` have shape ``(C,)``;
    ``y`` must match ``F.group_norm`` in float64 to ``1e-10``. Raises ``AssertionError`` with
    the likely mistake.
    """
    cases = [
        _make_case(20, (4, 6, 5, 5), (6,), num_groups=3),
        _make_case(21, (2, 8, 4, 4), (8,), num_groups=4),
        _make_case(22, (3, 6, 7), (6,), num_groups=2),
        _make_case(23, (5, 8), (8,), num_groups=2),
        _make_case(24, (3, 6, 3, 3), (6,), num_groups=3, eps=1e-3, spread=0.05),
    ]
    reference = _torch_reference(lambda c, t: F.group_norm(
        t(c.x), c.num_groups, t(c.gamma), t(c.beta), eps=c.eps))
    _check_forward(
        "check_group_norm_forward", fn, cases,
        lambda case, x, gamma, beta: (x, gamma, beta, case.num_groups, case.eps), reference,
        _gn_variants(),
        "no common mistake matches exactly. Reshape x to (N, num_groups, C // num_groups, ...), "
        "normalise over every axis after the group axis, reshape back, then apply gamma and "
        "beta per channel")


def _inference_cases():
    """Training-mode cases plus running statistics of their own (mean far from the batch's,
    variance in [0.5, 4]), so that batch statistics cannot pass for running ones."""
    cases = []
    for seed, case in enumerate(_bn_cases()):
        rng = np.random.default_rng(100 + seed)
        c = case.gamma.shape[0]
        stats = (rng.normal(-1.0, 2.0, c), rng.uniform(0.5, 4.0, c))
        cases.append((case, stats))
    return cases


def check_batch_norm_inference_forward(fn) -> None:
    """Check an eval-mode batch norm ``fn(x, gamma, beta, running_mean, running_var, eps=1e-5)
    -> y``.

    ``x`` is ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)`` float64; the four vectors are
    ``(C,)``; ``y`` must match PyTorch's ``F.batch_norm(..., training=False)`` in float64 to
    ``1e-10``, and the running statistics must come back unchanged. Raises ``AssertionError``
    with the likely mistake.
    """
    name = "check_batch_norm_inference_forward"
    axes_of = lambda case: reduction_axes(case.x.ndim)  # noqa: E731

    def affine(case, x_hat):
        shape = (1, -1) + (1,) * (case.x.ndim - 2)
        return case.gamma.reshape(shape) * x_hat + case.beta.reshape(shape)

    errors, failures = [], []
    for case, (running_mean, running_var) in _inference_cases():
        shape = (1, -1) + (1,) * (case.x.ndim - 2)
        rm, rv = running_mean.reshape(shape), running_var.reshape(shape)
        variants = [
            ("y uses the batch's mean and variance (training mode); eval mode uses "
             "running_mean and running_var",
             lambda c: affine(c, (c.x - c.x.mean(axes_of(c), keepdims=True))
                              / np.sqrt(c.x.var(axes_of(c), keepdims=True) + c.eps))),
            ("eps is added outside the square root: use sqrt(running_var + eps)",
             lambda c, rm=rm, rv=rv: affine(c, (c.x - rm) / (np.sqrt(rv) + c.eps))),
            ("x is divided by running_var + eps, not by its square root",
             lambda c, rm=rm, rv=rv: affine(c, (c.x - rm) / (rv + c.eps))),
            ("the running mean is not subtracted", lambda c, rv=rv: affine(c, c.x / np.sqrt(rv + c.eps))),
        ]
        x, gamma, beta = _copies(case)
        mean_in, var_in = running_mean.copy(), running_var.copy()
        where = case.describe()
        y = _call(fn, where, x, gamma, beta, mean_in, var_in, case.eps)
        _check_unchanged(name, fn, case, x, gamma, beta)
        if not (np.array_equal(mean_in, running_mean) and np.array_equal(var_in, running_var)):
            raise AssertionError(f"{name}: eval mode changed running_mean or running_var "
                                 f"({where}); it must only read them")
        if isinstance(y, tuple):
            raise AssertionError(f"{name}: should return y alone (eval mode needs no cache); "
                                 f"got a tuple for {where}")
        y = _as_output(name, "y", y, case.x.shape, where)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        reference = F.batch_norm(t(case.x), t(running_mean), t(running_var), t(case.gamma),
                                 t(case.beta), training=False, eps=case.eps).numpy()
        err = rel_error(y, reference)
        errors.append(err)
        if not err < ANALYTIC:
            failures.append((case, y, err, variants))
    if failures:
        case, y, err, variants = failures[0]
        raise AssertionError(_failure(
            name, "y", [(case, y, err)], variants, ANALYTIC,
            "no common mistake matches exactly. Each channel should be mapped by "
            "y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta; compare yours "
            "with bnbook.numpy_norms.batch_norm_inference_forward on this input"))
    _passed(name, max(errors), ANALYTIC, len(errors))

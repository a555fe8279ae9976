"""Checkers for forward passes: batch norm (training and eval mode), layer and group norm."""

from __future__ import annotations

import numpy as np

from bnbook.checks import _reference as ref
from bnbook.checks._harness import (ANALYTIC, CheckFailed, as_output, call, check_unchanged,
                                    checker, copies, float32_like, inputs_summary, label, locate,
                                    make_case, match, passed, section, unpack)
from bnbook.checks._variants import bn_variants, gn_variants, inference_variants, ln_variants
from bnbook.gradcheck import rel_error

_FLOAT32_HINTS = [
    "part of the computation runs in float32 (a cast such as .astype(np.float32) or "
    "np.float32(...), or an array made with dtype=np.float32): the error has the size of "
    "float32 rounding, far above float64's.",
    f"float32 keeps about 7 significant digits, float64 about 16 ({section('tolerances')}); "
    f"the exercise works in the input's float64 throughout.",
]


def _failure(name, output, failures, results, variants, kind, generic):
    """The :class:`CheckFailed` for the first failing input a known mistake explains (or the
    first failing input, with the float32 or the generic hints)."""
    for case, got, expected, err in failures:
        variant = match(got, case, variants(case))
        if variant is not None:
            hints = [variant.mistake, variant.equation]
            break
    else:
        case, got, expected, err = failures[0]
        hints = _FLOAT32_HINTS if float32_like(err) else generic
    number = [c for c, _ in results].index(case) + 1
    what = (f"{name}: {output} is wrong for {case.describe()} (input {number} of "
            f"{len(results)}): relative error {err:.1e}, threshold {ANALYTIC:.0e}.\n"
            f"{locate(output, got, expected, case, kind, ANALYTIC)}\n{inputs_summary(results)}")
    return CheckFailed(what, hints)


def _check_forward(name, fn, cases, spec):
    """Run ``fn`` on every case (``spec``: the call's arguments, the reference, the variants,
    the statistics groups, the exercise's name and the generic hints) and compare ``y``."""
    results, errors, failures = [], [], []
    for case in cases:
        x, gamma, beta = copies(case)
        where = case.describe()
        result = call(fn, where, *spec["args"](case, x, gamma, beta), exercise=spec["exercise"])
        check_unchanged(name, fn, case, x, gamma, beta)
        y, _cache = unpack(name, fn, result, ("y", "cache"), where)
        y = as_output(name, "y", y, case.x.shape, where)
        expected = spec["reference"](case)
        err = rel_error(y, expected)
        errors.append(err)
        results.append((case, err < ANALYTIC))
        if not err < ANALYTIC:
            failures.append((case, y, expected, err))
    if failures:
        raise _failure(name, "y", failures, results, spec["variants"], spec["kind"],
                       spec["generic"])
    passed(name, max(errors), ANALYTIC, len(cases))


def _bn_cases():
    return [
        make_case(0, (16, 5), (5,)),
        make_case(1, (7, 3), (3,)),
        make_case(2, (4, 3, 5, 5), (3,)),
        make_case(3, (2, 4, 3, 6), (4,)),
        make_case(4, (5, 2, 8), (2,)),
        make_case(5, (6, 4, 3, 3), (4,), eps=1e-3, spread=0.05),  # eps comparable to var
    ]


def _generic(unit, where):
    return [f"no single common mistake explains this output. Check one step at a time on "
            f"this input: per {unit}, your x_hat should have mean 0 and mean square "
            f"var / (var + eps).",
            f"the equations, one line each, are in {where}."]


@checker
def check_batch_norm_forward(fn) -> None:
    """Check a training-mode batch norm forward ``fn(x, gamma, beta, eps=1e-5) -> (y, cache)``.

    ``x`` is ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)`` float64; ``gamma``, ``beta`` are
    ``(C,)``; ``y`` must match the float64 reference to ``1e-10`` (relative error). Raises
    :class:`~bnbook.checks.CheckFailed` saying what is wrong; ``hint=1`` and ``hint=2`` add the
    likely mistake and the chapter's equation.
    """
    _check_forward("check_batch_norm_forward", fn, _bn_cases(), dict(
        args=lambda case, x, gamma, beta: (x, gamma, beta, case.eps),
        reference=lambda c: ref.batch_norm(c.x, c.gamma, c.beta, c.eps),
        variants=lambda case: bn_variants(), kind="channel", exercise="batch_norm_forward",
        generic=_generic("channel", section("bn-forward"))))


@checker
def check_layer_norm_forward(fn) -> None:
    """Check a layer norm forward ``fn(x, gamma, beta, eps=1e-5) -> (y, cache)``.

    Each sample is normalised over all axes but the first (biased variance); ``gamma`` and
    ``beta`` have shape ``x.shape[1:]``; ``y`` must match the float64 reference to ``1e-10``.
    """
    cases = [
        make_case(10, (6, 8), (8,)),
        make_case(11, (3, 5), (5,)),
        make_case(12, (4, 3, 5, 5), (3, 5, 5)),
        make_case(13, (2, 4, 3, 6), (4, 3, 6)),
        make_case(14, (5, 3, 7), (3, 7)),
        make_case(15, (3, 2, 4, 4), (2, 4, 4), eps=1e-3, spread=0.05),
    ]
    _check_forward("check_layer_norm_forward", fn, cases, dict(
        args=lambda case, x, gamma, beta: (x, gamma, beta, case.eps),
        reference=lambda c: ref.layer_norm(c.x, c.gamma, c.beta, c.eps),
        variants=lambda case: ln_variants(), kind="sample", exercise="layer_norm_forward",
        generic=_generic("sample", section("norm-sets"))))


@checker
def check_group_norm_forward(fn) -> None:
    """Check a group norm forward ``fn(x, gamma, beta, num_groups, eps=1e-5) -> (y, cache)``.

    Channels are split into ``num_groups`` contiguous groups; each (sample, group) is
    normalised with its own mean and biased variance; ``gamma``, ``beta`` have shape ``(C,)``;
    ``y`` must match the float64 reference to ``1e-10``.
    """
    cases = [
        make_case(20, (4, 6, 5, 5), (6,), num_groups=3),
        make_case(21, (2, 8, 4, 4), (8,), num_groups=4),
        make_case(22, (3, 6, 7), (6,), num_groups=2),
        make_case(23, (5, 8), (8,), num_groups=2),
        make_case(24, (3, 6, 3, 3), (6,), num_groups=3, eps=1e-3, spread=0.05),
    ]
    _check_forward("check_group_norm_forward", fn, cases, dict(
        args=lambda case, x, gamma, beta: (x, gamma, beta, case.num_groups, case.eps),
        reference=lambda c: ref.group_norm(c.x, c.gamma, c.beta, c.num_groups, c.eps),
        variants=lambda case: gn_variants(), kind="group", exercise="group_norm_forward",
        generic=_generic("(sample, group)", section("norm-sets"))))


def _inference_cases():
    """Training-mode cases plus running statistics of their own (mean far from the batch's,
    variance in [0.5, 4]), so that batch statistics cannot pass for running ones."""
    cases = []
    for seed, case in enumerate(_bn_cases()):
        rng = np.random.default_rng(100 + seed)
        c = case.gamma.shape[0]
        cases.append((case, (rng.normal(-1.0, 2.0, c), rng.uniform(0.5, 4.0, c))))
    return cases


@checker
def check_batch_norm_inference_forward(fn) -> None:
    """Check an eval-mode batch norm ``fn(x, gamma, beta, running_mean, running_var, eps=1e-5)
    -> y``.

    ``x`` is ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)`` float64; the four vectors are
    ``(C,)``; ``y`` must match the float64 reference to ``1e-10``, and the running statistics
    must come back unchanged.
    """
    name = "check_batch_norm_inference_forward"
    stats, results, errors, failures = {}, [], [], []
    for case, (running_mean, running_var) in _inference_cases():
        x, gamma, beta = copies(case)
        mean_in, var_in = running_mean.copy(), running_var.copy()
        where = case.describe()
        y = call(fn, where, x, gamma, beta, mean_in, var_in, case.eps,
                 exercise="batch_norm_inference_forward")
        check_unchanged(name, fn, case, x, gamma, beta)
        if not (np.array_equal(mean_in, running_mean) and np.array_equal(var_in, running_var)):
            raise CheckFailed(f"{name}: {label(fn)} changed running_mean or running_var "
                              f"({where}); eval mode only reads them.",
                              ["an in-place update of the running statistics (+=, *=, or "
                               "assignment into the array)."])
        if isinstance(y, tuple):
            raise CheckFailed(f"{name}: {label(fn)} returned a tuple for {where}; this "
                              f"function returns y alone (eval mode needs no cache).")
        y = as_output(name, "y", y, case.x.shape, where)
        expected = ref.batch_norm_eval(case.x, case.gamma, case.beta, running_mean, running_var,
                                       case.eps)
        err = rel_error(y, expected)
        stats[id(case)] = (running_mean, running_var)
        errors.append(err)
        results.append((case, err < ANALYTIC))
        if not err < ANALYTIC:
            failures.append((case, y, expected, err))
    if failures:
        raise _failure(name, "y", failures, results,
                       lambda case: inference_variants(*stats[id(case)]), "channel",
                       _generic_inference())
    passed(name, max(errors), ANALYTIC, len(errors))


def _generic_inference():
    return ["no single common mistake explains this output. In eval mode nothing depends on "
            "the batch: each channel is one multiplication and one addition.",
            f"the eval-mode equation is in {section('inference')}."]

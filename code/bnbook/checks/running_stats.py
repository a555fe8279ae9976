"""The checker for a BatchNorm class's running statistics and train/eval modes."""

from __future__ import annotations

import inspect

import numpy as np

from bnbook.checks import _reference as ref
from bnbook.checks._harness import (ANALYTIC, DEFAULT_EPS, MATCH, Case, CheckFailed, as_output,
                                    call, checker, label, locate, passed, section)
from bnbook.gradcheck import rel_error

_MOMENTUM = 0.1
_EXERCISE = "BatchNorm"
_QUANTITIES = ("y", "running_mean", "running_var")


def _running_plans():
    """Two sequences of (mode, x): three training batches, one in eval mode, one more in
    training mode after ``train()``. Batches differ in mean and spread, so that the running
    statistics move."""
    plans = []
    for seed, shape in ((40, (8, 4)), (41, (4, 3, 4, 4))):
        rng = np.random.default_rng(seed)
        c = shape[1]
        by_channel = (1, c) + (1,) * (len(shape) - 2)
        batches = []
        for mode, loc in (("train", 2.0), ("train", 4.0), ("train", 3.0), ("eval", 5.0),
                          ("train", 1.0)):
            centre = loc + rng.uniform(-1, 1, by_channel)
            spread = rng.uniform(0.5, 3.0, by_channel)
            batches.append((mode, rng.standard_normal(shape) * spread + centre))
        plans.append(batches)
    return plans


def _simulate_running(plan, eps=DEFAULT_EPS, momentum=_MOMENTUM, **mistakes):
    """The trace ``[(y, running_mean, running_var), ...]`` of a layer with gamma=1, beta=0
    following ``plan``, with the classic ``mistakes`` (keywords of :data:`_VARIANTS`)."""
    flag = lambda key: mistakes.get(key, False)  # noqa: E731
    c = plan[0][1].shape[1]
    running_mean, running_var = np.zeros(c), np.ones(c)
    count, been_in_eval, trace = 0, False, []
    for mode, x in plan:
        axes = ref.channel_axes(x.ndim)
        m = x.shape[0] if flag("count_n") else x.size // c
        mu, var = x.mean(axis=axes), x.var(axis=axes)
        been_in_eval |= mode == "eval"
        training = mode == "train" and not (flag("stuck_in_eval") and been_in_eval)

        def normalise(mean, variance):
            return ((x - ref.per_channel(mean, x.ndim))
                    / np.sqrt(ref.per_channel(variance, x.ndim) + eps))

        updates = (training or flag("eval_update") or flag("eval_update_first")) \
            and not flag("frozen")
        if updates and flag("eval_update_first") and not training:
            count += 1
            running_mean, running_var = _update(running_mean, running_var, mu, var, m,
                                                momentum, mistakes, count)
            updates = False
        if training:
            y = (normalise(running_mean, running_var) if flag("train_running")
                 else normalise(mu, var * m / (m - 1) if flag("train_unbiased") else var))
        else:
            y = normalise(mu, var) if flag("eval_batch") else normalise(running_mean, running_var)
        if updates:
            count += 1
            running_mean, running_var = _update(running_mean, running_var, mu, var, m,
                                                momentum, mistakes, count)
        trace.append((y, running_mean.copy(), running_var.copy()))
    return trace


def _update(running_mean, running_var, mu, var, m, momentum, mistakes, count):
    weight = (1.0 / count if mistakes.get("cumulative")
              else 1.0 - momentum if mistakes.get("keras") else momentum)
    batch_var = var if mistakes.get("biased_running") else var * m / (m - 1)
    if mistakes.get("running_std"):
        batch_var = np.sqrt(batch_var)
    return ((1 - weight) * running_mean + weight * mu,
            (1 - weight) * running_var + weight * batch_var)


_UPDATE = (f"{section('layer')}: in training mode, running_mean <- (1 - momentum) * "
           f"running_mean + momentum * mu_B and running_var <- (1 - momentum) * running_var + "
           f"momentum * m / (m - 1) * var_B, with m the number of values per channel.")
_MODES = (f"{section('layer')}: training mode normalises with the batch's mean and biased "
          f"variance and updates the running statistics; eval mode normalises with "
          f"running_mean and running_var and leaves them alone; train() and eval() switch.")

#: (mistake, equation, keywords of _simulate_running)
_VARIANTS = [
    ("Keras's momentum convention: your momentum weighs the old running value, PyTorch's "
     "(and the book's) weighs the new batch.", _UPDATE, dict(keras=True)),
    ("running_var averages the biased batch variance; the running estimate uses the "
     "unbiased one.", _UPDATE, dict(biased_running=True)),
    ("running_var averages the batch's standard deviation, not its variance.", _UPDATE,
     dict(running_std=True)),
    ("m = N in the unbiased factor m / (m - 1): for (N, C, H, W) inputs m counts the values "
     "per channel, N*H*W.", f"{_UPDATE} ({section('bn-conv')}.)", dict(count_n=True)),
    ("training mode normalises with the unbiased variance; only the running estimate uses "
     "m / (m - 1).", _MODES, dict(train_unbiased=True)),
    ("training mode normalises with the running statistics, not the batch's.", _MODES,
     dict(train_running=True)),
    ("eval mode normalises with the batch statistics.", _MODES, dict(eval_batch=True)),
    ("the running statistics are updated in eval mode.", _MODES, dict(eval_update=True)),
    ("the running statistics are updated in eval mode, before y is computed from them.",
     _MODES, dict(eval_update_first=True)),
    ("eval() has no effect: in eval mode the layer still behaves as in training mode.", _MODES,
     dict(eval_batch=True, eval_update=True)),
    ("the running statistics are a cumulative average (weight 1/k for batch k); with "
     "momentum=0.1 they are an exponential moving average.", _UPDATE, dict(cumulative=True)),
    ("the running statistics are never updated.", _UPDATE, dict(frozen=True)),
    ("train() does not switch back to training mode after eval().", _MODES,
     dict(stuck_in_eval=True)),
]


def _student_trace(name, module_cls, plan):
    c = plan[0][1].shape[1]
    where = f"num_features={c}"
    module = call(module_cls, where, c, DEFAULT_EPS, _MOMENTUM, exercise=_EXERCISE)
    for attribute in ("forward", "train", "eval", "running_mean", "running_var"):
        if not hasattr(module, attribute):
            raise CheckFailed(f"{name}: {label(module_cls)} has no attribute `{attribute}`; the "
                              f"layer needs forward(x), train(), eval(), running_mean and "
                              f"running_var.")

    def stats(after):
        return [as_output(name, attribute, np.asarray(getattr(module, attribute)), (c,), after)
                for attribute in ("running_mean", "running_var")]

    initial = stats("a new layer")
    if not (np.array_equal(initial[0], np.zeros(c)) and np.array_equal(initial[1], np.ones(c))):
        raise CheckFailed(f"{name}: a new layer has running_mean = {initial[0]} and "
                          f"running_var = {initial[1]}; a new layer starts from zeros(C) and "
                          f"ones(C) (PyTorch's convention).")
    trace, mode_now = [], "train"
    for step, (mode, x) in enumerate(plan, start=1):
        if mode != mode_now:
            call(getattr(module, mode), where, exercise=_EXERCISE)
            mode_now = mode
        after = f"forward #{step} ({mode} mode, x of shape {x.shape})"
        y = call(module.forward, after, x.copy(), exercise=_EXERCISE)
        if isinstance(y, tuple):
            raise CheckFailed(f"{name}: forward(x) returned a tuple after {after}; the layer's "
                              f"forward returns y alone.")
        y = as_output(name, "y", y, x.shape, after)
        trace.append((y.copy(), *(s.copy() for s in stats(after))))
    return [(None, *initial)] + trace


def _match_trace(ours, step, q, plan):
    """The mistake that explains the first wrong quantity, preferring the one that explains
    the most of the whole trace."""
    best, best_score = None, -1
    for mistake, equation, flags in _VARIANTS:
        trace = _simulate_running(plan, **flags)
        if not rel_error(ours[step][q], trace[step][q]) < MATCH:
            continue
        score = sum(rel_error(a, b) < MATCH for o, t in zip(ours, trace)
                    for a, b in zip(o, t))
        if score > best_score:
            best, best_score = [mistake, equation], score
    return best


def _eval_change(name, ours, step, plan):
    """A :class:`CheckFailed` if an eval-mode forward changed the running statistics."""
    mode, x = plan[step]
    before, after = ours[step][1:], ours[step + 1][1:]
    changed = [q for q, b, a in zip(_QUANTITIES[1:], before, after) if not np.array_equal(b, a)]
    if mode != "eval" or not changed:
        return None
    q = _QUANTITIES.index(changed[0])
    k = int(np.argmax(np.abs(after[q - 1] - before[q - 1])))
    return CheckFailed(
        f"{name}: {' and '.join(changed)} changed during forward #{step + 1}, an eval-mode "
        f"forward (x of shape {x.shape}): {changed[0]}[{k}] went from {before[q - 1][k]:.6g} "
        f"to {after[q - 1][k]:.6g}.",
        _match_trace(ours[1:], step, q, plan)
        or ["the running statistics are updated in eval mode.", _MODES])


@checker
def check_running_stats(module_cls) -> None:
    """Check a batch norm layer's running statistics and train/eval behaviour.

    ``module_cls(num_features, eps=1e-5, momentum=0.1)`` must build a layer with PyTorch's
    conventions (gamma=1, beta=0 initially): ``forward(x) -> y``, ``running_mean`` (zeros) and
    ``running_var`` (ones) of shape ``(C,)``, ``train()``, ``eval()``. It is run on two
    sequences (2-D and 4-D) of three training-mode batches, one eval-mode batch and one more
    training batch after ``train()``; after each forward, ``y``, ``running_mean`` and
    ``running_var`` must match the float64 reference to ``1e-10``.
    """
    name = "check_running_stats"
    if not (isinstance(module_cls, type) or inspect.isroutine(module_cls)):
        raise CheckFailed(
            f"{name}: got an instance of {type(module_cls).__name__}, not a class; pass the "
            f"class itself, e.g. check_running_stats(BatchNorm), not BatchNorm(3): the checker "
            f"builds its own layers as module_cls(num_features, eps, momentum).")
    errors, steps = [], 0
    for plan in _running_plans():
        ours = _student_trace(name, module_cls, plan)
        reference = [(None, np.zeros(plan[0][1].shape[1]), np.ones(plan[0][1].shape[1]))]
        reference += ref.running_trace(plan, DEFAULT_EPS, _MOMENTUM)
        for step in range(len(plan)):
            steps += 1
            eval_change = _eval_change(name, ours, step, plan)
            if eval_change is not None:
                raise eval_change
            errs = [rel_error(ours[step + 1][q], reference[step + 1][q]) for q in range(3)]
            errors += errs
            wrong = [q for q in range(3) if not errs[q] < ANALYTIC]
            if wrong:
                raise _step_failure(name, ours, reference, plan, step, wrong, errs)
    passed(name, max(errors), ANALYTIC, steps, "forward passes")


def _step_failure(name, ours, reference, plan, step, wrong, errs):
    mode, x = plan[step]
    q = wrong[0]
    got, expected = ours[step + 1][q], reference[step + 1][q]
    case = Case(x, np.ones(x.shape[1]), np.zeros(x.shape[1]))
    where = locate(_QUANTITIES[q], got, expected, case, "channel" if q == 0 else None,
                   ANALYTIC)
    status = ", ".join(f"{label_} {'wrong' if k in wrong else 'right'}"
                       for k, label_ in enumerate(_QUANTITIES))
    before = f"In this sequence forwards #1 to #{step} were right; after" if step else "After"
    hints = _match_trace(ours[1:], step, q, plan) or [
        "no single common mistake explains it; print running_mean and running_var after each "
        "forward and compare them with the update rule by hand.", _UPDATE]
    return CheckFailed(
        f"{name}: {_QUANTITIES[q]} is wrong after forward #{step + 1} ({mode} mode, x of shape "
        f"{x.shape}): relative error {errs[q]:.1e}, threshold {ANALYTIC:.0e}.\n{where}\n"
        f"{before} #{step + 1}: {status}.", hints)

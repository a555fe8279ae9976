"""The checker for a BatchNorm class's running statistics and train/eval modes."""

from __future__ import annotations

import numpy as np

from bnbook.checks._harness import ANALYTIC, DEFAULT_EPS, MATCH, _as_output, _call, _label, _passed
from bnbook.gradcheck import rel_error
from bnbook.numpy_norms import BatchNorm, per_channel, reduction_axes

# --- running statistics ------------------------------------------------------------------------

_MOMENTUM = 0.1


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


def _simulate_running(plan, eps=DEFAULT_EPS, momentum=_MOMENTUM, *, keras=False,
                      biased_running=False, train_unbiased=False, train_running=False,
                      eval_batch=False, eval_update=False, cumulative=False, frozen=False,
                      stuck_in_eval=False):
    """The trace ``[(y, running_mean, running_var), ...]`` of a layer with gamma=1, beta=0
    following ``plan``; the keywords make the classic mistakes (all False: PyTorch's layer)."""
    c = plan[0][1].shape[1]
    running_mean, running_var = np.zeros(c), np.ones(c)
    count, has_been_in_eval, trace = 0, False, []
    for mode, x in plan:
        axes = reduction_axes(x.ndim)
        m = x.size // c
        mu, var = x.mean(axis=axes), x.var(axis=axes)
        has_been_in_eval |= mode == "eval"
        training = mode == "train" and not (stuck_in_eval and has_been_in_eval)

        def normalise(mean, variance):
            return (x - per_channel(mean, x.ndim)) / np.sqrt(per_channel(variance, x.ndim) + eps)

        if training:
            if train_running:
                y = normalise(running_mean, running_var)
            else:
                y = normalise(mu, var * m / (m - 1) if train_unbiased else var)
        else:
            y = normalise(mu, var) if eval_batch else normalise(running_mean, running_var)
        if (training or eval_update) and not frozen:
            count += 1
            weight = 1.0 / count if cumulative else (1.0 - momentum if keras else momentum)
            batch_var = var if biased_running else var * m / (m - 1)
            running_mean = (1 - weight) * running_mean + weight * mu
            running_var = (1 - weight) * running_var + weight * batch_var
        trace.append((y, running_mean.copy(), running_var.copy()))
    return trace


_RUNNING_VARIANTS = [
    ("Keras's momentum convention: PyTorch's momentum is the weight of the *new* batch, "
     "running = (1 - momentum) * running + momentum * batch", dict(keras=True)),
    ("running_var averages the biased batch variance; PyTorch (and the book) average the "
     "unbiased one, var * m / (m - 1), while the batch itself is normalised with the biased one",
     dict(biased_running=True)),
    ("training mode normalises with the unbiased variance; only running_var uses "
     "var * m / (m - 1), the batch is normalised with the biased variance",
     dict(train_unbiased=True)),
    ("training mode normalises with the running statistics; in training mode use the batch's "
     "own mean and (biased) variance", dict(train_running=True)),
    ("eval mode normalises with the batch statistics; in eval mode use running_mean and "
     "running_var", dict(eval_batch=True)),
    ("the running statistics are updated in eval mode; update them only in training mode",
     dict(eval_update=True)),
    ("eval() has no effect: in eval mode forward should normalise with the running statistics "
     "and leave them unchanged", dict(eval_batch=True, eval_update=True)),
    ("the running statistics are a cumulative average (weight 1/k for batch k, PyTorch's "
     "momentum=None); with momentum=0.1 they are an exponential moving average",
     dict(cumulative=True)),
    ("the running statistics are never updated: each training-mode forward should do "
     "running = (1 - momentum) * running + momentum * batch", dict(frozen=True)),
    ("train() does not switch back to training mode: after eval() and then train(), forward "
     "should use batch statistics and update the running statistics again",
     dict(stuck_in_eval=True)),
]


def _student_trace(name, module_cls, plan):
    c = plan[0][1].shape[1]
    where = f"num_features={c}"
    module = _call(module_cls, where, c, eps=DEFAULT_EPS, momentum=_MOMENTUM)
    for attribute in ("forward", "train", "eval", "running_mean", "running_var"):
        if not hasattr(module, attribute):
            raise AssertionError(f"{name}: {_label(module_cls)} has no attribute "
                                 f"`{attribute}`; the layer needs forward(x), train(), eval(), "
                                 f"running_mean and running_var")

    def stats(after):
        out = []
        for attribute in ("running_mean", "running_var"):
            value = np.asarray(getattr(module, attribute))
            out.append(_as_output(name, attribute, value, (c,), after))
        return out

    initial_mean, initial_var = stats("a new layer")
    if not (np.array_equal(initial_mean, np.zeros(c)) and np.array_equal(initial_var,
                                                                         np.ones(c))):
        raise AssertionError(f"{name}: a new layer should start with running_mean = zeros(C) "
                             f"and running_var = ones(C) (PyTorch's convention); got "
                             f"{initial_mean} and {initial_var}")
    trace, mode_now = [], "train"
    for step, (mode, x) in enumerate(plan, start=1):
        if mode != mode_now:
            _call(getattr(module, mode), where)
            mode_now = mode
        after = f"forward #{step} ({mode} mode, x of shape {x.shape})"
        y = _call(module.forward, after, x.copy())
        if isinstance(y, tuple):
            raise AssertionError(f"{name}: forward(x) should return y alone, as the book's "
                                 f"BatchNorm; got a tuple after {after}")
        y = _as_output(name, "y", y, x.shape, after)
        trace.append((y.copy(), *(s.copy() for s in stats(after))))
    return trace


def check_running_stats(module_cls) -> None:
    """Check a batch norm layer's running statistics and train/eval behaviour.

    ``module_cls(num_features, eps=1e-5, momentum=0.1)`` must build a layer with the interface
    and conventions of :class:`bnbook.numpy_norms.BatchNorm` (gamma=1, beta=0 initially):
    ``forward(x) -> y``, ``running_mean`` (zeros) and ``running_var`` (ones) of shape ``(C,)``,
    ``train()``, ``eval()``. It is run on two sequences (2-D and 4-D) of three training-mode
    batches, one eval-mode batch and one more training batch after ``train()``; after each
    forward, ``y``, ``running_mean`` and ``running_var`` must match the book's layer to
    ``1e-10``. Raises ``AssertionError`` with the step, the quantity and the likely mistake.
    """
    name = "check_running_stats"
    errors, steps = [], 0
    quantities = ("y", "running_mean", "running_var")
    for plan in _running_plans():
        ours = _student_trace(name, module_cls, plan)
        reference = _student_trace(name, BatchNorm, plan)
        variants = [(hint, _simulate_running(plan, **flags)) for hint, flags in _RUNNING_VARIANTS]
        for step, (mode, x) in enumerate(plan):
            steps += 1
            for q, label in enumerate(quantities):
                err = rel_error(ours[step][q], reference[step][q])
                errors.append(err)
                if err < ANALYTIC:
                    continue
                hint = _match_trace(ours, step, q, variants) or (
                    "no common mistake matches exactly; compare your layer with "
                    "bnbook.numpy_norms.BatchNorm step by step")
                raise AssertionError(
                    f"{name}: {label} is wrong after forward #{step + 1} ({mode} mode, x of "
                    f"shape {x.shape}) (rel. error {err:.1e} against the book's BatchNorm, "
                    f"threshold {ANALYTIC:.0e}).\nLikely mistake: {hint}")
    _passed(name, max(errors), ANALYTIC, steps, "forward passes")


def _match_trace(ours, step, q, variants):
    """The variant that explains the first wrong quantity, preferring the one that explains
    the most of the whole trace."""
    best, best_score = None, -1
    for hint, trace in variants:
        if not rel_error(ours[step][q], trace[step][q]) < MATCH:
            continue
        score = sum(rel_error(a, b) < MATCH for ours_step, trace_step in zip(ours, trace)
                    for a, b in zip(ours_step, trace_step))
        if score > best_score:
            best, best_score = hint, score
    return best

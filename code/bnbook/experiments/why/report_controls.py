"""The numbers chapter 9 can quote from the control experiments' results, with their spread
over seeds.

Each function takes a result dict (:func:`bnbook.results.read_result` of a file written by
``python -m bnbook.experiments.why.run_cnn_noise``, ``why_figure1_noise``, ``why_weightnorm``,
``why_decay``, ``why_hessian`` or ``why_filter_angles``; runs keyed ``"<arm>/.../seed<s>"``)
and returns plain numbers; :func:`bnbook.experiments.why.ics_seeds.ics_seed_summary` does the same for the
ICS runs.

* :func:`curves_over_seeds` - a per-epoch (or per-logged-step) series of every arm: per seed,
  and the mean, minimum and maximum over seeds at each point;
* :func:`sharpness_summary` - per network and learning rate, the sharpness over the second
  half of training in units of ``2 / lr`` (1 is the edge of stability of gradient descent);
* :func:`filter_angle_summary` - per optimiser and weight decay, the measured equilibrium
  angle over each of the two predictions.
"""

from __future__ import annotations

import numpy as np

from bnbook.experiments.why.report import by_variant

__all__ = ["curves_over_seeds", "sharpness_summary", "filter_angle_summary"]


def _spread(values) -> dict:
    kept = [v for v in values if v is not None]
    if not kept:
        return {"per_seed": list(values), "median": None, "min": None, "max": None}
    return {"per_seed": list(values), "median": float(np.median(kept)),
            "min": float(min(kept)), "max": float(max(kept))}


def curves_over_seeds(result: dict, key: str = "test_acc") -> dict:
    """``{arm: {"per_seed": [series of each seed], "mean", "min", "max"}}`` for the series
    ``key`` of every run (``test_acc``, ``clean_train_loss``, ...). A run that diverged has a
    shorter series; the statistics cover the points every seed reached, and a ``None`` (a loss
    that overflowed) makes that point ``None``."""
    out = {}
    for arm, runs in by_variant(result).items():
        series = [list(r[key]) for r in runs]
        n = min(len(s) for s in series)
        stats = {"mean": [], "min": [], "max": []}
        for i in range(n):
            column = [s[i] for s in series]
            ok = None not in column
            stats["mean"].append(float(np.mean(column)) if ok else None)
            stats["min"].append(float(min(column)) if ok else None)
            stats["max"].append(float(max(column)) if ok else None)
        out[arm] = {"per_seed": series, **stats}
    return out


def sharpness_summary(result: dict) -> dict:
    """Per ``"<norm>/lr<lr>"`` of a hessian result: ``lambda_max`` and ``grad_curvature``
    times ``lr / 2`` (so 1 means ``2 / lr``), each seed's median over the measurements in the
    second half of its updates, then :func:`_spread` over seeds (``per_seed``, ``median``,
    ``min``, ``max``); ``diverged``: per seed."""
    out = {}
    for arm, runs in by_variant(result).items():
        rows = {"lambda_max": [], "grad_curvature": [], "diverged": []}
        for run in runs:
            half = run["steps"] / 2
            late = [m for m in run["measurements"] if m["step"] >= half]
            scale = 1.0 / run["two_over_lr"]              # lr / 2
            for name in ("lambda_max", "grad_curvature"):
                values = [m[name] * scale for m in late if m.get(name) is not None]
                rows[name].append(float(np.median(values)) if values else None)
            rows["diverged"].append(bool(run["diverged"]))
        out[arm] = {"lambda_max_x_lr_over_2": _spread(rows["lambda_max"]),
                    "grad_curvature_x_lr_over_2": _spread(rows["grad_curvature"]),
                    "diverged": rows["diverged"]}
    return out


def filter_angle_summary(result: dict) -> dict:
    """Per ``"<optimiser>/wd<wd>"`` of a filter-angles result: the measured angle (median over
    the conv layers of each layer's median filter over the last window) divided by
    ``sqrt(2 eta lambda / (1 + mu))`` (``ratio_momentum``) and by ``sqrt(2 eta lambda)``
    (``ratio_plain``), each as :func:`_spread` over seeds; ``predicted_momentum`` and
    ``predicted_plain`` in radians."""
    out = {}
    for arm, runs in by_variant(result).items():
        measured = [float(np.median(r["window_median"])) for r in runs]
        out[arm] = {"measured": _spread(measured),
                    "ratio_momentum": _spread([m / r["predicted_momentum"]
                                               for m, r in zip(measured, runs)]),
                    "ratio_plain": _spread([m / r["predicted_plain"]
                                            for m, r in zip(measured, runs)]),
                    "predicted_momentum": runs[0]["predicted_momentum"],
                    "predicted_plain": runs[0]["predicted_plain"]}
    return out

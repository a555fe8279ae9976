"""The numbers the why-BN chapter quotes, computed from the stored results.

Each function takes a result dict (:func:`bnbook.results.read_result` of a file written by
``python -m bnbook.experiments.why_*``) and returns plain numbers, so that the chapter's
cells only glue and print them:

* :func:`figure1_summary` and :func:`typical_unit` - the Figure-1 runs;
* :func:`noisy_cnn_summary` and :func:`noisy_cnn_epochs` - the noisy-BN runs on the CNN, at
  the end and epoch by epoch;
* :func:`landscape_table` - the landscape and internal-covariate-shift measurements;
  :func:`probe_maxima` - at which probed step size their maxima fall;
* :func:`scale_summary` - the effective-learning-rate runs.

Accuracies are fractions, movements are in the units :func:`bnbook.why.noise.distribution_movement`
states, "mean" is over seeds.
"""

from __future__ import annotations

import numpy as np

from bnbook.why.scale import equilibrium_angle

__all__ = ["by_variant", "steps_to_accuracy", "figure1_summary", "typical_unit",
           "noisy_cnn_summary", "noisy_cnn_epochs", "landscape_table", "probe_maxima",
           "scale_summary"]


def by_variant(result: dict) -> dict:
    """``{variant: [run of each seed]}`` from runs keyed ``"<variant>/.../seed<s>"``."""
    out: dict = {}
    for key, run in result["runs"].items():
        out.setdefault(key.rsplit("/seed", 1)[0], []).append(run)
    return out


def steps_to_accuracy(steps, acc, target: float):
    """The first logged step from which the accuracy stays at or above ``target``; ``None``
    if the last one is below it."""
    acc = np.asarray(acc)
    below = np.flatnonzero(acc < target)
    if below.size and below[-1] == acc.size - 1:
        return None
    return int(steps[below[-1] + 1]) if below.size else int(steps[0])


def _mean_dicts(dicts) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def figure1_summary(result: dict, target: float = 0.8) -> dict:
    """Per variant: ``final_acc`` (mean), ``final_acc_seeds``, ``steps_to_target`` (per seed,
    first logged step from which the test accuracy stays >= ``target``), ``movement`` and
    ``movement_per_update`` (means over seeds), ``spread_start``, ``spread_end`` and
    ``drift`` (medians over the last hidden layer's units, mean over seeds)."""
    out = {}
    for variant, runs in by_variant(result).items():
        finals = [r["test_acc"][-1] for r in runs]
        out[variant] = {
            "final_acc": float(np.mean(finals)), "final_acc_seeds": finals,
            "steps_to_target": [steps_to_accuracy(r["steps"], r["test_acc"], target)
                                for r in runs],
            "movement": _mean_dicts([r["movement"] for r in runs]),
            "movement_per_update": _mean_dicts([r["movement_per_update"] for r in runs]),
            "spread_start": float(np.mean([r["spread_start_median"] for r in runs])),
            "spread_end": float(np.mean([r["spread_end_median"] for r in runs])),
            "drift": float(np.mean([r["median_drift"] for r in runs]))}
    return out


def typical_unit(run: dict) -> int:
    """Among the stored units of a Figure-1 run, the one whose median wandered (at its
    furthest from its start) by the median amount: "a typical activation", chosen by a rule
    rather than by eye."""
    median = np.asarray(run["percentiles"])[:, 1, :]
    drift = np.abs(median - median[0]).max(axis=0)
    return int(np.argsort(drift)[drift.size // 2])


def noisy_cnn_summary(result: dict) -> dict:
    """Per variant: ``final_acc`` (mean and ``acc_sd`` over seeds), ``final_train_loss``
    (mean), ``diverged`` (any seed), ``per_update`` and ``between_logs`` (the movement dicts
    averaged over the four conv layers and the seeds)."""
    out = {}
    for variant, runs in by_variant(result).items():
        ok = [r for r in runs if not r["diverged"]]
        accs = [r["test_acc"][-1] for r in ok]
        out[variant] = {
            "final_acc": float(np.mean(accs)) if accs else None,
            "acc_sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
            "final_train_loss": float(np.mean([r["epoch_train_loss"][-1] for r in ok]))
            if ok else None,
            "diverged": len(ok) < len(runs),
            "per_update": _mean_dicts([m for r in ok for m in r["movement_per_update"]])
            if ok else None,
            "between_logs": _mean_dicts([m for r in ok for m in r["movement"]]) if ok else None}
    return out


def noisy_cnn_epochs(result: dict) -> dict:
    """Per variant: ``test_acc``, an array ``(n_seeds, n_epochs)`` of the test accuracy after
    every epoch (seeds in the order stored), and ``seeds``, the seed numbers. Diverged runs are
    kept; their accuracies are what they are."""
    out = {}
    for key, run in result["runs"].items():
        variant, seed = key.rsplit("/seed", 1)
        entry = out.setdefault(variant, {"seeds": [], "rows": []})
        entry["seeds"].append(int(seed))
        entry["rows"].append(run["test_acc"])
    return {v: {"seeds": e["seeds"], "test_acc": np.array(e["rows"], dtype=np.float64)}
            for v, e in out.items()}


def probe_maxima(result: dict) -> dict:
    """Per ``(norm, lr)``: where along the probed step sizes the two maxima of the landscape
    probe fall. ``n`` (measurements with every value finite), ``beta_at_smallest`` (how many
    of them take effective beta, ``max_eta ||dg(eta)|| / (eta ||g||)``, at the smallest probed
    ``eta``), ``diff_at_largest`` (how many take the largest gradient change ``||dg(eta)||``
    at the largest ``eta``), ``smallest`` and ``largest`` (those two step sizes)."""
    out = {}
    for key, run in result["runs"].items():
        norm, lr, _ = key.split("/")
        etas = np.asarray(run["etas"], dtype=np.float64)
        n = at_smallest = at_largest = 0
        for m in run["measurements"]:
            diffs = m["grad_diffs"]
            if diffs is None or any(d is None for d in diffs) or not m["grad_norm"]:
                continue
            diffs = np.asarray(diffs, dtype=np.float64)
            n += 1
            at_smallest += int(np.argmax(diffs / (etas * m["grad_norm"])) == 0)
            at_largest += int(np.argmax(diffs) == etas.size - 1)
        out[norm, float(lr[2:])] = {"n": n, "beta_at_smallest": at_smallest,
                                    "diff_at_largest": at_largest,
                                    "smallest": float(etas[0]), "largest": float(etas[-1])}
    return out


def landscape_table(result: dict) -> dict:
    """Per ``(norm, lr)``: medians over the measured steps of ``loss_range``,
    ``grad_diff_max``, ``rel_grad_diff`` (``grad_diff_max / ||g||``) and ``beta``; per layer
    the medians of the ICS ``rel`` and ``cos`` (``ics_rel``, ``ics_cos``, lists in the order of
    ``layers``); ``final_acc`` and ``diverged``. A landscape value stored as ``None`` (it
    overflowed) counts as infinite; an ICS ratio stored as ``None`` (undefined: the layer's
    gradient was exactly zero, as in a network whose ReLUs have all died) is left out."""
    out = {}
    for key, run in result["runs"].items():
        norm, lr, _ = key.split("/")
        ms = run["measurements"]

        def med(f, none_is=np.inf):
            # None marks a value that overflowed (counted as infinite) or, for the ICS ratios,
            # one that is undefined because the gradient was exactly zero (left out).
            values = [f(m) for m in ms]
            values = [none_is if v is None else v for v in values]
            values = [v for v in values if v is not None]
            return float(np.median(values)) if values else None

        n_layers = len(run["layers"])
        out[norm, float(lr[2:])] = {
            "loss_range": med(lambda m: m["loss_range"]),
            "grad_diff_max": med(lambda m: m["grad_diff_max"]),
            "rel_grad_diff": med(lambda m: None if m["grad_diff_max"] is None
                                 else m["grad_diff_max"] / m["grad_norm"]),
            "beta": med(lambda m: m["beta"]),
            "ics_rel": [med(lambda m, k=k: m["ics"][k]["rel"], None) for k in range(n_layers)],
            "ics_cos": [med(lambda m, k=k: m["ics"][k]["cos"], None) for k in range(n_layers)],
            "final_acc": run["test_acc"][-1] if run["test_acc"] else None,
            "diverged": run["diverged"], "layers": run["layers"]}
    return out


def scale_summary(result: dict, last: int = 10) -> dict:
    """Per weight decay: ``norm_growth`` (final / initial ``||W_l||`` per hidden layer),
    ``rms_angle_end`` (RMS angle per step over the last ``last`` logged intervals, per
    layer), ``equilibrium`` (:func:`bnbook.why.scale.equilibrium_angle`, ``None`` without
    decay), ``growth_law_error`` (largest relative gap between the measured ``||W||^2`` and
    the one predicted by summing ``lr^2 ||g||^2``; ``None`` with decay, where the sum is not
    the prediction), ``final_acc``."""
    lr = result["settings"]["lr"]
    out = {}
    for key, run in result["runs"].items():
        wd = float(key[2:])
        norms = np.array(run["weight_norm"])
        angles = np.array(run["rms_angle"][1:][-last:], dtype=np.float64)  # [0] is None
        predicted = np.array(run["norm_growth_predicted"])
        out[wd] = {"norm_growth": (norms[-1] / norms[0]).tolist(),
                   "rms_angle_end": np.sqrt((angles ** 2).mean(axis=0)).tolist(),
                   "equilibrium": equilibrium_angle(lr, wd) if wd else None,
                   "growth_law_error": float(np.abs(norms ** 2 / predicted - 1).max())
                   if wd == 0 else None,
                   "final_acc": run["test_acc"][-1]}
    return out

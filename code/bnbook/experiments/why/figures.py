"""The figures of the why-BN chapter (matplotlib only).

Each helper draws onto axes the caller owns, from the JSON-ready records the runners return
(so the chapter draws stored and live results alike), labels what it draws and names the
data set where there is one; captions stay with the chapter.

* :func:`plot_figure1` - the paper's Figure 1: (a) test accuracy, then one panel per
  network with the 15th/50th/85th percentiles of one last-hidden-layer sigmoid's input;
* :func:`plot_landscape` - loss range, gradient change and effective beta-smoothness along
  training, one column per learning rate;
* :func:`plot_ics` - Santurkar et al.'s gradient change per layer along training;
* :func:`plot_scale` - weight norm and angle per step with and without weight decay.
"""

from __future__ import annotations

import numpy as np

from bnbook.plots import plot_percentile_band

__all__ = ["VARIANT_STYLE", "plot_figure1", "plot_landscape", "plot_ics", "plot_scale"]

#: colour and legend label of every network variant
VARIANT_STYLE = {"plain": ("tab:red", "without BN"), "none": ("tab:red", "without BN"),
                 "bn": ("tab:blue", "with BN"), "batch": ("tab:blue", "with BN"),
                 "noisy-bn": ("tab:green", "noisy BN"), "noisy-batch": ("tab:green", "noisy BN")}


def plot_figure1(axes, runs: dict, unit: int, dataset: str, log_steps: bool = True) -> None:
    """``axes[0]``: test accuracy of every run in ``runs`` (``{variant: record}``, records of
    :func:`bnbook.experiments.why.figure1.run_figure1`), on a logarithmic step axis from the first
    logged step after 0 when ``log_steps`` (step 0, chance level, is then not drawn);
    ``axes[1:]``: the percentile band of stored unit ``unit`` of each run in turn, on a
    shared vertical scale."""
    ax = axes[0]
    start = 1 if log_steps else 0
    for variant, run in runs.items():
        colour, label = VARIANT_STYLE[variant]
        ax.plot(run["steps"][start:], run["test_acc"][start:], color=colour, label=label)
    ax.set(xlabel="training step" + (" (log scale)" if log_steps else ""),
           ylabel="test accuracy", title=f"(a) {dataset}: test accuracy")
    if log_steps:
        ax.set_xscale("log")
    ax.legend(fontsize=8, loc="lower right")
    for k, (ax, (variant, run)) in enumerate(zip(axes[1:], runs.items())):
        colour, label = VARIANT_STYLE[variant]
        percentiles = np.asarray(run["percentiles"])[:, :, unit]
        plot_percentile_band(ax, run["steps"], percentiles, colour, label)
        ax.set(xlabel="training step", ylabel="sigmoid input $z$",
               title=f"({'bcd'[k]}) {dataset}: {label}")
    lo = min(a.get_ylim()[0] for a in axes[1:len(runs) + 1])
    hi = max(a.get_ylim()[1] for a in axes[1:len(runs) + 1])
    for a in axes[1:len(runs) + 1]:
        a.set_ylim(lo, hi)


def _measured(run: dict, key):
    steps = np.array([m["step"] for m in run["measurements"]])
    return steps, np.array([key(m) for m in run["measurements"]], dtype=np.float64)


def _lo(values) -> float:        # smallest finite value (None marks an overflow), else NaN
    finite = [v for v in values if v is not None]
    return min(finite) if finite else np.nan


def _hi(values) -> float:        # largest value, infinite if one overflowed (drawn clipped)
    return np.inf if any(v is None for v in values) else max(values)


def plot_landscape(axes, runs: dict, lrs) -> None:
    """``axes``: 3 rows x ``len(lrs)`` columns; ``runs``: ``{(norm, lr): record}`` of
    :func:`bnbook.experiments.why.run_landscape.run_landscape`. Rows: the loss at the probed
    steps along ``-g`` (band from the smallest to the largest), the change of the gradient
    (band), and the effective beta-smoothness (log scale)."""
    for col, lr in enumerate(lrs):
        for norm in ("none", "batch"):
            run = runs.get((norm, lr))
            if run is None or not run["measurements"]:
                continue
            colour, label = VARIANT_STYLE[norm]
            steps, lo = _measured(run, lambda m: _lo(m["losses"]))
            _, hi = _measured(run, lambda m: _hi(m["losses"]))
            axes[0][col].fill_between(steps, lo, hi, color=colour, alpha=0.3, label=label)
            _, dlo = _measured(run, lambda m: _lo(m["grad_diffs"]))
            _, dhi = _measured(run, lambda m: _hi(m["grad_diffs"]))
            axes[1][col].fill_between(steps, dlo, dhi, color=colour, alpha=0.3, label=label)
            _, beta = _measured(run, lambda m: np.inf if m["beta"] is None else m["beta"])
            axes[2][col].semilogy(steps, beta, color=colour, label=label)
        axes[0][col].set_title(f"CIFAR-10 subset, SGD lr {lr:g}", fontsize=9)
        axes[2][col].set_xlabel("training step")
    axes[0][0].set_ylabel("loss along $-g$")
    axes[1][0].set_ylabel(r"$\|\nabla L(w - \eta g) - g\|$")
    axes[2][0].set_ylabel(r"effective $\beta$")
    axes[0][0].legend(fontsize=8)


def plot_ics(axes, runs: dict, layers, layer_names) -> None:
    """``axes``: 2 rows x ``len(layers)``; ``runs``: ``{norm: record}`` of one learning rate.
    Row 0: ``||G - G'|| / ||G||`` of each layer over training (log scale); row 1: the cosine
    between ``G`` and ``G'``."""
    for norm, run in runs.items():
        colour, label = VARIANT_STYLE[norm]
        for col, layer in enumerate(layers):
            k = run["layers"].index(layer)
            steps, rel = _measured(run, lambda m: m["ics"][k]["rel"])
            _, cos = _measured(run, lambda m: m["ics"][k]["cos"])
            axes[0][col].semilogy(steps, rel, color=colour, label=label)
            axes[1][col].plot(steps, cos, color=colour, label=label)
            axes[0][col].set_title(layer_names[col], fontsize=9)
            axes[1][col].set_xlabel("training step")
    axes[0][0].set_ylabel(r"$\|G - G'\| / \|G\|$")
    axes[1][0].set_ylabel(r"$\cos(G, G')$")
    axes[0][0].legend(fontsize=8)


def plot_scale(axes, runs: dict, lr: float, layer: int, dataset: str) -> None:
    """``runs``: ``{weight_decay: record}`` of :func:`bnbook.experiments.why.scale.run_scale`. ``axes[0]``:
    ``||W||`` of hidden layer ``layer``; ``axes[1]``: its RMS angle per step, with the
    equilibrium angle ``sqrt(2 lr wd)``-ish of each weight decay as a dashed line."""
    from bnbook.experiments.why.scale import equilibrium_angle

    for k, (wd, run) in enumerate(sorted(runs.items())):
        colour = f"C{k}"
        label = f"weight decay {wd:g}" if wd else "no weight decay"
        steps = np.array(run["steps"])
        axes[0].plot(steps, [row[layer] for row in run["weight_norm"]], color=colour,
                     label=label)
        angles = np.array([np.nan if row[layer] is None else row[layer]
                           for row in run["rms_angle"]], dtype=np.float64)
        axes[1].semilogy(steps, angles, color=colour, label=label)
        if wd:
            axes[1].axhline(equilibrium_angle(lr, wd), color=colour, ls="--", lw=0.8)
    axes[0].set(xlabel="training step", ylabel=rf"$\|W_{layer + 1}\|$",
                title=f"{dataset}: weight norm")
    axes[1].set(xlabel="training step", ylabel="angle per step (rad, RMS)",
                title=f"{dataset}: angular update")
    axes[0].legend(fontsize=8)

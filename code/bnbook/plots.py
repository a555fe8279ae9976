"""Plotting helpers shared by the chapters (matplotlib only).

Each helper draws onto an ``Axes`` the caller owns and labels what it draws; captions and
titles stay with the chapter, which knows the message of its figure.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["FIG_DPI", "decision_grid", "plot_decision_boundary", "plot_percentile_band",
           "draw_bn_graph", "BN_GRAPH_EDGES", "plot_placement", "plot_batch_size",
           "plot_lr_tolerance"]

#: Resolution of the book's figures: small files, sharp enough on screen.
FIG_DPI = 100


def decision_grid(logit_fn: Callable[[np.ndarray], np.ndarray], extent, resolution: int = 150):
    """Evaluate a 2-D classifier on a regular grid.

    Args:
        logit_fn: maps float32 points ``(n, 2)`` to logits ``(n,)`` (or ``(n, 1)``).
        extent: ``(x_min, x_max, y_min, y_max)``.
        resolution: grid points per axis.

    Returns:
        ``(xx, yy, logits)``, each of shape ``(resolution, resolution)``.
    """
    x_min, x_max, y_min, y_max = extent
    if not (x_min < x_max and y_min < y_max) or resolution < 2:
        raise ValueError(f"need x_min < x_max, y_min < y_max and resolution >= 2; got "
                         f"extent={extent}, resolution={resolution}")
    xx, yy = np.meshgrid(np.linspace(x_min, x_max, resolution),
                         np.linspace(y_min, y_max, resolution))
    points = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    logits = np.asarray(logit_fn(points), dtype=np.float64).reshape(xx.shape)
    return xx, yy, logits


def plot_decision_boundary(ax, logit_fn, X, label, extent, subset=None, resolution: int = 150,
                           max_points: int = 400):
    """Shade a 2-D classifier's probability of class 1, draw its 0.5 contour, scatter data.

    Args:
        ax: matplotlib axes.
        logit_fn: see :func:`decision_grid`.
        X: points ``(n, 2)``; label: ``(n,)`` in {0, 1}.
        extent: ``(x_min, x_max, y_min, y_max)``.
        subset: optional ``(n,)`` sub-population index (0 or 1), drawn with different markers.
        max_points: scatter at most this many points (evenly spaced), to keep figures light.
    """
    xx, yy, logits = decision_grid(logit_fn, extent, resolution)
    prob = 1.0 / (1.0 + np.exp(-logits))
    ax.contourf(xx, yy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
    if prob.min() < 0.5 < prob.max():
        ax.contour(xx, yy, prob, levels=[0.5], colors="k", linewidths=1.5)
    X = np.asarray(X)
    label = np.asarray(label)
    keep = np.linspace(0, len(X) - 1, min(max_points, len(X))).astype(int)
    markers = ("o", "^")
    groups = np.zeros(len(X), dtype=int) if subset is None else np.asarray(subset)
    for s in np.unique(groups[keep]):
        for c, colour in ((0, "tab:blue"), (1, "tab:red")):
            sel = keep[(groups[keep] == s) & (label[keep] == c)]
            ax.scatter(X[sel, 0], X[sel, 1], s=8, c=colour, marker=markers[int(s) % 2],
                       linewidths=0)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("feature 1 (arbitrary units)")
    ax.set_ylabel("feature 2 (arbitrary units)")
    ax.set_aspect("equal")


def plot_percentile_band(ax, steps, percentiles, colour: str, label: str):
    """Draw the 50th percentile as a line and the 15th-85th percentile range as a band.

    Args:
        steps: ``(T,)`` training steps.
        percentiles: ``(T, 3)``: 15th, 50th, 85th percentile at each step.
    """
    steps = np.asarray(steps)
    p = np.asarray(percentiles)
    if p.shape != (steps.size, 3):
        raise ValueError(f"percentiles must have shape ({steps.size}, 3); got {p.shape}")
    ax.fill_between(steps, p[:, 0], p[:, 2], color=colour, alpha=0.25,
                    label=f"{label}: 15th-85th percentile")
    ax.plot(steps, p[:, 1], color=colour, label=f"{label}: median")
    ax.plot(steps, p[:, 0], color=colour, lw=0.6)
    ax.plot(steps, p[:, 2], color=colour, lw=0.6)


#: The forward graph of batch norm for one channel: (input, user) pairs, in forward order.
BN_GRAPH_EDGES = (("x", "mu"), ("x", "x_centred"), ("mu", "x_centred"), ("x_centred", "var"),
                  ("x_centred", "x_hat"), ("var", "inv_std"), ("inv_std", "x_hat"),
                  ("x_hat", "scaled"), ("gamma", "scaled"), ("scaled", "y"), ("beta", "y"))


def draw_bn_graph(ax):
    """Draw batch norm's forward pass for one channel as a computational graph.

    One labelled box per node (parameters ``gamma`` and ``beta`` in orange, the rest in
    blue) and one arrow per edge of :data:`BN_GRAPH_EDGES`, from input to user. Arrows that
    leave a node with two users (``x`` and ``x_centred``) are red: their gradients are sums.
    Arrows are annotations (``ax.texts`` holds the boxes, the arrows are the annotations with
    empty text).
    """
    nodes = {
        "x": (0.0, 1.0), "mu": (1.3, 2.0), "x_centred": (2.6, 1.0), "var": (4.0, 2.0),
        "inv_std": (5.3, 2.0), "x_hat": (6.6, 1.0), "gamma": (8.1, 2.2),
        "scaled": (8.1, 1.0), "beta": (9.6, 2.2), "y": (9.6, 1.0),
    }
    labels = {
        "x": r"$x$", "mu": r"$\mu$", "x_centred": r"$\tilde x = x - \mu$",
        "var": r"$\sigma^2$", "inv_std": r"$s$", "x_hat": r"$\hat x = \tilde x s$",
        "gamma": r"$\gamma$", "scaled": r"$z = \gamma \hat x$", "beta": r"$\beta$",
        "y": r"$y = z + \beta$",
    }
    # Half-width of each box in data units (its label's length decides), for clipping arrows.
    half_width = {"x": 0.2, "mu": 0.2, "x_centred": 0.55, "var": 0.25, "inv_std": 0.2,
                  "x_hat": 0.45, "gamma": 0.2, "scaled": 0.45, "beta": 0.2, "y": 0.55}
    half_height = 0.2
    users = {}
    for a, _ in BN_GRAPH_EDGES:
        users[a] = users.get(a, 0) + 1
    two_users = {name for name, n in users.items() if n == 2}

    def edge_point(name, towards):
        # Where the segment from the centre of `name` to `towards` leaves its box.
        (px, py), (qx, qy) = nodes[name], towards
        dx, dy = qx - px, qy - py
        t = min(half_width[name] / abs(dx) if dx else np.inf,
                half_height / abs(dy) if dy else np.inf)
        return px + t * dx, py + t * dy

    for a, b in BN_GRAPH_EDGES:
        colour = "tab:red" if a in two_users else "0.3"
        ax.annotate("", xy=edge_point(b, nodes[a]), xytext=edge_point(a, nodes[b]),
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.5,
                                    shrinkA=0, shrinkB=0))
    for name, (px, py) in nodes.items():
        param = name in ("gamma", "beta")
        ax.text(px, py, labels[name], ha="center", va="center", fontsize=11,
                bbox=dict(boxstyle="round,pad=0.3", fc="#fde9c9" if param else "#dce9f5",
                          ec="0.4"))
    ax.set_xlim(-0.4, 10.3)
    ax.set_ylim(0.4, 2.7)
    ax.axis("off")


def plot_placement(ax, acc, labels):
    """Test accuracy of several variants, one grey line per seed and the mean +- std.

    Args:
        acc: ``{variant: (S,) accuracies in [0, 1]}``, seed ``i`` at index ``i`` in every
            variant; drawn in percent, in the dict's order.
        labels: one x tick label per variant.
    """
    variants = list(acc)
    if len(labels) != len(variants):
        raise ValueError(f"need one label per variant ({len(variants)}), got {len(labels)}")
    x = range(len(variants))
    for i in range(len(acc[variants[0]])):
        ax.plot(x, [100 * acc[v][i] for v in variants], "o-", color="0.6", lw=0.8,
                label="one seed" if i == 0 else None)
    ax.errorbar(x, [100 * acc[v].mean() for v in variants],
                yerr=[100 * acc[v].std(ddof=1) for v in variants], fmt="s", color="C3",
                capsize=4, label="mean +- std")
    ax.set_xticks(x, labels)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left", fontsize=8)


def plot_batch_size(ax, batch_sizes, accuracy, labels):
    """Test accuracy against batch size, mean +- std over seeds, one curve per normalisation.

    Args:
        batch_sizes: ``(B,)`` batch sizes (powers of two; the x axis is log2).
        accuracy: ``{norm: [B arrays of per-seed accuracies in [0, 1]]}``; drawn in percent.
        labels: ``{norm: legend label}``.
    """
    for norm, style in zip(accuracy, ("o-", "s--", "^:")):
        a = np.array([100 * x.mean() for x in accuracy[norm]])
        e = np.array([100 * x.std(ddof=1) for x in accuracy[norm]])
        ax.errorbar(batch_sizes, a, yerr=e, fmt=style, capsize=3, label=labels[norm])
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(m) for m in batch_sizes])
    ax.set_xlabel("batch size m (examples)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)


def plot_lr_tolerance(ax, lrs, summary, variants=(("bn", "with BN"), ("no-bn", "without BN"))):
    """Mean test accuracy against the learning rate, with a cross where a run diverged.

    Args:
        lrs: learning rates (the x axis is log).
        summary: ``{(variant, lr): (mean accuracy in [0, 1] of the runs that did not
            diverge, [outcome of each run: "trained", "stalled" or "diverged"])}``.
        variants: ``(variant, legend name)`` pairs, drawn in order.
    """
    for (v, name), style, cross in zip(variants, ("o-", "s--"), ("C0", "C1")):
        ax.plot(lrs, [100 * summary[(v, lr)][0] for lr in lrs], style, label=name)
        failed = [lr for lr in lrs if "diverged" in summary[(v, lr)][1]]
        ax.plot(failed, [5] * len(failed), "x", color=cross, ms=9,
                label=f"{name}: a run diverged" if failed else None)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (SGD, momentum 0.9)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower left")

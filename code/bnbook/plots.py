"""Plotting helpers shared by the chapters (matplotlib only).

Each helper draws onto an ``Axes`` the caller owns and labels what it draws; captions and
titles stay with the chapter, which knows the message of its figure.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["FIG_DPI", "decision_grid", "plot_decision_boundary", "plot_percentile_band"]

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

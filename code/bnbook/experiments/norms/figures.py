"""Figures of the "beyond batch normalisation" chapter that are not about one experiment.

* :func:`plot_statistics_sets` - the ``N x C x (H, W)`` cube of Wu & He's figure 2, one panel
  per method, drawn from the labels of :func:`bnbook.numpy_norms.axes.statistics_groups` (the
  index sets the NumPy layers use), with the values that share one mean and variance with a
  chosen value highlighted;
* :func:`statistics_set_sizes` - how many sets and how many values per set each method has for
  a given input shape (the numbers in the panel titles).
"""

from __future__ import annotations

import numpy as np

from bnbook.numpy_norms.axes import statistics_groups

__all__ = ["METHOD_TITLES", "statistics_set_sizes", "plot_statistics_sets"]

#: Panel titles.
METHOD_TITLES = {"batch": "batch norm", "layer": "layer norm", "instance": "instance norm",
                 "group": "group norm"}


def statistics_set_sizes(method: str, shape, num_groups: int | None = None) -> dict:
    """``{"sets": number of (mean, variance) pairs, "values": values in each set}`` for an
    input of ``shape`` (from the labels, not from a formula)."""
    labels = statistics_groups(method, shape, num_groups)
    counts = np.bincount(labels.ravel())
    if counts.min() != counts.max():
        raise AssertionError(f"{method}: sets of unequal size {sorted(set(counts))}")
    return {"sets": int(counts.size), "values": int(counts[0])}


def plot_statistics_sets(fig, shape=(4, 6, 2, 2), num_groups: int = 3,
                         methods=("batch", "layer", "instance", "group"),
                         chosen=None, ncols: int | None = None):
    """Draw one 3-D panel per method into ``fig``: the input ``(N, C, H, W)`` as a cube of
    ``N x C x (H * W)`` voxels, the set that shares its statistics with the value at index
    ``chosen`` in blue, every other value pale grey. ``chosen`` defaults to the last sample's
    first channel, ``(N - 1, 0, 0, 0)``, whose sets all reach the faces the view shows.
    ``ncols`` panels go in a row (default: all of them; 2 suits a narrow column).
    Returns the list of axes."""
    n, c = shape[0], shape[1]
    chosen = (n - 1, 0) + (0,) * (len(shape) - 2) if chosen is None else tuple(chosen)
    hw = int(np.prod(shape[2:]))
    ncols = len(methods) if ncols is None else ncols
    nrows = -(-len(methods) // ncols)
    axes = []
    for k, method in enumerate(methods):
        ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
        groups = num_groups if method == "group" else None
        labels = statistics_groups(method, shape, groups).reshape(n, c, hw)
        same = labels == labels[chosen[0], chosen[1], int(np.ravel_multi_index(
            chosen[2:], shape[2:]))]
        colours = np.empty((n, c, hw, 4))
        colours[same] = (0.16, 0.42, 0.78, 1.0)
        colours[~same] = (0.9, 0.9, 0.9, 1.0)
        ax.voxels(np.ones((n, c, hw), dtype=bool), facecolors=colours,
                  edgecolor=(0.35, 0.35, 0.35, 0.6), linewidth=0.4)
        ax.set_xlabel("N", labelpad=-12)
        ax.set_ylabel("C", labelpad=-12)
        ax.set_zlabel("H, W", labelpad=-12)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_box_aspect((n, c, hw))
        ax.view_init(elev=22, azim=-55)
        size = statistics_set_sizes(method, shape, groups)
        title = METHOD_TITLES[method] + (f" (G = {num_groups})" if method == "group" else "")
        ax.set_title(f"{title}\n{size['sets']} sets of {size['values']} values", fontsize=9)
        axes.append(ax)
    return axes

"""Which values share one mean and one variance: the index sets of every normalisation here.

Every method of :mod:`bnbook.numpy_norms` normalises a *view* of ``x`` over some of the view's
axes. For batch, layer and instance norm the view is ``x`` itself; group norm first splits the
channel axis into ``(G, C // G)`` (contiguous groups of channels), so its view has one axis
more. For an input ``(N, C, H, W)``:

============  =========================  ==================  ================================
method        view                       axes of the view    one set of values per
============  =========================  ==================  ================================
``batch``     ``(N, C, H, W)``           ``(0, 2, 3)``       channel ``c``
``layer``     ``(N, C, H, W)``           ``(1, 2, 3)``       sample ``n``
``instance``  ``(N, C, H, W)``           ``(2, 3)``          pair ``(n, c)``
``group``     ``(N, G, C // G, H, W)``   ``(2, 3, 4)``       pair ``(n, g)``, ``g = c // (C // G)``
============  =========================  ==================  ================================

(``(N, C, L)`` and ``(N, D)`` drop the trailing axes; instance norm needs at least one
position axis.) :func:`normalisation_view` is what the forward functions call;
:func:`normalisation_axes` gives the axes alone, and :func:`statistics_groups` turns the view
and axes into a label per value, so that a figure of "which values are averaged together" is
drawn from the index sets the code uses.
"""

from __future__ import annotations

import numbers

import numpy as np

from bnbook.numpy_norms._checks import check_ndim, reduction_axes

__all__ = ["METHODS", "check_num_groups", "normalisation_axes", "normalisation_view",
           "statistics_groups"]

#: The methods, and the input layouts (numbers of dimensions) each accepts.
METHODS = {"batch": (2, 3, 4), "layer": (2, 3, 4), "instance": (3, 4), "group": (2, 3, 4)}
_NAMES = {"batch": "batch norm", "layer": "layer norm", "instance": "instance norm",
          "group": "group norm"}


def _check_method(method: str, num_groups) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; "
                         f"got {method!r}")
    if method == "group" and num_groups is None:
        raise ValueError("group norm needs num_groups (the number of channel groups)")
    if method != "group" and num_groups is not None:
        raise ValueError(f"num_groups is for group norm only; got num_groups={num_groups!r} "
                         f"with method {method!r}")


def check_num_groups(num_groups, channels: int | None = None, x_shape=None) -> int:
    """``num_groups`` as an int; ``ValueError`` unless it is a positive integer that divides
    ``channels`` (when given: group norm splits the channels into equal contiguous groups)."""
    if (isinstance(num_groups, (bool, np.bool_)) or not isinstance(num_groups, numbers.Integral)
            or num_groups < 1):
        raise ValueError(f"num_groups must be a positive integer; got {num_groups!r}")
    if channels is not None and channels % num_groups != 0:
        divisors = [d for d in range(1, channels + 1) if channels % d == 0]
        raise ValueError(
            f"num_groups={num_groups} must divide the number of channels C={channels} "
            f"(axis 1 of x with shape {tuple(x_shape)}): group norm splits the channels into "
            f"equal contiguous groups; the divisors of {channels} are "
            f"{', '.join(map(str, divisors))}"
        )
    return int(num_groups)


def normalisation_axes(method: str, ndim: int, num_groups: int | None = None):
    """Axes of the view (see :func:`normalisation_view`) that ``method`` averages over.

    Args:
        method: ``"batch"``, ``"layer"``, ``"instance"`` or ``"group"``.
        ndim: number of dimensions of ``x`` (2: ``(N, D)``, 3: ``(N, C, L)``, 4:
            ``(N, C, H, W)``; instance norm: 3 or 4).
        num_groups: required for ``"group"`` (a positive integer), ``None`` otherwise. The
            axes of group norm do not depend on its value, only the view does.

    Returns:
        A tuple of axes. For ``"group"`` they refer to the grouped view
        ``(N, G, C // G, *positions)``, which has ``ndim + 1`` dimensions.
    """
    _check_method(method, num_groups)
    check_ndim(ndim, _NAMES[method], METHODS[method])
    if method == "batch":
        return reduction_axes(ndim)
    if method == "layer":
        return tuple(range(1, ndim))
    if method == "instance":
        return tuple(range(2, ndim))
    check_num_groups(num_groups)
    return tuple(range(2, ndim + 1))


def normalisation_view(method: str, shape, num_groups: int | None = None):
    """The view of ``x`` that ``method`` normalises, and the axes of that view it averages over.

    Args:
        method, num_groups: as in :func:`normalisation_axes`; ``num_groups`` must divide ``C``.
        shape: the shape of ``x``.

    Returns:
        ``(view_shape, axes)``: ``x.reshape(view_shape)`` is normalised over ``axes``. The
        view is ``shape`` itself except for group norm, ``(N, G, C // G) + shape[2:]``.
    """
    shape = tuple(int(s) for s in shape)
    axes = normalisation_axes(method, len(shape), num_groups)
    if method != "group":
        return shape, axes
    groups = check_num_groups(num_groups, shape[1], shape)
    return (shape[0], groups, shape[1] // groups) + shape[2:], axes


def statistics_groups(method: str, shape, num_groups: int | None = None) -> np.ndarray:
    """Which set of shared statistics each value of an input of ``shape`` belongs to.

    Args:
        method, shape, num_groups: as in :func:`normalisation_view`.

    Returns:
        An integer array of shape ``shape``: two values have one label exactly when ``method``
        normalises them with one mean and one variance. Labels count the statistics in the
        order of the flattened ``mu`` of the forward's cache (``cache.mu.ravel()[label]`` is
        the mean of the values with that label): batch norm ``c``; layer norm ``n``; instance
        norm ``n * C + c``; group norm ``n * G + c // (C // G)``.
    """
    view_shape, axes = normalisation_view(method, shape, num_groups)
    kept = [d for d in range(len(view_shape)) if d not in axes]
    index = np.indices(view_shape)
    labels = np.ravel_multi_index([index[d] for d in kept], [view_shape[d] for d in kept])
    return labels.reshape(tuple(shape))

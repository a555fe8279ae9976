"""Layer, instance and group normalisation in NumPy: batch norm's closed form over other axes.

All three take their statistics *within one sample*, so they behave the same in training and
in evaluation (no running statistics) and do not care about the batch size. Only the set of
values that share one mean and one variance changes (:mod:`bnbook.numpy_norms.axes`):

* :func:`layer_norm_forward` - each sample over all its values (Ba et al., 2016); ``gamma``
  and ``beta`` have shape ``x.shape[1:]`` (one per value of a sample), as
  ``F.layer_norm(x, x.shape[1:], gamma, beta, eps)``;
* :func:`instance_norm_forward` - each ``(sample, channel)`` over its positions
  (Ulyanov et al., 2016); ``gamma``, ``beta`` of shape ``(C,)``, as ``F.instance_norm``;
* :func:`group_norm_forward` - each ``(sample, group of C // G contiguous channels)`` over its
  channels and positions (Wu and He, 2018); ``gamma``, ``beta`` of shape ``(C,)``, as
  ``F.group_norm``. ``num_groups == 1`` is layer norm with a per-channel affine map,
  ``num_groups == C`` is instance norm;
* :func:`rms_norm_forward` - each sample divided by the root mean square of its values, with
  no mean subtracted and no shift (Zhang and Sennrich, 2019); ``gamma`` of shape
  ``x.shape[1:]`` or ``None``, as ``F.rms_norm``. It has its own cache and backward.

The forward and backward passes are the shared helpers of
:mod:`bnbook.numpy_norms.shared` (batch norm's equations) applied to the view and axes
of :func:`bnbook.numpy_norms.axes.normalization_view`; the input checks are batch norm's, so
each function refuses what :func:`bnbook.numpy_norms.batch_norm_forward` refuses (a dtype other
than float32/float64, a wrong number of dimensions, ``gamma`` or ``beta`` not numeric of the
stated shape, fewer than 2 values per set of shared statistics, ``eps`` not a positive finite
number) with a ``ValueError`` and the same message.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bnbook.numpy_norms._checks import (
    _as_float_array,
    _check_variance_representable,
    check_dy,
    check_eps,
    check_ndim,
    check_param,
    check_params,
    check_values_per_statistic,
)
from bnbook.numpy_norms.shared import normalise_over, normalise_over_backward
from bnbook.numpy_norms.axes import _NAMES, METHODS, normalization_view

__all__ = [
    "NormCache",
    "layer_norm_forward",
    "layer_norm_backward",
    "instance_norm_forward",
    "instance_norm_backward",
    "group_norm_forward",
    "group_norm_backward",
    "RMSNormCache",
    "rms_norm_forward",
    "rms_norm_backward",
]

_UNITS = {"layer": "sample", "instance": "channel of a sample", "group": "group of a sample"}


class NormCache(NamedTuple):
    """What the forward pass of layer, instance or group norm keeps for its backward pass.

    ``x`` is the input (a reference, not a copy) and ``x_hat`` has its shape. ``mu``, ``var``
    and ``inv_std`` have the shape of the view with size 1 on ``axes``: ``(N, 1, ...)`` for
    layer norm, ``(N, C, 1, ...)`` for instance norm, ``(N, G, 1, 1, ...)`` for group norm.
    ``gamma`` has shape ``x.shape[1:]`` (layer norm) or ``(C,)``. Arrays have the dtype of
    ``x``. ``method`` is ``"layer"``, ``"instance"`` or ``"group"``; ``x.reshape(view_shape)``
    is normalised over its ``axes`` (:func:`bnbook.numpy_norms.axes.normalization_view`);
    ``num_groups`` is ``None`` except for group norm.
    """

    x: np.ndarray
    x_hat: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    eps: float
    axes: tuple[int, ...]
    method: str
    view_shape: tuple[int, ...]
    num_groups: int | None


def _affine_layout(method: str, x_shape):
    """``(param_shape, broadcast_shape, sum_axes)`` of ``gamma`` and ``beta`` for ``method``:
    their shape, the shape that broadcasts against ``x``, and the axes ``dgamma`` sums over."""
    ndim = len(x_shape)
    if method == "layer":
        return tuple(x_shape[1:]), (1,) + tuple(x_shape[1:]), (0,)
    channels = x_shape[1]
    return (channels,), (1, channels) + (1,) * (ndim - 2), (0,) + tuple(range(2, ndim))


def _check_forward(method: str, x, gamma, beta, eps, num_groups=None):
    """Batch norm's checks for ``method``: ``(x, gamma, beta, eps, view_shape, axes,
    broadcast)``, with ``x`` a float32/float64 array and ``gamma``, ``beta`` in its dtype."""
    x = np.asarray(x)
    check_ndim(x.ndim, _NAMES[method], METHODS[method])
    x = _as_float_array(x, "x")
    view_shape, axes = normalization_view(method, x.shape, num_groups)
    param_shape, broadcast, _ = _affine_layout(method, x.shape)
    where = ("x.shape[1:] (every axis but the batch axis)" if method == "layer"
             else "the channel axis (axis 1)")
    gamma, beta = check_params(gamma, beta, param_shape, x, where)
    m = int(np.prod([view_shape[a] for a in axes]))
    note = f" with num_groups={num_groups}" if method == "group" else ""
    check_values_per_statistic(m, x.shape, _NAMES[method], _UNITS[method], note=note)
    return x, gamma, beta, check_eps(eps), view_shape, axes, broadcast


def _forward(method: str, x, gamma, beta, eps, num_groups=None):
    """Validate, normalise ``x`` over the view and axes of ``method``, scale and shift."""
    x, gamma, beta, eps, view_shape, axes, broadcast = _check_forward(
        method, x, gamma, beta, eps, num_groups)
    # float64 whatever the input, as batch norm (Appendix A)
    x_view = x.astype(np.float64, copy=False).reshape(view_shape)
    with np.errstate(over="ignore"):
        x_hat, mu, var, inv_std = normalise_over(x_view, axes, eps)
    _check_variance_representable(var, x.dtype, _NAMES[method], _UNITS[method])
    x_hat = x_hat.reshape(x.shape)
    y = gamma.reshape(broadcast) * x_hat + beta.reshape(broadcast)
    dtype = x.dtype
    cache = NormCache(x, x_hat.astype(dtype), mu.astype(dtype), var.astype(dtype),
                      inv_std.astype(dtype), gamma, eps, axes, method, view_shape,
                      None if num_groups is None else int(num_groups))
    return y.astype(dtype), cache


def _backward(method: str, dy, cache: NormCache):
    """The backward pass: the shared closed form with ``dx_hat = gamma * dy``.

    Args:
        method: ``"layer"``, ``"instance"`` or ``"group"``; must be the cache's.
        dy: upstream gradient ``dL/dy``, shape of ``x``; float32 or float64 (cast to the
            dtype of ``x``).
        cache: the :class:`NormCache` of that method's forward pass.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``gamma.shape``, ``gamma.shape`` and
        the dtype of ``x`` (computed in float64).

    Raises:
        ValueError: if ``cache`` is not a :class:`NormCache` of ``method``, or ``dy`` has
            another shape or a non-floating dtype.
    """
    if not isinstance(cache, NormCache):
        raise ValueError(f"cache must be the NormCache returned by {method}_norm_forward; got "
                         f"{type(cache).__name__}")
    if cache.method != method:
        raise ValueError(f"this cache comes from {cache.method}_norm_forward; pass it to "
                         f"{cache.method}_norm_backward, not {method}_norm_backward")
    dy = check_dy(dy, cache.x).astype(np.float64, copy=False)
    x_hat, dtype = cache.x_hat.astype(np.float64), cache.x.dtype
    _, broadcast, sum_axes = _affine_layout(method, dy.shape)
    dbeta = dy.sum(axis=sum_axes)
    dgamma = (dy * x_hat).sum(axis=sum_axes)
    dx_hat = dy * cache.gamma.astype(np.float64).reshape(broadcast)
    view = cache.view_shape
    dx = normalise_over_backward(dx_hat.reshape(view), x_hat.reshape(view),
                                 cache.inv_std.astype(np.float64), cache.axes)
    return dx.reshape(dy.shape).astype(dtype), dgamma.astype(dtype), dbeta.astype(dtype)


def layer_norm_forward(x, gamma, beta, eps: float = 1e-5):
    """Layer normalisation: each sample over all its values (every axis but the first).

    Args:
        x: ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``, float32 or float64.
        gamma, beta: scale and shift of shape ``x.shape[1:]``.
        eps: added to each sample's biased variance before the square root.

    Returns:
        ``(y, cache)``: ``y`` with the shape and dtype of ``x``; a :class:`NormCache` with
        ``mu`` of shape ``(N, 1, ...)`` and ``axes = (1, ..., x.ndim - 1)``.

    Raises:
        ValueError: for the inputs that batch norm refuses, with its messages (see above).
    """
    return _forward("layer", x, gamma, beta, eps)


def instance_norm_forward(x, gamma, beta, eps: float = 1e-5):
    """Instance normalisation: each ``(sample, channel)`` over its positions.

    Args:
        x: ``(N, C, L)`` or ``(N, C, H, W)``, float32 or float64.
        gamma, beta: per-channel scale and shift, shape ``(C,)``.
        eps: added to each biased variance before the square root.

    Returns:
        ``(y, cache)``: ``y`` with the shape and dtype of ``x``; a :class:`NormCache` with
        ``mu`` of shape ``(N, C, 1, ...)`` and ``axes = (2, ..., x.ndim - 1)``.

    Raises:
        ValueError: for the inputs that batch norm refuses, with its messages (see above).
    """
    return _forward("instance", x, gamma, beta, eps)


def group_norm_forward(x, gamma, beta, num_groups: int, eps: float = 1e-5):
    """Group normalisation: each ``(sample, group)`` over the group's channels and positions.

    Group ``g`` holds the contiguous channels ``g * C // G, ..., (g + 1) * C // G - 1``: ``x``
    is viewed as ``(N, G, C // G, *positions)`` and normalised over the axes after ``G``.

    Args:
        x: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``, float32 or float64.
        gamma, beta: per-channel scale and shift, shape ``(C,)`` (not per group).
        num_groups: ``G``, a positive integer dividing ``C``.
        eps: added to each biased variance before the square root.

    Returns:
        ``(y, cache)``: ``y`` with the shape and dtype of ``x``; a :class:`NormCache` with
        ``mu`` of shape ``(N, G, 1, ...)``, ``view_shape = (N, G, C // G, *positions)`` and
        ``axes = (2, ..., x.ndim)`` (axes of the view).

    Raises:
        ValueError: for the inputs that batch norm refuses, with its messages (see above),
            and if ``num_groups`` is not a positive integer dividing ``C``.
    """
    return _forward("group", x, gamma, beta, eps, num_groups)


def layer_norm_backward(dy, cache: NormCache):
    """Backward pass of :func:`layer_norm_forward`.

    Args:
        dy: upstream gradient ``dL/dy``, shape ``x.shape`` (``(N, D)``, ``(N, C, L)`` or
            ``(N, C, H, W)``), float32 or float64 (cast to the dtype of ``x``).
        cache: the :class:`NormCache` of :func:`layer_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)``: ``dx`` of shape ``x.shape``, ``dgamma`` and ``dbeta`` of
        shape ``x.shape[1:]`` (summed over the batch axis), in the dtype of ``x``.

    Raises:
        ValueError: if ``cache`` is not layer norm's :class:`NormCache` or ``dy`` has another
            shape or a non-floating dtype.
    """
    return _backward("layer", dy, cache)


def instance_norm_backward(dy, cache: NormCache):
    """Backward pass of :func:`instance_norm_forward`.

    Args:
        dy: upstream gradient ``dL/dy``, shape ``x.shape`` (``(N, C, L)`` or
            ``(N, C, H, W)``), float32 or float64 (cast to the dtype of ``x``).
        cache: the :class:`NormCache` of :func:`instance_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)``: ``dx`` of shape ``x.shape``, ``dgamma`` and ``dbeta`` of
        shape ``(C,)`` (summed over samples and positions), in the dtype of ``x``.

    Raises:
        ValueError: if ``cache`` is not instance norm's :class:`NormCache` or ``dy`` has
            another shape or a non-floating dtype.
    """
    return _backward("instance", dy, cache)


def group_norm_backward(dy, cache: NormCache):
    """Backward pass of :func:`group_norm_forward`.

    Args:
        dy: upstream gradient ``dL/dy``, shape ``x.shape`` (``(N, C)``, ``(N, C, L)`` or
            ``(N, C, H, W)``), float32 or float64 (cast to the dtype of ``x``).
        cache: the :class:`NormCache` of :func:`group_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)``: ``dx`` of shape ``x.shape``, ``dgamma`` and ``dbeta`` of
        shape ``(C,)`` (one per channel, not per group), in the dtype of ``x``.

    Raises:
        ValueError: if ``cache`` is not group norm's :class:`NormCache` or ``dy`` has another
            shape or a non-floating dtype.
    """
    return _backward("group", dy, cache)


# --- RMS norm: layer norm without the mean ---------------------------------------------------

class RMSNormCache(NamedTuple):
    """What :func:`rms_norm_forward` keeps for :func:`rms_norm_backward`.

    ``x`` is the input (a reference) and ``x_hat = x * inv_rms`` has its shape;
    ``mean_square`` and ``inv_rms`` have shape ``(N, 1, ...)`` (they broadcast against
    ``x``); ``gamma`` has shape ``x.shape[1:]`` or is ``None``; ``axes = (1, ..., x.ndim - 1)``.
    Arrays have the dtype of ``x``.
    """

    x: np.ndarray
    x_hat: np.ndarray
    mean_square: np.ndarray
    inv_rms: np.ndarray
    gamma: np.ndarray | None
    eps: float
    axes: tuple[int, ...]


def _check_rms_forward(x, gamma, eps):
    """Batch norm's checks for RMS norm: ``(x, gamma, eps)``, with ``x`` a float32/float64
    array and ``gamma`` (unless ``None``) in its dtype."""
    x = np.asarray(x)
    check_ndim(x.ndim, "RMS norm")
    x = _as_float_array(x, "x")
    if gamma is not None:
        gamma = check_param(gamma, "gamma", x.shape[1:], x,
                            "x.shape[1:] (every axis but the batch axis)")
    return x, gamma, check_eps(eps)


def rms_norm_forward(x, gamma=None, eps: float = 1e-5):
    """RMS normalisation (Zhang and Sennrich, 2019): layer norm without the mean and the shift.

    Each sample is divided by the root mean square of its values, then scaled::

        mean_square = mean(x ** 2)                 # over x.shape[1:], per sample
        inv_rms     = 1 / sqrt(mean_square + eps)
        x_hat       = x * inv_rms
        y           = gamma * x_hat

    as ``torch.nn.functional.rms_norm(x, x.shape[1:], gamma, eps)``.

    Args:
        x: ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``, float32 or float64.
        gamma: scale of shape ``x.shape[1:]``, or ``None`` for no scale (all ones).
        eps: added to each sample's mean square before the square root; must be > 0.

    Returns:
        ``(y, cache)``: ``y`` with the shape and dtype of ``x``; an :class:`RMSNormCache` with
        ``mean_square`` and ``inv_rms`` of shape ``(N, 1, ...)``.

    Raises:
        ValueError: if ``x`` is not 2-, 3- or 4-D or not float32/float64, if ``gamma`` is not
            numeric of shape ``x.shape[1:]``, or if ``eps`` is not a positive finite number
            (batch norm's messages).
    """
    x, gamma, eps = _check_rms_forward(x, gamma, eps)
    axes = tuple(range(1, x.ndim))
    x64 = x.astype(np.float64, copy=False)  # float64 whatever the input, as the others
    mean_square = (x64 ** 2).mean(axis=axes, keepdims=True)
    inv_rms = 1.0 / np.sqrt(mean_square + eps)
    x_hat = x64 * inv_rms
    y = x_hat if gamma is None else gamma * x_hat              # gamma broadcasts: x.shape[1:]
    dtype = x.dtype
    cache = RMSNormCache(x, x_hat.astype(dtype), mean_square.astype(dtype),
                         inv_rms.astype(dtype), gamma, eps, axes)
    return y.astype(dtype), cache


def rms_norm_backward(dy, cache: RMSNormCache):
    """Backward pass of :func:`rms_norm_forward`.

    With ``m`` values per sample, ``dx_hat = gamma * dy`` and the sums over each sample::

        dx     = inv_rms / m * (m * dx_hat - x_hat * sum(dx_hat * x_hat))
        dgamma = sum over the batch of dy * x_hat

    (layer norm's closed form without its ``- sum(dx_hat)`` term: there is no mean).

    Args:
        dy: upstream gradient ``dL/dy``, shape ``x.shape``, float32 or float64 (cast to the
            dtype of ``x``).
        cache: the :class:`RMSNormCache` of :func:`rms_norm_forward`.

    Returns:
        ``(dx, dgamma)``: ``dx`` of shape ``x.shape``; ``dgamma`` of shape ``x.shape[1:]``, or
        ``None`` if the forward pass had no ``gamma``; in the dtype of ``x`` (computed in
        float64).

    Raises:
        ValueError: if ``cache`` is not an :class:`RMSNormCache` or ``dy`` has another shape
            or a non-floating dtype.
    """
    if not isinstance(cache, RMSNormCache):
        raise ValueError(f"cache must be the RMSNormCache returned by rms_norm_forward; got "
                         f"{type(cache).__name__}")
    dy = check_dy(dy, cache.x).astype(np.float64, copy=False)
    x_hat, inv_rms = cache.x_hat.astype(np.float64), cache.inv_rms.astype(np.float64)
    m = x_hat[0].size                                          # values per sample
    dx_hat = dy if cache.gamma is None else dy * cache.gamma.astype(np.float64)
    sum_dx_hat_x_hat = (dx_hat * x_hat).sum(axis=cache.axes, keepdims=True)
    dx = inv_rms / m * (m * dx_hat - x_hat * sum_dx_hat_x_hat)
    if cache.gamma is None:
        return dx.astype(cache.x.dtype), None
    return dx.astype(cache.x.dtype), (dy * x_hat).sum(axis=0).astype(cache.x.dtype)

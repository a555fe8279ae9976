"""Batch normalisation from scratch in NumPy: forward pass and two backward passes.

Conventions (the same as the paper's Algorithm 1 and PyTorch's training mode):

* ``x`` has shape ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``. Statistics are taken per
  feature/channel over every other axis: axis ``0`` for ``(N, D)``, axes ``(0, 2)`` for
  ``(N, C, L)`` and ``(0, 2, 3)`` for ``(N, C, H, W)``. We write ``m`` for the number of
  values that share one channel's statistics (``N``, ``N*L`` or ``N*H*W``).
* ``var`` is the *biased* batch variance (divide by ``m``), computed in two passes
  (mean first, then the mean of squared deviations), which is numerically stable.
* ``gamma`` and ``beta`` have shape ``(D,)`` or ``(C,)``.
* The output has the input's floating dtype (float32 stays float32).

The symbols of the book's equations are the names used here::

    mu      = mean(x)                      # per channel
    var     = mean((x - mu) ** 2)          # biased
    inv_std = 1 / sqrt(var + eps)
    x_hat   = (x - mu) * inv_std
    y       = gamma * x_hat + beta
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "BatchNormCache",
    "reduction_axes",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_backward_staged",
    "BatchNorm",
]

_AXES = {2: (0,), 3: (0, 2), 4: (0, 2, 3)}


class BatchNormCache(NamedTuple):
    """What the forward pass keeps for the backward pass.

    ``x`` is the input (a reference, not a copy); ``mu``, ``var`` and ``inv_std`` have the
    input's ndim with size 1 on every reduced axis (they broadcast against ``x``);
    ``x_hat`` has the shape of ``x``; ``gamma`` has shape ``(C,)``.
    """

    x: np.ndarray
    x_hat: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    eps: float
    axes: tuple[int, ...]


def reduction_axes(ndim: int) -> tuple[int, ...]:
    """Axes over which batch norm averages for an input of ``ndim`` dimensions (2, 3 or 4)."""
    if ndim not in _AXES:
        raise ValueError(
            f"batch norm expects an input of shape (N, D), (N, C, L) or (N, C, H, W); "
            f"got an array with {ndim} dimension(s)"
        )
    return _AXES[ndim]


def _as_float_array(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating)):
        raise ValueError(
            f"{name} must have a real floating dtype (float32 or float64); got dtype {a.dtype}"
        )
    return a


def _check_inputs(x, gamma, beta, eps):
    x = _as_float_array(x, "x")
    axes = reduction_axes(x.ndim)
    channels = x.shape[1]
    params = []
    for name, p in (("gamma", gamma), ("beta", beta)):
        p = np.asarray(p)
        if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
            raise ValueError(f"{name} must be numeric; got dtype {p.dtype}")
        if p.shape != (channels,):
            raise ValueError(
                f"{name} must have shape ({channels},) to match the channel axis (axis 1) of "
                f"x with shape {x.shape}; got shape {p.shape}"
            )
        params.append(p.astype(x.dtype, copy=False))
    m = x.size // channels if channels else 0
    if m < 2:
        raise ValueError(
            f"batch norm needs more than 1 value per channel in training mode; x with shape "
            f"{x.shape} gives {m} value(s) per channel (PyTorch: 'Expected more than 1 value "
            f"per channel when training')"
        )
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive finite number; got {eps!r}")
    return x, params[0], params[1], axes


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a ``(C,)`` vector so that it broadcasts along axis 1 of an ``ndim`` array."""
    return p.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_forward(x, gamma, beta, eps: float = 1e-5):
    """Training-mode batch normalisation.

    Args:
        x: input of shape ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``, float32 or float64.
        gamma: scale, shape ``(D,)``/``(C,)``.
        beta: shift, shape ``(D,)``/``(C,)``.
        eps: added to the biased batch variance before the square root; must be > 0.

    Returns:
        ``(y, cache)``: ``y`` has the shape and dtype of ``x``; ``cache`` is a
        :class:`BatchNormCache` for :func:`batch_norm_backward`.

    Raises:
        ValueError: if ``x`` is not 2-, 3- or 4-D, has a non-floating dtype, has fewer than 2
            values per channel, if ``gamma``/``beta`` do not have shape ``(C,)``, or if
            ``eps <= 0``.
    """
    x, gamma, beta, axes = _check_inputs(x, gamma, beta, eps)
    mu = x.mean(axis=axes, keepdims=True)
    x_centred = x - mu
    # Mean of squares of the centred values: the stable two-pass variance.
    var = np.mean(np.square(x_centred), axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + np.asarray(eps, dtype=x.dtype))
    x_hat = np.multiply(x_centred, inv_std, out=x_centred)  # reuse the buffer
    y = x_hat * _per_channel(gamma, x.ndim)
    y += _per_channel(beta, x.ndim)
    cache = BatchNormCache(x, x_hat, mu, var, inv_std, gamma, float(eps), axes)
    return y, cache


def _check_dy(dy, cache: BatchNormCache) -> np.ndarray:
    dy = _as_float_array(dy, "dy")
    if dy.shape != cache.x.shape:
        raise ValueError(f"dy must have the shape of x, {cache.x.shape}; got {dy.shape}")
    return dy.astype(cache.x.dtype, copy=False)


def batch_norm_backward(dy, cache: BatchNormCache):
    """Backward pass in the simplified closed form.

    With ``m`` values per channel, ``dbeta = sum(dy)``, ``dgamma = sum(dy * x_hat)`` and::

        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    Args:
        dy: upstream gradient, shape of ``x``.
        cache: from :func:`batch_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``(C,)``, ``(C,)``.
    """
    dy = _check_dy(dy, cache)
    x_hat, axes, ndim = cache.x_hat, cache.axes, dy.ndim
    m = dy.size // dy.shape[1]
    dbeta = dy.sum(axis=axes)
    # One fused pass for sum(dy * x_hat) per channel; einsum avoids a full-size temporary.
    subscripts = {2: "nc,nc->c", 3: "ncl,ncl->c", 4: "nchw,nchw->c"}[ndim]
    dgamma = np.einsum(subscripts, dy, x_hat)
    scale = _per_channel(cache.gamma, ndim) * cache.inv_std  # gamma / sigma, per channel
    # dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)), built in place.
    dx = x_hat * _per_channel(-dgamma / m, ndim)
    dx += dy
    dx -= _per_channel(dbeta / m, ndim)
    dx *= scale
    return dx, dgamma, dbeta


def batch_norm_backward_staged(dy, cache: BatchNormCache):
    """Backward pass node by node through the computational graph of the forward pass.

    The graph is ``x -> mu -> x_centred -> var -> inv_std -> x_hat -> gamma*x_hat -> +beta``;
    each line below is the local chain rule at one node, in reverse order. It is slower than
    :func:`batch_norm_backward` (more passes over memory) but mirrors the derivation.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``(C,)``, ``(C,)``.
    """
    dy = _check_dy(dy, cache)
    x, x_hat, mu, var, inv_std, gamma, eps, axes = cache
    ndim = x.ndim
    m = x.size // x.shape[1]
    x_centred = x - mu
    # y = gamma * x_hat + beta
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dx_hat = dy * _per_channel(gamma, ndim)
    # x_hat = x_centred * inv_std  (x_centred feeds both x_hat and var)
    dinv_std = (dx_hat * x_centred).sum(axis=axes, keepdims=True)
    dx_centred = dx_hat * inv_std
    # inv_std = (var + eps) ** -1/2
    dvar = dinv_std * (-0.5) * (var + eps) ** -1.5
    # var = mean(x_centred ** 2)
    dx_centred += dvar * 2.0 * x_centred / m
    # x_centred = x - mu
    dmu = -dx_centred.sum(axis=axes, keepdims=True)
    dx = dx_centred
    # mu = mean(x)
    dx += dmu / m
    return dx.astype(x.dtype, copy=False), dgamma, dbeta


from bnbook.layers import BatchNorm  # noqa: E402

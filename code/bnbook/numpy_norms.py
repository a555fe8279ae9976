"""Batch normalisation from scratch in NumPy: forward pass and two backward passes.

Conventions (the same as the paper's Algorithm 1 and PyTorch's training mode):

* ``x`` has shape ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``. Statistics are taken per
  feature/channel over every other axis: axis ``0`` for ``(N, D)``, axes ``(0, 2)`` for
  ``(N, C, L)`` and ``(0, 2, 3)`` for ``(N, C, H, W)``. We write ``m`` for the number of
  values that share one channel's statistics (``N``, ``N*L`` or ``N*H*W``).
* ``var`` is the *biased* batch variance (divide by ``m``), computed in two passes
  (mean first, then the mean of squared deviations), which is numerically stable; the
  second pass also corrects the rounding error of the first pass's mean (the corrected
  two-pass algorithm of Chan, Golub and LeVeque, 1983).
* ``gamma`` and ``beta`` have shape ``(D,)`` or ``(C,)``.
* ``x`` must be float32 or float64; the output has the input's dtype (float32 stays
  float32). Per-channel sums are accumulated in float64 across blocks of rows.

The symbols of the book's equations are the names used here::

    mu      = mean(x)                      # per channel
    var     = mean((x - mu) ** 2)          # biased
    inv_std = 1 / sqrt(var + eps)
    x_hat   = (x - mu) * inv_std
    y       = gamma * x_hat + beta

How the fast paths are organised (chapter 3 counts the passes over memory):

* Every input is viewed as ``(N, C, L)`` with ``L = 1``, ``L`` or ``H*W``; per-channel sums
  are ``einsum`` contractions of that view, which run over contiguous memory without
  full-size temporaries.
* Elementwise work uses the ``(N, C*L)`` view and per-channel parameters repeated to one
  row of ``C*L`` values, so that every ufunc call sees two contiguous operands (NumPy's
  fastest loop; a ``(1, C, 1)`` broadcast is about twice as slow).
* Rows are processed in blocks of about :data:`_BLOCK_BYTES` bytes, so that the several
  operations applied to one block find it in cache: a block is read from main memory once
  per pass, however many ufuncs touch it.
"""

from __future__ import annotations

import numbers
from typing import Iterator, NamedTuple

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
_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Target size of one block of rows of ``x`` (bytes): small enough for the blocks of the
#: two or three arrays one step touches to stay in a core's L2/L3 cache.
_BLOCK_BYTES = 1 << 20


class BatchNormCache(NamedTuple):
    """What the forward pass keeps for the backward pass.

    ``x`` is the input (a reference, not a copy); ``mu``, ``var`` and ``inv_std`` have the
    input's ndim with size 1 on every reduced axis (they broadcast against ``x``);
    ``x_hat`` has the shape of ``x``; ``gamma`` has shape ``(C,)``. All arrays have the
    dtype of ``x``.
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
    if a.dtype not in _SUPPORTED_DTYPES:
        kind = "an integer" if np.issubdtype(a.dtype, np.integer) else "a"
        raise ValueError(
            f"{name} must have a real floating dtype (float32 or float64); got {kind} dtype "
            f"{a.dtype}"
        )
    return a


def _check_eps(eps) -> float:
    if (not isinstance(eps, numbers.Real) or isinstance(eps, (bool, np.bool_))
            or not np.isfinite(eps) or eps <= 0):
        raise ValueError(f"eps must be a positive finite number; got {eps!r}")
    return float(eps)


def _check_inputs(x, gamma, beta, eps):
    x = np.asarray(x)
    axes = reduction_axes(x.ndim)
    x = _as_float_array(x, "x")
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
    eps = _check_eps(eps)
    return x, params[0], params[1], axes, eps


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a ``(C,)`` vector so that it broadcasts along axis 1 of an ``ndim`` array."""
    return p.reshape((1, -1) + (1,) * (ndim - 2))


class _Views(NamedTuple):
    """One array seen two ways: ``ncl`` of shape ``(N, C, L)`` for per-channel sums and
    ``rows`` of shape ``(N, C*L)`` for elementwise work. Both share memory when possible."""

    ncl: np.ndarray
    rows: np.ndarray


def _views(a: np.ndarray) -> _Views:
    n, c = a.shape[:2]
    rows = a.reshape(n, -1)  # a copy only if ``a`` is not C-contiguous
    return _Views(rows.reshape(n, c, -1), rows)


def _row_of(p: np.ndarray, length: int, dtype) -> np.ndarray:
    """A per-channel vector ``(C,)`` repeated to one row ``(C*L,)``: ``p[c]`` for each ``l``."""
    return np.repeat(np.asarray(p, dtype=dtype), length)


def _row_blocks(n_rows: int, row_bytes: int) -> Iterator[slice]:
    """Slices of about :data:`_BLOCK_BYTES` bytes (at least one row) covering ``range(n_rows)``."""
    step = max(1, _BLOCK_BYTES // max(row_bytes, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """Per-channel sum of an ``(n, C, L)`` block, in the block's dtype: shape ``(C,)``."""
    if a.shape[2] == 1:
        return np.einsum("nc->c", a[:, :, 0])
    return np.einsum("ncl->c", a)


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-channel ``sum(a * b)`` of two ``(n, C, L)`` blocks without an ``a * b`` temporary."""
    if a.shape[2] == 1:
        return np.einsum("nc,nc->c", a[:, :, 0], b[:, :, 0])
    return np.einsum("ncl,ncl->c", a, b)


def batch_norm_forward(x, gamma, beta, eps: float = 1e-5):
    """Training-mode batch normalisation.

    Args:
        x: input of shape ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``, float32 or float64.
        gamma: scale, shape ``(D,)``/``(C,)`` (any real dtype; cast to the dtype of ``x``).
        beta: shift, shape ``(D,)``/``(C,)`` (likewise).
        eps: added to the biased batch variance before the square root; must be > 0.

    Returns:
        ``(y, cache)``: ``y`` has the shape and dtype of ``x``; ``cache`` is a
        :class:`BatchNormCache` for :func:`batch_norm_backward`.

    Raises:
        ValueError: if ``x`` is not 2-, 3- or 4-D, is not float32/float64, has fewer than 2
            values per channel, if ``gamma``/``beta`` are not numeric of shape ``(C,)``, or if
            ``eps`` is not a positive finite number.

    Passes over memory (``x``, ``x_hat``, ``y`` all of size ``N*C*L``): read ``x`` for
    a first ``mu``; read ``x`` for ``var`` and the correction of ``mu`` (the centred block lives only in a cache-sized scratch
    buffer); read ``x`` once more to write ``x_hat`` and ``y``.
    """
    x, gamma, beta, axes, eps = _check_inputs(x, gamma, beta, eps)
    n, c = x.shape[:2]
    m = x.size // c
    dtype = x.dtype
    xv = _views(x)
    length = xv.ncl.shape[2]
    blocks = list(_row_blocks(n, xv.rows.shape[1] * dtype.itemsize))

    # Pass 1: a first estimate of mu. Block sums in the input dtype, accumulated in float64.
    # Within a block the sum runs row after row in the input dtype, so in float32 this
    # estimate can be off by several standard deviations when |mean| >> std; pass 2
    # measures and removes that error.
    total = np.zeros(c)
    for b in blocks:
        total += _channel_sum(xv.ncl[b])
    mu_first = (total / m).astype(dtype)
    mu_first_row = _row_of(mu_first, length, dtype)

    # Pass 2: the corrected two-pass algorithm (Chan, Golub and LeVeque, 1983). With
    # d = x - mu_first (kept in a cache-sized scratch buffer), mean(d) is the error of the
    # first estimate and var = mean(d^2) - mean(d)^2 is exact in exact arithmetic; the
    # correction term is tiny, so the subtraction cancels nothing that matters.
    scratch = np.empty((blocks[0].stop - blocks[0].start, xv.rows.shape[1]), dtype)
    shifts, squares = np.zeros(c), np.zeros(c)
    for b in blocks:
        centred = np.subtract(xv.rows[b], mu_first_row, out=scratch[: b.stop - b.start])
        centred = centred.reshape(-1, c, length)
        shifts += _channel_sum(centred)
        squares += _channel_dot(centred, centred)
    shift = shifts / m
    mu = (mu_first.astype(np.float64) + shift).astype(dtype)
    mu_row = _row_of(mu, length, dtype)
    var64 = np.maximum(squares / m - shift * shift, 0.0)
    inv_std = (1.0 / np.sqrt(var64 + eps)).astype(dtype)
    var = var64.astype(dtype)

    # Pass 3: x_hat = (x - mu) * inv_std and y = gamma * x_hat + beta, block by block.
    x_hat = np.empty(x.shape, dtype)
    y = np.empty(x.shape, dtype)
    x_hat_rows, y_rows = _views(x_hat).rows, _views(y).rows
    inv_std_row = _row_of(inv_std, length, dtype)
    gamma_row, beta_row = _row_of(gamma, length, dtype), _row_of(beta, length, dtype)
    for b in blocks:
        x_hat_b, y_b = x_hat_rows[b], y_rows[b]
        np.subtract(xv.rows[b], mu_row, out=x_hat_b)
        x_hat_b *= inv_std_row
        np.multiply(x_hat_b, gamma_row, out=y_b)
        y_b += beta_row

    ndim = x.ndim
    cache = BatchNormCache(
        x, x_hat, _per_channel(mu, ndim), _per_channel(var, ndim),
        _per_channel(inv_std, ndim), gamma, eps, axes,
    )
    return y, cache


def _check_dy(dy, cache: BatchNormCache) -> np.ndarray:
    if not isinstance(cache, BatchNormCache):
        raise ValueError(
            f"cache must be the BatchNormCache returned by batch_norm_forward; got "
            f"{type(cache).__name__}"
        )
    dy = np.asarray(dy)
    if not (np.issubdtype(dy.dtype, np.floating) and dy.dtype.itemsize >= 4):
        raise ValueError(f"dy must have a real floating dtype (float32 or float64); got dtype "
                         f"{dy.dtype}")
    if dy.shape != cache.x.shape:
        raise ValueError(f"dy must have the shape of x, {cache.x.shape}; got {dy.shape}")
    return dy.astype(cache.x.dtype, copy=False)


def batch_norm_backward(dy, cache: BatchNormCache):
    """Backward pass in the simplified closed form.

    With ``m`` values per channel, ``dbeta = sum(dy)``, ``dgamma = sum(dy * x_hat)`` and::

        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    Args:
        dy: upstream gradient ``dL/dy``, shape and (preferably) dtype of ``x``; a different
            floating dtype is cast to the dtype of ``x``.
        cache: from :func:`batch_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``(C,)``, ``(C,)`` and the dtype of
        ``x``.

    Passes over memory: read ``dy`` and ``x_hat`` once for both sums, then once more to
    write ``dx``.
    """
    dy = _check_dy(dy, cache)
    dtype, x_hat = cache.x.dtype, cache.x_hat
    n, c = dy.shape[:2]
    m = dy.size // c
    dyv, x_hat_v = _views(dy), _views(x_hat)
    length = dyv.ncl.shape[2]
    blocks = list(_row_blocks(n, dyv.rows.shape[1] * dtype.itemsize))

    # Pass 1: both per-channel sums while the block of dy is in cache.
    dbeta64, dgamma64 = np.zeros(c), np.zeros(c)
    for b in blocks:
        dbeta64 += _channel_sum(dyv.ncl[b])
        dgamma64 += _channel_dot(dyv.ncl[b], x_hat_v.ncl[b])

    # Pass 2: dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)), scale = gamma * inv_std.
    scale = cache.gamma.astype(np.float64) * cache.inv_std.reshape(-1).astype(np.float64)
    scale_row = _row_of(scale, length, dtype)
    minus_mean_dy_row = _row_of(-dbeta64 / m, length, dtype)
    minus_mean_dy_x_hat_row = _row_of(-dgamma64 / m, length, dtype)
    dx = np.empty(dy.shape, dtype)
    dx_rows = _views(dx).rows
    for b in blocks:
        dx_b = dx_rows[b]
        np.multiply(x_hat_v.rows[b], minus_mean_dy_x_hat_row, out=dx_b)
        dx_b += dyv.rows[b]
        dx_b += minus_mean_dy_row
        dx_b *= scale_row
    return dx, dgamma64.astype(dtype), dbeta64.astype(dtype)


def batch_norm_backward_staged(dy, cache: BatchNormCache):
    """Backward pass node by node through the computational graph of the forward pass.

    The graph is ``x -> mu -> x_centred -> var -> inv_std -> x_hat -> gamma*x_hat -> +beta``;
    each step below is the local chain rule at one node, in reverse order. It is slower than
    :func:`batch_norm_backward` (many more passes over memory) but mirrors the derivation.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``(C,)``, ``(C,)`` and the dtype of
        ``x``.
    """
    dy = _check_dy(dy, cache)
    x, x_hat, mu, var, inv_std, gamma, eps, axes = cache
    ndim = x.ndim
    m = x.size // x.shape[1]
    x_centred = x - mu  # recomputed: the forward pass keeps x_hat, not x - mu
    # shift: y = scaled + beta
    dbeta = dy.sum(axis=axes)
    dscaled = dy
    # scale: scaled = gamma * x_hat
    dgamma = (dscaled * x_hat).sum(axis=axes)
    dx_hat = dscaled * _per_channel(gamma, ndim)
    # x_hat = x_centred * inv_std  (x_centred also feeds var: its gradient has two parts)
    dinv_std = (dx_hat * x_centred).sum(axis=axes, keepdims=True)
    dx_centred = dx_hat * inv_std
    # inverse std: inv_std = (var + eps) ** (-1/2)
    dvar = dinv_std * (-0.5) * (var + np.asarray(eps, dtype=x.dtype)) ** -1.5
    # variance: var = mean(x_centred ** 2)
    dx_centred += dvar * (2.0 / m) * x_centred
    # centred: x_centred = x - mu  (x feeds both x_centred and mu)
    dmu = -dx_centred.sum(axis=axes, keepdims=True)
    dx = dx_centred
    # mean: mu = mean(x)
    dx += dmu / m
    return dx.astype(x.dtype, copy=False), dgamma, dbeta


from bnbook.layers import BatchNorm  # noqa: E402

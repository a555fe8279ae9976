"""Batch norm in NumPy, organised for speed: the functions of :mod:`bnbook.numpy_norms`, cache-blocked.

:func:`batch_norm_forward` and :func:`batch_norm_backward` take the same arguments, run the same
input checks, return the same :class:`bnbook.numpy_norms.BatchNormCache` and agree with the
plain functions of :mod:`bnbook.numpy_norms` to rounding (``tests/test_numpy_fast.py``); a
cache from either forward pass works with either backward pass. Only the order of the work
differs. Appendix B counts the passes over memory that this order saves:

* Every input is viewed as ``(N, C, L)`` with ``L = 1``, ``L`` or ``H*W``; per-channel sums
  are ``einsum`` contractions of that view, which run over contiguous memory without
  full-size temporaries.
* Elementwise work uses the ``(N, C*L)`` view and per-channel parameters repeated to one
  row of ``C*L`` values, so that every ufunc call sees two contiguous operands (NumPy's
  fastest loop; a ``(1, C, 1)`` broadcast is about twice as slow).
* Rows are processed in blocks of about :data:`_BLOCK_BYTES` bytes, so that the several
  operations applied to one block find it in cache: a block is read from main memory once
  per pass, however many ufuncs touch it.
* Within a block, sums run in the input dtype (row after row, NumPy's fastest order); the
  block sums are accumulated in float64. In float32 the first estimate of the mean can then
  be off by more than a standard deviation when ``|mean| >> std``, so the variance uses the
  corrected two-pass algorithm of Chan, Golub and LeVeque (1983), which measures and removes
  that error at no extra pass (Appendix A); ``x_hat`` is ``(x - mu_first) - shift``, not
  ``x - mu`` with ``mu`` rounded to float32, so the output stays within a few float32
  roundings (about ``1e-6`` for ``|x_hat| <~ 5``) of the float64 result however large the mean
  is against the spread (``tests/test_reliability_numerics.py`` checks mean/std up to 3e6).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from bnbook.numpy_norms._checks import _check_variance_representable
from bnbook.numpy_norms import (
    BatchNormCache,
    check_backward_inputs,
    check_forward_inputs,
    per_channel,
)

__all__ = ["batch_norm_forward", "batch_norm_backward"]

#: Target size of one block of rows of ``x`` (bytes): small enough for the blocks of the
#: two or three arrays one step touches to stay in a core's L2/L3 cache.
_BLOCK_BYTES = 1 << 20


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
    """Training-mode batch normalisation, as :func:`bnbook.numpy_norms.batch_norm_forward`.

    Same arguments, result (``(y, cache)``, ``y`` with the shape and dtype of ``x``) and
    errors. Passes over memory (``x``, ``x_hat``, ``y`` all of size ``N*C*L``): read ``x``
    for a first ``mu``; read ``x`` for ``var`` and the correction of ``mu`` (the centred block
    lives only in a cache-sized scratch buffer); read ``x`` once more to write ``x_hat`` and
    ``y``.
    """
    x, gamma, beta, axes, eps = check_forward_inputs(x, gamma, beta, eps)
    n, c = x.shape[:2]
    m = x.size // c
    dtype = x.dtype
    xv = _views(x)
    length = xv.ncl.shape[2]
    blocks = list(_row_blocks(n, xv.rows.shape[1] * dtype.itemsize))

    # Pass 1: a first estimate of mu. Block sums in the input dtype, accumulated in float64.
    total = np.zeros(c)
    for b in blocks:
        total += _channel_sum(xv.ncl[b])
    mu_first = (total / m).astype(dtype)
    mu_first_row = _row_of(mu_first, length, dtype)

    # Pass 2: the corrected two-pass algorithm. With d = x - mu_first (kept in a cache-sized
    # scratch buffer), mean(d) is the error of the first estimate and var = mean(d^2) -
    # mean(d)^2 is exact in exact arithmetic; the correction term is tiny, so the
    # subtraction cancels nothing that matters.
    scratch = np.empty((blocks[0].stop - blocks[0].start, xv.rows.shape[1]), dtype)
    shifts, squares = np.zeros(c), np.zeros(c)
    for b in blocks:
        centred = np.subtract(xv.rows[b], mu_first_row, out=scratch[: b.stop - b.start])
        centred = centred.reshape(-1, c, length)
        shifts += _channel_sum(centred)
        squares += _channel_dot(centred, centred)
    shift = shifts / m
    mu = (mu_first.astype(np.float64) + shift).astype(dtype)
    shift_row = _row_of(shift, length, dtype)
    var64 = np.maximum(squares / m - shift * shift, 0.0)
    _check_variance_representable(var64, dtype)
    inv_std = (1.0 / np.sqrt(var64 + eps)).astype(dtype)
    var = var64.astype(dtype)

    # Pass 3: x_hat = ((x - mu_first) - shift) * inv_std and y = gamma * x_hat + beta, block
    # by block. Not x - mu: when |mu| >> std, rounding mu to the input dtype moves it by up
    # to half its ulp, a sizeable fraction of a standard deviation in float32; x - mu_first
    # is exact there (Sterbenz) and the small shift keeps its digits (Appendix A).
    x_hat = np.empty(x.shape, dtype)
    y = np.empty(x.shape, dtype)
    x_hat_rows, y_rows = _views(x_hat).rows, _views(y).rows
    inv_std_row = _row_of(inv_std, length, dtype)
    gamma_row, beta_row = _row_of(gamma, length, dtype), _row_of(beta, length, dtype)
    for b in blocks:
        x_hat_b, y_b = x_hat_rows[b], y_rows[b]
        np.subtract(xv.rows[b], mu_first_row, out=x_hat_b)
        x_hat_b -= shift_row
        x_hat_b *= inv_std_row
        np.multiply(x_hat_b, gamma_row, out=y_b)
        y_b += beta_row

    ndim = x.ndim
    cache = BatchNormCache(
        x, x_hat, per_channel(mu, ndim), per_channel(var, ndim),
        per_channel(inv_std, ndim), gamma, eps, axes,
    )
    return y, cache


def batch_norm_backward(dy, cache: BatchNormCache):
    """The closed-form backward pass, as :func:`bnbook.numpy_norms.batch_norm_backward`.

    Same arguments, result (``(dx, dgamma, dbeta)`` in the dtype of ``x``) and errors.
    Passes over memory: read ``dy`` and ``x_hat`` once for both sums, then once more to write
    ``dx``.
    """
    dy = check_backward_inputs(dy, cache)
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

"""Batch normalisation in NumPy: the training-mode equations, evaluation mode, and the layer.

* :func:`batch_norm_forward`, :func:`batch_norm_backward` (the closed form) and
  :func:`batch_norm_backward_staged` (node by node) in training mode (chapters 2 and 3);
* :func:`batch_norm_inference_affine` and :func:`batch_norm_inference_forward` in evaluation
  mode (chapter 4);
* :class:`BatchNorm`, the layer: bookkeeping only (chapter 4).

Batch norm's five equations (mean, variance, normalise, scale, shift) and its closed-form
backward are written out inline in :func:`batch_norm_forward` and :func:`batch_norm_backward`:
they are the book's equations (chapters 2 and 3). Layer, instance and group norm run the same
equations over other axes through :mod:`bnbook.numpy_norms.shared`; a test checks that the two
agree. The conventions are in the docstring of :mod:`bnbook.numpy_norms`.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from bnbook.numpy_norms._checks import (
    _as_float_array,
    as_channel_vector,
    check_dy,
    check_eps,
    check_forward_inputs,
    per_channel,
    reduction_axes,
    _check_variance_representable,
)

__all__ = [
    "BatchNormCache",
    "check_backward_inputs",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_backward_staged",
    "batch_norm_inference_affine",
    "batch_norm_inference_forward",
    "BatchNorm",
]

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



def check_backward_inputs(dy, cache: BatchNormCache) -> np.ndarray:
    """Validate ``dy`` against ``cache`` (shared with :mod:`bnbook.numpy_fast`); return ``dy`` in
    the dtype of ``x``."""
    if not isinstance(cache, BatchNormCache):
        kind = f"{type(cache).__module__}.{type(cache).__qualname__}"
        raise ValueError(
            f"cache must be the BatchNormCache of bnbook.numpy_norms, returned by "
            f"bnbook.numpy_norms.batch_norm_forward (or bnbook.numpy_fast's); got a {kind}"
            + (" (from the torch layer: use bnbook.torch_bn.batch_norm_backward with it)"
               if kind.startswith("bnbook.torch_bn") else "")
        )
    return check_dy(dy, cache.x)


# --- training mode -----------------------------------------------------------------------------

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
            values per channel, if ``gamma``/``beta`` are not numeric of shape ``(C,)``, if
            ``eps`` is not a positive finite number, or if a channel's variance overflows the
            dtype of ``x`` (float32: ``|x|`` of about 1e19; float64: 1e154). PyTorch returns
            ``beta`` there without a word.
    """
    x, gamma, beta, axes, eps = check_forward_inputs(x, gamma, beta, eps)
    ndim, dtype = x.ndim, x.dtype
    # float64 whatever the input: a float32 sum of thousands of values near a large mean
    # loses the digits that the variance needs (Appendix A).
    x64 = x.astype(np.float64, copy=False)
    with np.errstate(over="ignore"):
        mu = x64.mean(axis=axes, keepdims=True)                   # (1) mean over the batch
        x_centred = x64 - mu
        var = (x_centred ** 2).mean(axis=axes, keepdims=True)     # (2) variance, biased (/ m)
        inv_std = 1.0 / np.sqrt(var + eps)
    _check_variance_representable(var, dtype)
    x_hat = x_centred * inv_std                                   # (3) normalise
    y = per_channel(gamma, ndim) * x_hat                          # (4) scale
    y = y + per_channel(beta, ndim)                               # (5) shift
    cache = BatchNormCache(x, x_hat.astype(dtype), mu.astype(dtype), var.astype(dtype),
                           inv_std.astype(dtype), gamma, eps, axes)
    return y.astype(dtype), cache


def batch_norm_backward(dy, cache: BatchNormCache):
    """Backward pass in the simplified closed form.

    With ``m`` values per channel, ``dbeta = sum(dy)``, ``dgamma = sum(dy * x_hat)`` and::

        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    written below with ``dx_hat = gamma * dy`` (the same expression with ``gamma`` moved inside
    the brackets)::

        dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))

    which is :func:`bnbook.numpy_norms.shared.normalise_over_backward` over the batch norm axes,
    the one backward formula that layer, instance and group norm run over their own axes.

    Args:
        dy: upstream gradient ``dL/dy``, shape and (preferably) dtype of ``x``; a different
            floating dtype is cast to the dtype of ``x``.
        cache: from :func:`batch_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``(C,)``, ``(C,)`` and the dtype of
        ``x`` (computed in float64).
    """
    dy = check_backward_inputs(dy, cache).astype(np.float64, copy=False)
    x_hat, axes, dtype = cache.x_hat.astype(np.float64), cache.axes, cache.x.dtype
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    inv_std = cache.inv_std.astype(np.float64)
    m = x_hat.size // x_hat.shape[1]                      # values per channel
    dx_hat = dy * per_channel(cache.gamma.astype(np.float64), dy.ndim)
    sum_dx_hat = dx_hat.sum(axis=axes, keepdims=True)
    sum_dx_hat_x_hat = (dx_hat * x_hat).sum(axis=axes, keepdims=True)
    dx = inv_std / m * (m * dx_hat - sum_dx_hat - x_hat * sum_dx_hat_x_hat)
    return dx.astype(dtype), dgamma.astype(dtype), dbeta.astype(dtype)


def batch_norm_backward_staged(dy, cache: BatchNormCache):
    """Backward pass node by node through the computational graph of the forward pass.

    The graph is ``x -> mu -> x_centred -> var -> inv_std -> x_hat -> gamma*x_hat -> +beta``;
    each step below is the local chain rule at one node, in reverse order. It is slower than
    :func:`batch_norm_backward` (many more passes over memory) but mirrors the derivation.

    Every node is computed in float64 (as :func:`batch_norm_backward`): in float32,
    ``(var + eps) ** -1.5`` underflows to 0 from ``|x|`` of about 1e15 and the variance's part
    of the gradient would vanish.

    Returns:
        ``(dx, dgamma, dbeta)`` with shapes ``x.shape``, ``(C,)``, ``(C,)`` and the dtype of
        ``x``.

    Raises:
        ValueError: as :func:`check_backward_inputs`, and if ``(var + eps) ** -1.5`` is not a
            normal float64 number (a variance above about 1e205, or an infinite one): use
            :func:`batch_norm_backward`, which never forms that power, or rescale ``x``.
    """
    dy = check_backward_inputs(dy, cache).astype(np.float64, copy=False)
    dtype = cache.x.dtype
    x, x_hat, mu, var, inv_std, gamma = (
        np.asarray(a, dtype=np.float64) for a in cache[:6])
    eps, axes = cache.eps, cache.axes
    with np.errstate(over="ignore", under="ignore"):
        var_power = (var + eps) ** -1.5
    if np.any(var_power < np.finfo(np.float64).tiny):  # NaN spreads, as elsewhere
        raise ValueError(
            f"batch_norm_backward_staged: the cache's variance (largest {np.max(var):.3g}) "
            f"makes (var + eps) ** -1.5 underflow or overflow float64, so the variance node's "
            f"gradient would be lost; use batch_norm_backward (the closed form) or rescale x")
    ndim = x.ndim
    m = x.size // x.shape[1]
    x_centred = x - mu  # recomputed: the forward pass keeps x_hat, not x - mu
    # shift: y = scaled + beta
    dbeta = dy.sum(axis=axes)
    dscaled = dy
    # scale: scaled = gamma * x_hat
    dgamma = (dscaled * x_hat).sum(axis=axes)
    dx_hat = dscaled * per_channel(gamma, ndim)
    # x_hat = x_centred * inv_std  (x_centred also feeds var: its gradient has two parts)
    dinv_std = (dx_hat * x_centred).sum(axis=axes, keepdims=True)
    dx_centred = dx_hat * inv_std
    # inverse std: inv_std = (var + eps) ** (-1/2)
    dvar = dinv_std * (-0.5) * var_power
    # variance: var = mean(x_centred ** 2)
    dx_centred += dvar * (2.0 / m) * x_centred
    # centred: x_centred = x - mu  (x feeds both x_centred and mu)
    dmu = -dx_centred.sum(axis=axes, keepdims=True)
    dx = dx_centred
    # mean: mu = mean(x)
    dx += dmu / m
    return dx.astype(dtype), dgamma.astype(dtype), dbeta.astype(dtype)


# --- evaluation mode ---------------------------------------------------------------------------

def batch_norm_inference_affine(gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """The per-channel affine map ``y = scale * x + shift`` of a batch norm layer in eval mode.

    Args:
        gamma, beta, running_mean, running_var: vectors of shape ``(C,)``.
        eps: added to ``running_var`` before the square root; must be > 0.

    Returns:
        ``(scale, shift)``, float64 vectors of shape ``(C,)`` with
        ``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta - running_mean * scale``.

    Raises:
        ValueError: if the vectors do not all have the same shape ``(C,)``, if
            ``running_var`` has a negative or non-finite entry, or if ``eps <= 0``.
    """
    gamma = as_channel_vector(gamma, "gamma")
    channels = gamma.shape[0]
    beta = as_channel_vector(beta, "beta", channels)
    running_mean = as_channel_vector(running_mean, "running_mean", channels)
    running_var = as_channel_vector(running_var, "running_var", channels)
    if not np.all(np.isfinite(running_var)) or np.any(running_var < 0):
        raise ValueError("running_var must be finite and non-negative (it is a variance)")
    eps = check_eps(eps)
    inv_std = 1.0 / np.sqrt(running_var + eps)
    scale = gamma * inv_std
    shift = beta - running_mean * scale
    return scale, shift


def batch_norm_inference_forward(x, gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """Evaluation-mode batch norm: the affine map with the running statistics.

    Args:
        x: input of shape ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``, float32 or float64.
            Any ``N >= 1`` works: nothing is averaged over the batch.
        gamma, beta, running_mean, running_var: vectors of shape ``(C,)``.
        eps: as in :func:`batch_norm_inference_affine`.

    Returns:
        ``y`` with the shape and dtype of ``x``.

    Raises:
        ValueError: as :func:`batch_norm_inference_affine`, and if ``x`` is not 2-, 3- or
            4-D or not float32/float64 (float16 and float128 are refused, as in training mode).
    """
    x = np.asarray(x)
    reduction_axes(x.ndim)  # raises a clear error for a wrong number of dimensions
    x = _as_float_array(x, "x")  # the dtypes of training mode: float32/float64 only
    channels = x.shape[1]
    if np.shape(gamma) != (channels,):
        raise ValueError(
            f"gamma must have shape ({channels},) to match the channel axis (axis 1) of x "
            f"with shape {x.shape}; got shape {np.shape(gamma)}"
        )
    scale, shift = batch_norm_inference_affine(gamma, beta, running_mean, running_var, eps)
    y = x * per_channel(scale.astype(x.dtype), x.ndim)
    y += per_channel(shift.astype(x.dtype), x.ndim)
    return y


# --- the layer: bookkeeping only ---------------------------------------------------------------

def _check_momentum(momentum):
    if momentum is None:
        return None
    if (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
            or not np.isfinite(momentum) or not 0.0 <= momentum <= 1.0):
        raise ValueError(
            f"momentum must be a number in [0, 1] (the weight of the new batch, PyTorch's "
            f"convention) or None (cumulative average); got {momentum!r}"
        )
    return float(momentum)


class BatchNorm:
    """Batch normalisation over axis 1 for inputs ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)``.

    The layer owns the parameters, the running statistics and the mode; the arithmetic is
    :func:`batch_norm_forward` and :func:`batch_norm_backward` in training mode and
    :func:`batch_norm_inference_forward` in eval mode. Running statistics follow PyTorch's
    ``nn.BatchNorm1d/2d`` exactly:

    * ``momentum`` is the weight of the *new* batch: ``new = (1 - momentum) * old + momentum *
      batch`` (Keras calls ``1 - momentum`` its momentum);
    * ``running_var`` averages the *unbiased* batch variance ``var * m / (m - 1)``, while the
      batch itself is normalised with the biased ``var``;
    * ``momentum=None`` gives the cumulative average: the weight of batch ``k`` (counting
      from 1) is ``1 / k``, so after ``k`` batches the running statistics are the plain means
      of the ``k`` batch statistics (the paper's Algorithm 2 for equal batch sizes).

    Args:
        num_features: ``D`` or ``C``, the size of axis 1 of the input.
        eps: added to the variance before the square root (PyTorch's default ``1e-5``).
        momentum: weight of the new batch in the running statistics, in ``[0, 1]``
            (PyTorch's default ``0.1``), or ``None`` for a cumulative moving average.

    Attributes:
        gamma, beta: float64 parameters of shape ``(C,)``, initialised to ones and zeros.
        running_mean, running_var: float64 buffers of shape ``(C,)``, initialised to zeros and
            ones; ``running_var`` averages the unbiased batch variance.
        num_batches_tracked: number of training-mode forward passes so far.
        training: ``True`` (the default) or ``False``; set by :meth:`train` and :meth:`eval`.
        dgamma, dbeta: gradients from the last :meth:`backward`, shape ``(C,)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        if (isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral)
                or num_features < 1):
            raise ValueError(f"num_features must be a positive integer; got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = check_eps(eps)
        self.momentum = _check_momentum(momentum)
        self.gamma = np.ones(self.num_features)
        self.beta = np.zeros(self.num_features)
        self.running_mean = np.zeros(self.num_features)
        self.running_var = np.ones(self.num_features)
        self.num_batches_tracked = 0
        self.training = True
        self.dgamma = None
        self.dbeta = None
        self._cache = None

    def __repr__(self) -> str:
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"training={self.training})")

    def train(self, mode: bool = True) -> "BatchNorm":
        """Switch to training mode (batch statistics, running statistics updated)."""
        self.training = bool(mode)
        if not self.training:
            self._cache = None
        return self

    def eval(self) -> "BatchNorm":
        """Switch to evaluation mode (running statistics, nothing updated)."""
        return self.train(False)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, batch count 0 (as PyTorch)."""
        self.running_mean = np.zeros(self.num_features)
        self.running_var = np.ones(self.num_features)
        self.num_batches_tracked = 0

    def _check_input(self, x) -> np.ndarray:
        # the same dtypes in both modes (float32, float64, either byte order)
        x = _as_float_array(x, "x")
        reduction_axes(x.ndim)  # clear error for a wrong number of dimensions
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"this BatchNorm has num_features={self.num_features} but x has "
                f"{x.shape[1]} channels on axis 1 (shape {x.shape})"
            )
        return x

    def forward(self, x):
        """Normalise ``x``; in training mode also update the running statistics.

        Args:
            x: ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)`` float32 or float64 array (either
                byte order, in both modes) with ``C = num_features``; training mode needs at
                least 2 values per channel and refuses non-finite values with a
                ``ValueError`` before touching the running statistics.

        Returns:
            ``y``, with the shape and dtype of ``x``.
        """
        x = self._check_input(x)
        if not self.training:
            self._cache = None
            return batch_norm_inference_forward(
                x, self.gamma, self.beta, self.running_mean, self.running_var, self.eps)
        if not np.isfinite(x).all():
            raise ValueError(
                f"x contains {int(np.size(x) - np.isfinite(x).sum())} non-finite value(s) "
                f"(NaN or inf): refusing a training-mode batch that would poison the running "
                f"statistics (they are left unchanged)"
            )
        y, cache = batch_norm_forward(x, self.gamma, self.beta, self.eps)
        m = x.size // self.num_features
        mu = cache.mu.reshape(-1).astype(np.float64)
        var_unbiased = cache.var.reshape(-1).astype(np.float64) * (m / (m - 1))
        self.num_batches_tracked += 1
        if self.momentum is None:
            weight = 1.0 / self.num_batches_tracked
        else:
            weight = self.momentum
        self.running_mean = (1.0 - weight) * self.running_mean + weight * mu
        self.running_var = (1.0 - weight) * self.running_var + weight * var_unbiased
        self._cache = cache
        return y

    __call__ = forward

    def backward(self, dy):
        """Gradients of the last training-mode :meth:`forward`.

        Args:
            dy: upstream gradient, shape of that forward's ``x``.

        Returns:
            ``dx`` with the shape of ``x``; stores ``self.dgamma`` and ``self.dbeta`` (``(C,)``).

        Raises:
            ValueError: in eval mode, or before any training-mode forward pass.
        """
        if not self.training:
            raise ValueError(
                "backward() in eval mode: this layer only back-propagates through the "
                "training-mode forward pass; call train() and forward() first"
            )
        if self._cache is None:
            raise ValueError("backward() called before forward(): there is nothing to "
                             "differentiate; call forward(x) in training mode first")
        dx, dgamma, dbeta = batch_norm_backward(dy, self._cache)
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx

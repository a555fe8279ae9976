"""The checkers' reference: the layers in float64 NumPy, written out on their own.

Nothing here imports the book's library or PyTorch: the checkers compare the student's code
with these functions, and ``tests/test_checks.py`` compares these functions with PyTorch.
Conventions are PyTorch's: biased variance in the normalisation, ``eps`` inside the square
root, ``momentum`` the weight of the new batch, ``running_var`` averaging the unbiased
variance.
"""

from __future__ import annotations

import numpy as np


def channel_axes(ndim: int) -> tuple[int, ...]:
    """Every axis but axis 1 (the channels): ``(0,)`` for ``(N, D)``, ``(0, 2, 3)`` for 4-D."""
    return (0,) + tuple(range(2, ndim))


def per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """A ``(C,)`` vector shaped to broadcast along axis 1 of an ``ndim``-D array."""
    return np.asarray(p, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def normalise(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` with the biased variance over ``axes`` (two passes)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=axes, keepdims=True)
    return centred / np.sqrt(var + eps)


def batch_norm(x, gamma, beta, eps) -> np.ndarray:
    """Training-mode batch norm: ``x`` ``(N, C, ...)``, ``gamma``, ``beta`` ``(C,)`` -> ``y``."""
    x_hat = normalise(x, channel_axes(x.ndim), eps)
    return per_channel(gamma, x.ndim) * x_hat + per_channel(beta, x.ndim)


def batch_norm_eval(x, gamma, beta, running_mean, running_var, eps) -> np.ndarray:
    """Eval-mode batch norm with the given running statistics (all ``(C,)``) -> ``y``."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = ((x - per_channel(running_mean, x.ndim))
             / np.sqrt(per_channel(running_var, x.ndim) + eps))
    return per_channel(gamma, x.ndim) * x_hat + per_channel(beta, x.ndim)


def layer_norm(x, gamma, beta, eps) -> np.ndarray:
    """Layer norm: each sample over all its axes; ``gamma``, ``beta`` ``x.shape[1:]``."""
    x_hat = normalise(x, tuple(range(1, x.ndim)), eps)
    return np.asarray(gamma, dtype=np.float64) * x_hat + np.asarray(beta, dtype=np.float64)


def group_norm(x, gamma, beta, num_groups, eps) -> np.ndarray:
    """Group norm: contiguous groups of ``C // num_groups`` channels per sample; ``gamma``,
    ``beta`` ``(C,)``."""
    n, c = x.shape[:2]
    grouped = np.asarray(x, dtype=np.float64).reshape((n, num_groups, c // num_groups)
                                                      + x.shape[2:])
    x_hat = normalise(grouped, tuple(range(2, grouped.ndim)), eps).reshape(x.shape)
    return per_channel(gamma, x.ndim) * x_hat + per_channel(beta, x.ndim)


def batch_norm_gradients(x, gamma, eps, dy):
    """``(dx, dgamma, dbeta)`` of ``sum(batch_norm(x, gamma, beta, eps) * dy)``, each channel
    on its own: ``dx`` is ``gamma * inv_std`` times ``dy`` less its mean and less ``x_hat``
    times the mean of ``dy * x_hat`` (means over the ``m`` values of the channel)."""
    axes = channel_axes(x.ndim)
    x = np.asarray(x, dtype=np.float64)
    x_hat = normalise(x, axes, eps)
    inv_std = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    dy_mean = dy.mean(axis=axes, keepdims=True)
    dy_x_hat_mean = (dy * x_hat).mean(axis=axes, keepdims=True)
    dx = per_channel(gamma, x.ndim) * inv_std * (dy - dy_mean - x_hat * dy_x_hat_mean)
    return dx, (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def running_trace(plan, eps, momentum):
    """``[(y, running_mean, running_var), ...]`` of a layer with ``gamma = 1``, ``beta = 0``
    after each ``(mode, x)`` of ``plan`` (``mode`` is ``"train"`` or ``"eval"``)."""
    channels = plan[0][1].shape[1]
    running_mean, running_var = np.zeros(channels), np.ones(channels)
    trace = []
    for mode, x in plan:
        ones, zeros = np.ones(channels), np.zeros(channels)
        if mode == "train":
            axes = channel_axes(x.ndim)
            count = x.size // channels
            y = batch_norm(x, ones, zeros, eps)
            unbiased_var = x.var(axis=axes) * count / (count - 1)
            running_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=axes)
            running_var = (1 - momentum) * running_var + momentum * unbiased_var
        else:
            y = batch_norm_eval(x, ones, zeros, running_mean, running_var, eps)
        trace.append((y, running_mean.copy(), running_var.copy()))
    return trace

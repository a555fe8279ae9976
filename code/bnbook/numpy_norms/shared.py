"""The two computations that every normalisation of :mod:`bnbook.numpy_norms` shares.

Batch, layer, instance and group norm differ only in *which* values share one mean and one
variance. Given an array and the axes to average over, :func:`normalise_over` computes the
statistics and ``x_hat``, and :func:`normalise_over_backward` is the closed-form backward
pass of chapter 3 written for ``x_hat`` alone::

    dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))

with the sums over the same axes and ``m`` values in each. The affine step
``y = gamma * x_hat + beta`` and the axes are the callers' business; they pass in
``dx_hat = gamma * dy``. Everything here is float64 arithmetic on float64 arrays.

Layer, instance and group norm call these two functions;
:func:`bnbook.numpy_norms.batch_norm_forward` and :func:`bnbook.numpy_norms.batch_norm_backward`
write the same equations out inline (the reader's first stop), and the tests check that the two
agree to float64 round-off.
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalise_over", "normalise_over_backward"]


def normalise_over(x: np.ndarray, axes: tuple[int, ...], eps: float):
    """Statistics of ``x`` over ``axes`` and the normalised values.

    Args:
        x: float64 array of any shape, e.g. ``(N, D)`` or the ``(N, G, C // G, H, W)`` view
            of group norm.
        axes: the axes whose values share one mean and one variance.
        eps: added to the biased variance before the square root.

    Returns:
        ``(x_hat, mu, var, inv_std)``, float64; ``x_hat`` has the shape of ``x``, the
        statistics have size 1 on ``axes`` (they broadcast against ``x``). ``var`` is the
        biased variance, in two passes (mean first, then the mean of squared deviations).
    """
    mu = x.mean(axis=axes, keepdims=True)
    x_centred = x - mu
    var = (x_centred ** 2).mean(axis=axes, keepdims=True)  # biased: divide by m
    inv_std = 1.0 / np.sqrt(var + eps)
    return x_centred * inv_std, mu, var, inv_std


def normalise_over_backward(dx_hat: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray,
                            axes: tuple[int, ...]) -> np.ndarray:
    """Gradient with respect to ``x`` of ``x_hat = (x - mu) * inv_std`` over ``axes``.

    Args:
        dx_hat: ``dL/dx_hat``, float64, shape of ``x_hat``.
        x_hat, inv_std: from :func:`normalise_over` (``inv_std`` broadcasts).
        axes: the axes the statistics were taken over; with ``m`` values on them.

    Returns:
        ``dx``, float64, shape of ``x_hat``.
    """
    m = int(np.prod([x_hat.shape[a] for a in axes]))
    sum_dx_hat = dx_hat.sum(axis=axes, keepdims=True)
    sum_dx_hat_x_hat = (dx_hat * x_hat).sum(axis=axes, keepdims=True)
    return inv_std / m * (m * dx_hat - sum_dx_hat - x_hat * sum_dx_hat_x_hat)

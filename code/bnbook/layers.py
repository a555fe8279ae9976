"""A batch norm layer in NumPy: the bookkeeping around the functions of :mod:`bnbook.numpy_norms`.

The class owns the parameters (``gamma``, ``beta``), the running statistics
(``running_mean``, ``running_var``, ``num_batches_tracked``) and the mode (``training``); the
mathematics is elsewhere: :func:`bnbook.numpy_norms.batch_norm_forward` and
:func:`bnbook.numpy_norms.batch_norm_backward` in training mode,
:func:`bnbook.folding.batch_norm_inference_forward` (one affine map per channel) in eval mode.

Running statistics follow PyTorch's ``nn.BatchNorm1d/2d`` exactly:

* ``momentum`` is the weight of the *new* batch: ``new = (1 - momentum) * old + momentum *
  batch`` (Keras calls ``1 - momentum`` its momentum);
* ``running_var`` averages the *unbiased* batch variance ``var * m / (m - 1)``, with ``m`` the
  number of values per channel, while the batch itself is normalised with the biased ``var``;
* ``momentum=None`` gives the cumulative average: the weight of batch ``k`` (counting from 1)
  is ``1 / k``, so after ``k`` batches the running statistics are the plain means of the ``k``
  batch statistics (the paper's Algorithm 2 for equal batch sizes).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["BatchNorm"]


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
        if (isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not np.isfinite(eps)
                or eps <= 0):
            raise ValueError(f"eps must be a positive finite number; got {eps!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
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
        x = np.asarray(x)
        _numpy_norms.reduction_axes(x.ndim)  # clear error for a wrong number of dimensions
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"this BatchNorm has num_features={self.num_features} but x has "
                f"{x.shape[1]} channels on axis 1 (shape {x.shape})"
            )
        return x

    def forward(self, x):
        """Normalise ``x``; in training mode also update the running statistics.

        Args:
            x: ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)`` float array with ``C =
                num_features``; training mode needs at least 2 values per channel.

        Returns:
            ``y``, with the shape and dtype of ``x``.
        """
        x = self._check_input(x)
        if not self.training:
            self._cache = None
            return _folding.batch_norm_inference_forward(
                x, self.gamma, self.beta, self.running_mean, self.running_var, self.eps)
        y, cache = _numpy_norms.batch_norm_forward(x, self.gamma, self.beta, self.eps)
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
        dx, dgamma, dbeta = _numpy_norms.batch_norm_backward(dy, self._cache)
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx


# Imported after the class, as modules: bnbook.numpy_norms re-exports BatchNorm from its last
# line, so whichever of numpy_norms, folding and layers is imported first, the others find
# what they need (the functions are looked up when called, not at import time).
from bnbook import folding as _folding  # noqa: E402
from bnbook import numpy_norms as _numpy_norms  # noqa: E402

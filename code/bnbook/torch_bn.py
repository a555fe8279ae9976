"""The book's batch norm as a PyTorch layer: closed-form backward in a ``torch.autograd.Function``.

:mod:`bnbook.numpy_norms` derives the layer in NumPy. This module writes the same formulas
with torch operations, so the layer runs on any device PyTorch knows (CPU, CUDA, MPS), and
wraps them for autograd and ``nn.Module`` use:

* :func:`batch_norm_forward` / :func:`batch_norm_backward` - the NumPy module's formulas,
  line for line, with the same names (``mu``, ``var``, ``inv_std``, ``x_hat``);
* :class:`BatchNormFunction` - autograd sees one node whose backward is the closed form
  ``dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)`` instead of the chain of
  primitive operations autograd would otherwise record;
* :class:`BatchNorm` - the bookkeeping around it (parameters ``weight``/``bias``, buffers
  ``running_mean``/``running_var``/``num_batches_tracked``), with ``torch.nn.BatchNorm2d``'s
  names and conventions so that the two load each other's ``state_dict``.

Conventions (PyTorch's):

* input ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``; statistics per channel (axis 1) over
  the ``m`` values of every other axis;
* training mode normalises with the *biased* batch variance (divide by ``m``) but stores the
  *unbiased* one (divide by ``m - 1``) in ``running_var``;
* ``running = (1 - momentum) * running + momentum * batch``; ``momentum=None`` means the
  cumulative average ``1 / num_batches_tracked``;
* float16/bfloat16 inputs are normalised with float32 arithmetic (PyTorch's accumulation
  type for half precision) and the output is rounded back to the input's dtype.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
from torch import nn

from bnbook.numpy_norms import check_eps

__all__ = [
    "BatchNormCache",
    "reduction_dims",
    "accumulation_dtype",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_inference",
    "BatchNormFunction",
    "batch_norm",
    "BatchNorm",
]

_DIMS = {2: (0,), 3: (0, 2), 4: (0, 2, 3)}


class BatchNormCache(NamedTuple):
    """What :func:`batch_norm_forward` keeps for :func:`batch_norm_backward`.

    Tensors in the accumulation dtype (see :func:`accumulation_dtype`): ``x_hat`` has the
    shape of ``x``; ``mu``, ``var`` and ``inv_std`` have ``x``'s ndim with size 1 on every
    reduced dimension; ``gamma`` has shape ``(C,)``. ``dtype`` is the dtype of ``x`` (and of
    ``dx``); ``m`` the number of values per channel.
    """

    x_hat: torch.Tensor
    mu: torch.Tensor
    var: torch.Tensor
    inv_std: torch.Tensor
    gamma: torch.Tensor
    eps: float
    dims: tuple[int, ...]
    m: int
    dtype: torch.dtype


def reduction_dims(ndim: int) -> tuple[int, ...]:
    """Dimensions over which batch norm averages for an input of ``ndim`` dimensions (2, 3 or 4)."""
    if ndim not in _DIMS:
        raise ValueError(
            f"batch norm expects an input of shape (N, C), (N, C, L) or (N, C, H, W); "
            f"got a tensor with {ndim} dimension(s)"
        )
    return _DIMS[ndim]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic is done in: float32 for float16/bfloat16, else ``dtype`` itself."""
    if not dtype.is_floating_point:
        raise ValueError(f"batch norm needs a floating-point tensor; got dtype {dtype}")
    return torch.promote_types(dtype, torch.float32)


def _per_channel(p: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a ``(C,)`` tensor so that it broadcasts along dimension 1 of an ``ndim`` tensor."""
    return p.reshape((1, -1) + (1,) * (ndim - 2))


def _check_inputs(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float):
    dims = reduction_dims(x.dim())
    accumulation_dtype(x.dtype)
    channels = x.shape[1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if tuple(p.shape) != (channels,):
            raise ValueError(
                f"{name} must have shape ({channels},) to match the channel dimension "
                f"(dimension 1) of x with shape {tuple(x.shape)}; got shape {tuple(p.shape)}"
            )
        if p.device != x.device:
            raise ValueError(f"{name} is on {p.device} but x is on {x.device}")
    m = x.numel() // channels if channels else 0
    if m < 2:
        raise ValueError(
            f"batch norm needs more than 1 value per channel in training mode; x with shape "
            f"{tuple(x.shape)} gives {m} value(s) per channel"
        )
    check_eps(eps)
    return dims, m


def batch_norm_forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                       eps: float = 1e-5):
    """Training-mode batch normalisation with torch operations (no autograd bookkeeping needed).

    The same two-pass formulas as :func:`bnbook.numpy_norms.batch_norm_forward`::

        mu = mean(x); var = mean((x - mu)**2); inv_std = 1/sqrt(var + eps)
        x_hat = (x - mu) * inv_std; y = gamma * x_hat + beta

    Args:
        x: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``, any floating dtype, any device.
        gamma, beta: ``(C,)`` on the device of ``x`` (any floating dtype; used in the
            accumulation dtype).
        eps: added to the biased variance; must be > 0.

    Returns:
        ``(y, cache)``: ``y`` has the shape and dtype of ``x``; ``cache`` is a
        :class:`BatchNormCache`.
    """
    dims, m = _check_inputs(x, gamma, beta, eps)
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    mu = xa.mean(dim=dims, keepdim=True)
    x_centred = xa - mu
    var = x_centred.square().mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + eps)
    x_hat = x_centred * inv_std
    gamma_a = gamma.to(acc)
    y = x_hat * _per_channel(gamma_a, x.dim()) + _per_channel(beta.to(acc), x.dim())
    cache = BatchNormCache(x_hat, mu, var, inv_std, gamma_a, float(eps), dims, m, x.dtype)
    return y.to(x.dtype), cache


def batch_norm_backward(dy: torch.Tensor, cache: BatchNormCache):
    """The closed-form backward pass, as :func:`bnbook.numpy_norms.batch_norm_backward`.

    ``dbeta = sum(dy)``, ``dgamma = sum(dy * x_hat)`` (per channel) and::

        dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    Args:
        dy: upstream gradient with the shape of ``x``.
        cache: from :func:`batch_norm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)``: ``dx`` with the shape and dtype of ``x``; ``dgamma`` and
        ``dbeta`` of shape ``(C,)`` in the accumulation dtype.
    """
    if not isinstance(cache, BatchNormCache):
        kind = f"{type(cache).__module__}.{type(cache).__qualname__}"
        raise ValueError(
            f"cache must be the BatchNormCache of bnbook.torch_bn, returned by "
            f"bnbook.torch_bn.batch_norm_forward; got a {kind}"
            + (" (from the NumPy functions: use bnbook.numpy_norms.batch_norm_backward with it)"
               if kind.startswith("bnbook.numpy") else ""))
    if not isinstance(dy, torch.Tensor):
        raise ValueError(f"dy must be a torch.Tensor; got {type(dy).__name__}")
    if tuple(dy.shape) != tuple(cache.x_hat.shape):
        raise ValueError(f"dy must have the shape of x, {tuple(cache.x_hat.shape)}; "
                         f"got {tuple(dy.shape)}")
    x_hat, dims, m = cache.x_hat, cache.dims, cache.m
    ndim = x_hat.dim()
    dy = dy.to(x_hat.dtype)
    dbeta = dy.sum(dim=dims)
    dgamma = (dy * x_hat).sum(dim=dims)
    scale = _per_channel(cache.gamma, ndim) * cache.inv_std  # gamma / sigma, per channel
    dx = scale / m * (m * dy - _per_channel(dbeta, ndim) - x_hat * _per_channel(dgamma, ndim))
    return dx.to(cache.dtype), dgamma, dbeta


def batch_norm_inference(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                         gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5):
    """Evaluation-mode batch norm: a fixed per-channel affine map built from running statistics.

    ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``; plain torch operations,
    so autograd differentiates it (the statistics are constants here). Shapes as in
    :func:`batch_norm_forward`; the output has the dtype of ``x``. The same rules as training
    mode: ``eps`` must be positive and finite, ``running_var`` finite and non-negative
    (``ValueError`` otherwise).
    """
    reduction_dims(x.dim())
    acc = accumulation_dtype(x.dtype)
    check_eps(eps)
    for name, p in (("running_mean", running_mean), ("running_var", running_var),
                    ("gamma", gamma), ("beta", beta)):
        if tuple(p.shape) != (x.shape[1],):
            raise ValueError(f"{name} must have shape ({x.shape[1]},) to match the channel "
                             f"dimension (dimension 1) of x with shape {tuple(x.shape)}; got "
                             f"shape {tuple(p.shape)}")
    if not bool(torch.isfinite(running_var).all()) or bool((running_var < 0).any()):
        raise ValueError("running_var must be finite and non-negative (it is a variance)")
    ndim = x.dim()
    scale = gamma.to(acc) * torch.rsqrt(running_var.to(acc) + eps)
    shift = beta.to(acc) - running_mean.to(acc) * scale
    y = x.to(acc) * _per_channel(scale, ndim) + _per_channel(shift, ndim)
    return y.to(x.dtype)


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm as one autograd node with the book's closed-form backward.

    ``y, mu, var = BatchNormFunction.apply(x, gamma, beta, eps)``: ``y`` has the shape and
    dtype of ``x``; ``mu`` and the biased ``var`` are the batch statistics, shape ``(C,)`` in
    the accumulation dtype, returned (as non-differentiable outputs) so that a layer can
    update its running averages without computing them twice. The backward pass returns
    ``(dx, dgamma, dbeta, None)``, ``dgamma``/``dbeta`` in the dtype of ``gamma``/``beta``.
    Only first derivatives are provided (no double backward).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        y, cache = batch_norm_forward(x, gamma, beta, eps)
        ctx.save_for_backward(cache.x_hat, cache.mu, cache.var, cache.inv_std, cache.gamma)
        ctx.meta = (cache.eps, cache.dims, cache.m, cache.dtype, gamma.dtype, beta.dtype)
        mu, var = cache.mu.reshape(-1), cache.var.reshape(-1)
        ctx.mark_non_differentiable(mu, var)
        return y, mu, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, _dmu, _dvar):
        x_hat, mu, var, inv_std, gamma = ctx.saved_tensors
        eps, dims, m, dtype, gamma_dtype, beta_dtype = ctx.meta
        cache = BatchNormCache(x_hat, mu, var, inv_std, gamma, eps, dims, m, dtype)
        dx, dgamma, dbeta = batch_norm_backward(dy, cache)
        return dx, dgamma.to(gamma_dtype), dbeta.to(beta_dtype), None


def batch_norm(x, gamma, beta, eps: float = 1e-5):
    """Functional training-mode batch norm through :class:`BatchNormFunction`; returns ``y``."""
    y, _mu, _var = BatchNormFunction.apply(x, gamma, beta, eps)
    return y


class BatchNorm(nn.Module):
    """Batch norm layer built on :class:`BatchNormFunction`; a drop-in for ``nn.BatchNorm1d/2d``.

    Args:
        num_features: ``C``, the size of dimension 1 of the input.
        eps: added to the variance before the square root.
        momentum: weight of the newest batch in the running averages; ``None`` for the
            cumulative average over all batches seen (PyTorch's convention).

    Parameters ``weight`` (gamma, initialised to 1) and ``bias`` (beta, initialised to 0), and
    buffers ``running_mean`` (0), ``running_var`` (1, unbiased) and ``num_batches_tracked``,
    all named as in PyTorch. Inputs ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``.
    In training mode the batch statistics normalise and update the running averages; in
    evaluation mode (``.eval()``) the running averages normalise.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 device=None, dtype=None):
        super().__init__()
        if (isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral)
                or num_features < 1):
            raise ValueError(f"num_features must be a positive int; got {num_features!r}")
        check_eps(eps)
        if momentum is not None and (isinstance(momentum, bool)
                                     or not isinstance(momentum, numbers.Real)
                                     or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum must be in [0, 1] (a number, the weight of the new "
                             f"batch) or None (cumulative average); got {momentum!r}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.weight = nn.Parameter(torch.ones(num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked",
                             torch.tensor(0, dtype=torch.long, device=device))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def _check_input(self, x: torch.Tensor) -> None:
        reduction_dims(x.dim())
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels in dimension 1; "
                             f"got input of shape {tuple(x.shape)}")

    def _momentum_now(self) -> float:
        """The weight of this batch in the running averages (after counting it)."""
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return float(self.momentum)

    @torch.no_grad()
    def update_running_stats(self, mu: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """Fold one batch's ``mu`` and biased ``var`` (shape ``(C,)``, over ``m`` values) in.

        ``running_var`` receives the unbiased ``var * m / (m - 1)``, as in PyTorch.
        """
        self.num_batches_tracked += 1
        w = self._momentum_now()
        self.running_mean.mul_(1 - w).add_(mu.to(self.running_mean.dtype), alpha=w)
        unbiased = var * (m / (m - 1))
        self.running_var.mul_(1 - w).add_(unbiased.to(self.running_var.dtype), alpha=w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not self.training:
            return batch_norm_inference(x, self.running_mean, self.running_var,
                                        self.weight, self.bias, self.eps)
        y, mu, var = BatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        self.update_running_stats(mu, var, x.numel() // x.shape[1])
        return y

"""Three answers to batch norm's dependence on the batch, as PyTorch modules.

* :class:`BatchRenorm2d` - batch renormalisation (Ioffe, 2017): training mode normalises with
  the batch statistics and then corrects ``x_hat`` towards the running statistics, so that the
  layer computes (almost) the same function in training and in evaluation;
* :class:`GhostBatchNorm2d` - ghost batch norm (Hoffer, Hubara and Soudry, 2017): training
  mode normalises consecutive chunks of a large batch separately, as if they were small
  batches;
* :class:`WSConv2d` - weight standardisation (Qiao et al., 2019): a convolution whose weight
  is standardised per output channel before it is used, typically followed by group norm;
* :class:`CrossChannelLRN` and :class:`SpatialLRN` - local response normalisation, AlexNet's
  (Krizhevsky, Sutskever and Hinton, 2012) across neighbouring channels and its intra-channel
  variant over a spatial neighbourhood (:func:`cross_channel_lrn`, :func:`spatial_lrn`).

The first two are subclasses of :class:`bnbook.torch_bn.BatchNorm` and keep its bookkeeping
and names (parameters ``weight``/``bias``, buffers ``running_mean``/``running_var``/
``num_batches_tracked``, PyTorch's ``momentum`` convention and unbiased ``running_var``), so a
``state_dict`` moves between them and ``nn.BatchNorm2d``. Both accept any input ``(N, C, *)``
(``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ``(N, C, D, H, W)``, ...): statistics are per
channel over the samples and all positions, and eval mode is the book's batch norm with the
running statistics.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from bnbook.numpy_norms import check_eps
from bnbook.torch_bn import BatchNorm, accumulation_dtype

__all__ = ["BatchRenorm2d", "GhostBatchNorm2d", "WSConv2d", "ALEXNET_LRN", "cross_channel_lrn",
           "spatial_lrn", "window_sum", "channel_window_sum", "CrossChannelLRN", "SpatialLRN",
           "lrn_strength"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


class _ChannelNorm(BatchNorm):
    """:class:`bnbook.torch_bn.BatchNorm` for inputs ``(N, C, *)`` of any number of positions."""

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected an input of shape (N, {self.num_features}, *) with "
                             f"{self.num_features} channels in dimension 1; got shape "
                             f"{tuple(x.shape)}")

    def _batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The parent's forward (training or eval mode) on the view ``(N, C, positions)``."""
        flat = x.flatten(2) if x.dim() > 2 else x
        return super().forward(flat).reshape(x.shape)


class BatchRenorm2d(_ChannelNorm):
    """Batch renormalisation (Ioffe, 2017) for inputs ``(N, C, *)``.

    In training mode, with ``mu_B`` and ``var_B`` the channel's batch mean and biased batch
    variance::

        sigma_B = sqrt(var_B + eps)                 sigma = sqrt(running_var + eps)
        r = clip(sigma_B / sigma, 1 / r_max, r_max)  d = clip((mu_B - running_mean) / sigma,
                                                             -d_max, d_max)
        x_hat = (x - mu_B) / sigma_B * r + d         y = weight * x_hat + bias

    ``r`` and ``d`` are computed from the running statistics *before* this batch updates them
    and are constants for autograd (detached), so the gradient is batch norm's times ``r``.
    Unclipped, ``x_hat = (x - running_mean) / sigma``: the training output is the evaluation
    output. ``r_max = 1, d_max = 0`` is plain batch norm. The running statistics are updated
    as in ``nn.BatchNorm2d`` (``momentum`` is the weight of the new batch, ``running_var``
    averages the *unbiased* batch variance), and eval mode normalises with them.
    float16/bfloat16 input (also under autocast) is normalised with float32 statistics and
    arithmetic and the output has the input's dtype; integer input is refused (``TypeError``).

    The paper defines ``sigma_B`` the same way but keeps a moving average of ``sigma_B``
    itself as its ``sigma``; we keep PyTorch's running variance, so that the buffers are
    ``nn.BatchNorm2d``'s, and take ``sigma = sqrt(running_var + eps)``. The paper trains with
    ``r_max = 1, d_max = 0`` at first (batch norm, while the running statistics settle) and
    relaxes them gradually towards 3 and 5; ``r_max`` and ``d_max`` are plain attributes so a
    training loop can schedule them.

    Args:
        num_features: ``C``.
        eps: added to the variances before the square roots.
        momentum: weight of the new batch in the running statistics, in ``[0, 1]``, or
            ``None`` for the cumulative average.
        r_max: ``r`` is clipped to ``[1 / r_max, r_max]``; at least 1.
        d_max: ``d`` is clipped to ``[-d_max, d_max]``; at least 0.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 r_max: float = 3.0, d_max: float = 5.0):
        super().__init__(num_features, eps, momentum)
        self.r_max = r_max
        self.d_max = d_max
        self._check_limits()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}"

    def _check_limits(self) -> None:
        for name, value, low in (("r_max", self.r_max, 1.0), ("d_max", self.d_max, 0.0)):
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or math.isnan(value) or value < low):
                raise ValueError(f"{name} must be a number >= {low:g}; got {value!r}")

    def corrections(self, mu: torch.Tensor, sigma: torch.Tensor):
        """``(r, d)``, shape ``(C,)``, detached, for batch statistics ``mu`` and ``sigma_B``."""
        running_var = self.running_var.to(sigma.dtype)
        sigma_running = torch.sqrt(running_var + self.eps)
        r = (sigma.detach() / sigma_running).clamp(1.0 / self.r_max, self.r_max)
        running_mean = self.running_mean.to(mu.dtype)
        d = ((mu.detach() - running_mean) / sigma_running).clamp(-self.d_max, self.d_max)
        return r, d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not x.dtype.is_floating_point:
            raise TypeError(f"batch renorm needs a floating-point input (float16, bfloat16, "
                            f"float32 or float64); got dtype {x.dtype}: convert it first, "
                            f"e.g. x.float()")
        if not self.training:
            return self._batch_norm(x)
        self._check_limits()  # they may have been rescheduled since __init__
        dims = (0,) + tuple(range(2, x.dim()))
        m = x.numel() // self.num_features
        if m < 2:
            raise ValueError(f"batch renorm needs more than 1 value per channel in training "
                             f"mode; x with shape {tuple(x.shape)} gives {m}")
        # float16/bfloat16 (also under autocast): statistics and arithmetic in float32, the
        # output rounded back to the input's dtype, as the parent's BatchNorm does
        acc = accumulation_dtype(x.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xa = x.to(acc)
            mu = xa.mean(dim=dims)
            var = xa.var(dim=dims, unbiased=False)
            sigma = torch.sqrt(var + self.eps)
            r, d = self.corrections(mu, sigma)
            shape = (1, -1) + (1,) * (x.dim() - 2)
            x_hat = (xa - mu.reshape(shape)) / sigma.reshape(shape) * r.reshape(shape) \
                + d.reshape(shape)
            y = self.weight.to(acc).reshape(shape) * x_hat + self.bias.to(acc).reshape(shape)
        self.update_running_stats(mu.detach(), var.detach(), m)
        return y.to(x.dtype)


class GhostBatchNorm2d(_ChannelNorm):
    """Ghost batch norm (Hoffer, Hubara and Soudry, 2017) for inputs ``(N, C, *)``.

    In training mode the batch is split into consecutive chunks of ``ghost_batch_size``
    samples (the last one holds the remainder, ``N % ghost_batch_size`` samples, when that
    is not zero) and each chunk is batch-normalised with its own statistics; ``weight`` and
    ``bias`` are shared. With ``ghost_batch_size >= N`` this is plain batch norm.

    Running statistics: updated once per chunk, in order, exactly as if the chunks went
    through ``nn.BatchNorm2d`` one after another as separate batches. With ``k`` chunks a
    training step therefore decays the old running statistics by ``(1 - momentum) ** k``;
    use a smaller ``momentum`` to keep the per-sample averaging of plain batch norm.
    ``momentum=None`` averages all chunks seen so far. Eval mode normalises the whole batch
    with the running statistics, like batch norm.

    A chunk with a single value per channel (one sample of an ``(N, C)`` input, e.g.
    ``N % ghost_batch_size == 1``) cannot be normalised: training mode then raises a
    ``ValueError`` before any statistics change (it is not merged into its neighbour, which
    would silently change the chunking). Drop incomplete batches
    (``DataLoader(drop_last=True)``) or choose sizes that avoid it.

    Args:
        num_features: ``C``.
        ghost_batch_size: samples per chunk, a positive integer.
        eps: added to each chunk's biased variance before the square root.
        momentum: weight of each chunk in the running statistics, in ``[0, 1]``, or ``None``.
    """

    def __init__(self, num_features: int, ghost_batch_size: int, eps: float = 1e-5,
                 momentum: float | None = 0.1):
        super().__init__(num_features, eps, momentum)
        self.ghost_batch_size = _positive_int(ghost_batch_size, "ghost_batch_size")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not self.training:
            return self._batch_norm(x)
        chunks = x.split(self.ghost_batch_size)
        positions = x[0, 0].numel() if x.shape[0] else 1
        smallest = chunks[-1].shape[0] if chunks else 0
        if smallest * positions < 2:
            raise ValueError(
                f"ghost batch norm needs more than 1 value per channel in every chunk; with "
                f"ghost_batch_size={self.ghost_batch_size}, x of shape {tuple(x.shape)} leaves "
                f"a last chunk of {smallest} sample(s), {smallest * positions} value(s) per "
                f"channel. Drop incomplete batches or pick sizes with N % ghost_batch_size "
                f"!= 1 (nothing was updated)")
        return torch.cat([self._batch_norm(chunk) for chunk in chunks])


class WSConv2d(nn.Conv2d):
    """A 2-D convolution with weight standardisation (Qiao et al., 2019).

    Before every use, the weight ``W`` of shape ``(out_channels, in_channels, kh, kw)`` is
    standardised per output channel over its ``in_channels * kh * kw`` values::

        W_hat = (W - mean(W)) / sqrt(var(W) + eps)     # biased variance, per output channel

    and the convolution runs with ``W_hat`` (the stored parameter stays ``W``; gradients flow
    through the standardisation). ``W_hat`` has mean 0 and variance ``var / (var + eps)``,
    which is 1 up to ``eps / var``. This is the paper's formula; the authors' reference code
    divides by the *unbiased* standard deviation plus ``1e-5`` instead, which differs by a
    factor ``sqrt(1 - 1 / (in_channels * kh * kw))`` and in where ``eps`` enters.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, bias: as ``nn.Conv2d``.
        eps: added to the variance of each output channel's weights; positive.

    Raises:
        ValueError: if a filter has a single weight (``in_channels * kh * kw == 1``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, eps: float = 1e-5):
        _positive_int(in_channels, "in_channels")
        _positive_int(out_channels, "out_channels")
        for k in (kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size,)):
            _positive_int(k, "kernel_size")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, bias=bias)
        fan_in = self.weight[0].numel()
        if fan_in < 2:
            raise ValueError(
                f"weight standardisation needs more than 1 weight per output channel; "
                f"in_channels={in_channels} with kernel_size={kernel_size} gives {fan_in}, "
                f"which standardises every weight to 0 (the output would be the bias): use "
                f"more input channels or a larger kernel")
        self.eps = check_eps(eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"

    def standardised_weight(self) -> torch.Tensor:
        """``W_hat``, the weight the convolution uses (shape of ``self.weight``)."""
        dims = tuple(range(1, self.weight.dim()))
        mean = self.weight.mean(dim=dims, keepdim=True)
        var = self.weight.var(dim=dims, unbiased=False, keepdim=True)
        return (self.weight - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardised_weight(), self.bias)


# --------------------------------------------------------------------------------------
# Local response normalisation
# --------------------------------------------------------------------------------------

#: AlexNet's constants (Krizhevsky et al., 2012, Section 3.3), found by validation there.
ALEXNET_LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}


@contextlib.contextmanager
def _accumulating(x: torch.Tensor):
    """``x`` in float32 when it is float16/bfloat16 (also under autocast), else as it is: in
    bfloat16, ``k + alpha * sum`` would round ``alpha * sum`` away next to ``k`` (8 bits)."""
    if not x.dtype.is_floating_point:
        raise TypeError(f"local response normalisation needs a floating-point input; got "
                        f"dtype {x.dtype}: convert it first, e.g. x.float()")
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield x.to(accumulation_dtype(x.dtype))


def _lrn_denominator(sum_sq: torch.Tensor, alpha: float, beta: float, k: float) -> torch.Tensor:
    return (k + alpha * sum_sq).pow(beta)


def _check_lrn(size, alpha, beta, k) -> int:
    size = _positive_int(size, "size")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    if k == 0:
        raise ValueError("k must be positive: with k = 0 an all-zero neighbourhood divides "
                         "0 by 0")
    return size


def cross_channel_lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                      k: float = 2.0) -> torch.Tensor:
    """AlexNet's local response normalisation across channels, for ``x`` of shape ``(N, C, *)``.

    For channel ``i`` at one position of one sample::

        b_i = a_i / (k + alpha * sum_{j = i - size//2}^{i + (size - 1)//2} a_j ** 2) ** beta

    the sum running over the channels of the window that exist (zeros beyond the edges). For
    odd ``size`` the window is centred (AlexNet's ``n = 5``: ``i - 2 .. i + 2``); for even
    ``size`` it reaches one channel further back than forward, as ``nn.LocalResponseNorm``'s.
    ``alpha`` multiplies the plain sum, as in the paper; ``nn.LocalResponseNorm`` (and Caffe)
    divide it by ``size`` first, so ``cross_channel_lrn(x, n, alpha, beta, k)`` is
    ``nn.LocalResponseNorm(n, alpha * n, beta, k)(x)``. Returns the shape and dtype of ``x``;
    float16/bfloat16 input (also under autocast) is normalised in float32 arithmetic.
    """
    size = _check_lrn(size, alpha, beta, k)
    if x.dim() < 2:
        raise ValueError(f"expected an input (N, C, *); got shape {tuple(x.shape)}")
    with _accumulating(x) as xa:
        return (xa / _lrn_denominator(channel_window_sum(xa.pow(2), size), alpha, beta, k)
                ).to(x.dtype)


def channel_window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`window_sum` along the channels (dimension 1) of ``t`` ``(N, C, *)``, as a product
    with the banded 0/1 matrix ``band[i, j] = 1`` for ``j - i`` in ``-size//2 .. (size-1)//2``
    (a 1x1 convolution for ``(N, C, H, W)``): one matrix product over the channels, fast in
    either memory format, where slicing the channel axis of a channels-last tensor is slow."""
    channels = t.shape[1]
    i = torch.arange(channels, device=t.device)
    offset = i[None, :] - i[:, None]
    band = ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).to(t.dtype)
    if t.dim() == 4:
        return F.conv2d(t, band[:, :, None, None])
    flat = t.reshape(t.shape[0], channels, -1)
    return torch.matmul(band, flat).reshape(t.shape)


def window_sum(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``s[..., i, ...] = sum of t[..., j, ...]`` for ``j = i - size//2 .. i + (size-1)//2``
    along ``dim``, zeros beyond the ends; the shape of ``t``. (``size`` shifted slices of a
    zero-padded copy, added: no transposes, cheaper than an ``unfold`` on CPU.)"""
    length = t.shape[dim]
    pad_shape = list(t.shape)
    pad_shape[dim] = size // 2
    before = t.new_zeros(pad_shape)
    pad_shape[dim] = (size - 1) // 2
    padded = torch.cat([before, t, t.new_zeros(pad_shape)], dim)
    total = padded.narrow(dim, 0, length)
    for d in range(1, size):
        total = total + padded.narrow(dim, d, length)
    return total


def spatial_lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                k: float = 2.0) -> torch.Tensor:
    """Intra-channel (spatial) local response normalisation, for ``x`` of shape ``(N, C, H, W)``.

    Each value is divided by the energy of its own channel's ``size x size`` neighbourhood::

        b_{c,h,w} = a_{c,h,w} / (k + alpha * sum_{(h', w')} a_{c,h',w'} ** 2) ** beta

    with ``h' = h - size//2 .. h + (size - 1)//2`` and ``w'`` likewise (zeros beyond the
    borders). Caffe's ``WITHIN_CHANNEL`` LRN is this with ``alpha`` divided by ``size ** 2``;
    here, as in :func:`cross_channel_lrn`, ``alpha`` multiplies the plain sum. Returns the
    shape and dtype of ``x`` (float16/bfloat16 computed in float32).
    """
    size = _check_lrn(size, alpha, beta, k)
    if x.dim() != 4:
        raise ValueError(f"expected an input (N, C, H, W); got shape {tuple(x.shape)}")
    with _accumulating(x) as xa:
        sum_sq = window_sum(window_sum(xa.pow(2), 2, size), 3, size)     # rows, then columns
        return (xa / _lrn_denominator(sum_sq, alpha, beta, k)).to(x.dtype)


class _LRN(nn.Module):
    _function = None

    def __init__(self, size: int = ALEXNET_LRN["size"], alpha: float = ALEXNET_LRN["alpha"],
                 beta: float = ALEXNET_LRN["beta"], k: float = ALEXNET_LRN["k"]):
        super().__init__()
        self.size = _check_lrn(size, alpha, beta, k)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g}, beta={self.beta:g}, k={self.k:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return type(self)._function(x, self.size, self.alpha, self.beta, self.k)


class CrossChannelLRN(_LRN):
    """AlexNet's cross-channel local response normalisation (:func:`cross_channel_lrn`).

    Input ``(N, C, *)``, output of the same shape; no parameters, no buffers, the same
    function in training and evaluation. Defaults: AlexNet's ``size = n = 5``,
    ``alpha = 1e-4``, ``beta = 0.75``, ``k = 2`` (:data:`ALEXNET_LRN`).
    """

    _function = staticmethod(cross_channel_lrn)


class SpatialLRN(_LRN):
    """Intra-channel local response normalisation over ``size x size`` positions
    (:func:`spatial_lrn`). Input ``(N, C, H, W)``, output of the same shape; no parameters.
    Defaults: AlexNet's constants (:data:`ALEXNET_LRN`), the window now spatial.
    """

    _function = staticmethod(spatial_lrn)


@torch.no_grad()
def lrn_strength(module: _LRN, x: torch.Tensor) -> torch.Tensor:
    """How much an LRN layer actually normalises its input ``x``: ``alpha * sum / k`` per
    value (the shape of ``x``, float32 or wider), the relative size of the energy term next
    to ``k`` in the denominator. Near 0 everywhere, the layer is a constant division by
    ``k ** beta``; of order 1 or more, it divides strong responses by their neighbours'
    energy, as in AlexNet."""
    with _accumulating(x) as xa:
        sq = xa.pow(2)
        if isinstance(module, SpatialLRN):
            total = window_sum(window_sum(sq, 2, module.size), 3, module.size)
        elif isinstance(module, CrossChannelLRN):
            total = channel_window_sum(sq, module.size)
        else:
            raise TypeError(f"expected a CrossChannelLRN or SpatialLRN, got {type(module).__name__}")
        return module.alpha * total / module.k

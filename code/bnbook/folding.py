"""Folding batch norm into the layer before it, at inference time, where BN is an affine map.

In evaluation mode a batch norm layer no longer looks at the batch. With the running
(population) statistics ``running_mean`` and ``running_var`` frozen, each channel ``c`` computes::

    inv_std = 1 / sqrt(running_var + eps)
    scale   = gamma * inv_std
    shift   = beta - running_mean * scale
    y       = scale * x + shift

which is an affine map per channel. When the layer before the batch norm is affine too
(``nn.Linear`` or a convolution, ``z = W x + b``), the two maps compose into one::

    W_folded = scale[:, None, ...] * W          # row c of W (output channel c) times scale[c]
    b_folded = scale * (b - running_mean) + beta

so the batch norm layer can be removed from an inference graph ("folding"). Conventions:

* ``W`` has the output channel on axis 0: ``(out_features, in_features)`` for a linear
  layer, ``(out_channels, in_channels / groups, *kernel)`` for a convolution (PyTorch's
  layout). Transposed convolutions keep the output channel on axis 1 and are not supported.
* ``running_var`` is whatever the framework stores; PyTorch stores a moving average of the
  *unbiased* batch variance. The inference map uses it as is.
* NumPy functions compute in float64 and return the dtype of the input.

The per-channel affine map itself, :func:`bnbook.numpy_norms.batch_norm_inference_affine`, lives
with the other batch norm equations; this module composes it with the layer before. The
PyTorch helpers import torch inside the function, so that the NumPy functions work without
torch.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np

from bnbook.numpy_norms import as_channel_vector, batch_norm_inference_affine

__all__ = [
    "fold_batch_norm_into_weights",
    "fold_linear_batch_norm",
    "fold_conv_batch_norm",
    "fold_batch_norms_in_sequential",
]


def fold_batch_norm_into_weights(W, b, gamma, beta, running_mean, running_var,
                                 eps: float = 1e-5):
    """Fold an eval-mode batch norm into the affine layer in front of it.

    Args:
        W: weight with the output channel on axis 0, shape ``(C, ...)``: ``(C, D_in)`` for a
            linear layer, ``(C, C_in / groups, kH, kW)`` for a 2-D convolution.
        b: bias of shape ``(C,)``, or ``None`` for a layer without bias (treated as zeros).
        gamma, beta, running_mean, running_var: batch norm parameters, shape ``(C,)``.
        eps: the batch norm's eps.

    Returns:
        ``(W_folded, b_folded)`` with ``W_folded[c] = W[c] * scale[c]`` and
        ``b_folded = scale * (b - running_mean) + beta``, where ``scale = gamma /
        sqrt(running_var + eps)``; dtype of ``W``. ``bn(layer(x)) == layer_folded(x)``.

    Raises:
        ValueError: if ``W`` is not a floating array with at least 2 dimensions, or if ``b``
            or the batch norm vectors do not have shape ``(W.shape[0],)``.
    """
    W = np.asarray(W)
    if not np.issubdtype(W.dtype, np.floating) or W.ndim < 2:
        raise ValueError(
            f"W must be a floating array of shape (C_out, ...) with at least 2 dimensions; "
            f"got dtype {W.dtype} and shape {W.shape}"
        )
    channels = W.shape[0]
    if np.shape(gamma) != (channels,):
        raise ValueError(
            f"the batch norm has {np.shape(gamma)} features but the layer before it has "
            f"{channels} output channels (axis 0 of W with shape {W.shape})"
        )
    scale, shift = batch_norm_inference_affine(gamma, beta, running_mean, running_var, eps)
    b = np.zeros(channels) if b is None else as_channel_vector(b, "b", channels)
    W_folded = W.astype(np.float64) * scale.reshape((channels,) + (1,) * (W.ndim - 1))
    b_folded = scale * b + shift  # = scale * (b - running_mean) + beta
    return W_folded.astype(W.dtype), b_folded.astype(W.dtype)


def _check_eval_pair(layer, bn, out_features: int, kind: str):
    import torch.nn as nn

    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"expected a batch norm module after the {kind}; got {type(bn).__name__}")
    if layer.training or bn.training:
        raise ValueError(
            f"folding is for inference only: call .eval() on the {kind} and the batch norm "
            f"first (in training mode the batch norm uses batch statistics, not an affine map)"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "the batch norm has no running statistics (track_running_stats=False), so in eval "
            "mode it still normalises with batch statistics and cannot be folded"
        )
    if bn.num_features != out_features:
        raise ValueError(
            f"the batch norm has {bn.num_features} features but the {kind} before it has "
            f"{out_features} outputs"
        )


def _bn_numpy_params(bn):
    channels = bn.num_features
    if bn.affine:
        gamma = bn.weight.detach().double().cpu().numpy()
        beta = bn.bias.detach().double().cpu().numpy()
    else:
        gamma, beta = np.ones(channels), np.zeros(channels)
    running_mean = bn.running_mean.detach().double().cpu().numpy()
    running_var = bn.running_var.detach().double().cpu().numpy()
    return gamma, beta, running_mean, running_var, float(bn.eps)


def _folded_copy(layer, bn):
    """A deep copy of ``layer`` whose weight and bias absorb the eval-mode ``bn``."""
    import torch

    W = layer.weight.detach().double().cpu().numpy()
    b = None if layer.bias is None else layer.bias.detach().double().cpu().numpy()
    W_folded, b_folded = fold_batch_norm_into_weights(W, b, *_bn_numpy_params(bn))
    folded = copy.deepcopy(layer)
    dtype, device = layer.weight.dtype, layer.weight.device
    folded.weight = torch.nn.Parameter(torch.from_numpy(W_folded).to(device=device, dtype=dtype),
                                       requires_grad=layer.weight.requires_grad)
    folded.bias = torch.nn.Parameter(torch.from_numpy(b_folded).to(device=device, dtype=dtype),
                                     requires_grad=layer.weight.requires_grad)
    return folded


def fold_linear_batch_norm(linear, bn):
    """A new ``nn.Linear`` equal to ``bn(linear(x))`` for eval-mode ``linear`` and ``bn``.

    Args:
        linear: ``nn.Linear(D_in, C)`` in eval mode (with or without bias).
        bn: ``nn.BatchNorm1d(C)`` in eval mode, with running statistics.

    Returns:
        A new ``nn.Linear(D_in, C)`` with a bias; the inputs are not modified.

    Raises:
        ValueError: if a module is in training mode, the feature counts differ, ``bn`` has
            no running statistics, or ``linear`` is not an ``nn.Linear``.
    """
    import torch.nn as nn

    if not isinstance(linear, nn.Linear):
        raise ValueError(f"expected an nn.Linear; got {type(linear).__name__}")
    _check_eval_pair(linear, bn, linear.out_features, "linear layer")
    return _folded_copy(linear, bn)


def fold_conv_batch_norm(conv, bn):
    """A new convolution equal to ``bn(conv(x))`` for eval-mode ``conv`` and ``bn``.

    Args:
        conv: ``nn.Conv2d`` (or ``nn.Conv1d``/``nn.Conv3d``) with ``C`` output channels, any
            stride, padding, dilation or groups, with or without bias, in eval mode.
        bn: ``nn.BatchNorm2d(C)`` (``1d``/``3d`` to match) in eval mode, with running stats.

    Returns:
        A new convolution with the same hyper-parameters and a bias; inputs not modified.

    Raises:
        ValueError: for a transposed convolution (its weight has the output channel on axis
            1), a module in training mode, mismatched channel counts, or no running stats.
    """
    import torch.nn as nn

    if not isinstance(conv, nn.modules.conv._ConvNd) or conv.transposed:
        raise ValueError(
            f"expected a (non-transposed) nn.Conv1d/2d/3d; got {type(conv).__name__}"
        )
    _check_eval_pair(conv, bn, conv.out_channels, "convolution")
    return _folded_copy(conv, bn)


def fold_batch_norms_in_sequential(model):
    """A copy of an eval-mode ``nn.Sequential`` with every Conv/Linear -> BatchNorm pair folded.

    Each batch norm that directly follows an ``nn.Linear`` or a (non-transposed)
    convolution is merged into it and removed; every other module is deep-copied unchanged
    (a batch norm after an activation, for instance, stays). Nested ``nn.Sequential``
    containers are folded recursively, pairs never straddle container boundaries.

    Args:
        model: ``nn.Sequential`` in eval mode (``model.eval()``).

    Returns:
        A new ``nn.Sequential`` in eval mode; ``model`` is not modified.

    Raises:
        ValueError: if ``model`` is not an ``nn.Sequential`` or is in training mode.
    """
    import torch.nn as nn

    if not isinstance(model, nn.Sequential):
        raise ValueError(f"expected an nn.Sequential; got {type(model).__name__}")
    if any(module.training for module in model.modules()):
        raise ValueError("folding is for inference only: call model.eval() first")
    bn_types = nn.modules.batchnorm._BatchNorm
    items = list(model.named_children())
    folded = []
    i = 0
    while i < len(items):
        name, module = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        foldable = (isinstance(module, nn.Linear)
                    or (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed))
        if foldable and isinstance(nxt, bn_types) and nxt.running_mean is not None:
            if isinstance(module, nn.Linear):
                folded.append((name, fold_linear_batch_norm(module, nxt)))
            else:
                folded.append((name, fold_conv_batch_norm(module, nxt)))
            i += 2
            continue
        if isinstance(module, nn.Sequential):
            folded.append((name, fold_batch_norms_in_sequential(module)))
        else:
            folded.append((name, copy.deepcopy(module)))
        i += 1
    return nn.Sequential(OrderedDict(folded)).eval()

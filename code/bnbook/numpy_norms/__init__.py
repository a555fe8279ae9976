"""Normalisation layers from scratch in NumPy: the equations of the book, and a layer around them.

Batch norm first (chapters 2 to 4), then layer, instance and group norm: the same closed form
applied over other sets of values. The functions hold the mathematics; the class
:class:`BatchNorm` only does the bookkeeping (parameters, running statistics, train/eval
mode), as ``batch_norm`` and ``BatchNorm`` in *Dive into Deep Learning*:

* :func:`batch_norm_forward`, :func:`batch_norm_backward` (the closed form) and
  :func:`batch_norm_backward_staged` (node by node) in training mode (chapters 2 and 3);
* :func:`batch_norm_inference_affine` and :func:`batch_norm_inference_forward` in evaluation
  mode (chapter 4);
* :class:`BatchNorm`, the layer (chapter 4);
* :func:`layer_norm_forward`, :func:`instance_norm_forward`, :func:`group_norm_forward` and
  their ``*_backward`` functions, which never mix samples;
* :func:`rms_norm_forward` and :func:`rms_norm_backward`: layer norm without the mean
  (chapter 8);
* :func:`normalise_over` and :func:`normalise_over_backward`: the statistics over given axes
  and the closed-form backward that every method shares;
* :func:`normalization_axes`, :func:`normalization_view` and :func:`statistics_groups`: which
  values share one mean and one variance under each method.

They are written for reading. :mod:`bnbook.numpy_fast` computes the same batch norm
training-mode functions in fewer passes over memory, and its tests check it against these.

The package has one module per idea: ``_checks`` (input checks, shared with
:mod:`bnbook.numpy_fast`, :mod:`bnbook.folding` and :mod:`bnbook.torch_bn`), ``shared``
(the statistics over given axes and the closed-form backward, public: batch norm writes the
same equations out inline, the other methods call them),
``axes`` (which values share statistics), ``batch`` (batch norm and its layer) and
``per_sample`` (layer, instance, group and RMS norm). Import everything from here.

Conventions (batch norm's are the paper's Algorithm 1 and PyTorch's training mode):

* ``x`` has shape ``(N, D)``, ``(N, C, L)`` or ``(N, C, H, W)`` (instance norm: the last
  two). Batch norm takes statistics per feature/channel over every other axis: axis ``0`` for
  ``(N, D)``, axes ``(0, 2)`` for ``(N, C, L)`` and ``(0, 2, 3)`` for ``(N, C, H, W)``. We write
  ``m`` for the number of values that share one set of statistics (``N``, ``N*L`` or
  ``N*H*W`` for batch norm).
* The other methods take them within each sample: layer norm over all of a sample's values
  (``m = C*H*W``), instance norm per ``(sample, channel)`` over the positions (``m = H*W``),
  group norm per ``(sample, group)`` where group ``g`` is the ``C // G`` contiguous channels
  from ``g * C // G`` on (``m = C // G * H * W``); for group norm ``x`` is viewed as
  ``(N, G, C // G, H, W)``. The module :mod:`bnbook.numpy_norms.axes` tabulates the views and
  axes, and its functions return the index sets the forward functions use.
* ``var`` is the *biased* variance (divide by ``m``), computed in two passes (mean first,
  then the mean of squared deviations), which is numerically stable.
* ``gamma`` and ``beta`` have shape ``(D,)`` or ``(C,)`` (one per channel) for batch,
  instance and group norm, and ``x.shape[1:]`` (one per value of a sample) for layer norm.
* ``x`` must be float32 or float64; the output has the input's dtype (float32 stays
  float32). The statistics and sums are computed in float64 whatever the input dtype.
* Every method refuses the same bad inputs with the same ``ValueError`` messages (wrong
  dtype or number of dimensions, ``gamma``/``beta`` of the wrong shape, fewer than 2 values
  per set of statistics, ``eps`` not positive and finite).

The symbols of the book's equations are the names used here::

    mu      = mean(x)                      # over the values that share statistics
    var     = mean((x - mu) ** 2)          # biased
    inv_std = 1 / sqrt(var + eps)
    x_hat   = (x - mu) * inv_std
    y       = gamma * x_hat + beta

and every backward pass is the one closed form, with ``dx_hat = gamma * dy`` and the sums
over the same values::

    dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))
"""

from __future__ import annotations

from bnbook.numpy_norms._checks import (
    as_channel_vector,
    check_dy,
    check_eps,
    check_forward_inputs,
    check_ndim,
    check_params,
    check_values_per_statistic,
    per_channel,
    reduction_axes,
)
from bnbook.numpy_norms.axes import (
    METHODS,
    check_num_groups,
    normalization_axes,
    normalization_view,
    statistics_groups,
)
from bnbook.numpy_norms.batch import (
    BatchNorm,
    BatchNormCache,
    batch_norm_backward,
    batch_norm_backward_staged,
    batch_norm_forward,
    batch_norm_inference_affine,
    batch_norm_inference_forward,
    check_backward_inputs,
)
from bnbook.numpy_norms.per_sample import (
    NormCache,
    RMSNormCache,
    group_norm_backward,
    group_norm_forward,
    instance_norm_backward,
    instance_norm_forward,
    layer_norm_backward,
    layer_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
)
from bnbook.numpy_norms.shared import normalise_over, normalise_over_backward

__all__ = [
    "BatchNormCache",
    "check_eps",
    "reduction_axes",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_backward_staged",
    "batch_norm_inference_affine",
    "batch_norm_inference_forward",
    "BatchNorm",
    "NormCache",
    "layer_norm_forward",
    "layer_norm_backward",
    "instance_norm_forward",
    "instance_norm_backward",
    "group_norm_forward",
    "group_norm_backward",
    "RMSNormCache",
    "rms_norm_forward",
    "rms_norm_backward",
    "normalise_over",
    "normalise_over_backward",
    "METHODS",
    "normalization_axes",
    "normalization_view",
    "statistics_groups",
]

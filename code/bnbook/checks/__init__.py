"""Exercise checkers: does the reader's normalisation layer compute the right thing?

Each checker runs the reader's code on a few fixed random inputs (float64, 2-D and 4-D where
the layer allows, means far from 0, ``gamma`` far from 1 and of both signs, one case where
``eps`` is comparable to the variance) and compares it with a reference:

* :func:`check_batch_norm_forward` - PyTorch's ``F.batch_norm`` (training mode) in float64;
* :func:`check_batch_norm_backward` - finite differences of the book's forward (chapter 3);
  the reader's backward receives the cache of the reader's own forward;
* :func:`check_batch_norm_inference_forward` - PyTorch's ``F.batch_norm`` in eval mode
  (``training=False``, the given running statistics) in float64;
* :func:`check_running_stats` - the book's :class:`~bnbook.numpy_norms.BatchNorm` (PyTorch's
  conventions: momentum is the weight of the new batch, ``running_var`` averages the unbiased
  variance, eval mode uses and does not change the running statistics);
* :func:`check_layer_norm_forward` - ``F.layer_norm`` in float64 (each sample over all axes
  but the first; ``gamma``, ``beta`` of shape ``x.shape[1:]``);
* :func:`check_group_norm_forward` - ``F.group_norm`` in float64 (contiguous channel groups;
  ``gamma``, ``beta`` of shape ``(C,)``).

On success a checker prints one line with the largest relative error
(:func:`bnbook.gradcheck.rel_error`) next to the threshold and returns ``None``. On failure it
raises ``AssertionError`` naming the output, the input's shape and the likely mistake: the
reader's output is compared with known wrong variants (unbiased variance, eps outside the square
root, wrong axes, a missing term in ``dx``, Keras's momentum, ...), and a variant that matches
to 1e-8 is named. A function that still raises ``NotImplementedError`` (the exercise stub) gets
a ``NotImplementedError`` that says so. Inputs are seeded: every run checks the same cases.

Usage in an exercise cell::

    from bnbook.checks import check_batch_norm_forward
    check_batch_norm_forward(my_batch_norm_forward)
"""

from bnbook.checks.backward import check_batch_norm_backward
from bnbook.checks.forward import (check_batch_norm_forward, check_batch_norm_inference_forward,
                                   check_group_norm_forward, check_layer_norm_forward)
from bnbook.checks.running_stats import check_running_stats

__all__ = [
    "check_batch_norm_forward",
    "check_batch_norm_inference_forward",
    "check_batch_norm_backward",
    "check_running_stats",
    "check_layer_norm_forward",
    "check_group_norm_forward",
]

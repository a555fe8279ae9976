"""Exercise checkers: does the student's normalisation layer compute the right thing?

Each checker runs the student's code on a few fixed random inputs (float64, 2-D and 4-D where
the layer allows, means far from 0, ``gamma`` far from 1 and of both signs, one case where
``eps`` is comparable to the variance) and compares it with a float64 NumPy reference of its
own (``bnbook.checks._reference``, tested against PyTorch in ``tests/test_checks.py``), so the
checkers run without PyTorch (in the browser too):

* :func:`check_batch_norm_forward` - training-mode batch norm;
* :func:`check_batch_norm_backward` - its gradients, on the cache of the student's forward;
* :func:`check_batch_norm_inference_forward` - eval-mode batch norm with given running
  statistics;
* :func:`check_running_stats` - a layer's running statistics and train/eval modes (PyTorch's
  conventions: momentum is the weight of the new batch, ``running_var`` averages the unbiased
  variance, eval mode uses and does not change the running statistics);
* :func:`check_layer_norm_forward`, :func:`check_group_norm_forward` - layer and group norm.

On success a checker prints one line with the largest relative error
(:func:`bnbook.gradcheck.rel_error`) next to the threshold. On failure it raises
:class:`CheckFailed` (an ``AssertionError``) whose message says what is wrong: which output, on
which input, how large the error is and where it sits. Hints come on request: :func:`hint`, or
the checker called again with ``hint=1`` (the likely mistake) or ``hint=2`` (the chapter's
equation). No message prints the solution. A stub that still raises ``NotImplementedError``
gets :class:`NotWrittenYet`; an answer that calls the implementation it is meant to write (the
book's library, or PyTorch's normalisation functions) gets :class:`Refused`. In IPython and
Jupyter the student sees the message alone, not the checker's traceback. Inputs are seeded:
every run checks the same cases.

Usage in an exercise cell::

    from bnbook.checks import check_batch_norm_forward
    check_batch_norm_forward(my_batch_norm_forward)
"""

from bnbook.checks._errors import CheckFailed, NotWrittenYet, Refused, hint
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
    "hint",
    "CheckFailed",
    "NotWrittenYet",
    "Refused",
]

"""Refusing an answer that calls the implementation it is meant to write.

While the student's code runs, a profile hook (``sys.setprofile``, which works in Pyodide too)
watches every call. A call into the book's library under the exercise's own name
(``bnbook.numpy_norms``, ``bnbook.numpy_fast``, ``bnbook.torch_bn``), into the checkers'
reference, or into one of PyTorch's normalisation functions or layers is recorded; the checker
then refuses the answer, whatever it returned. Nothing is imported: the hook compares module
and function names, so the guard works without torch.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

#: The library's modules, each with the names it may not lend to an exercise.
LIBRARY = ("bnbook.numpy_norms", "bnbook.numpy_fast", "bnbook.torch_bn")

#: What each exercise may not call (function or method names, ``Class.method`` or ``Class.*``).
FORBIDDEN = {
    "batch_norm_forward": {"batch_norm_forward", "batch_norm", "BatchNormFunction.forward",
                           "BatchNorm.forward"},
    "batch_norm_backward": {"batch_norm_backward", "batch_norm_backward_staged",
                            "BatchNormFunction.backward", "BatchNorm.backward"},
    "batch_norm_inference_forward": {"batch_norm_inference_forward",
                                     "batch_norm_inference_affine", "batch_norm_inference",
                                     "BatchNorm.forward"},
    "BatchNorm": {"BatchNorm.*"},
    "layer_norm_forward": {"layer_norm_forward"},
    "group_norm_forward": {"group_norm_forward"},
}

_TORCH_PYTHON = ("torch.nn.functional", "torch.nn.modules.batchnorm",
                 "torch.nn.modules.normalization", "torch.nn.modules.instancenorm")
_TORCH_NORM_FUNCTIONS = ("batch_norm", "layer_norm", "group_norm", "instance_norm")
_REFERENCE = "bnbook.checks._reference"


def _is_torch_norm(module: str, name: str) -> bool:
    if module == "torch.nn.functional":
        return name in _TORCH_NORM_FUNCTIONS
    return module in _TORCH_PYTHON[1:]


def _library_match(module: str, qualname: str, names) -> bool:
    if not module.startswith(LIBRARY):
        return False
    owner = qualname.split(".", 1)[0]
    return qualname in names or f"{owner}.*" in names


class _Watch:
    """The forbidden calls seen while the student's code ran, as readable names."""

    def __init__(self, exercise: str):
        self.names = FORBIDDEN[exercise]
        self.seen: list[str] = []

    def __call__(self, frame, event, arg):
        if event == "call":
            module = frame.f_globals.get("__name__") or ""
            code = frame.f_code
            qualname = getattr(code, "co_qualname", code.co_name)
            if _library_match(module, qualname, self.names):
                library = next(name for name in LIBRARY if module.startswith(name))
                self._note_call(f"{library}.{qualname}")
            elif module == _REFERENCE:
                self._note_call("the checker's own reference")
            elif _is_torch_norm(module, qualname):
                self._note_call(f"{module}.{qualname}")
        elif event == "c_call" and getattr(arg, "__module__", None) == "torch":
            name = getattr(arg, "__name__", "")
            if name.endswith(_TORCH_NORM_FUNCTIONS):
                self._note_call(f"torch.{name}")

    def _note_call(self, name: str) -> None:
        if name not in self.seen:
            self.seen.append(name)


@contextmanager
def watching(exercise: str):
    """Run the block with the hook on; yields the :class:`_Watch` whose ``seen`` lists the
    forbidden calls. The previous profile function is restored afterwards."""
    watch = _Watch(exercise)
    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        yield watch
    finally:
        sys.setprofile(previous)

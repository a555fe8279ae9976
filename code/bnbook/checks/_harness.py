"""The checkers' shared machinery: the inputs, calling the student's code safely, turning its
outputs into arrays, saying where an output is wrong, and the checker wrapper that adds the
hint levels.

No message names the library's implementation or prints a solution: the first message says
what is wrong (output, input, size and place of the error), the hints name the likely mistake
and then the chapter's section and equation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bnbook.checks._errors import CheckFailed, NotWrittenYet, Refused, remember
from bnbook.checks._guard import watching
from bnbook.gradcheck import THRESHOLDS, rel_error

ANALYTIC = THRESHOLDS["float64_analytic"]  # float64 vs a float64 reference
FLOAT32 = THRESHOLDS["float32"]
MATCH = 1e-8  # a wrong variant "explains" the student's output if it agrees this closely
DEFAULT_EPS = 1e-5

#: The chapters' sections a hint may send the student to: (chapter number, file, heading).
SECTIONS = {
    "bn-forward": (2, "02_forward", "Algorithm 1, one line at a time"),
    "bn-conv": (2, "02_forward", "Fully connected and convolutional layers"),
    "graph": (3, "03_backward", "The computational graph"),
    "node-by-node": (3, "03_backward", "The gradients, node by node"),
    "two-facts": (3, "03_backward",
                  "Two facts: $\\mathrm{d}x$ sums to zero and is orthogonal to $\\hat x$"),
    "closed-form": (3, "03_backward", "Collapsing the graph: the closed form"),
    "inference": (4, "04_inference", "The inference layer is one affine map per channel"),
    "layer": (4, "04_inference", "The layer class: bookkeeping around two functions"),
    "norm-sets": (8, "08_other_norms", "Which values share a mean and a variance"),
    "tolerances": ("C", "A3_tolerances", "Appendix C: What \"agree\" means in floating point"),
}


def section(key: str) -> str:
    """``Chapter 2, section "Algorithm 1, one line at a time"`` (headings without LaTeX)."""
    chapter, _, heading = SECTIONS[key]
    if isinstance(chapter, str):  # an appendix: its heading carries its letter
        return heading.replace(": ", ", ", 1)
    heading = heading.replace("$\\mathrm{d}x$", "dx").replace("$\\hat x$", "x_hat")
    return f'Chapter {chapter}, section "{heading}"'


# --- the inputs --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Case:
    """One input: ``x``, the parameters, ``eps`` (and ``num_groups``, ``dy`` where used)."""

    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    eps: float = DEFAULT_EPS
    num_groups: int | None = None
    dy: np.ndarray | None = None

    def describe(self) -> str:
        text = f"x of shape {self.x.shape}, {self.x.dtype}"
        if self.num_groups is not None:
            text += f", num_groups={self.num_groups}"
        if self.eps != DEFAULT_EPS:
            text += f", eps={self.eps:g}"
        return text

    @property
    def values_per_channel(self) -> int:
        return self.x.size // self.x.shape[1]


def make_case(seed: int, shape, param_shape, eps=DEFAULT_EPS, spread=2.5, num_groups=None,
              with_dy=False) -> Case:
    """Random float64 input whose mean and spread vary by sample *and* by channel (so that
    statistics over the wrong axes give a different answer), gamma of both signs with |gamma|
    in [0.5, 3], beta ~ N(1, 2^2)."""
    rng = np.random.default_rng(seed)
    n, c = shape[:2]
    by_sample = (n,) + (1,) * (len(shape) - 1)
    by_channel = (1, c) + (1,) * (len(shape) - 2)
    loc = 3.0 + rng.uniform(-1.5, 1.5, by_sample) + rng.uniform(-1.5, 1.5, by_channel)
    scale = spread * rng.uniform(0.5, 2.0, by_sample) * rng.uniform(0.5, 2.0, by_channel)
    x = rng.standard_normal(shape) * scale + loc
    gamma = rng.uniform(0.5, 3.0, param_shape) * rng.choice([-1.0, 1.0], param_shape)
    beta = rng.normal(1.0, 2.0, param_shape)
    dy = rng.normal(0.5, 1.0, shape) if with_dy else None
    return Case(x, gamma, beta, eps, num_groups, dy)


def copies(case):
    return case.x.copy(), case.gamma.copy(), case.beta.copy()


# --- the checker wrapper: hint levels, rerun line, memory for hint() ---------------------------

def _arg_name(obj) -> str:
    name = getattr(obj, "__name__", "")
    return name if name.isidentifier() else "..."


def checker(function: Callable) -> Callable:
    """Give a checker its ``hint=`` keyword: a :class:`CheckFailed` raised by its body is
    raised again with the hint levels asked for and the call that shows the next one."""
    name = function.__name__

    @functools.wraps(function)
    def wrapper(*args, hint: int = 0):
        def rerun(level):
            return f"{name}({', '.join(_arg_name(a) for a in args)}, hint={level})"
        try:
            function(*args)
        except CheckFailed as failure:
            again = type(failure)(failure.what, failure.hints, rerun, hint)
            remember(again)
            raise again from None
        remember(None)

    return wrapper


def passed(name, err, threshold, count, unit="cases"):
    print(f"{name}: passed (max rel. error {err:.1e} < {threshold:.0e} on {count} {unit})")


# --- calling the student's code ----------------------------------------------------------------

def label(obj) -> str:
    return f"`{getattr(obj, '__qualname__', getattr(obj, '__name__', type(obj).__name__))}`"


def _raiser(traceback, fallback) -> str:
    """The student's function that raised: the innermost frame outside numpy, torch and the
    book's package."""
    name = fallback
    while traceback is not None:
        frame = traceback.tb_frame
        module = frame.f_globals.get("__name__") or ""
        if not module.startswith(("numpy", "torch", "bnbook")):
            code = frame.f_code
            name = f"`{getattr(code, 'co_qualname', code.co_name)}`"
        traceback = traceback.tb_next
    return name


def call(obj, where: str, *args, exercise: str | None = None):
    """Call the student's code. A stub's NotImplementedError becomes :class:`NotWrittenYet`;
    another exception is annotated with the input it failed on; with ``exercise`` given, a
    call into the implementation the exercise asks for makes it :class:`Refused`."""
    if exercise is None:
        return _call(obj, where, args)
    with watching(exercise) as watch:
        try:
            result = _call(obj, where, args)
        except Exception:
            if not watch.seen:
                raise
            result = None
    if watch.seen:
        raise Refused(
            f"{label(obj)} calls {', '.join(watch.seen)}: that is the implementation this "
            f"exercise asks you to write, so the checker does not accept it. Write the "
            f"computation yourself (NumPy array operations), then run the checker again.")
    return result


def _call(obj, where, args):
    try:
        return obj(*args)
    except NotImplementedError as error:
        name = _raiser(error.__traceback__, label(obj))
        place = "in the cell above" if name == label(obj) else "in its cell"
        raise NotWrittenYet(f"{name} is not written yet: replace `raise NotImplementedError` "
                            f"{place} with your code, then run this cell again.") from None
    except Exception as error:
        error.add_note(f"(raised by {label(obj)} on {where})")
        raise


def unpack(name, fn, result, names, where):
    if not isinstance(result, tuple) or len(result) != len(names):
        got = (f"a tuple of {len(result)}" if isinstance(result, tuple)
               else type(result).__name__)
        raise CheckFailed(f"{name}: {label(fn)} should return ({', '.join(names)}); it returned "
                          f"{got} for {where}.")
    return result


def as_output(name: str, what: str, value, shape, where: str, shape_hint=None):
    """The student's ``value`` as a float64 array of ``shape``, or a :class:`CheckFailed`
    saying what is wrong with its type, shape, dtype or values."""
    if type(value).__module__.startswith("torch"):
        raise CheckFailed(f"{name}: {what} is a torch.Tensor for {where}; the exercise works "
                          f"with NumPy arrays.",
                          ["return a NumPy array: a tensor's .detach().numpy() is one."])
    if not isinstance(value, np.ndarray):
        raise CheckFailed(f"{name}: {what} should be a NumPy array of shape {tuple(shape)}; it "
                          f"is a {type(value).__name__} for {where}.")
    if value.shape != tuple(shape):
        hints = [shape_hint(value.shape)] if shape_hint else []
        raise CheckFailed(f"{name}: {what} has shape {value.shape} for {where}; the expected "
                          f"shape is {tuple(shape)}.", hints)
    if value.dtype != np.float64:
        raise CheckFailed(
            f"{name}: {what} has dtype {value.dtype} for {where}; the input is float64.",
            ["a cast to lower precision or to integers: .astype(np.float32), np.float32(...), "
             "or an array created with another dtype.",
             "the output keeps the input's dtype; float32 keeps only about 7 digits "
             f"({section('tolerances')})."])
    if not np.isfinite(value).all():
        bad = np.argwhere(~np.isfinite(value))[0]
        raise CheckFailed(f"{name}: {what} contains NaN or inf for {where} (first at "
                          f"{what}[{', '.join(map(str, bad))}]).",
                          ["a division by zero, or the square root of a negative number."])
    return value


def reduced_shape_hint(expected):
    def shape_hint(got):
        if int(np.prod(got)) == int(np.prod(expected)):
            return "the right number of values in the wrong shape: a sum with keepdims=True?"
        return ("a sum over the wrong axes: one value per channel comes from a sum over every "
                "axis but axis 1.")
    return shape_hint


def check_unchanged(name, fn, case, x, gamma, beta):
    for arg, before, arg_name in ((x, case.x, "x"), (gamma, case.gamma, "gamma"),
                                  (beta, case.beta, "beta")):
        if not np.array_equal(arg, before):
            raise CheckFailed(
                f"{name}: {label(fn)} changed its input {arg_name} in place "
                f"({case.describe()}).",
                ["an in-place operation on an input (x -= mu, x /= ...); the caller still "
                 "needs its x."])


# --- where an output is wrong ------------------------------------------------------------------

def groups_of(kind: str, case: Case):
    """``(ids, names)``: an integer array of ``x``'s shape giving each value's statistics
    group, and the group names ("channel 3", "sample 1", "sample 0, group 2 (channels 4 to 5)")."""
    shape = case.x.shape
    n, c = shape[:2]
    if kind == "channel":
        ids = np.broadcast_to(np.arange(c).reshape((1, c) + (1,) * (len(shape) - 2)), shape)
        return ids, [f"channel {k}" for k in range(c)]
    if kind == "sample":
        ids = np.broadcast_to(np.arange(n).reshape((n,) + (1,) * (len(shape) - 1)), shape)
        return ids, [f"sample {k}" for k in range(n)]
    g = case.num_groups
    size = c // g
    per_channel_group = (np.arange(c) // size).reshape((1, c) + (1,) * (len(shape) - 2))
    ids = np.broadcast_to(np.arange(n).reshape((n,) + (1,) * (len(shape) - 1)) * g
                          + per_channel_group, shape)
    names = [f"sample {s}, group {k} (channels {k * size} to {(k + 1) * size - 1})"
             for s in range(n) for k in range(g)]
    return ids, names


def _group_list(names, wrong, unit):
    if len(wrong) == len(names):
        return f"every {unit} ({len(names)} of {len(names)})"
    shown = "; ".join(names[k] for k in wrong[:4]) + ("; ..." if len(wrong) > 4 else "")
    return f"{len(wrong)} of {len(names)} {unit}s ({shown}); the others are right"


def _spread_and_mean(got, expected, ids, wrong, unit, scale):
    mean_gaps, ratios = [], []
    for k in wrong:
        mask = ids == k
        mean_gaps.append(abs(got[mask].mean() - expected[mask].mean()) / scale)
        ratios.append(got[mask].std() / max(expected[mask].std(), 1e-300))
    same_mean = max(mean_gaps) < MATCH
    same_spread = max(abs(r - 1) for r in ratios) < MATCH
    if same_mean and same_spread:
        return f"per {unit}, the mean and the spread are right but the values are not"
    if same_mean:
        lo, hi = min(ratios), max(ratios)
        digits = ".6f" if abs(lo - 1) < 1e-2 and abs(hi - 1) < 1e-2 else ".4g"
        times = f"{lo:{digits}}" if hi - lo < 1e-4 * hi else f"{lo:.3g} to {hi:.3g}"
        return f"per {unit}, the mean is right and the spread is {times} times the right one"
    if same_spread:
        return f"per {unit}, the spread is right and the mean is off"
    return f"per {unit}, both the mean and the spread differ from the right ones"


def locate(output: str, got, expected, case: Case, kind: str, threshold: float) -> str:
    """Where ``got`` differs from ``expected``: the largest difference and the groups
    (channels, samples, groups) whose values are wrong, with their mean and spread."""
    diff = np.abs(got - expected)
    scale = max(np.abs(got).max(), np.abs(expected).max(), 1e-300)
    index = np.unravel_index(int(diff.argmax()), diff.shape)
    relative = diff[index] / max(abs(expected[index]), abs(got[index]), 1e-300)
    digits = int(min(17, max(6, np.ceil(-np.log10(max(relative, 1e-17))) + 2)))
    text = (f"The largest difference is at {output}[{', '.join(map(str, index))}]: "
            f"{got[index]:.{digits}g} instead of {expected[index]:.{digits}g}.")
    if kind is None:
        return text
    unit = "group" if kind == "group" else kind
    ids, names = groups_of(kind, case)
    worst = np.zeros(len(names))
    np.maximum.at(worst, ids.reshape(-1), diff.reshape(-1) / scale)
    wrong = [k for k in range(len(names)) if not worst[k] < threshold]
    where = _group_list(names, wrong, unit)
    return (f"{text}\nWrong in {where}; "
            f"{_spread_and_mean(got, expected, ids, wrong, unit, scale)}.")


def inputs_summary(results) -> str:
    """``results``: ``[(case, passed), ...]`` -> which inputs pass and which fail."""
    right = [str(c.x.shape) for c, ok in results if ok]
    wrong = [str(c.x.shape) for c, ok in results if not ok]
    if not right:
        return f"It is wrong on all {len(wrong)} inputs."
    return f"It is right on {', '.join(right)} and wrong on {', '.join(wrong)}."


# --- matching known mistakes -------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """A known mistake: what it is (hint 1), the chapter's equation (hint 2), and the output
    it produces (``output(case)``, or ``None`` where the case cannot show it)."""

    mistake: str
    equation: str
    output: Callable


def match(out, case, variants):
    """The variant closest to ``out`` (within :data:`MATCH`), or ``None``."""
    best, best_err = None, MATCH
    for variant in variants:
        candidate = variant.output(case)
        if candidate is None:
            continue
        err = rel_error(out, candidate)
        if err < best_err:
            best, best_err = variant, err
    return best


def float32_like(err: float) -> bool:
    """An error the size of float32 rounding, much larger than float64's."""
    return 1e-9 < err < FLOAT32

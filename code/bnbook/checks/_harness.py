"""The checkers' shared machinery: random cases, right and wrong reference variants,
calling the reader's code safely, and the failure and success messages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bnbook.gradcheck import THRESHOLDS, rel_error
from bnbook.numpy_norms import per_channel, reduction_axes

ANALYTIC = THRESHOLDS["float64_analytic"]  # float64 vs a float64 reference
FINITE_DIFFERENCE = THRESHOLDS["float64_finite_difference"]  # analytic vs finite differences
MATCH = 1e-8  # a wrong variant "explains" the reader's output if it agrees this closely
DEFAULT_EPS = 1e-5


# --- the inputs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Case:
    """One input: ``x``, the parameters, ``eps`` (and ``num_groups``, ``dy`` where used)."""

    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    eps: float = DEFAULT_EPS
    num_groups: int | None = None
    dy: np.ndarray | None = None

    def describe(self) -> str:
        text = f"x of shape {self.x.shape}"
        if self.num_groups is not None:
            text += f", num_groups={self.num_groups}"
        if self.eps != DEFAULT_EPS:
            text += f", eps={self.eps:g}"
        return text

    def fields(self) -> dict:
        """Values a hint may quote: ``{shape}``, ``{eps}``, ``{bn_axes}``, ``{C}``, ..."""
        n, c = self.x.shape[:2]
        g = self.num_groups or 1
        return dict(shape=self.x.shape, eps=self.eps, C=c, G=g, size=c // g,
                    bn_axes=reduction_axes(self.x.ndim) if self.x.ndim <= 4 else None,
                    ln_axes=tuple(range(1, self.x.ndim)), m=self.x.size // c)


def _make_case(seed: int, shape, param_shape, eps=DEFAULT_EPS, spread=2.5, num_groups=None,
               with_dy=False) -> _Case:
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
    return _Case(x, gamma, beta, eps, num_groups, dy)


# --- normalisation, right and wrong: the reference variants ------------------------------------

def _normalise(x, axes, eps, ddof=0, eps_mode="inside", centre=True):
    """``x_hat`` with statistics over ``axes``; the keywords make the classic mistakes."""
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    numerator = x - mu if centre else x
    if eps_mode == "inside":
        return numerator / np.sqrt(var + eps)
    if eps_mode == "outside":
        return numerator / (np.sqrt(var) + eps)
    if eps_mode == "none":
        return numerator / np.sqrt(var)
    if eps_mode == "no_sqrt":
        return numerator / (var + eps)
    raise ValueError(eps_mode)


def _group_normalise(x, groups, eps, interleaved=False, with_batch=False, **kw):
    """Group norm's ``x_hat``: contiguous groups of ``C // groups`` channels (or interleaved:
    channel ``c`` in group ``c % groups``)."""
    n, c = x.shape[:2]
    rest = x.shape[2:]
    if interleaved:
        xg = x.reshape((n, c // groups, groups) + rest)
        axes = (1,) + tuple(range(3, xg.ndim))
    else:
        xg = x.reshape((n, groups, c // groups) + rest)
        axes = tuple(range(2, xg.ndim))
    if with_batch:
        axes = (0,) + axes
    return _normalise(xg, axes, eps, **kw).reshape(x.shape)


def _affine(x_hat, gamma, beta, channelwise, use_gamma=True, use_beta=True, swap=False):
    if channelwise:  # (C,) parameters on axis 1
        gamma, beta = per_channel(gamma, x_hat.ndim), per_channel(beta, x_hat.ndim)
    if swap:
        gamma, beta = beta, gamma
    y = gamma * x_hat if use_gamma else x_hat
    return y + beta if use_beta else y


def _common_variants(normalise, channelwise):
    """The mistakes every layer shares. ``normalise(case, **kw)`` gives ``x_hat``."""
    def v(norm_kw=None, eps=None, **affine_kw):
        def variant(case):
            c = case if eps is None else _Case(case.x, case.gamma, case.beta, eps,
                                               case.num_groups)
            if eps is not None and case.eps == eps:
                return None
            x_hat = normalise(c, **(norm_kw or {}))
            return _affine(x_hat, case.gamma, case.beta, channelwise, **affine_kw)
        return variant

    return [
        ("the variance is unbiased (divided by m - 1); normalise with the biased variance, "
         "dividing by m, the number of values that share the statistics (np.var's default "
         "ddof=0)", v(dict(ddof=1))),
        ("eps is added outside the square root: use 1 / sqrt(var + eps), not "
         "1 / (sqrt(var) + eps)", v(dict(eps_mode="outside"))),
        ("eps is missing: add it to the variance before the square root, 1 / sqrt(var + eps)",
         v(dict(eps_mode="none"))),
        ("the square root is missing: divide by sqrt(var + eps), the standard deviation, not "
         "by the variance", v(dict(eps_mode="no_sqrt"))),
        ("the eps argument is ignored: this case passes eps={eps:g} but your function uses "
         "1e-5", v(eps=DEFAULT_EPS)),
        ("the mean is not subtracted: x_hat = (x - mu) / sqrt(var + eps)",
         v(dict(centre=False))),
        ("beta is not added: y = gamma * x_hat + beta", v(use_beta=False)),
        ("gamma is not applied: y = gamma * x_hat + beta", v(use_gamma=False)),
        ("neither gamma nor beta is applied (y is x_hat): y = gamma * x_hat + beta",
         v(use_gamma=False, use_beta=False)),
        ("gamma and beta are swapped: gamma scales and beta shifts, y = gamma * x_hat + beta",
         v(swap=True)),
    ]


def _axes_variant(axes_of, normalise_axes, channelwise):
    def variant(case):
        axes = axes_of(case.x.ndim)
        if axes is None:
            return None
        x_hat = normalise_axes(case.x, axes, case.eps)
        return _affine(x_hat, case.gamma, case.beta, channelwise)
    return variant


def _bn_variants():
    def normalise(case, **kw):
        return _normalise(case.x, reduction_axes(case.x.ndim), case.eps, **kw)

    def axes_variant(axes_of):
        return _axes_variant(axes_of, _normalise, channelwise=True)

    return _common_variants(normalise, channelwise=True) + [
        ("the statistics are per sample (over axes {ln_axes}), which is layer norm; batch norm "
         "averages each channel over the batch: axes {bn_axes}",
         axes_variant(lambda nd: tuple(range(1, nd)))),
        ("the statistics are averaged over axis 0 only, one mean per channel *and position*; "
         "batch norm averages each channel over axes {bn_axes}",
         axes_variant(lambda nd: (0,) if nd > 2 else None)),
        ("the statistics are per sample and channel (instance norm); batch norm also averages "
         "over the batch: axes {bn_axes}",
         axes_variant(lambda nd: tuple(range(2, nd)) if nd > 2 else None)),
        ("one mean and variance for the whole batch (all axes); batch norm keeps one per "
         "channel: axes {bn_axes}", axes_variant(lambda nd: tuple(range(nd)))),
    ]


def _ln_variants():
    def normalise(case, **kw):
        return _normalise(case.x, tuple(range(1, case.x.ndim)), case.eps, **kw)

    def axes_variant(axes_of):
        return _axes_variant(axes_of, _normalise, channelwise=False)

    return _common_variants(normalise, channelwise=False) + [
        ("the statistics are averaged over the batch (axis 0), which is batch norm; layer norm "
         "normalises each sample on its own, over axes {ln_axes}", axes_variant(lambda nd: (0,))),
        ("the statistics are averaged over the last axis only; layer norm normalises each "
         "sample over all axes but the first: {ln_axes}",
         axes_variant(lambda nd: (nd - 1,) if nd > 2 else None)),
        ("the statistics are per sample and channel (instance norm); layer norm normalises "
         "each sample over all axes but the first: {ln_axes}",
         axes_variant(lambda nd: tuple(range(2, nd)) if nd > 2 else None)),
        ("one mean and variance for the whole batch (all axes); layer norm keeps one per "
         "sample, over axes {ln_axes}", axes_variant(lambda nd: tuple(range(nd)))),
    ]


def _gn_variants():
    def normalise(case, **kw):
        return _group_normalise(case.x, case.num_groups, case.eps, **kw)

    def groups_variant(**kw):
        def variant(case):
            groups = kw.get("groups", lambda c, g: g)(case.x.shape[1], case.num_groups)
            if groups == case.num_groups and not (kw.get("interleaved") or kw.get("batch")):
                return None
            x_hat = _group_normalise(case.x, groups, case.eps,
                                     interleaved=kw.get("interleaved", False),
                                     with_batch=kw.get("batch", False))
            return _affine(x_hat, case.gamma, case.beta, channelwise=True)
        return variant

    return _common_variants(normalise, channelwise=True) + [
        ("the groups are interleaved (channel c in group c % num_groups); group norm takes "
         "contiguous groups: channels 0..{size}-1 are group 0, the next {size} group 1, ... "
         "(x.reshape(N, num_groups, C // num_groups, ...))", groups_variant(interleaved=True)),
        ("num_groups is used as the group size: with C={C} and num_groups={G} there are {G} "
         "groups of {size} channels, not groups of {G} channels",
         groups_variant(groups=lambda c, g: c // g)),
        ("each channel is normalised on its own (instance norm, num_groups = C); use "
         "num_groups={G} groups of {size} channels", groups_variant(groups=lambda c, g: c)),
        ("all channels form one group (layer norm, num_groups = 1); use num_groups={G} groups "
         "of {size} channels", groups_variant(groups=lambda c, g: 1)),
        ("the statistics are also averaged over the batch (axis 0); group norm normalises each "
         "sample on its own", groups_variant(batch=True)),
    ]


# --- calling the reader's code -----------------------------------------------------------------

def _label(obj) -> str:
    return f"`{getattr(obj, '__qualname__', getattr(obj, '__name__', type(obj).__name__))}`"


def _call(obj, where: str, *args, **kwargs):
    """Call the reader's code; a stub's NotImplementedError becomes a message that says so,
    and any other exception is annotated with the input it failed on."""
    try:
        return obj(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedError(
            f"{_label(obj)} is not implemented yet: replace the `raise NotImplementedError` "
            f"line in the exercise cell with your code") from None
    except Exception as error:
        error.add_note(f"(raised by {_label(obj)} on {where})")
        raise


def _as_output(name: str, what: str, value, shape, where: str, extra_shape_hint=None):
    """The reader's ``value`` as a float64 array of ``shape``, or an AssertionError saying
    what is wrong with its type, shape, dtype or values."""
    if isinstance(value, torch.Tensor):
        raise AssertionError(f"{name}: {what} is a torch.Tensor; return a NumPy array "
                             f"(tensor.detach().numpy()) for {where}")
    if not isinstance(value, np.ndarray):
        raise AssertionError(f"{name}: {what} should be a NumPy array of shape {shape}; got "
                             f"{type(value).__name__} for {where}")
    if value.shape != tuple(shape):
        hint = extra_shape_hint(value.shape) if extra_shape_hint else None
        raise AssertionError(
            f"{name}: {what} has the wrong shape for {where}: expected {tuple(shape)}, got "
            f"{value.shape}" + (f".\nLikely mistake: {hint}" if hint else ""))
    if value.dtype != np.float64:
        raise AssertionError(
            f"{name}: {what} has dtype {value.dtype} for a float64 input ({where}); keep the "
            f"input's dtype (no .astype(np.float32), no integer arrays)")
    if not np.isfinite(value).all():
        raise AssertionError(
            f"{name}: {what} contains NaN or inf for {where}: a division by zero, or the "
            f"square root of a negative number?")
    return value


def _reduced_shape_hint(expected):
    def hint(got):
        if int(np.prod(got)) == int(np.prod(expected)):
            return (f"the right values in the wrong shape (keepdims=True?); reshape to "
                    f"{tuple(expected)}")
        return ("summed over the wrong axes: one value per channel needs a sum over every "
                "axis but axis 1")
    return hint


def _unpack(name, fn, result, count, names, where):
    if not isinstance(result, tuple) or len(result) != count:
        got = (f"a tuple of {len(result)}" if isinstance(result, tuple)
               else type(result).__name__)
        raise AssertionError(f"{name}: {_label(fn)} should return ({', '.join(names)}); got "
                             f"{got} for {where}")
    return result


def _copies(case):
    return case.x.copy(), case.gamma.copy(), case.beta.copy()


def _check_unchanged(name, fn, case, x, gamma, beta):
    for arg, before, label in ((x, case.x, "x"), (gamma, case.gamma, "gamma"),
                               (beta, case.beta, "beta")):
        if not np.array_equal(arg, before):
            raise AssertionError(
                f"{name}: {_label(fn)} changed its input {label} in place ({case.describe()}); "
                f"compute new arrays (x - mu, not x -= mu)")


def _match(out, case, variants) -> str | None:
    """The hint of the wrong variant closest to ``out`` (within MATCH), if any."""
    best, best_err = None, MATCH
    for hint, variant in variants:
        candidate = variant(case)
        if candidate is None:
            continue
        err = rel_error(out, candidate)
        if err < best_err:
            best, best_err = hint.format(**case.fields()), err
    return best


def _failure(name, what, failures, variants, threshold, generic, reference_name="the reference"):
    """The AssertionError message for the first failing case a wrong variant explains (or the
    first failing case with a generic hint)."""
    for case, out, err in failures:
        hint = _match(out, case, variants)
        if hint is not None:
            break
    else:
        case, out, err = failures[0]
        hint = generic
    return (f"{name}: {what} is wrong for {case.describe()} (rel. error {err:.1e} against "
            f"{reference_name}, threshold {threshold:.0e}).\nLikely mistake: {hint}")


def _passed(name, err, threshold, count, unit="cases"):
    print(f"{name}: passed (max rel. error {err:.1e} < {threshold:.0e} on {count} {unit})")

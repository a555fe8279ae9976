"""Known mistakes in a normalisation forward pass, as outputs the checkers compare with.

Each :class:`~bnbook.checks._harness.Variant` carries the mistake (hint 1) and the chapter's
equation (hint 2). The equations are the chapters' own, one step each; none of them is code.
"""

from __future__ import annotations

import numpy as np

from bnbook.checks._harness import DEFAULT_EPS, Case, Variant, section
from bnbook.checks._reference import channel_axes, per_channel

_X_HAT = "x_hat = (x - mu) / sqrt(var + eps)"
_Y = "y = gamma * x_hat + beta"
_VAR = "var = (1/m) * sum over the m values of (x - mu)^2, the divisor m, not m - 1"


def normalise_wrongly(x, axes, eps, ddof=0, eps_mode="inside", centre=True, divisor=None):
    """``x_hat`` with statistics over ``axes``; the keywords make the classic mistakes
    (``divisor``: the count the sums are divided by, instead of the number of values)."""
    if divisor is None:
        mu = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True, ddof=ddof)
    else:
        mu = x.sum(axis=axes, keepdims=True) / divisor
        var = ((x - mu) ** 2).sum(axis=axes, keepdims=True) / divisor
    numerator = x - mu if centre else x
    denominators = {
        "inside": lambda: np.sqrt(var + eps),
        "outside": lambda: np.sqrt(var) + eps,
        "none": lambda: np.sqrt(var),
        "no_sqrt": lambda: var + eps,
        "std": lambda: np.sqrt(np.sqrt(var) + eps),
    }
    return numerator / denominators[eps_mode]()


def _affine(x_hat, gamma, beta, channelwise, use_gamma=True, use_beta=True, swap=False,
            abs_gamma=False):
    if channelwise:  # (C,) parameters on axis 1
        gamma, beta = per_channel(gamma, x_hat.ndim), per_channel(beta, x_hat.ndim)
    if swap:
        gamma, beta = beta, gamma
    if abs_gamma:
        gamma = np.abs(gamma)
    y = gamma * x_hat if use_gamma else x_hat
    return y + beta if use_beta else y


def common_variants(normalise, channelwise, where):
    """The mistakes every layer shares. ``normalise(case, **kw)`` gives ``x_hat``; ``where``
    is the section with the layer's equations."""
    def v(norm_kw=None, eps=None, **affine_kw):
        def output(case):
            if eps is not None and case.eps == eps:
                return None
            c = case if eps is None else Case(case.x, case.gamma, case.beta, eps,
                                              case.num_groups)
            x_hat = normalise(c, **(norm_kw or {}))
            return _affine(x_hat, case.gamma, case.beta, channelwise, **affine_kw)
        return output

    x_hat_eq = f"{_X_HAT} ({where})."
    y_eq = f"{_Y} ({where})."
    return [
        Variant("the variance is the unbiased one (divided by m - 1).", f"{_VAR} ({where}).",
                v(dict(ddof=1))),
        Variant("eps is added outside the square root, to the standard deviation.", x_hat_eq,
                v(dict(eps_mode="outside"))),
        Variant("eps is missing from the normalisation.", x_hat_eq, v(dict(eps_mode="none"))),
        Variant("the square root is missing: x - mu is divided by the variance, not by the "
                "standard deviation.", x_hat_eq, v(dict(eps_mode="no_sqrt"))),
        Variant("the standard deviation is used where the variance belongs (std instead of "
                "var under the square root).", x_hat_eq, v(dict(eps_mode="std"))),
        Variant("the eps argument is ignored: this input passes another eps, and your "
                "function uses 1e-5.", "eps is an argument of the function; use the one passed.",
                v(eps=DEFAULT_EPS)),
        Variant("the mean is not subtracted.", x_hat_eq, v(dict(centre=False))),
        Variant("beta is not added.", y_eq, v(use_beta=False)),
        Variant("gamma is not applied.", y_eq, v(use_gamma=False)),
        Variant("neither gamma nor beta is applied (y is x_hat).", y_eq,
                v(use_gamma=False, use_beta=False)),
        Variant("gamma and beta are swapped.", y_eq, v(swap=True)),
        Variant("the sign of gamma is lost (abs(gamma), or gamma squared and rooted).", y_eq,
                v(abs_gamma=True)),
    ]


def _axes_output(axes_of, channelwise, normalise_axes=normalise_wrongly):
    def output(case):
        axes = axes_of(case.x.ndim)
        if axes is None:
            return None
        x_hat = normalise_axes(case.x, axes, case.eps)
        return _affine(x_hat, case.gamma, case.beta, channelwise)
    return output


def bn_variants():
    def normalise(case, **kw):
        return normalise_wrongly(case.x, channel_axes(case.x.ndim), case.eps, **kw)

    conv = (f"one mean and one variance per channel, over the batch and every position: "
            f"m = N for (N, D), N*L for (N, C, L), N*H*W for (N, C, H, W) "
            f"({section('bn-conv')}).")

    def divided_by_n(case):
        if case.x.ndim == 2:
            return None
        x_hat = normalise(case, divisor=case.x.shape[0])
        return _affine(x_hat, case.gamma, case.beta, True)

    return common_variants(normalise, True, section("bn-forward")) + [
        Variant("the statistics are per sample (over every axis but the first), which is "
                "layer norm.", conv, _axes_output(lambda nd: tuple(range(1, nd)), True)),
        Variant("the statistics are over axis 0 only: one mean per channel *and position*.",
                conv, _axes_output(lambda nd: (0,) if nd > 2 else None, True)),
        Variant("the statistics are per sample and channel (instance norm): the batch axis is "
                "left out.", conv,
                _axes_output(lambda nd: tuple(range(2, nd)) if nd > 2 else None, True)),
        Variant("one mean and variance for the whole batch (all axes), not one per channel.",
                conv, _axes_output(lambda nd: tuple(range(nd)), True)),
        Variant("m = N: the sums over the batch and the positions are divided by the batch "
                "size, not by the number of values per channel.", conv, divided_by_n),
    ]


def ln_variants():
    def normalise(case, **kw):
        return normalise_wrongly(case.x, tuple(range(1, case.x.ndim)), case.eps, **kw)

    sets = (f"layer norm gives each sample its own mean and variance, over all of its values "
            f"(every axis but the first) ({section('norm-sets')}).")
    return common_variants(normalise, False, section("norm-sets")) + [
        Variant("the statistics are over the batch (axis 0), which is batch norm.", sets,
                _axes_output(lambda nd: (0,), False)),
        Variant("the statistics are over the last axis only.", sets,
                _axes_output(lambda nd: (nd - 1,) if nd > 2 else None, False)),
        Variant("the statistics are per sample and channel (instance norm).", sets,
                _axes_output(lambda nd: tuple(range(2, nd)) if nd > 2 else None, False)),
        Variant("one mean and variance for the whole batch (all axes).", sets,
                _axes_output(lambda nd: tuple(range(nd)), False)),
    ]


def group_normalise(x, groups, eps, interleaved=False, with_batch=False, **kw):
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
    return normalise_wrongly(xg, axes, eps, **kw).reshape(x.shape)


def gn_variants():
    def normalise(case, **kw):
        return group_normalise(case.x, case.num_groups, case.eps, **kw)

    def groups_output(groups=lambda c, g: g, interleaved=False, batch=False):
        def output(case):
            count = groups(case.x.shape[1], case.num_groups)
            if count == case.num_groups and not (interleaved or batch):
                return None
            x_hat = group_normalise(case.x, count, case.eps, interleaved=interleaved,
                                    with_batch=batch)
            return _affine(x_hat, case.gamma, case.beta, channelwise=True)
        return output

    sets = (f"group norm splits the C channels into num_groups groups of C // num_groups "
            f"adjacent channels and gives each (sample, group) its own mean and variance "
            f"({section('norm-sets')}).")
    return common_variants(normalise, True, section("norm-sets")) + [
        Variant("the groups are interleaved (channel c in group c % num_groups), not made of "
                "adjacent channels.", sets, groups_output(interleaved=True)),
        Variant("num_groups is used as the group size, not as the number of groups.", sets,
                groups_output(groups=lambda c, g: c // g)),
        Variant("each channel is normalised on its own (instance norm, num_groups = C).", sets,
                groups_output(groups=lambda c, g: c)),
        Variant("all channels form one group (layer norm, num_groups = 1).", sets,
                groups_output(groups=lambda c, g: 1)),
        Variant("the statistics are also taken over the batch (axis 0).", sets,
                groups_output(batch=True)),
    ]


def inference_variants(running_mean, running_var):
    """Mistakes of the eval-mode forward for one input's running statistics."""
    eq = (f"y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta, per channel "
          f"({section('inference')}).")

    def output(x_hat_of, **affine_kw):
        def out(case):
            rm = per_channel(running_mean, case.x.ndim)
            rv = per_channel(running_var, case.x.ndim)
            x_hat = x_hat_of(case.x, rm, rv, case.eps)
            return _affine(x_hat, case.gamma, case.beta, True, **affine_kw)
        return out

    def right(x, rm, rv, eps):
        return (x - rm) / np.sqrt(rv + eps)

    axes = lambda x: channel_axes(x.ndim)  # noqa: E731
    return [
        Variant("y uses the batch's own mean and variance (training mode), not the running "
                "statistics.", eq,
                output(lambda x, rm, rv, eps: normalise_wrongly(x, axes(x), eps))),
        Variant("eps is added outside the square root.", eq,
                output(lambda x, rm, rv, eps: (x - rm) / (np.sqrt(rv) + eps))),
        Variant("x - running_mean is divided by running_var + eps, not by its square root.", eq,
                output(lambda x, rm, rv, eps: (x - rm) / (rv + eps))),
        Variant("the running mean is not subtracted.", eq,
                output(lambda x, rm, rv, eps: x / np.sqrt(rv + eps))),
        Variant("running_var is treated as a standard deviation (squared before use).", eq,
                output(lambda x, rm, rv, eps: (x - rm) / np.sqrt(rv ** 2 + eps))),
        Variant("beta is not added.", eq, output(right, use_beta=False)),
        Variant("gamma is not applied.", eq, output(right, use_gamma=False)),
        Variant("gamma and beta are swapped.", eq, output(right, swap=True)),
    ]

"""Input checks shared by every normalisation of :mod:`bnbook.numpy_norms` (and by
:mod:`bnbook.numpy_fast`, :mod:`bnbook.folding` and :mod:`bnbook.torch_bn`).

Each check raises ``ValueError`` with a message that names the problem. Batch norm's own
composition of them is :func:`check_forward_inputs`; layer, instance and group norm compose the
same pieces (:func:`check_ndim`, :func:`_as_float_array`, :func:`check_params`,
:func:`check_values_per_statistic`, :func:`check_eps`, :func:`check_dy`), so a bad input is
refused by all of them with the same words.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_ndim",
    "reduction_axes",
    "per_channel",
    "check_eps",
    "check_params",
    "check_param",
    "check_values_per_statistic",
    "check_forward_inputs",
    "check_dy",
    "as_channel_vector",
]

_AXES = {2: (0,), 3: (0, 2), 4: (0, 2, 3)}
_LAYOUTS = {2: "(N, D)", 3: "(N, C, L)", 4: "(N, C, H, W)"}
_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_ndim(ndim: int, method: str = "batch norm", ndims=(2, 3, 4)) -> None:
    """``ValueError`` unless an input of ``ndim`` dimensions is one of the layouts ``ndims``
    (2: ``(N, D)``, 3: ``(N, C, L)``, 4: ``(N, C, H, W)``) that ``method`` accepts."""
    if ndim not in ndims:
        layouts = [_LAYOUTS[k] for k in ndims]
        expected = layouts[0] if len(layouts) == 1 else \
            ", ".join(layouts[:-1]) + " or " + layouts[-1]
        raise ValueError(f"{method} expects an input of shape {expected}; got an array with "
                         f"{ndim} dimension(s)")


def reduction_axes(ndim: int) -> tuple[int, ...]:
    """Axes over which batch norm averages for an input of ``ndim`` dimensions (2, 3 or 4)."""
    check_ndim(ndim)
    return _AXES[ndim]


def per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a ``(C,)`` vector so that it broadcasts along axis 1 of an ``ndim`` array."""
    return p.reshape((1, -1) + (1,) * (ndim - 2))


def _as_float_array(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "f" and not a.dtype.isnative:
        # a big-endian array (e.g. '>f8' read from a file) holds the same numbers
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype not in _SUPPORTED_DTYPES:
        kind = "an integer" if np.issubdtype(a.dtype, np.integer) else "a"
        raise ValueError(
            f"{name} must have a real floating dtype (float32 or float64); got {kind} dtype "
            f"{a.dtype}"
        )
    return a


def check_eps(eps) -> float:
    """``eps`` as a float; ``ValueError`` unless it is a positive finite real number (the one
    check of ``eps`` for every layer here and in :mod:`bnbook.torch_bn`)."""
    if (not isinstance(eps, numbers.Real) or isinstance(eps, (bool, np.bool_))
            or not np.isfinite(eps) or eps <= 0):
        raise ValueError(f"eps must be a positive finite number; got {eps!r}")
    return float(eps)


def check_params(gamma, beta, shape: tuple[int, ...], x: np.ndarray,
                 where: str = "the channel axis (axis 1)"):
    """``(gamma, beta)`` in the dtype of ``x``; ``ValueError`` unless both are numeric arrays of
    shape ``shape`` (``where`` says which axes of ``x`` that shape matches)."""
    return (check_param(gamma, "gamma", shape, x, where),
            check_param(beta, "beta", shape, x, where))


def check_param(p, name: str, shape: tuple[int, ...], x: np.ndarray,
                where: str = "the channel axis (axis 1)") -> np.ndarray:
    """``p`` in the dtype of ``x``; ``ValueError`` unless it is a numeric array of shape
    ``shape`` (one parameter of :func:`check_params`)."""
    p = np.asarray(p)
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric; got dtype {p.dtype}")
    if p.shape != tuple(shape):
        raise ValueError(
            f"{name} must have shape {tuple(shape)} to match {where} of x with shape "
            f"{x.shape}; got shape {p.shape}"
        )
    return p.astype(x.dtype, copy=False)


def check_values_per_statistic(m: int, x_shape, method: str, unit: str, when: str = "",
                               note: str = "") -> None:
    """``ValueError`` if fewer than 2 values share one mean and variance: with one value
    ``x_hat`` is 0 whatever ``x`` is, the output is ``beta`` and the gradient of ``x`` vanishes
    (almost always a mistaken shape)."""
    if m < 2:
        raise ValueError(f"{method} needs more than 1 value per {unit}{when}; x with shape "
                         f"{tuple(x_shape)} gives {m} value(s) per {unit}{note}")


def check_forward_inputs(x, gamma, beta, eps):
    """Validate batch norm's training-mode inputs; return ``(x, gamma, beta, axes, eps)``.

    ``gamma`` and ``beta`` come back in the dtype of ``x``. Raises ``ValueError`` as listed in
    :func:`bnbook.numpy_norms.batch_norm_forward`.
    """
    x = np.asarray(x)
    axes = reduction_axes(x.ndim)
    x = _as_float_array(x, "x")
    channels = x.shape[1]
    gamma, beta = check_params(gamma, beta, (channels,), x)
    check_values_per_statistic(
        x.size // channels if channels else 0, x.shape, "batch norm", "channel",
        when=" in training mode",
        note=" (PyTorch: 'Expected more than 1 value per channel when training')")
    eps = check_eps(eps)
    return x, gamma, beta, axes, eps


def check_dy(dy, x: np.ndarray) -> np.ndarray:
    """``dy`` in the dtype of ``x``; ``ValueError`` unless it is a float32/float64 array with
    the shape of ``x``."""
    dy = np.asarray(dy)
    if not (np.issubdtype(dy.dtype, np.floating) and dy.dtype.itemsize >= 4):
        raise ValueError(f"dy must have a real floating dtype (float32 or float64); got dtype "
                         f"{dy.dtype}")
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of x, {x.shape}; got {dy.shape}")
    return dy.astype(x.dtype, copy=False)


def as_channel_vector(a, name: str, channels: int | None = None) -> np.ndarray:
    """``a`` as a float64 vector of shape ``(C,)`` (of shape ``(channels,)`` if given)."""
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric; got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be a vector of shape (C,); got shape {a.shape}")
    if channels is not None and a.shape[0] != channels:
        raise ValueError(f"{name} must have shape ({channels},); got shape {a.shape}")
    return a.astype(np.float64)


def _check_variance_representable(var: np.ndarray, dtype, what: str = "batch",
                                  unit: str = "channel") -> None:
    """``ValueError`` if a float64 variance (of ``what`` norm, one per ``unit``) overflows
    ``dtype``: its inverse standard deviation would be 0, ``x_hat`` 0 and the output ``beta``
    (what PyTorch returns there, silently)."""
    bad = var.reshape(-1) > np.finfo(dtype).max  # NaN passes, as before
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(
            f"the {what} variance of {unit} {k} overflows {np.dtype(dtype).name} (|x| of about "
            f"sqrt({np.finfo(dtype).max:.1e}) or more): every x_hat would be 0 and the output "
            f"beta (PyTorch returns beta here); rescale x, e.g. divide it by its largest "
            f"absolute value")

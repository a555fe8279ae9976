"""What every chapter does before its first line of teaching: one set-up call, glue helpers, and
the shared case builder.

A chapter starts with ``from bnbook.notebook import setup, glue_figure, glue_value`` and
``setup()`` in a hidden cell. The helpers keep the plumbing out of the visible cells:

* :func:`setup` - the house figure style (figures drawn at ``FIG_DPI`` and stored at twice that
  density, so they are sharp on HiDPI screens and when a phone zooms in), and the thread
  count of PyTorch where the chapter uses it;
* :func:`glue_figure` - glue a finished figure under a name for ``{glue:figure}`` and close it;
* :func:`glue_value` - glue a number (or short text) for ``{glue:text}`` without showing it;
* :func:`make_case` - random batch-norm inputs ``(x, gamma, beta, dy)`` that hide no wrong term,
  built the same way by the chapters and by the tests (``tests/bn_cases.py``).
"""

from __future__ import annotations

__all__ = ["setup", "glue_figure", "glue_value", "make_case"]

#: How much denser than ``FIG_DPI`` a stored figure is (2: "retina" PNGs at the same size).
PIXEL_DENSITY = 2


def setup(*, threads: int | None = None, figsize: tuple[float, float] | None = None) -> None:
    """Set the house figure style and, if ``threads`` is given, PyTorch's thread count.

    Args:
        threads: ``torch.set_num_threads(threads)``; the chapters' tensors are small, and one
            thread is both the fastest and the reproducible choice there. ``None`` leaves
            PyTorch alone (and does not import it); without PyTorch installed it is ignored.
        figsize: the default figure size in inches, if the chapter wants another one.
    """
    import matplotlib.pyplot as plt

    from bnbook.plots import FIG_DPI

    plt.rcParams["figure.dpi"] = FIG_DPI
    if figsize is not None:
        plt.rcParams["figure.figsize"] = figsize
    _store_figures_at_double_density()
    if threads is not None:
        try:
            import torch
        except ImportError:                    # the browser edition (bnbook.site.lite) has no PyTorch
            return
        torch.set_num_threads(threads)


def _store_figures_at_double_density() -> None:
    # In IPython the inline backend turns figures into PNGs; "retina" draws them at twice the
    # DPI and records the display size, so the page shows them at the same size, sharper.
    try:
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


def glue_figure(name: str, fig) -> None:
    """Glue ``fig`` under ``name`` for a ``{glue:figure}`` caption, and close it."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


def glue_value(name: str, value) -> None:
    """Glue ``value`` under ``name`` for ``{glue:text}``, without showing it in the cell.

    A NumPy scalar is glued as the plain Python number it holds (its ``repr`` in NumPy 2,
    ``np.float64(0.5)``, is not a number that ``{glue:text}`` can format).
    """
    import numpy as np
    from myst_nb import glue

    glue(name, value.item() if isinstance(value, np.generic) else value, display=False)


def make_case(shape, seed, loc=3.0, scale=2.5, *, channel_spread=False,
              gamma_range=(0.5, 3.0), dtype=None):
    """Random batch-norm inputs ``(x, gamma, beta, dy)`` with non-trivial values, so that no
    wrong term can hide behind a zero or a one.

    ``x`` has mean ``loc`` and spread ``scale``; with ``channel_spread`` each channel has its own
    mean, in ``loc +- |loc| / 2``, and its own spread, in ``[scale / 2, 2 scale]``. ``gamma`` is
    far from 1 and of both signs, ``|gamma|`` uniform in ``gamma_range``; ``beta ~ N(0, 2^2)``;
    ``dy ~ N(0.5, 1)`` has a mean. The same ``seed`` gives the same case.

    Args:
        shape: the shape of ``x`` and ``dy``, ``(N, C)`` or ``(N, C, *spatial)``.
        dtype: the NumPy dtype of all four arrays (float64 if ``None``).

    Returns:
        ``x`` and ``dy`` of ``shape``, ``gamma`` and ``beta`` of shape ``(C,)``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    c = shape[1]
    if channel_spread:
        channel_shape = (1, c) + (1,) * (len(shape) - 2)
        loc = loc + rng.uniform(-1, 1, size=channel_shape) * abs(loc) * 0.5
        scale = scale * rng.uniform(0.5, 2.0, size=channel_shape)
    x = rng.standard_normal(shape) * scale + loc
    gamma = rng.uniform(*gamma_range, size=c) * rng.choice([-1.0, 1.0], size=c)
    beta = rng.normal(0.0, 2.0, size=c)
    dy = rng.normal(0.5, 1.0, size=shape)
    return tuple(a.astype(dtype or np.float64) for a in (x, gamma, beta, dy))

"""Interactive explorers for the chapters: sliders that redraw one figure.

Each explorer has three layers, so that what it shows can be tested without a browser:

* a function that **computes** what the figure shows (:func:`small_batch_bn`,
  :func:`running_statistics_trace`, and the library's
  :func:`bnbook.numpy_norms.statistics_groups`), plain NumPy, tested in
  ``tests/test_widgets.py`` against closed forms and independent references;
* a function that **draws** it on a new :class:`matplotlib.figure.Figure`
  (:func:`draw_small_batch`, :func:`draw_running_statistics`, :func:`draw_statistics_groups`),
  without pyplot, so nothing is shown by accident;
* the **explorer** (:func:`batch_norm_explorer`, :func:`running_stats_explorer`,
  :func:`norm_axes_explorer`): ipywidgets controls and an ``Image`` widget holding the figure
  as PNG, redrawn whenever a control changes.

An explorer displays as its widget in a running notebook. A static page cannot run Python,
so the chapters also show each explorer's default view, ``explorer.figure()``, as an
ordinary captioned figure; the book stores no widget state, and the widget's output is
inert on the website.

The explorers (chapter in brackets):

* :func:`batch_norm_explorer` - batch norm of one feature on a small batch: sliders for the
  batch size, ``gamma``, ``beta`` and ``eps``; histograms of ``x`` before and ``y`` after
  (chapter 2);
* :func:`running_stats_explorer` - the running mean and variance over training steps for one
  value of ``momentum`` read in PyTorch's convention (weight of the new batch, unbiased
  variance) and in Keras' (weight of the old value, biased variance), against the population
  values (chapter 4, Appendix D);
* :func:`norm_axes_explorer` - which values of an ``(N, C, H, W)`` input share one mean and
  variance under batch, layer, instance and group norm (the chapter on the other norms).
"""

from __future__ import annotations

import io
from typing import Callable, NamedTuple

import ipywidgets as widgets
import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnbook.numpy_norms import BatchNorm, batch_norm_forward, statistics_groups
from bnbook.notebook import PIXEL_DENSITY
from bnbook.plots import FIG_DPI

__all__ = ["Explorer", "PngFigure", "figure_png", "figure_display_size", "SmallBatchResult", "small_batch_bn", "draw_small_batch",
           "batch_norm_explorer", "keras_moving_update", "running_statistics_trace",
           "draw_running_statistics", "running_stats_explorer", "NORM_METHODS",
           "draw_statistics_groups", "norm_axes_explorer"]


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, at :data:`~bnbook.notebook.PIXEL_DENSITY` times the book's
    resolution (sharp on HiDPI screens; shown at :func:`figure_display_size`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIG_DPI * PIXEL_DENSITY)
    return buffer.getvalue()


def figure_display_size(fig: Figure) -> tuple[int, int]:
    """The (width, height) in CSS pixels a figure is shown at: its size at ``FIG_DPI``."""
    width, height = fig.get_size_inches() * FIG_DPI
    return round(width), round(height)


class PngFigure(Figure):
    """A figure that IPython shows (and myst-nb's ``glue`` stores) as PNG even before pyplot's
    inline backend has been loaded, which happens only when pyplot draws its first figure.
    The PNG has twice the pixels, and its metadata the size to show it at (as the inline
    backend's "retina" format does), so the website shows it at its size, sharp."""

    def _repr_png_(self) -> tuple[bytes, dict]:
        width, height = figure_display_size(self)
        return figure_png(self), {"width": width, "height": height}


class Explorer:
    """Controls and the figure they redraw, as one ipywidgets ``VBox``.

    Args:
        controls: name -> ipywidgets control; ``draw(**{name: control.value})`` must return a
            new :class:`~matplotlib.figure.Figure`.
        draw: the drawing function.

    Attributes:
        controls: the controls, by name.
        image: the ``ipywidgets.Image`` that shows the current figure (PNG).
        widget: the whole explorer (controls above the image); a notebook cell that ends with
            the explorer displays it.
    """

    def __init__(self, controls: dict[str, widgets.Widget], draw: Callable[..., Figure]):
        self.controls = dict(controls)
        self._draw = draw
        self.image = widgets.Image(format="png")
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values()),
                                                 layout=widgets.Layout(flex_flow="row wrap")),
                                    self.image])
        for control in self.controls.values():
            control.observe(self.redraw, names="value")
        self.redraw()

    def values(self) -> dict:
        """The controls' current values, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def figure(self) -> Figure:
        """A new figure of the current view (the default view before any control moved)."""
        return self._draw(**self.values())

    def redraw(self, change=None) -> None:
        """Draw the current view into :attr:`image` (called whenever a control changes)."""
        fig = self.figure()
        self.image.width = str(figure_display_size(fig)[0])
        self.image.value = figure_png(fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _slider_layout() -> widgets.Layout:
    return widgets.Layout(width="320px")


_SLIDER_STYLE = {"description_width": "90px"}


# --- Chapter 2: batch norm on a small batch ---------------------------------------------------

class SmallBatchResult(NamedTuple):
    """One feature of a small batch before and after batch norm (all float64).

    ``x`` and ``y`` have shape ``(batch_size,)``; ``mu`` and ``var`` are the batch mean and
    biased variance of ``x``; ``y_mean`` and ``y_std`` are the mean and (biased) standard
    deviation of ``y`` that the equations predict, ``beta`` and
    ``|gamma| * sqrt(var / (var + eps))``.
    """

    x: np.ndarray
    y: np.ndarray
    mu: float
    var: float
    y_mean: float
    y_std: float


#: The population the explorer's batches are drawn from: mean 3 and standard deviation 0.05,
#: so that eps (slider up to 1) can be large compared with the variance.
SMALL_BATCH_POPULATION = (3.0, 0.05)


def small_batch_bn(batch_size: int, gamma: float, beta: float, eps: float,
                   seed: int = 0) -> SmallBatchResult:
    """Batch norm (:func:`bnbook.numpy_norms.batch_norm_forward`) of one feature on a batch.

    The batch is the first ``batch_size`` values of one seeded stream from
    :data:`SMALL_BATCH_POPULATION`, so a larger batch adds values and keeps the old ones.

    Args:
        batch_size: ``m``, at least 2.
        gamma, beta: the learned scale and shift.
        eps: the constant added to the variance (positive).
        seed: seed of the stream.
    """
    if int(batch_size) != batch_size or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2 (the batch needs a variance); "
                         f"got {batch_size!r}")
    loc, scale = SMALL_BATCH_POPULATION
    stream = np.random.default_rng(seed).normal(loc, scale, size=max(int(batch_size), 256))
    x = stream[:int(batch_size)].reshape(-1, 1)
    y, cache = batch_norm_forward(x, np.array([gamma], float), np.array([beta], float), eps=eps)
    mu, var = float(cache.mu.ravel()[0]), float(cache.var.ravel()[0])
    return SmallBatchResult(x.ravel(), y.ravel(), mu, var, float(beta),
                            abs(float(gamma)) * float(np.sqrt(var / (var + eps))))


def draw_small_batch(batch_size: int = 16, gamma: float = 1.0, beta: float = 0.0,
                     eps: float = 1e-5, seed: int = 0) -> Figure:
    """Histograms of ``x`` (left) and ``y`` (right) for :func:`small_batch_bn`'s batch."""
    r = small_batch_bn(batch_size, gamma, beta, eps, seed)
    # One panel above the other, so that the figure keeps legible labels in a phone's column.
    fig = PngFigure(figsize=(6.0, 5.0), dpi=FIG_DPI, layout="constrained")
    ax_x, ax_y = fig.subplots(2, 1)
    loc, scale = SMALL_BATCH_POPULATION
    ax_x.hist(r.x, bins=np.linspace(loc - 4 * scale, loc + 4 * scale, 33), color="tab:grey")
    ax_x.axvline(r.mu, color="black", lw=1)
    ax_x.set_title(f"x: mean {r.mu:.3f}, std {np.sqrt(r.var):.3f}", fontsize=10)
    ax_x.set_xlabel("x (input value)")
    # The y axis follows the output (its spread is |gamma| times at most 1), with room for
    # the predicted mean and standard deviation, and for a constant output (gamma = 0).
    half_width = max(4 * r.y_std, 1.05 * float(np.abs(r.y - r.y_mean).max()), 0.1)
    ax_y.hist(r.y, bins=np.linspace(r.y_mean - half_width, r.y_mean + half_width, 33),
              color="tab:blue")
    ax_y.axvline(r.y_mean, color="black", lw=1)
    for edge in (r.y_mean - r.y_std, r.y_mean + r.y_std):
        ax_y.axvline(edge, color="black", lw=1, ls=":")
    # round(..., 2) + 0.0 prints a mean of -1e-17 as 0.00, not -0.00
    ax_y.set_title(f"y: mean {round(r.y.mean(), 2) + 0.0:.2f}, std {r.y.std():.2f} "
                   f"(predicted {r.y_mean + 0.0:.2f}, {r.y_std:.2f})", fontsize=10)
    ax_y.set_xlabel(r"y = $\gamma\,\hat x + \beta$")
    for ax in (ax_x, ax_y):
        ax.set_ylabel("count")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def batch_norm_explorer(batch_size: int = 16, gamma: float = 1.0, beta: float = 0.0,
                        eps: float = 1e-5, seed: int = 0) -> Explorer:
    """Sliders for the batch size, ``gamma``, ``beta`` and ``eps`` over :func:`draw_small_batch`.

    The defaults are the explorer's first view; ``eps`` moves on a log scale from ``1e-8``
    to ``1``.
    """
    common = {"style": _SLIDER_STYLE, "layout": _slider_layout(), "continuous_update": False}
    controls = {
        "batch_size": widgets.IntSlider(value=batch_size, min=2, max=256,
                                        description="batch size m", **common),
        "gamma": widgets.FloatSlider(value=gamma, min=-3.0, max=3.0, step=0.1,
                                     description="gamma", **common),
        "beta": widgets.FloatSlider(value=beta, min=-3.0, max=3.0, step=0.1,
                                    description="beta", **common),
        "eps": widgets.FloatLogSlider(value=eps, base=10, min=-8, max=0, step=0.5,
                                      description="eps", readout_format=".0e", **common),
    }
    return Explorer(controls, lambda **v: draw_small_batch(seed=seed, **v))


# --- Chapter 4: running statistics and the two momentum conventions ---------------------------

def keras_moving_update(moving_mean, moving_var, x, momentum: float):
    """One update of Keras 3's moving statistics for a batch ``x`` of shape ``(m, C)``.

    Keras' ``momentum`` weights the *old* value, and the variance it averages is the
    *biased* batch variance (``ops.moments``): ``moving = momentum * moving + (1 - momentum) *
    batch``. Returns the new ``(moving_mean, moving_var)``, each ``(C,)``.
    """
    x = np.asarray(x, dtype=np.float64)
    return (momentum * moving_mean + (1.0 - momentum) * x.mean(axis=0),
            momentum * moving_var + (1.0 - momentum) * x.var(axis=0))


class RunningTrace(NamedTuple):
    """Running statistics after each step: ``mean`` and ``var`` have shape ``(steps,)``."""

    mean: np.ndarray
    var: np.ndarray


#: The stream of the running-statistics explorer: population mean and variance, values per
#: batch (``m``) and steps.
RUNNING_STREAM = {"true_mean": 3.0, "true_var": 4.0, "m": 8, "steps": 300}


def _batches(seed: int, true_mean: float, true_var: float, m: int, steps: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return true_mean + np.sqrt(true_var) * rng.standard_normal((steps, m, 1))


def running_statistics_trace(momentum: float, convention: str, seed: int = 0,
                             true_mean: float = 3.0, true_var: float = 4.0, m: int = 8,
                             steps: int = 300) -> RunningTrace:
    """The running mean and variance of one feature after each of ``steps`` batches.

    Both conventions start from mean 0 and variance 1 and see the same seeded batches of
    ``m`` values from a normal population (``true_mean``, ``true_var``).

    Args:
        momentum: the number passed as ``momentum``, in ``[0, 1]``.
        convention: ``"pytorch"``: the book's :class:`bnbook.numpy_norms.BatchNorm`
            (checked against ``nn.BatchNorm1d`` in chapter 4): ``momentum`` weights the new
            batch, the unbiased variance is averaged. ``"keras"``:
            :func:`keras_moving_update`: ``momentum`` weights the old value, the biased
            variance is averaged.
    """
    if convention not in ("pytorch", "keras"):
        raise ValueError(f"convention must be 'pytorch' or 'keras'; got {convention!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum!r}")
    batches = _batches(seed, true_mean, true_var, m, steps)
    means, variances = np.empty(steps), np.empty(steps)
    layer = BatchNorm(1, momentum=momentum)
    moving_mean, moving_var = np.zeros(1), np.ones(1)
    for step, xb in enumerate(batches):
        if convention == "pytorch":
            layer.forward(xb)
            moving_mean, moving_var = layer.running_mean, layer.running_var
        else:
            moving_mean, moving_var = keras_moving_update(moving_mean, moving_var, xb, momentum)
        means[step], variances[step] = moving_mean[0], moving_var[0]
    return RunningTrace(means, variances)


def draw_running_statistics(momentum: float = 0.1, seed: int = 0) -> Figure:
    """Running mean (left) and variance (right) in both conventions for one ``momentum``."""
    s = RUNNING_STREAM
    # One panel above the other, so that the figure keeps legible labels in a phone's column.
    fig = PngFigure(figsize=(6.0, 5.2), dpi=FIG_DPI, layout="constrained")
    ax_mean, ax_var = fig.subplots(2, 1, sharex=True)
    steps = np.arange(1, s["steps"] + 1)
    # Keras first, so that the smoother curve of the two (which one depends on momentum)
    # is not always the hidden one.
    for convention, label, colour in (("keras", "Keras", "tab:orange"),
                                      ("pytorch", "PyTorch", "tab:blue")):
        trace = running_statistics_trace(momentum, convention, seed, **s)
        ax_mean.plot(steps, trace.mean, color=colour, lw=1.2, label=f"{label}, momentum={momentum:g}")
        ax_var.plot(steps, trace.var, color=colour, lw=1.2)
    ax_mean.axhline(s["true_mean"], color="black", lw=0.8, label="population value")
    ax_var.axhline(s["true_var"], color="black", lw=0.8)
    ax_var.axhline(s["true_var"] * (s["m"] - 1) / s["m"], color="grey", lw=0.8, ls="-.",
                   label=f"(m-1)/m of it, m = {s['m']}")
    ax_mean.set(ylabel="running mean", ylim=(-0.5, 6.0))
    ax_var.set(ylabel="running variance", ylim=(0.0, 12.0))
    ax_var.set_xlabel("training step")
    for ax in (ax_mean, ax_var):
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc="upper left")
    return fig


def running_stats_explorer(momentum: float = 0.1, seed: int = 0) -> Explorer:
    """A ``momentum`` slider over :func:`draw_running_statistics`."""
    controls = {"momentum": widgets.FloatSlider(
        value=momentum, min=0.0, max=1.0, step=0.01, description="momentum",
        readout_format=".2f", continuous_update=False, style=_SLIDER_STYLE,
        layout=_slider_layout())}
    return Explorer(controls, lambda **v: draw_running_statistics(seed=seed, **v))


# --- Other norms: which values share statistics -----------------------------------------------

#: The methods of the normalisation-axes explorer, in the order of its drop-down.
NORM_METHODS = ("batch", "layer", "instance", "group")


def draw_statistics_groups(labels, title: str = "") -> Figure:
    """One panel per sample: a ``C x (H*W)`` grid, each cell coloured by its statistics label.

    Args:
        labels: int array ``(N, C, H, W)``; equal labels mean shared mean and variance.
        title: the figure's title.
    """
    labels = np.asarray(labels)
    if labels.ndim != 4 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array (N, C, H, W); got dtype "
                         f"{labels.dtype} and shape {labels.shape}")
    n, c, h, w = labels.shape
    # Consecutive colours for the labels in order of appearance, so the picture only depends
    # on which values share statistics, not on the numbering.
    _, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape)
    count = int(dense.max()) + 1
    base = np.array([(*rgb, 1.0) for rgb in _palette(count)])
    fig = PngFigure(figsize=(2.0 + 1.6 * n, 0.6 + 0.32 * c), dpi=FIG_DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True))
    for sample, ax in enumerate(axes):
        ax.imshow(dense[sample].reshape(c, h * w), cmap=ListedColormap(base), vmin=-0.5,
                  vmax=count - 0.5, aspect="auto", interpolation="nearest")
        ax.set_xticks(np.arange(-0.5, h * w, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, c, 1), minor=True)
        ax.grid(which="minor", color="white", lw=1.5)
        ax.tick_params(which="both", length=0)
        ax.set_xticks([])
        ax.set_yticks(range(c))
        ax.set_title(f"sample {sample}", fontsize=9)
        ax.set_xlabel(f"H*W = {h * w} positions", fontsize=8)
    axes[0].set_ylabel("channel")
    fig.suptitle(f"{title}{': ' if title else ''}{count} sets of statistics", fontsize=10)
    return fig


def _palette(count: int):
    cmap = matplotlib.colormaps["tab20" if count > 10 else "tab10"]
    return [cmap(i % cmap.N)[:3] for i in range(count)]


def norm_axes_explorer(groups_fn: Callable[..., np.ndarray] | None = None,
                       shape=(3, 6, 2, 2), method: str = "batch") -> Explorer:
    """A method drop-down and a group-count slider over :func:`draw_statistics_groups`.

    Args:
        groups_fn: ``groups_fn(method, shape, num_groups)`` -> int labels of ``shape``, equal
            where values share one mean and variance; ``num_groups`` is passed for group norm
            only and ``None`` otherwise. The default is the library's
            :func:`bnbook.numpy_norms.statistics_groups`, the index sets its forward functions
            use, so the picture shows what the code computes.
        shape: ``(N, C, H, W)`` of the pictured input.
        method: the first method shown.
    """
    groups_fn = groups_fn or statistics_groups
    channels = shape[1]
    divisors = [d for d in range(1, channels + 1) if channels % d == 0]
    controls = {
        "method": widgets.Dropdown(options=NORM_METHODS, value=method, description="method",
                                   style=_SLIDER_STYLE),
        "num_groups": widgets.SelectionSlider(options=divisors, value=divisors[len(divisors) // 2],
                                              description="num_groups", style=_SLIDER_STYLE,
                                              layout=_slider_layout(), continuous_update=False),
    }
    controls["num_groups"].disabled = method != "group"

    def on_method(change):
        controls["num_groups"].disabled = change["new"] != "group"

    controls["method"].observe(on_method, names="value")

    def draw(method, num_groups):
        groups = num_groups if method == "group" else None
        labels = groups_fn(method, tuple(shape), groups)
        name = f"{method} norm" + (f", G = {groups}" if groups else "")
        return draw_statistics_groups(labels, title=name)

    return Explorer(controls, draw)

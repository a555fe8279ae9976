"""Tests of bnbook.widgets: what each explorer computes, against independent references
(PyTorch in float64, closed forms), what it draws, and that the widgets build and redraw
without a display."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from bnbook import widgets as w
from bnbook.numpy_norms import statistics_groups


# --- chapter 2: batch norm on a small batch ---------------------------------------------------

@pytest.mark.parametrize("batch_size, gamma, beta, eps", [
    (2, 1.0, 0.0, 1e-5), (16, -2.3, 1.7, 1e-3), (100, 0.4, -2.5, 1.0), (7, 3.0, 0.3, 1e-8)])
def test_small_batch_matches_torch(batch_size, gamma, beta, eps):
    r = w.small_batch_bn(batch_size, gamma, beta, eps, seed=3)
    x = torch.from_numpy(r.x.reshape(-1, 1))
    y_ref = F.batch_norm(x, None, None, torch.tensor([gamma], dtype=torch.float64),
                         torch.tensor([beta], dtype=torch.float64), training=True, eps=eps)
    np.testing.assert_allclose(r.y, y_ref.numpy().ravel(), rtol=1e-12, atol=1e-12)
    assert r.mu == pytest.approx(r.x.mean(), rel=1e-14)
    assert r.var == pytest.approx(r.x.var(), rel=1e-12)


@pytest.mark.parametrize("gamma, eps", [(2.0, 1e-5), (-0.5, 1e-3), (1.5, 0.5)])
def test_small_batch_predicted_moments_are_those_of_y(gamma, eps):
    r = w.small_batch_bn(32, gamma, 0.8, eps, seed=1)
    assert r.y.mean() == pytest.approx(r.y_mean, abs=1e-12)
    assert r.y.std() == pytest.approx(r.y_std, rel=1e-10)
    # A large eps shrinks the output: the predicted std is below |gamma| by the closed form.
    assert r.y_std == pytest.approx(abs(gamma) * np.sqrt(r.var / (r.var + eps)), rel=1e-12)


def test_small_batch_grows_by_adding_values():
    small, large = w.small_batch_bn(8, 1.0, 0.0, 1e-5), w.small_batch_bn(40, 1.0, 0.0, 1e-5)
    np.testing.assert_array_equal(large.x[:8], small.x)


@pytest.mark.parametrize("bad", [1, 0, 2.5])
def test_small_batch_refuses_batches_without_variance(bad):
    with pytest.raises(ValueError, match="batch_size"):
        w.small_batch_bn(bad, 1.0, 0.0, 1e-5)


# --- chapter 4: running statistics in two conventions ----------------------------------------

@pytest.mark.parametrize("momentum", [0.01, 0.1, 0.5, 1.0])
def test_pytorch_trace_matches_torch_batchnorm(momentum):
    trace = w.running_statistics_trace(momentum, "pytorch", seed=4, steps=40)
    bn = torch.nn.BatchNorm1d(1, momentum=momentum).double()
    batches = 3.0 + 2.0 * np.random.default_rng(4).standard_normal((40, 8, 1))
    for step, xb in enumerate(batches):
        bn(torch.from_numpy(xb))
        assert trace.mean[step] == pytest.approx(bn.running_mean.item(), rel=1e-12)
        assert trace.var[step] == pytest.approx(bn.running_var.item(), rel=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.9, 0.99])
def test_keras_trace_is_the_closed_form_average_of_biased_variances(momentum):
    steps, m = 25, 5
    trace = w.running_statistics_trace(momentum, "keras", seed=2, true_mean=-1.0,
                                       true_var=9.0, m=m, steps=steps)
    batches = -1.0 + 3.0 * np.random.default_rng(2).standard_normal((steps, m))
    for k in range(1, steps + 1):
        weights = (1 - momentum) * momentum ** (k - np.arange(1, k + 1))   # batch j's weight
        mean = momentum ** k * 0.0 + weights @ batches[:k].mean(axis=1)
        var = momentum ** k * 1.0 + weights @ batches[:k].var(axis=1)  # biased
        assert trace.mean[k - 1] == pytest.approx(mean, rel=1e-10, abs=1e-12)
        assert trace.var[k - 1] == pytest.approx(var, rel=1e-10)


def test_keras_momentum_is_one_minus_pytorch_momentum():
    # The same weights: identical means; variances differ by (m-1)/m once the initial
    # value's weight (1 - alpha)^k is taken out.
    alpha, m, steps = 0.05, 6, 60
    torch_trace = w.running_statistics_trace(alpha, "pytorch", seed=7, m=m, steps=steps)
    keras_trace = w.running_statistics_trace(1 - alpha, "keras", seed=7, m=m, steps=steps)
    np.testing.assert_allclose(keras_trace.mean, torch_trace.mean, rtol=1e-10)
    init = (1 - alpha) ** np.arange(1, steps + 1)
    np.testing.assert_allclose(keras_trace.var - init, (m - 1) / m * (torch_trace.var - init),
                               rtol=1e-9)


def test_trace_refuses_unknown_convention_and_momentum():
    with pytest.raises(ValueError, match="convention"):
        w.running_statistics_trace(0.1, "tensorflow")
    with pytest.raises(ValueError, match="momentum"):
        w.running_statistics_trace(1.5, "keras")


# --- the other norms: which values share statistics ------------------------------------------
# The explorer draws the labels of bnbook.numpy_norms.statistics_groups (tested with the
# library); here they are checked against PyTorch's norms, the reference the picture claims.

def _normalise_by_label(x, labels):
    # Normalise x within each label set with the set's own (biased) mean and variance.
    out = np.empty_like(x)
    for label in np.unique(labels):
        members = labels == label
        values = x[members]
        out[members] = (values - values.mean()) / np.sqrt(values.var() + 1e-5)
    return out


@pytest.mark.parametrize("method, num_groups, reference", [
    ("batch", None, lambda x: F.batch_norm(x, None, None, training=True, eps=1e-5)),
    ("layer", None, lambda x: F.layer_norm(x, x.shape[1:], eps=1e-5)),
    ("instance", None, lambda x: F.instance_norm(x, eps=1e-5)),
    ("group", 1, lambda x: F.group_norm(x, 1, eps=1e-5)),
    ("group", 2, lambda x: F.group_norm(x, 2, eps=1e-5)),
    ("group", 3, lambda x: F.group_norm(x, 3, eps=1e-5)),
    ("group", 6, lambda x: F.group_norm(x, 6, eps=1e-5)),
])
def test_the_pictured_label_sets_reproduce_torch_norms(method, num_groups, reference):
    shape = (3, 6, 2, 5)
    x = np.random.default_rng(0).normal(2.0, 3.0, size=shape) * np.arange(1, 7)[:, None, None]
    labels = statistics_groups(method, shape, num_groups)
    assert labels.shape == shape and np.issubdtype(labels.dtype, np.integer)
    expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_normalise_by_label(x, labels), expected, rtol=1e-10, atol=1e-10)


def test_the_explorer_draws_the_library_labels_by_default():
    explorer = w.norm_axes_explorer(shape=(2, 4, 1, 3), method="instance")
    shown = [np.asarray(ax.images[0].get_array()) for ax in explorer.figure().axes if ax.images]
    labels = statistics_groups("instance", (2, 4, 1, 3))
    assert len(shown) == 2
    for sample, panel in enumerate(shown):
        flat = labels[sample].reshape(4, 3)
        assert ((panel[:, :, None, None] == panel[None, None]) ==
                (flat[:, :, None, None] == flat[None, None])).all()
    assert len(np.unique(np.concatenate([p.ravel() for p in shown]))) == 8


def test_drawing_shows_the_label_sets():
    labels = statistics_groups("instance", (2, 3, 2, 2))
    fig = w.draw_statistics_groups(labels, title="instance norm")
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 2                            # one panel per sample
    for sample, ax in enumerate(axes):
        shown = np.asarray(ax.images[0].get_array())
        # the panel is C x (H*W); equal colours exactly where the labels are equal
        flat = labels[sample].reshape(3, 4)
        assert shown.shape == flat.shape
        assert ((shown[:, :, None, None] == shown[None, None]) ==
                (flat[:, :, None, None] == flat[None, None])).all()
    assert "6 sets of statistics" in fig.get_suptitle()


def test_drawing_refuses_labels_that_are_not_integers():
    with pytest.raises(ValueError, match="integer"):
        w.draw_statistics_groups(np.zeros((2, 3, 2, 2)))


# --- the widgets, built without a display -----------------------------------------------------

@pytest.mark.parametrize("factory, control, new_value", [
    (w.batch_norm_explorer, "gamma", 2.5),
    (w.batch_norm_explorer, "eps", 1e-1),
    (w.batch_norm_explorer, "batch_size", 100),
    (w.running_stats_explorer, "momentum", 0.9),
    (w.norm_axes_explorer, "method", "layer"),
])
def test_explorer_redraws_when_a_control_moves(factory, control, new_value):
    explorer = factory()
    first = bytes(explorer.image.value)
    assert first.startswith(b"\x89PNG")
    assert isinstance(explorer.figure(), Figure)
    explorer.controls[control].value = new_value
    assert explorer.values()[control] == new_value
    redrawn = bytes(explorer.image.value)
    assert redrawn.startswith(b"\x89PNG") and redrawn != first
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()


def test_norm_axes_explorer_asks_its_groups_function():
    calls = []

    def groups_fn(method, shape, num_groups):
        calls.append((method, shape, num_groups))
        return statistics_groups(method, shape, num_groups)

    explorer = w.norm_axes_explorer(groups_fn, shape=(2, 4, 1, 3))
    assert calls[-1] == ("batch", (2, 4, 1, 3), None)
    assert explorer.controls["num_groups"].disabled
    explorer.controls["method"].value = "group"
    assert not explorer.controls["num_groups"].disabled
    assert calls[-1] == ("group", (2, 4, 1, 3), explorer.controls["num_groups"].value)
    explorer.controls["num_groups"].value = 4
    assert calls[-1] == ("group", (2, 4, 1, 3), 4)
    assert explorer.controls["num_groups"].options == (1, 2, 4)


@pytest.mark.parametrize("draw", [w.draw_small_batch, w.draw_running_statistics,
                                  lambda: w.draw_statistics_groups(
                                      statistics_groups("layer", (2, 3, 2, 2)))])
def test_figures_show_as_png_without_pyplot(draw):
    # glue() stores what IPython's formatters return; a chapter may glue an explorer's view
    # before pyplot has drawn anything, so the figure carries its own PNG representation,
    # with the size to show it at (myst-nb writes it into the page's <img>).
    from IPython.core.formatters import format_display_data

    fig = draw()
    data, metadata = format_display_data(fig)
    assert data["image/png"].startswith(b"\x89PNG")
    assert metadata["image/png"] == dict(zip(("width", "height"), w.figure_display_size(fig)))


def test_first_view_figures_are_stored_at_twice_their_display_size():
    """The website shows an explorer's default view as a PngFigure: its PNG has twice the
    pixels of the size its metadata tells the page to show it at (sharp on HiDPI screens)."""
    import io

    from PIL import Image

    from bnbook.plots import FIG_DPI
    from bnbook.widgets import PngFigure, draw_small_batch

    fig = draw_small_batch()
    assert isinstance(fig, PngFigure)
    png, size = fig._repr_png_()
    pixels = Image.open(io.BytesIO(png)).size
    assert (size["width"], size["height"]) == (round(fig.get_figwidth() * FIG_DPI),
                                               round(fig.get_figheight() * FIG_DPI))
    assert pixels == (2 * size["width"], 2 * size["height"])

"""The figure helpers in bnbook.plots: each draws what its docstring says, on the caller's axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from bnbook.plots import (BN_GRAPH_EDGES, decision_grid, draw_bn_graph, plot_batch_size,  # noqa: E402
                          plot_lr_tolerance, plot_percentile_band, plot_placement)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


#: Batch norm's forward graph for one channel in the figure's labels: (input, user), written
#: out from the equations, independently of the library's BN_GRAPH_EDGES.
GRAPH_IN_LABELS = {
    (r"$x$", r"$\mu$"), (r"$x$", r"$\tilde x = x - \mu$"), (r"$\mu$", r"$\tilde x = x - \mu$"),
    (r"$\tilde x = x - \mu$", r"$\sigma^2$"), (r"$\tilde x = x - \mu$", r"$\hat x = \tilde x s$"),
    (r"$\sigma^2$", r"$s$"), (r"$s$", r"$\hat x = \tilde x s$"),
    (r"$\hat x = \tilde x s$", r"$z = \gamma \hat x$"), (r"$\gamma$", r"$z = \gamma \hat x$"),
    (r"$z = \gamma \hat x$", r"$y = z + \beta$"), (r"$\beta$", r"$y = z + \beta$"),
}


def _drawn_graph(ax):
    """The boxes ``{label: box}`` and the arrows ``[(tail label, head label, arrow)]`` drawn on
    ``ax``; each end of an arrow belongs to the box whose centre is nearest to it."""
    boxes = {t.get_text(): t for t in ax.texts if not isinstance(t, Annotation)}
    centres = {label: np.array(box.get_position()) for label, box in boxes.items()}

    def nearest(point):
        return min(centres, key=lambda label: np.linalg.norm(centres[label] - point))

    arrows = [(nearest(a.xyann), nearest(a.xy), a) for a in ax.texts if isinstance(a, Annotation)]
    return boxes, arrows


def test_bn_graph_draws_the_forward_graph_one_arrow_per_edge_from_input_to_user(ax):
    draw_bn_graph(ax)
    boxes, arrows = _drawn_graph(ax)
    assert len(boxes) == 10
    assert len(arrows) == len(BN_GRAPH_EDGES)
    assert {(tail, head) for tail, head, _ in arrows} == GRAPH_IN_LABELS


def test_bn_graph_sets_the_parameters_and_the_summed_gradients_apart(ax):
    draw_bn_graph(ax)
    boxes, arrows = _drawn_graph(ax)
    face = {label: mcolors.to_rgba(box.get_bbox_patch().get_facecolor())
            for label, box in boxes.items()}
    params = {r"$\gamma$", r"$\beta$"}
    # gamma and beta share a box colour that no other node has
    assert len({face[p] for p in params}) == 1
    assert all(face[label] != face[r"$\gamma$"] for label in set(boxes) - params)
    # the arrows of a node with two users (its gradient is a sum) share a colour that no
    # other arrow has
    users = {}
    for tail, _, _ in arrows:
        users[tail] = users.get(tail, 0) + 1
    two_users = {tail for tail, n in users.items() if n == 2}
    assert two_users == {r"$x$", r"$\tilde x = x - \mu$"}
    colour = {a: mcolors.to_rgba(a.arrow_patch.get_edgecolor()) for _, _, a in arrows}
    summed = {colour[a] for tail, _, a in arrows if tail in two_users}
    assert len(summed) == 1
    assert all(colour[a] not in summed for tail, _, a in arrows if tail not in two_users)


def test_bn_graph_arrows_point_from_input_to_user(ax):
    draw_bn_graph(ax)
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    # The graph runs left to right: no arrow head lies left of its tail.
    for a in arrows:
        assert a.xy[0] >= a.xyann[0] - 1e-9


def test_placement_draws_one_line_per_seed_and_the_mean(ax):
    acc = {"a": np.array([0.80, 0.82, 0.81]), "b": np.array([0.78, 0.79, 0.80]),
           "c": np.array([0.70, 0.75, 0.72])}
    plot_placement(ax, acc, ["A", "B", "C"])
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    mean_line, caps, _ = bars.lines
    seed_lines = [ln for ln in ax.lines if ln is not mean_line and ln not in caps]
    assert len(seed_lines) == 3
    np.testing.assert_allclose(seed_lines[1].get_ydata(), [82, 79, 75])
    np.testing.assert_allclose(np.asarray(bars.lines[0].get_ydata(), float), [100 * acc[k].mean() for k in acc])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    assert ax.get_ylabel() == "test accuracy (%)"
    with pytest.raises(ValueError):
        plot_placement(ax, acc, ["A", "B"])


def test_batch_size_draws_one_errorbar_curve_per_norm_in_percent(ax):
    bss = [2, 8, 128]
    accuracy = {"batch": [np.array([0.1, 0.2]), np.array([0.8, 0.82]), np.array([0.85, 0.86])],
                "none": [np.array([0.8, 0.8]), np.array([0.81, 0.83]), np.array([0.84, 0.86])]}
    plot_batch_size(ax, bss, accuracy, {"batch": "batch norm", "none": "no normalisation"})
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2
    np.testing.assert_allclose(np.asarray(bars[0].lines[0].get_ydata(), float), [15, 81, 85.5])
    np.testing.assert_allclose(np.asarray(bars[1].lines[0].get_xdata(), float), bss)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["batch norm", "no normalisation"]
    assert ax.get_xscale() == "log" and "batch size" in ax.get_xlabel()


def test_lr_tolerance_marks_diverged_learning_rates(ax):
    lrs = [0.1, 1.0, 3.0]
    summary = {("bn", 0.1): (0.8, ["trained"]), ("bn", 1.0): (0.7, ["trained"]),
               ("bn", 3.0): (0.1, ["stalled"]),
               ("no-bn", 0.1): (0.82, ["trained"]), ("no-bn", 1.0): (0.5, ["trained", "diverged"]),
               ("no-bn", 3.0): (np.nan, ["diverged"])}
    plot_lr_tolerance(ax, lrs, summary)
    curves = [ln for ln in ax.lines if ln.get_marker() != "x"]
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(curves) == 2
    np.testing.assert_allclose(curves[0].get_ydata(), [80, 70, 10])
    # BN never diverged: its cross line is empty; without BN, crosses at 1.0 and 3.0.
    assert [list(c.get_xdata()) for c in crosses] == [[], [1.0, 3.0]]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["with BN", "without BN", "without BN: a run diverged"]
    assert ax.get_ylim() == (0, 100)


def test_percentile_band_checks_its_shape(ax):
    steps = np.arange(5)
    p = np.stack([steps - 1.0, steps * 1.0, steps + 1.0], axis=1)
    plot_percentile_band(ax, steps, p, "tab:blue", "run")
    assert len(ax.lines) == 3 and len(ax.collections) == 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), steps)
    with pytest.raises(ValueError):
        plot_percentile_band(ax, steps, p[:, :2], "tab:blue", "run")


def test_decision_grid_evaluates_the_classifier_on_the_grid():
    xx, yy, logits = decision_grid(lambda p: p[:, 0] - p[:, 1], (0.0, 1.0, 0.0, 2.0), resolution=5)
    assert xx.shape == yy.shape == logits.shape == (5, 5)
    np.testing.assert_allclose(logits, xx - yy, atol=1e-6)
    with pytest.raises(ValueError):
        decision_grid(lambda p: p[:, 0], (1.0, 0.0, 0.0, 1.0))

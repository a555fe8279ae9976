"""The why-BN figure helpers draw what they say from small hand-made records."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bnbook.experiments.why import figures  # noqa: E402


def fig1_run(shift):
    steps = [0, 10, 20]
    pct = np.array([[[-1, -2], [0, 0], [1, 2]]] * 3, dtype=float) + shift   # (T, 3, units)
    return {"steps": steps, "test_acc": [0.1, 0.5, 0.8], "percentiles": pct.tolist()}


def test_plot_figure1_names_the_data_set_and_shares_the_scale():
    fig, axes = plt.subplots(1, 4)
    runs = {"plain": fig1_run(0.0), "bn": fig1_run(5.0), "noisy-bn": fig1_run(-5.0)}
    figures.plot_figure1(axes, runs, unit=1, dataset="MNIST")
    assert all("MNIST" in ax.get_title() for ax in axes)
    assert len(axes[0].get_lines()) == 3 and axes[0].get_xscale() == "log"
    assert list(axes[0].get_lines()[0].get_xdata()) == [10, 20]          # step 0 left out
    assert axes[1].get_ylim() == axes[2].get_ylim() == axes[3].get_ylim()
    assert axes[2].get_ylim()[1] >= 7.0 and axes[3].get_ylim()[0] <= -7.0
    plt.close(fig)


def test_plot_scale_draws_the_equilibrium_of_each_decay():
    run = {"steps": [0, 10], "weight_norm": [[1.0, 2.0], [1.5, 2.5]],
           "rms_angle": [[None, None], [0.05, 0.06]]}
    fig, axes = plt.subplots(1, 2)
    figures.plot_scale(axes, {0.0: run, 0.01: run}, lr=0.5, layer=1, dataset="Fashion-MNIST")
    dashed = [l for l in axes[1].get_lines() if l.get_linestyle() == "--"]
    assert len(dashed) == 1 and abs(dashed[0].get_ydata()[0] - 0.1) < 1e-3
    assert list(axes[0].get_lines()[0].get_ydata()) == [2.0, 2.5]
    plt.close(fig)

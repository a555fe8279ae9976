"""The chapter's numbers from stored results (bnbook.why.report), on small hand-made results."""

import math

import numpy as np
import pytest

from bnbook.why import report
from bnbook.why.scale import equilibrium_angle


def test_steps_to_accuracy_means_staying_above():
    steps = [0, 10, 20, 30, 40]
    assert report.steps_to_accuracy(steps, [0.1, 0.9, 0.7, 0.85, 0.9], 0.8) == 30
    assert report.steps_to_accuracy(steps, [0.9] * 5, 0.8) == 0
    assert report.steps_to_accuracy(steps, [0.1, 0.9, 0.9, 0.9, 0.7], 0.8) is None


def test_typical_unit_is_the_median_drifter():
    # unit drifts 0, 3, 1, 2, 4 -> sorted 0,1,2,3,4 -> the middle one drifts 2: unit 3
    median = np.array([[0, 0, 0, 0, 0], [0, 3, 1, 2, 4]], dtype=float)
    pct = np.stack([median - 1, median, median + 1], axis=1)     # (T, 3, units)
    assert report.typical_unit({"percentiles": pct.tolist()}) == 3


def measurement(step, beta, rel, cos=0.9, losses=(1.0, 2.0)):
    return {"step": step, "loss0": 1.0, "grad_norm": 2.0, "losses": list(losses),
            "grad_diffs": [0.5, 1.0], "loss_range": 1.0, "grad_diff_max": 1.0, "beta": beta,
            "ics": [{"l2": 0.0, "rel": 0.0, "cos": 1.0}, {"l2": 1.0, "rel": rel, "cos": cos}]}


def test_landscape_table_counts_overflow_as_infinite_and_skips_undefined_ics():
    ms = [measurement(0, 1.0, 0.2), measurement(5, None, None, None),
          measurement(10, 3.0, 0.4)]
    result = {"runs": {"batch/lr0.1/seed0": {"measurements": ms, "test_acc": [0.5, 0.6],
                                             "diverged": False, "layers": ["a", "b"]}}}
    t = report.landscape_table(result)["batch", 0.1]
    assert t["beta"] == 3.0                         # median of 1, 3, inf
    assert t["ics_rel"] == [0.0, pytest.approx(0.3)]  # median of 0.2, 0.4 (None left out)
    assert t["rel_grad_diff"] == 0.5 and t["final_acc"] == 0.6


def test_scale_summary():
    run = {"weight_norm": [[2.0, 4.0], [3.0, 2.0]], "rms_angle": [[None, None], [0.1, 0.2]],
           "norm_growth_predicted": [[4.0, 16.0], [9.0, 4.0]], "test_acc": [0.1, 0.8]}
    out = report.scale_summary({"settings": {"lr": 0.5}, "runs": {"wd0": run, "wd0.01": run}})
    assert out[0.0]["norm_growth"] == [1.5, 0.5] and out[0.0]["growth_law_error"] == 0.0
    assert out[0.0]["equilibrium"] is None and out[0.0]["rms_angle_end"] == [0.1, 0.2]
    assert out[0.01]["equilibrium"] == equilibrium_angle(0.5, 0.01)
    assert out[0.01]["growth_law_error"] is None and math.isclose(out[0.01]["final_acc"], 0.8)


def test_figure1_and_noisy_summaries_average_over_seeds():
    mv = {"location_shift": 1.0, "location_shift_rel": 1.0, "spread_change": 1.0,
          "location_range": 1.0}
    run = {"steps": [0, 10], "test_acc": [0.1, 0.9], "movement": mv, "movement_per_update": mv,
           "spread_start_median": 1.0, "spread_end_median": 2.0, "median_drift": 0.5}
    other = {**run, "test_acc": [0.1, 0.7]}
    s = report.figure1_summary({"runs": {"bn/seed0": run, "bn/seed1": other}})["bn"]
    assert s["final_acc"] == pytest.approx(0.8) and s["steps_to_target"] == [10, None]
    cnn = {"test_acc": [0.5], "epoch_train_loss": [1.0], "diverged": False,
           "movement": [mv] * 4, "movement_per_update": [mv] * 4}
    c = report.noisy_cnn_summary({"runs": {"none/seed0": cnn, "none/seed1": {**cnn,
                                                                            "test_acc": [0.7]}}})
    assert c["none"]["final_acc"] == pytest.approx(0.6) and not c["none"]["diverged"]
    assert c["none"]["acc_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_noisy_cnn_epochs_keeps_every_seed_and_epoch():
    runs = {"none/seed0": {"test_acc": [0.1, 0.2]}, "none/seed1": {"test_acc": [0.3, 0.4]},
            "batch/seed0": {"test_acc": [0.5, 0.6]}}
    out = report.noisy_cnn_epochs({"runs": runs})
    assert out["none"]["seeds"] == [0, 1] and out["batch"]["seeds"] == [0]
    np.testing.assert_array_equal(out["none"]["test_acc"], [[0.1, 0.2], [0.3, 0.4]])


def test_probe_maxima_finds_where_beta_and_the_gradient_change_peak():
    etas = [0.1, 0.2, 0.4]
    at_small = {"grad_norm": 1.0, "grad_diffs": [0.5, 0.8, 1.2]}    # ratios 5, 4, 3
    at_large = {"grad_norm": 1.0, "grad_diffs": [0.1, 0.4, 1.6]}    # ratios 1, 2, 4
    overflow = {"grad_norm": 1.0, "grad_diffs": [0.1, None, 1.0]}
    run = {"etas": etas, "measurements": [at_small, at_large, at_small, overflow]}
    out = report.probe_maxima({"runs": {"batch/lr0.1/seed0": run}})["batch", 0.1]
    assert (out["n"], out["beta_at_smallest"], out["diff_at_largest"]) == (3, 2, 3)
    assert (out["smallest"], out["largest"]) == (0.1, 0.4)

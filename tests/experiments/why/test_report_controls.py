"""The control experiments' summaries (bnbook.experiments.why.report_controls) on hand-made results."""

import math

import pytest

from bnbook.experiments.why.report_controls import (curves_over_seeds, filter_angle_summary,
                                        sharpness_summary)


def test_curves_over_seeds_cover_the_points_every_seed_reached():
    result = {"runs": {"bn/seed0": {"test_acc": [0.2, 0.4, 0.6]},
                       "bn/seed1": {"test_acc": [0.4, 0.6]},
                       "none/seed0": {"test_acc": [0.1, None]}}}
    out = curves_over_seeds(result)
    assert out["bn"]["mean"] == pytest.approx([0.3, 0.5])
    assert out["bn"]["min"] == [0.2, 0.4] and out["bn"]["max"] == [0.4, 0.6]
    assert out["bn"]["per_seed"][0] == [0.2, 0.4, 0.6]
    assert out["none"]["mean"] == [0.1, None]


def test_sharpness_is_taken_over_the_second_half_in_units_of_two_over_lr():
    def run(values, lr):
        return {"steps": 400, "two_over_lr": 2 / lr, "diverged": False,
                "measurements": [{"step": s, "lambda_max": v, "grad_curvature": v / 2}
                                 for s, v in zip([0, 200, 300, 400], values)]}
    result = {"runs": {"batch/lr0.1/seed0": run([1.0, 10.0, 20.0, 30.0], 0.1),
                       "batch/lr0.1/seed1": run([1.0, 16.0, 18.0, 22.0], 0.1)}}
    out = sharpness_summary(result)["batch/lr0.1"]
    assert out["lambda_max_x_lr_over_2"]["per_seed"] == pytest.approx([1.0, 0.9])
    assert out["lambda_max_x_lr_over_2"]["median"] == pytest.approx(0.95)
    assert out["grad_curvature_x_lr_over_2"]["max"] == pytest.approx(0.5)
    assert out["diverged"] == [False, False]


def test_filter_angle_ratios_to_both_predictions():
    pm, pp = math.sqrt(2 * 0.05 * 0.01 / 1.9), math.sqrt(2 * 0.05 * 0.01)
    runs = {f"momentum/wd0.01/seed{s}": {"window_median": [pm * f, pm * f, pm, pm],
                                          "predicted_momentum": pm, "predicted_plain": pp}
            for s, f in ((0, 1.0), (1, 1.2))}
    out = filter_angle_summary({"runs": runs})["momentum/wd0.01"]
    assert out["ratio_momentum"]["per_seed"] == pytest.approx([1.0, 1.1])
    assert out["ratio_plain"]["median"] == pytest.approx(1.05 * pm / pp)
    assert out["predicted_plain"] == pytest.approx(pp)

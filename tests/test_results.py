"""Helpers that read and summarise the CIFAR-10 result files (bnbook.results)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from bnbook.models import keras_cnn
from bnbook.results import (check_run, first_epoch_reaching, layer_summary, load_run_if_present,
                            markdown_table, max_history_difference, run_status, summarize_run)


def make_result(val_acc, epochs_planned=None, finished="2026-01-01T00:00:00+00:00"):
    rng = np.random.default_rng(len(val_acc))
    history = [{"epoch": i + 1, "train_loss": float(2.0 - 0.1 * i),
                "train_acc": float(min(1.0, a + 0.05)), "val_loss": float(2.1 - 0.1 * i),
                "val_acc": float(a), "seconds": float(100 + rng.uniform(-5, 5))}
               for i, a in enumerate(val_acc)]
    return {"run": "r", "model": "bn",
            "config": {"epochs": epochs_planned or len(val_acc)},
            "provenance": {"finished": finished}, "history": history}


def test_first_epoch_reaching_and_summary_against_a_hand_count():
    val = [0.31, 0.52, 0.69, 0.70, 0.74, 0.73, 0.74]
    result = make_result(val)
    assert first_epoch_reaching(result["history"], 0.70) == 4  # >=, not >
    assert first_epoch_reaching(result["history"], 0.75) is None
    s = summarize_run(result, thresholds=(0.5, 0.7, 0.9))
    assert s["final_val_acc"] == 0.74 and s["final_epoch"] == 7
    assert s["best_val_acc"] == 0.74 and s["best_epoch"] == 5  # first of the tied maxima
    assert s["first_epoch_at"] == {0.5: 2, 0.7: 4, 0.9: None}
    assert s["median_seconds"] == pytest.approx(sorted(h["seconds"] for h in result["history"])[3])
    assert s["min_val_loss"] == pytest.approx(2.1 - 0.6)
    assert s["complete"] and s["label"] == "complete"


def test_partial_runs_are_labelled():
    assert run_status(make_result([0.4, 0.5], epochs_planned=50, finished=None))["label"] == \
        "partial: 2 of 50 epochs"
    # all epochs present but no finish time: still partial (the process may have died)
    assert not run_status(make_result([0.4, 0.5], finished=None))["complete"]
    with pytest.raises(ValueError, match="no finished epoch"):
        summarize_run(make_result([], epochs_planned=50, finished=None))


def test_check_run_rejects_malformed_histories():
    good = make_result([0.3, 0.4])
    check_run(good)
    bad = make_result([0.3, 0.4])
    bad["history"][1]["epoch"] = 3
    with pytest.raises(ValueError, match="expected 2"):
        check_run(bad)
    pct = make_result([30.0, 40.0])
    with pytest.raises(ValueError, match="fraction"):
        check_run(pct)
    with pytest.raises(ValueError, match="missing keys"):
        check_run({"run": "x", "history": []})
    with pytest.raises(ValueError, match="fraction"):
        first_epoch_reaching(good["history"], 70)


def test_load_run_if_present(tmp_path):
    assert load_run_if_present(tmp_path / "absent.json") is None
    path = tmp_path / "r.json"
    path.write_text(json.dumps(make_result([0.2, 0.3])))
    assert load_run_if_present(path)["history"][1]["val_acc"] == 0.3
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        load_run_if_present(tmp_path / "broken.json")


def test_max_history_difference_uses_common_epochs():
    a, b = make_result([0.3, 0.5, 0.6])["history"], make_result([0.32, 0.45])["history"]
    n, d = max_history_difference(a, b)
    assert n == 2 and d == pytest.approx(0.05)


def test_markdown_table_shape_and_escaping():
    text = markdown_table(["a", "b"], [[1, "x|y"], [2.5, "z"]], align="lr")
    lines = text.splitlines()
    assert lines[0] == "| a | b |" and lines[1] == "| :--- | ---: |"
    assert lines[2] == "| 1 | x\\|y |"
    with pytest.raises(ValueError, match="row 0"):
        markdown_table(["a", "b"], [[1]])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_layer_summary_counts_parameters_and_leaves_state_alone(batch_norm):
    torch.manual_seed(0)
    model = keras_cnn(batch_norm=batch_norm).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = layer_summary(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert rows[-1]["output_shape"] == (10,)
    n_bn = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
    assert sum(r["name"].startswith("BatchNorm") for r in rows) == n_bn
    assert sum(r["buffers"] for r in rows) == 2 * sum(
        m.num_features for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))

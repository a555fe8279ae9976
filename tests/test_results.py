"""The result schema (write_result / read_result / rerun) and the helpers that read and
summarise the CIFAR-10 result files (bnbook.results)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from data_helpers import sample_provenance

from bnbook import results
from bnbook.models import keras_cnn
from bnbook.provenance import (MIGRATABLE_NULL, PROVENANCE_FIELDS, REPO_ROOT, RESULTS_DIR,
                               check_provenance, collect_provenance, now_iso)
from bnbook.results import (check_run, first_epoch_reaching, layer_summary, load_run_if_present,
                            markdown_table, max_history_difference, parse_recorded_command,
                            read_result, run_status, summarize_run, write_result)


def make_result(val_acc, epochs_planned=None, finished="2026-01-01T00:00:00+00:00"):
    rng = np.random.default_rng(len(val_acc))
    history = [{"epoch": i + 1, "train_loss": float(2.0 - 0.1 * i),
                "train_acc": float(min(1.0, a + 0.05)), "val_loss": float(2.1 - 0.1 * i),
                "val_acc": float(a), "seconds": float(100 + rng.uniform(-5, 5))}
               for i, a in enumerate(val_acc)]
    return {"run": "r", "model": "bn",
            "config": {"epochs": epochs_planned or len(val_acc)},
            "provenance": sample_provenance(finished=finished,
                                            wall_seconds=None if finished is None else 60.0),
            "history": history}


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


# --- bnbook.experiments.cifar.report: the chapter's numbers and tables -----------------------------------

import math  # noqa: E402

from bnbook.experiments.cifar import report  # noqa: E402
from bnbook.experiments.cifar import speed as cifar_speed  # noqa: E402
from bnbook.models import BASELINE_PARAMS  # noqa: E402
from bnbook.results import CIFAR10_RESULTS_DIR, CIFAR10_SPEED_RESULT  # noqa: E402


def make_run(model, val_acc, train_acc=None, val_loss=None, train_loss=None, seed=7, **config):
    """A complete synthetic result of ``model`` with the given per-epoch values."""
    n = len(val_acc)
    result = make_result(val_acc)
    for i, h in enumerate(result["history"]):
        if train_acc is not None:
            h["train_acc"] = train_acc[i]
        if val_loss is not None:
            h["val_loss"] = val_loss[i]
        if train_loss is not None:
            h["train_loss"] = train_loss[i]
    result.update(run=f"{model}-{seed}", model=model)
    result["config"] = {"epochs": n, "model": model, "seed": seed, **config}
    result["provenance"] = sample_provenance(precision="bf16")
    return result


def stored(name):
    return report.load_expected_run(CIFAR10_RESULTS_DIR / name)


def test_merge_layer_lists_aligns_bn_and_dropout_rows():
    summaries = {m: layer_summary(keras_cnn(batch_norm=(m == "bn"))) for m in report.MODELS}
    merged = report.merge_layer_lists(summaries["baseline"], summaries["bn"])
    names = [(row["name"], pb is None, pn is None) for row, pb, pn in merged]
    # every BN row exists only in the BN network, every dropout row only in the baseline
    assert all(pb and not pn for n, pb, pn in names if n.startswith("BatchNorm"))
    assert all(pn and not pb for n, pb, pn in names if n == "Dropout")
    assert sum(n.startswith("BatchNorm") for n, _, _ in names) == 6
    assert sum(n == "Dropout" for n, _, _ in names) == 3
    assert len(merged) == len(summaries["bn"]) + 3
    # a BN row first, straight after the first convolution, before its ReLU
    assert [n for n, _, _ in names[:3]] == ["Conv2d", "BatchNorm2d", "ReLU"]
    counts = report.parameter_counts(summaries)
    assert counts["baseline"] == BASELINE_PARAMS == 1250858
    assert counts["extra"] == counts["running"] == 2 * (32 + 32 + 64 + 64 + 512 + 10)
    assert counts["dense_share"] == pytest.approx(100 * (2304 * 512 + 512) / counts["bn"])
    table = report.architecture_table(summaries).splitlines()
    assert table[2] == "| Conv2d 3→32, 3×3, same | 32 × 32 × 32 | 896 | 896 |"
    assert table[3] == "| BatchNorm2d(32) | 32 × 32 × 32 | — | 64 |"
    assert table[-1] == "| **total trainable** |  | **1,250,858** | **1,252,286** |"
    with pytest.raises(ValueError, match="cannot align"):
        report.merge_layer_lists(summaries["baseline"][:-1], summaries["bn"][:2])


def test_load_expected_run_checks_the_configuration(tmp_path):
    path = tmp_path / "bn.json"
    path.write_text(json.dumps(make_run("bn", [0.3, 0.4], lr=1e-3)))
    assert report.load_expected_run(path, config={"model": "bn", "lr": 1e-3})["model"] == "bn"
    with pytest.raises(ValueError, match="lr"):
        report.load_expected_run(path, config={"lr": 1e-4})
    with pytest.raises(ValueError, match="precision"):
        report.load_expected_run(path, provenance={"precision": "fp32"})
    with pytest.raises(FileNotFoundError):
        report.load_expected_run(tmp_path / "absent.json")
    assert report.load_expected_run(tmp_path / "absent.json", missing_ok=True) is None


def test_curve_statistics_against_a_hand_count():
    runs = {"baseline": make_run("baseline", [0.30, 0.50, 0.55, 0.60, 0.58],
                                 train_acc=[0.2, 0.4, 0.5, 0.55, 0.56],
                                 val_loss=[2.0, 1.5, 1.4, 1.2, 1.3]),
            "bn": make_run("bn", [0.25, 0.55, 0.62, 0.61, 0.70],
                           train_acc=[0.3, 0.6, 0.7, 0.75, 0.80],
                           val_loss=[1.9, 1.3, 1.0, 1.1, 1.2])}
    s = report.curve_statistics(runs, jitter_epochs=3)
    assert s["common_epochs"] == 5
    assert s["gap_best_common"] == pytest.approx(10.0)
    assert s["bn_match_epoch"] == 3            # first BN epoch >= the baseline's best, 0.60
    assert s["ahead_from"] == 2                # behind in epoch 1, ahead from epoch 2 on
    assert s["train_val_gap"]["baseline"] == pytest.approx(-2.0)
    assert s["train_val_gap"]["bn"] == pytest.approx(10.0)
    assert s["min_val_loss_epoch"] == {"baseline": 4, "bn": 3}
    assert s["jitter_n"] == 3
    assert s["jitter"]["bn"] == pytest.approx(100 * np.std([0.07, -0.01, 0.09], ddof=1))
    runs["bn"]["history"][-1]["val_acc"] = 0.5     # behind again at the last epoch
    assert report.curve_statistics(runs)["ahead_from"] is None


def test_curve_statistics_on_the_stored_long_runs():
    runs = {"baseline": stored("baseline-lr0.0001-e50-seed7-bf16.json"),
            "bn": stored("bn-lr0.001-e50-seed7-bf16.json")}
    s = report.curve_statistics(runs)
    summary = {m: summarize_run(r) for m, r in runs.items()}
    assert s["common_epochs"] == 50
    assert s["gap_best_common"] == pytest.approx(
        100 * (summary["bn"]["best_val_acc"] - summary["baseline"]["best_val_acc"]))
    # the first BN epoch at the baseline's best, found by a plain scan
    best = summary["baseline"]["best_val_acc"]
    assert s["bn_match_epoch"] == next(h["epoch"] for h in runs["bn"]["history"]
                                       if h["val_acc"] >= best)


def test_seed_comparison_and_table():
    first = {"baseline": make_run("baseline", [0.5, 0.6, 0.62]), "bn": make_run("bn", [0.6, 0.7, 0.72])}
    second = {"baseline": make_run("baseline", [0.5, 0.65, 0.63], seed=8),
              "bn": make_run("bn", [0.6, 0.75, 0.70], seed=8)}
    c = report.seed_comparison(first, second)
    assert c["epoch"] == 3
    assert c["diff"]["baseline"]["final"] == pytest.approx(1.0)
    assert c["diff"]["baseline"]["best"] == pytest.approx(3.0)
    assert c["diff"]["bn"]["final"] == pytest.approx(-2.0)
    assert c["diff"]["bn"]["best"] == pytest.approx(3.0)
    assert c["lead_first"] == pytest.approx(10.0) and c["lead_second"] == pytest.approx(7.0)
    assert c["spread"] == pytest.approx(2.0)
    table = report.seed_table({7: first, 8: {"baseline": second["baseline"], "bn": None}},
                              {"baseline": "base", "bn": "BN"}).splitlines()
    assert table[2] == "| base | 7 | complete | 3 | 62.0 | 62.0 |"
    assert table[-1] == "| BN | 8 | not run yet | — | — | — |"


def test_anchor_table_rows():
    quoted = [{"source": "A", "kind": "best", "epochs": 50, "baseline": 77.0, "bn": 87.0,
               "hardware": "GPU", "s_per_epoch": "25"}]
    ours = {"us": {"baseline": summarize_run(make_run("baseline", [0.5, 0.7, 0.6])),
                   "bn": summarize_run(make_run("bn", [0.6, 0.8, 0.75]))}}
    rows = report.anchor_table(quoted, ours, "cpu").splitlines()
    assert rows[2] == "| A (quoted) | best | 50 | 77.0 | 87.0 | +10.0 | GPU | 25 |"
    assert rows[3].startswith("| us | final | 3 | 60.0 | 75.0 | +15.0 | cpu |")
    assert rows[4].startswith("| us | best | 3 | 70.0 | 80.0 | +10.0 | cpu |")


def test_sweep_statistics_on_synthetic_runs():
    sweep = {("baseline", 1e-4): make_run("baseline", [0.3, 0.4]),
             ("baseline", 1e-3): make_run("baseline", [0.4, 0.5]),
             ("baseline", 1e-2): make_run("baseline", [0.1, 0.1],
                                          train_loss=[math.log(10), math.log(10) + 0.001]),
             ("bn", 1e-4): make_run("bn", [0.45, 0.55]),
             ("bn", 1e-3): make_run("bn", [0.5, 0.6]),
             ("bn", 1e-2): make_run("bn", [0.5])}              # partial: left out
    s = report.sweep_statistics(sweep, epochs=2)
    assert s["complete"] == 5
    assert s["acc"]["baseline", 1e-3] == pytest.approx(50.0)
    assert s["lead"] == pytest.approx({1e-4: 15.0, 1e-3: 10.0})
    assert s["best_lr"] == {"baseline": 1e-3, "bn": 1e-3}
    assert s["worst_lr"] == {"baseline": 1e-2, "bn": 1e-4}
    assert s["stuck"] == [("baseline", 1e-2)]
    # near chance but with a falling loss: slow, not stuck
    slow = {("bn", 1e-4): make_run("bn", [0.1, 0.11], train_loss=[2.2, 2.0])}
    assert report.sweep_statistics(slow, epochs=2)["stuck"] == []
    table = report.lr_sweep_table(sweep, (1e-4, 1e-3, 1e-2), 2).splitlines()
    assert table[-1] == "| 0.01 | 10.0 → 10.0 | 50.0 (partial: 1 of 2) |"


def test_sweep_on_the_stored_files():
    lrs = (1e-4, 1e-3, 1e-2)
    sweep = report.load_lr_sweep(CIFAR10_RESULTS_DIR, lrs, 3)
    assert set(sweep) == {(m, lr) for m in report.MODELS for lr in lrs}
    s = report.sweep_statistics(sweep, 3)
    for (m, lr), acc in s["acc"].items():
        assert acc == pytest.approx(100 * sweep[m, lr]["history"][2]["val_acc"])
    assert all(("bn", lr) in s["acc"] for lr in lrs)


def test_speed_facts_pick_the_eager_twin():
    rows = [
        {"model": "bn", "precision": "fp32", "channels_last": False, "threads": 2,
         "compile": False, "median_step_ms": 30.0, "seconds_per_epoch": 50.0, "first_step_s": 0.1},
        {"model": "bn", "precision": "bf16", "channels_last": True, "threads": 2,
         "compile": False, "median_step_ms": 15.0, "seconds_per_epoch": 25.0, "first_step_s": 0.1},
        {"model": "bn", "precision": "bf16", "channels_last": False, "threads": 2,
         "compile": False, "median_step_ms": 20.0, "seconds_per_epoch": 33.0, "first_step_s": 0.1},
        {"model": "bn", "precision": "bf16", "channels_last": True, "threads": 2,
         "compile": True, "median_step_ms": 24.0, "seconds_per_epoch": 40.0, "first_step_s": 12.0},
        {"model": "baseline", "precision": "bf16", "channels_last": True, "threads": 2,
         "compile": True, "error": "boom"}]
    bench = {"rows": rows, "best": {"bn": rows[1]}, "load_average_1min_before_after": [1.0, 2.0],
             "concurrent_two_single_thread_processes": {"seconds_per_epoch_each": [35.0, 37.0]}}
    f = cifar_speed.speed_facts(bench)
    assert f["compiled"] == {"bn": {"eager_ms": 15.0, "compiled_ms": 24.0, "first_step_s": 12.0}}
    assert f["compile_failed"] == ["baseline"]
    assert f["pair_seconds"] == {"baseline": 35.0, "bn": 37.0}
    table = cifar_speed.speed_table(bench).splitlines()
    assert table[3].endswith("| 15.0 | 25 | 2.00× |")     # 50 s / 25 s against fp32 contiguous
    assert "failed: boom" in table[-1]


def test_speed_facts_on_the_stored_benchmark():
    bench = read_result(CIFAR10_SPEED_RESULT)
    f = cifar_speed.speed_facts(bench)
    for m, c in f["compiled"].items():
        row = next(r for r in bench["rows"] if r["model"] == m and r.get("compile")
                   and "seconds_per_epoch" in r)
        assert c["compiled_ms"] == row["median_step_ms"]
        assert c["eager_ms"] != c["compiled_ms"]


def test_precision_statistics_against_numpy():
    pairs = {"baseline": {}, "bn": {}}
    deltas = [0.01, -0.02, 0.03, 0.00]
    for seed, d in enumerate(deltas):
        v32 = 0.5 + 0.01 * seed
        pairs["bn"][seed] = {"fp32": make_run("bn", [0.3, v32]),
                             "bf16": make_run("bn", [0.3, v32 + d])}
    pairs["baseline"] = {0: pairs["bn"][0]}                 # too few seeds: left out
    s = report.precision_statistics(pairs)
    assert set(s) == {("bn", "val_acc"), ("bn", "train_loss")}
    v = s["bn", "val_acc"]
    assert v["n"] == 4
    assert v["mean"] == pytest.approx(100 * np.mean(deltas))
    assert v["se"] == pytest.approx(100 * np.std(deltas, ddof=1) / 2)
    assert v["sd_fp32"] == pytest.approx(100 * np.std([0.5, 0.51, 0.52, 0.53], ddof=1))
    assert not v["shift"]
    assert s["bn", "train_loss"]["mean"] == 0.0
    assert "no detectable shift" in report.precision_summary_table(s)


def test_precision_pairs_on_the_stored_files():
    pairs = report.load_precision_pairs(CIFAR10_RESULTS_DIR)
    for m in report.MODELS:
        assert len(pairs[m]) >= 3
        for seed, p in pairs[m].items():
            assert set(p) == {"fp32", "bf16"}
            assert all(r["config"]["seed"] == seed and r["model"] == m for r in p.values())
            assert all(r["provenance"]["precision"] == prec for prec, r in p.items())
    assert len(report.precision_pair_table(pairs).splitlines()) == 2 + sum(
        len(pairs[m]) for m in report.MODELS)


def test_channel_statistics():
    x = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    x[0, ..., 0] = 255                                      # red: half the pixels white
    s = report.channel_statistics(x)
    assert s["mean"] == pytest.approx([0.5, 0.0, 0.0])
    assert s["std"] == pytest.approx([0.5, 0.0, 0.0])       # population s.d.
    assert s["mean_shift"] == pytest.approx(0.4822)
    assert not s["lower_contrast"]                          # red's 0.5 exceeds 0.2470
    assert report.channel_table(s, "toy").splitlines()[2] == \
        "| red | 0.5000 | 0.4914 | 0.5000 | 0.2470 |"


# --- the one schema: write_result, read_result, rerun ---------------------------------------

def test_a_command_todays_parser_rejects_is_reported():
    with pytest.raises(ValueError, match="rejects"):
        parse_recorded_command("python -m bnbook.cifar --model resnet")  # an old name, mapped
    with pytest.raises(ValueError, match="not a command"):
        parse_recorded_command("train_everything.py --fast")
    with pytest.raises(ValueError, match="not a command"):  # a module without a parser
        parse_recorded_command("python -m bnbook.numpy_fast --fast")
    program, args = parse_recorded_command("python -m bnbook.experiments.practice_cli placement")
    assert program == ["python", "-m", "bnbook.experiments.practice"]


def full_result(**prov):
    return {"provenance": sample_provenance(**prov), "rows": [1, 2, 3]}


def test_write_then_read_round_trips(tmp_path):
    path = write_result(tmp_path / "sub" / "r.json", full_result())
    assert read_result(path) == full_result()
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


@pytest.mark.parametrize("field", PROVENANCE_FIELDS)
def test_write_result_refuses_a_missing_field_and_writes_nothing(tmp_path, field):
    path = tmp_path / "r.json"
    path.write_text("old")
    bad = full_result()
    del bad["provenance"][field]
    with pytest.raises(ValueError, match=f"'{field}'"):
        write_result(path, bad)
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("field, value", [
    ("dataset_sha256", None),           # only synthetic data may lack a checksum
    ("dataset_sha256", "abc"),
    ("started", "yesterday"),
    ("wall_seconds", -1.0),
    ("command", ""),
    ("provenance_version", 99),
])
def test_write_result_refuses_a_bad_field(tmp_path, field, value):
    bad = full_result(**{"dataset": "jpeg-image-folder", "dataset_sha256": "a" * 64,
                         field: value})
    with pytest.raises(ValueError, match=field):
        write_result(tmp_path / "r.json", bad)
    assert not (tmp_path / "r.json").exists()


def test_write_result_refuses_nan_and_bad_histories(tmp_path):
    with pytest.raises(ValueError, match="r.json"):
        write_result(tmp_path / "r.json", {**full_result(), "rows": [float("nan")]})
    with pytest.raises(ValueError, match="fraction"):
        write_result(tmp_path / "r.json", make_result([30.0]))
    with pytest.raises(ValueError, match="no payload"):
        write_result(tmp_path / "r.json", {"provenance": sample_provenance()})
    assert list(tmp_path.iterdir()) == []


def test_a_current_file_may_not_lack_a_field_nor_give_none_without_a_migration_note():
    prov = sample_provenance(dataset="fashion-mnist/canonical-gz", dataset_sha256="a" * 64)
    check_provenance(prov)
    for field in PROVENANCE_FIELDS:
        with pytest.raises(ValueError, match=repr(field)):
            check_provenance({k: v for k, v in prov.items() if k != field})
    for field in set(MIGRATABLE_NULL) - {"finished", "wall_seconds"}:
        with pytest.raises(ValueError, match=repr(field)):
            check_provenance({**prov, field: None})
    with pytest.raises(ValueError, match="provenance_version"):
        check_provenance({k: v for k, v in prov.items() if k != "provenance_version"})
    with pytest.raises(ValueError, match="'draft'"):
        check_provenance({**prov, "draft": False})


def test_read_result_refuses_a_stored_file_with_a_missing_field(tmp_path, monkeypatch):
    stored = tmp_path / "results"
    monkeypatch.setattr(results, "RESULTS_DIR", stored)
    result = full_result()
    del result["provenance"]["cpu"]
    (stored / "practice").mkdir(parents=True)
    (stored / "practice" / "x.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match="x.json.*'cpu'"):
        read_result(stored / "practice" / "x.json")


def test_a_dirty_result_the_book_reads_is_refused_unless_a_draft(tmp_path, monkeypatch):
    stored = tmp_path / "results"
    monkeypatch.setattr(results, "RESULTS_DIR", stored)
    dirty = full_result(git_commit="1" * 40 + "+dirty")
    with pytest.raises(ValueError, match="uncommitted code.*--draft"):
        write_result(stored / "why" / "x.json", dirty)
    assert not (stored / "why" / "x.json").exists()
    write_result(tmp_path / "elsewhere.json", dirty)  # outside data/results/: not refused
    draft = full_result(git_commit="1" * 40 + "+dirty", draft=True)
    path = write_result(stored / "why" / "x.json", draft)
    with pytest.raises(ValueError, match="is a draft"):  # the book does not read a draft
        read_result(path)
    path.write_text(json.dumps(dirty))  # a dirty file that no migration kept
    with pytest.raises(ValueError, match="uncommitted code"):
        read_result(path)
    clean = write_result(stored / "why" / "y.json", full_result())
    assert read_result(clean) == full_result()


def test_collect_provenance_records_a_draft():
    prov = collect_provenance("cpu", "fp32", dataset="synthetic-8", dataset_sha256=None,
                              started=now_iso(), wall_seconds=1.0, command="python -m x",
                              draft=True)
    assert prov["draft"] is True
    assert "draft" not in collect_provenance("cpu", "fp32", dataset="synthetic-8",
                                             dataset_sha256=None, started=now_iso(),
                                             wall_seconds=1.0, command="python -m x")


def test_collect_provenance_is_complete_and_valid():
    prov = collect_provenance("cpu", "fp32", dataset="synthetic-random-8", dataset_sha256=None,
                              started=now_iso(), wall_seconds=1.5, command="python -m x",
                              seed=3)
    assert set(PROVENANCE_FIELDS) <= set(prov) and prov["seed"] == 3
    assert prov["finished"] is not None and prov["device"].startswith("cpu: ")
    with pytest.raises(ValueError, match="wall_seconds"):
        collect_provenance("cpu", "fp32", dataset="synthetic", dataset_sha256=None,
                           started=now_iso(), wall_seconds=None)


def test_read_result_resolves_names_and_says_how_to_make_a_missing_file(tmp_path):
    assert read_result("practice/placement") == read_result(RESULTS_DIR / "practice" /
                                                            "placement.json")
    with pytest.raises(FileNotFoundError, match="python -m bnbook.experiments.practice dropout --quick"):
        read_result("practice/dropout-quick")
    # a name no experiment writes: no made-up command, the list of experiments
    with pytest.raises(FileNotFoundError, match=r"python -m bnbook.experiments.practice --help"):
        read_result("practice/nowhere")
    with pytest.raises(FileNotFoundError, match="python -m bnbook.experiments.cifar"):
        read_result(RESULTS_DIR / "cifar10" / "bn-e999.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_result(tmp_path / "broken.json")


def test_missing_stored_file_names_the_command_it_recorded():
    # A tracked result deleted from the working tree: git still knows its command.
    stored = RESULTS_DIR / "practice" / "depth-init.json"
    assert results.producing_command(stored) == \
        "python -m bnbook.experiments.practice depth-init --no-progress"


def test_rerun_dry_run_prints_the_recorded_command(capsys):
    path = RESULTS_DIR / "benchmarks" / "folding_cpu.json"
    assert results.main(["rerun", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "python benchmarks/bench_folding.py --threads 1"


@pytest.mark.timeout(120)
def test_rerun_dry_run_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "bnbook.results", "rerun",
                          "data/results/cifar10/bn-lr0.001-e3-seed7-bf16.json", "--dry-run"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("python -m bnbook.experiments.cifar --model bn --lr 0.001 --epochs 3 "
                                  "--precision bf16 --channels-last --threads 1 "
                                  "--run-name bn-lr0.001-e3-seed7-bf16")


def test_seed_statistics_against_the_closed_form():
    from bnbook.results import seed_statistics

    runs = [make_run("bn", [0.5, 0.8, 0.7], seed=7), make_run("bn", [0.6, 0.7, 0.75], seed=8),
            make_run("bn", [0.4, 0.9, 0.6], seed=9)]
    got = seed_statistics(runs)
    final, best = [70.0, 75.0, 60.0], [80.0, 75.0, 90.0]
    mean_f = sum(final) / 3
    sd_f = (sum((v - mean_f) ** 2 for v in final) / 2) ** 0.5     # sample s.d.: divide by n - 1
    mean_b = sum(best) / 3
    sd_b = (sum((v - mean_b) ** 2 for v in best) / 2) ** 0.5
    assert got["n"] == 3 and (got["final_min"], got["final_max"]) == (60.0, 75.0)
    for key, want in (("final_mean", mean_f), ("final_sd", sd_f), ("best_mean", mean_b),
                      ("best_sd", sd_b)):
        assert abs(got[key] - want) < 1e-9, key
    with pytest.raises(ValueError, match="two seeds"):
        seed_statistics(runs[:1])
    partial = make_run("bn", [0.5, 0.6], seed=10)
    partial["config"]["epochs"] = 3
    with pytest.raises(ValueError, match="not complete"):
        seed_statistics([runs[0], partial])


def test_read_result_takes_a_run_name_with_dots():
    from bnbook.results import read_result

    by_name = read_result("cifar10/bn-lr0.001-e50-seed7-bf16")
    by_path = read_result(CIFAR10_RESULTS_DIR / "bn-lr0.001-e50-seed7-bf16.json")
    assert by_name == by_path and by_name["config"]["lr"] == 0.001


def test_epoch_benchmark_table_and_facts():
    bench = {"matmul_peak": {"flops_per_s": 400e9}, "threads": 2, "aim_ratio_to_peak_allowed": 1.5,
             "load_average_1min_before_after": [0.1, 2.0], "provenance": {"precision": "bf16 autocast"},
             "models": {m: {"seconds_per_epoch": s, "epoch_flops": 8e12,
                            "achieved_flops_per_s": 8e12 / s, "fraction_of_peak": 8e12 / s / 400e9,
                            "peak_allowed_seconds": 20.0, "ratio_to_peak_allowed": s / 20.0}
                        for m, s in (("baseline", 40.0), ("bn", 50.0))}}
    facts = cifar_speed.epoch_facts(bench)
    assert facts["bn"]["ratio"] == 2.5 and facts["baseline"]["fraction"] == 0.5
    assert facts["peak_gflops"] == 400 and facts["load"] == (0.1, 2.0)
    rows = cifar_speed.epoch_table(bench).splitlines()
    assert "400 GFLOP/s" in rows[0] and len(rows) == 4
    assert rows[3].split("|")[1:8] == [" bn ", " 50.0 ", " 8.00 ", " 160 ", " 40% ", " 20.0 ",
                                       " 2.5× "]


def test_one_command_line_formatter_quotes_for_the_shell(monkeypatch):
    import shlex

    from bnbook.experiments.cifar import checkpoints
    from bnbook import provenance

    monkeypatch.setattr(sys, "argv", ["/x/practice_cli.py", "--out", "a b.json", "--lr", "1e-3"])
    line = provenance.command_line()
    assert line == "practice_cli.py --out 'a b.json' --lr 1e-3"
    assert shlex.split(line)[1:] == sys.argv[1:]
    assert checkpoints.command_line is provenance.command_line
    prov = collect_provenance("cpu", "fp32", dataset="synthetic-8", dataset_sha256=None,
                              started=now_iso(), wall_seconds=1.0)
    assert prov["command"] == line


def test_provenance_records_the_given_commit_or_the_checked_out_one(monkeypatch):
    from bnbook import provenance

    monkeypatch.setattr(provenance, "git_commit", lambda: "c" * 40)
    fields = dict(dataset="synthetic-8", dataset_sha256=None, started=now_iso(),
                  wall_seconds=1.0)
    assert provenance.unchecked_provenance(**fields)["git_commit"] == "c" * 40
    assert provenance.unchecked_provenance(commit="d" * 40, **fields)["git_commit"] == "d" * 40


def test_a_command_refuses_a_dirty_tree_before_any_work_unless_draft(tmp_path, monkeypatch,
                                                                      capsys):
    from bnbook import provenance
    from bnbook.cli import refuse_dirty_tree
    from bnbook.experiments.norms import sequences

    monkeypatch.setattr(provenance, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(provenance, "git_commit", lambda *a: "2" * 40 + "+dirty")
    parser = sequences.build_parser()
    for out, draft, refused in [(tmp_path / "results" / "norms", False, True),
                                (tmp_path / "results" / "norms", True, False),
                                (tmp_path / "elsewhere", False, False)]:
        args = parser.parse_args(["--out", str(out)] + ["--draft"] * draft)
        if refused:
            with pytest.raises(SystemExit) as exc:
                refuse_dirty_tree(parser, args)
            assert exc.value.code == 2 and "--draft" in capsys.readouterr().err
        else:
            refuse_dirty_tree(parser, args)
    monkeypatch.setattr(provenance, "git_commit", lambda *a: "2" * 40)
    refuse_dirty_tree(parser, parser.parse_args(["--out", str(tmp_path / "results")]))

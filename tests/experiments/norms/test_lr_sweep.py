"""Experiment 1 at each method's own learning rate (bnbook.experiments.norms.lr_sweep): the grid
and its extension, the selection rule, the stages' order and resumption, the stage files, the
weight-standardised arms, the validation split, and the --quick profile end to end."""

import json
import math

import pytest
import torch

from bnbook.experiments.norms import lr_grid as grid
from bnbook.experiments.norms import lr_sweep as nlr
from bnbook.experiments.norms import sweep as ns
from bnbook.results import read_result
from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.torch_norms import WSConv2d

FULL, QUICK = nlr.PROFILES["full"], nlr.PROFILES["quick"]


def grow(objective, initial=(-1, 0, 1), max_extensions=4):
    """Run the grid rule to the end against ``objective(k)``; return the scores and the order."""
    scores, order = {}, []
    while todo := grid.next_grid_points(scores, list(initial), max_extensions):
        for k in todo:
            assert k not in scores, f"grid point {k} asked for twice"
            scores[k] = objective(k)
            order.append(k)
    return scores, order


def test_the_grid_is_todays_rate_and_steps_of_about_three():
    assert grid.grid_lr(FULL, 32, 0) == pytest.approx(ns.learning_rate(32, 0.01))
    assert grid.grid_lr(FULL, 2, 0) == pytest.approx(0.01 * 2 / 32)
    assert [grid.grid_lr(FULL, 32, k) for k in (-2, -1, 1, 2)] == [0.001, 0.00316, 0.0316, 0.1]
    for m in (2, 32):
        ratios = [grid.grid_lr(FULL, m, k + 1) / grid.grid_lr(FULL, m, k) for k in range(-5, 5)]
        assert all(2.9 < r < 3.4 for r in ratios), ratios
    assert grid.cell_key("batch", 32, grid.grid_lr(FULL, 32, 1), 0) == "batch/m32/lr0.0316/seed0"


@pytest.mark.parametrize("peak, expected_order", [
    (0, [-1, 0, 1]),                 # interior at once: no extension
    (2, [-1, 0, 1, 2, 3]),           # best at the top edge twice, then interior
    (-3, [-1, 0, 1, -2, -3, -4]),    # extended downwards
    (0.9, [-1, 0, 1, 2]),            # the peak between two points: 1 is best, 2 is worse
])
def test_the_grid_extends_at_an_edge_and_stops_when_the_best_is_inside(peak, expected_order):
    scores, order = grow(lambda k: -(k - peak) ** 2)
    assert order == expected_order
    best = grid.select_best(scores)
    assert min(scores) < best < max(scores)
    assert best == round(peak)


def test_the_grid_stops_at_its_limit_with_the_best_still_at_the_edge():
    scores, order = grow(lambda k: k, max_extensions=2)  # better and better upwards
    assert order == [-1, 0, 1, 2, 3] and grid.select_best(scores) == 3 == max(scores)


def test_diverged_points_rank_last():
    # a diverged top edge is worse than anything: the best (0) is inside, stop
    assert grid.next_grid_points({-1: 0.3, 0: 0.4, 1: None}, [-1, 0, 1], 4) == []
    # everything diverged: try smaller rates
    assert grid.next_grid_points({-1: None, 0: None, 1: None}, [-1, 0, 1], 4) == [-2]
    scores, order = grow(lambda k: None if k >= 0 else 0.5 + 0.1 * k)  # diverges at k >= 0
    assert order == [-1, 0, 1, -2] and grid.select_best(scores) == -1


def test_selection_rule_highest_score_ties_to_the_smaller_rate():
    assert grid.select_best({-1: 0.5, 0: 0.7, 1: 0.6}) == 0
    assert grid.select_best({-1: 0.7, 0: 0.5, 1: 0.7}) == -1
    assert grid.select_best({-1: None, 0: 0.1, 1: None}) == 0
    assert grid.select_best({2: None, 3: None}) == 2
    assert grid.next_grid_points({0: 0.5}, [-1, 0, 1], 4) == [-1, 1]
    with pytest.raises(ValueError, match="no grid point"):
        grid.select_best({})
    assert "validation" in FULL["selection"] and "test set does not" in FULL["selection"]


# --- a fake objective through the stages ------------------------------------------------------

def fake_record(method, m, lr, seed, settings, peak=None):
    """A record whose validation accuracy peaks at ``lr_centre * 10 ** (peak * lr_step)``."""
    peak = {"batch": 1, "ghost": -1, "ws": 0}.get(method, 0) if peak is None else peak
    k = math.log10(lr / settings["lr_centre"][str(m)]) / settings["lr_step"]
    acc = 0.6 - 0.05 * (k - peak) ** 2 + 0.001 * seed
    return dict(method=method, batch_size=m, lr=lr, seed=seed, diverged=False, val_acc=acc,
                test_acc=acc - 0.01, train_acc=acc + 0.1, seconds=1.0)


@pytest.fixture
def fake_runs(monkeypatch):
    """``run_cell`` replaced by :func:`fake_record` (no training, no data); returns the list of
    the runs computed."""
    computed = []

    def run_cell(data, x_val, y_val, method, m, lr, seed, settings):
        computed.append(grid.cell_key(method, m, lr, seed))
        return fake_record(method, m, lr, seed, settings)

    monkeypatch.setattr(nlr, "run_cell", run_cell)
    monkeypatch.setattr(nlr, "prepare_data", lambda settings: (None, None, None))
    return computed


def test_stages_run_in_order_and_pick_each_methods_peak(fake_runs):
    stages = []
    done = nlr.run_stages(QUICK, {}, lambda d: None,
                          lambda m, stage, d: stages.append((m, stage, len(d))),
                          progress=False)
    assert [s[:2] for s in stages] == [(32, "grid"), (32, "seeds"), (8, "grid"), (8, "seeds")]
    assert len(fake_runs) == len(set(fake_runs)) == len(done)
    assert grid.methods_at(QUICK, 8) == ["batch", "ws"]  # ghost at m = 8 is batch norm
    assert not any(k.startswith("ghost/m8/") for k in done)
    for m in QUICK["batch_sizes"]:
        sweep = grid.stage_cells(QUICK, m, "grid", done)
        seeds = grid.stage_cells(QUICK, m, "seeds", done)
        for method, peak in (("batch", 1), ("ghost", -1), ("ws", 0)):
            if method not in sweep:
                continue
            assert sweep[method]["best_k"] == peak and not sweep[method]["best_at_edge"]
            assert seeds[method]["lr"] == sweep[method]["best_lr"] == grid.grid_lr(QUICK, m, peak)
            assert seeds[method]["seeds"] == QUICK["final_seeds"]
            assert seeds[method]["test_acc_mean"] == pytest.approx(
                sum(seeds[method]["test_acc"]) / len(QUICK["final_seeds"]))
    assert grid.planned_cells(QUICK, done) == len(done)


def test_the_cost_estimate_counts_every_method_at_each_batch_size():
    # quick: 3 methods at m = 32, 2 at m = 8 (ghost is batch norm there); 3 + 1 + 2 runs each
    assert grid.estimate_seconds(QUICK, {32: 10.0, 8: 100.0}) == 3 * 6 * 10.0 + 2 * 6 * 100.0
    assert grid.estimate_seconds(QUICK, {32: 10.0, 8: 100.0}, extensions=0) == 150.0 + 1000.0
    full = grid.estimate_seconds(FULL, {32: 1.0, 2: 0.0}, extensions=0)
    assert full == len(nlr.METHODS) * (3 + 3) == 60


def test_the_seeds_stage_waits_for_the_grid():
    with pytest.raises(ValueError, match="grid finished first"):
        grid.pending_cells(QUICK, 32, "seeds", {})


def test_a_stopped_run_resumes_without_rerunning_a_cell(fake_runs):
    done = {}
    with pytest.raises(nlr.StoppedEarly):
        nlr.run_stages(QUICK, done, lambda d: None, max_cells=5, progress=False)
    assert len(done) == 5
    first = list(fake_runs)
    nlr.run_stages(QUICK, done, lambda d: None, progress=False)
    rest = fake_runs[len(first):]
    assert not set(first) & set(rest) and len(done) == len(first) + len(rest)


def _main(tmp_path, *extra):
    return nlr.main(["--quick", "--out", str(tmp_path), "--no-progress", *extra])


def test_checkpoint_resume_interrupt_and_stage_files(tmp_path, fake_runs, monkeypatch):
    assert _main(tmp_path, "--max-cells", "4") == 3
    checkpoint = tmp_path / "lr_sweep-quick.partial.json"
    saved = json.loads(checkpoint.read_text())
    assert len(saved["runs"]) == 4 and saved["sessions"][0]["runs"] == 4
    assert not list(tmp_path.glob("lr_sweep-quick-m*.json"))  # no stage is complete yet
    calls = len(fake_runs)
    fake = nlr.run_cell

    def interrupted(*a):  # Ctrl-C during the 3rd run of this session
        if len(fake_runs) == calls + 2:
            raise KeyboardInterrupt
        return fake(*a)

    monkeypatch.setattr(nlr, "run_cell", interrupted)
    assert _main(tmp_path) == 130
    assert len(json.loads(checkpoint.read_text())["runs"]) == 6
    monkeypatch.setattr(nlr, "run_cell", fake)
    assert _main(tmp_path) == 0
    assert len(fake_runs) == len(set(fake_runs))  # no run computed twice
    for m in QUICK["batch_sizes"]:
        for stage in grid.STAGES:
            result = read_result(nlr.stage_path(tmp_path, "lr_sweep-quick", m, stage))
            assert result["stage"] == stage and result["batch_size"] == m
            assert result["selection"] == grid.SELECTION_RULE and result["profile"] == "quick"
            assert set(result["methods"]) == set(grid.methods_at(QUICK, m))
            assert all(r["batch_size"] == m for r in result["runs"].values())
            prov = result["provenance"]
            sessions = [s["runs"] for s in prov["sessions"]]  # as they were when it was written
            assert sessions[:2] == [4, 2] and 0 < sessions[2] <= len(fake_runs) - 6
            assert prov["dataset_subset"]["n_val"] == QUICK["n_val"]
            assert prov["wall_seconds"] == pytest.approx(len(result["runs"]))
    assert sessions[2] == len(fake_runs) - 6  # the last stage saw the whole third session
    before = {p.name: p.read_text() for p in tmp_path.glob("lr_sweep-quick-m*.json")}
    assert _main(tmp_path) == 0 and len(fake_runs) == len(set(fake_runs))
    assert before == {p.name: p.read_text() for p in tmp_path.glob("lr_sweep-quick-m*.json")}
    # a checkpoint made with other settings is refused; --restart removes it
    assert _main(tmp_path, "--draft") == 2
    saved = json.loads(checkpoint.read_text())
    saved["runs"]["batch/m32/lr0.03/seed0"]["val_acc"] = 1.5
    checkpoint.write_text(json.dumps(saved))
    assert _main(tmp_path) == 2
    assert _main(tmp_path, "--restart", "--max-cells", "1") == 3


def test_a_checkpoint_in_the_layout_of_the_running_sweep_is_resumed(tmp_path, fake_runs):
    """A checkpoint written by the sweep started before the runner took over (its layout
    spelled out here, not taken from the code under test) is resumed, not refused."""
    from bnbook.data import cifar10_info

    info = cifar10_info()
    commit = "16bca55518b41e82b11b0966624303317dd7bbbc"
    saved = {}
    for k in QUICK["initial_grid"]:
        lr = grid.grid_lr(QUICK, 32, k)
        saved[grid.cell_key("batch", 32, lr, 0)] = dict(
            fake_record("batch", 32, lr, 0, QUICK), grid_k=k, git_commit=commit)
    session = {"started": "2026-12-07T23:32:40+00:00", "git_commit": commit,
               "command": "python -m bnbook.experiments.norm_lr_sweep --quick", "jobs": 1,
               "threads": 1, "runs": 3, "wall_seconds": 3.0}
    checkpoint = tmp_path / "lr_sweep-quick.partial.json"
    checkpoint.write_text(json.dumps({
        "settings": {"profile": "quick", "settings": QUICK, "threads": 1, "draft": False,
                     "dataset": info["variant"], "dataset_sha256": info["sha256"]},
        "runs": saved, "sessions": [session]}))
    assert _main(tmp_path, "--max-cells", "2") == 3
    assert not set(fake_runs) & set(saved) and len(fake_runs) == 2
    after = json.loads(checkpoint.read_text())
    assert set(after) == {"settings", "runs", "sessions"}
    assert after["sessions"][0] == session and after["sessions"][1]["runs"] == 2
    assert all(after["runs"][key] == rec for key, rec in saved.items())
    assert _main(tmp_path) == 0 and not set(fake_runs) & set(saved)
    first = read_result(nlr.stage_path(tmp_path, "lr_sweep-quick", 32, "grid"))
    assert first["provenance"]["sessions"][0] == session
    assert first["provenance"]["git_commit"] == commit


def test_a_dirty_tree_needs_draft_for_a_book_result(monkeypatch, capsys):
    from bnbook import provenance

    monkeypatch.setattr(provenance, "git_commit", lambda *a: "abc+dirty")
    with pytest.raises(SystemExit):
        nlr.main(["--quick", "--no-progress"])
    assert "uncommitted changes" in capsys.readouterr().err
    monkeypatch.setattr(nlr, "_estimate", lambda settings, jobs: 0)
    assert nlr.main(["--quick", "--estimate"]) == 0  # writes nothing, so no --draft needed


# --- the networks and the data -------------------------------------------------------------------

def test_weight_standardised_arms():
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    group_ws = small_cifar_cnn(4, "group_ws", seed=3).eval()
    ours = nlr.standardise_convolutions_(small_cifar_cnn(4, "group", seed=3)).eval()
    with torch.no_grad():
        assert torch.equal(ours(x), group_ws(x))  # the same as the package's group_ws
    for method, norm in nlr.WS_ARMS.items():
        model = nlr.build_model(method, FULL, seed=1)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 4 and all(isinstance(c, WSConv2d) for c in convs)
        plain = nlr.build_model(norm, FULL, seed=1)
        assert [type(m) for m in model.modules() if not isinstance(m, torch.nn.Conv2d)] == \
            [type(m) for m in plain.modules() if not isinstance(m, torch.nn.Conv2d)]
        for a, b in zip(model.parameters(), plain.parameters()):
            assert torch.equal(a, b)  # the same initial weights as the arm without WS
    assert not any(isinstance(m, WSConv2d) for m in nlr.build_model("batch", FULL, 0).modules())


def test_validation_images_are_outside_the_training_subset():
    settings = dict(QUICK, n_train=2000, n_test=100, n_val=3000)
    subset, x_val, y_val = nlr.prepare_data(settings)
    assert x_val.shape == (3000, 3, 32, 32) and y_val.shape == (3000,)
    assert int(y_val.min()) >= 0 and int(y_val.max()) <= 9
    train = {row.numpy().tobytes() for row in subset.x_train}
    assert not any(row.numpy().tobytes() in train for row in x_val)
    assert len({row.numpy().tobytes() for row in x_val}) > 2990  # distinct images
    again = nlr.prepare_data(settings)
    assert torch.equal(again[1], x_val) and torch.equal(again[2], y_val)


def test_one_real_run_record():
    g = torch.Generator().manual_seed(0)
    data = ns.Cifar10Subset(torch.randn(64, 3, 32, 32, generator=g),
                            torch.randint(0, 10, (64,), generator=g),
                            torch.randn(32, 3, 32, 32, generator=g),
                            torch.randint(0, 10, (32,), generator=g), torch.zeros(3), torch.ones(3))
    x_val, y_val = data.x_test[:16], data.y_test[:16]
    s = dict(QUICK, images_seen=64, n_train_eval=32, n_recalibrate=32)
    rec = nlr.run_cell(data, x_val, y_val, "batch_ws", 8, 0.0123, 2, s)
    assert rec["lr"] == 0.0123 and rec["steps"] == 8 and not rec["diverged"]
    assert 0 <= rec["val_acc"] <= 1 and rec["val_loss"] > 0 and 0 <= rec["test_acc"] <= 1
    cut = {"seconds": 0, "cpu_seconds": 0}
    assert nlr.run_cell(data, x_val, y_val, "batch_ws", 8, 0.0123, 2, s) | cut == rec | cut
    bad = nlr.run_cell(data, x_val, y_val, "none", 8, 1e12, 0, s)
    assert bad["diverged"] and bad["val_acc"] is None and bad["test_acc"] is None


def test_an_infinite_loss_is_stored_as_none(monkeypatch):
    monkeypatch.setattr(ns, "evaluate", lambda model, x, y: (0.25, float("inf")))
    data = ns.Cifar10Subset(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)),
                            torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)),
                            torch.zeros(3), torch.ones(3))
    s = dict(QUICK, images_seen=16, n_train_eval=8)
    rec = nlr.run_cell(data, data.x_test, data.y_test, "ws", 8, 1e-3, 0, s)
    assert rec["test_loss"] is None and rec["val_loss"] is None and rec["val_acc"] == 0.25
    json.dumps(rec, allow_nan=False)


def test_quick_profile_end_to_end(tmp_path):
    assert _main(tmp_path) == 0
    results = {(m, st): read_result(nlr.stage_path(tmp_path, "lr_sweep-quick", m, st))
               for m in QUICK["batch_sizes"] for st in grid.STAGES}
    for (m, stage), result in results.items():
        nlr.check_records(result["runs"], QUICK)
        assert result["provenance"]["dataset"].startswith("cifar10/")
        for method, row in result["methods"].items():
            if stage == "grid":
                assert len(row["lrs"]) >= 3 and row["lrs"] == sorted(row["lrs"])
                assert row["best_lr"] in row["lrs"]
            else:
                assert row["lr"] == results[(m, "grid")]["methods"][method]["best_lr"]
                assert len(row["test_acc"]) == len(QUICK["final_seeds"])

"""The convolutional batch-size sweep (bnbook.experiments.norms.sweep) and its report: one cell,
the schedule rules, the --quick profile end to end (schema, resume after a stop and after a
kill, refusal of other settings), two processes against one, and the table and figure."""

import json
import os
import signal
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from bnbook.data.subsets import Cifar10Subset
from bnbook.experiments.norms import sweep as ns
from bnbook.experiments.norms.sweep_report import (check_sweep, load_norm_sweep, plot_norm_sweep,
                                                  sweep_numbers, sweep_summary, norm_sweep_table)
from bnbook.provenance import REPO_ROOT
from bnbook.results import read_result

QUICK = ns.PROFILES["quick"]
N_QUICK = len(ns.cells_of(QUICK))


def synthetic_subset(n_train=64, n_test=32, seed=0) -> Cifar10Subset:
    g = torch.Generator().manual_seed(seed)
    return Cifar10Subset(torch.randn(n_train, 3, 32, 32, generator=g),
                         torch.randint(0, 10, (n_train,), generator=g),
                         torch.randn(n_test, 3, 32, 32, generator=g),
                         torch.randint(0, 10, (n_test,), generator=g),
                         torch.zeros(3), torch.ones(3))


def tiny_settings(**kw):
    return {**QUICK, **dict(n_train=64, n_test=32, images_seen=64, n_train_eval=32,
                            n_recalibrate=32), **kw}


def test_learning_rate_is_linear_in_the_batch_size():
    assert ns.learning_rate(32, 0.02) == pytest.approx(0.02)
    assert ns.learning_rate(2, 0.02) == pytest.approx(0.02 / 16)
    assert ns.learning_rate(128, 0.02) == pytest.approx(0.08)


def test_renorm_bounds_schedule():
    kw = dict(r_max=3.0, d_max=5.0, plain_until=0.1, r_full_at=0.5, d_full_at=0.3)
    assert ns.renorm_bounds(0.0, **kw) == (1.0, 0.0)
    assert ns.renorm_bounds(0.1, **kw) == (1.0, 0.0)
    r, d = ns.renorm_bounds(0.2, **kw)
    assert r == pytest.approx(1.0 + 2.0 * 0.25) and d == pytest.approx(5.0 * 0.5)
    assert ns.renorm_bounds(0.3, **kw)[1] == pytest.approx(5.0)
    assert ns.renorm_bounds(0.5, **kw) == pytest.approx((3.0, 5.0))
    assert ns.renorm_bounds(1.0, **kw) == pytest.approx((3.0, 5.0))


def test_cells_put_seeds_outermost_and_keys_are_unique():
    cells = ns.cells_of(QUICK)
    ghost_as_bn = sum(m <= QUICK["ghost_batch_size"] for m in QUICK["batch_sizes"])
    assert ghost_as_bn >= 1
    assert len(cells) == (len(QUICK["methods"]) * len(QUICK["batch_sizes"])
                          - ghost_as_bn) * len(QUICK["seeds"])
    assert ("ghost", 2, 0) not in cells and ("ghost", 32, 0) in cells
    assert cells[0] == (QUICK["methods"][0], QUICK["batch_sizes"][0], QUICK["seeds"][0])
    assert len({ns.cell_key(*c) for c in cells}) == len(cells)
    two = dict(QUICK, seeds=[0, 1])
    seeds = [s for _, _, s in ns.cells_of(two)]
    assert seeds == sorted(seeds)


def test_one_cell_record():
    data = synthetic_subset()
    s = tiny_settings()
    rec = ns.run_cell(data, "batch", 8, 3, s)
    assert rec["steps"] == 8 and rec["images_seen"] == 64
    assert rec["lr"] == pytest.approx(s["lr_at_32"] * 8 / 32)
    assert not rec["diverged"] and 0.0 <= rec["test_acc"] <= 1.0
    assert 0.0 <= rec["test_acc_recalibrated"] <= 1.0 and 0.0 <= rec["train_acc"] <= 1.0
    assert len(rec["train_loss_curve"]) == 8  # a tenth of 8 updates is one update
    assert rec["seconds"] > 0 and rec["cpu_seconds"] >= 0
    json.dumps(rec)
    assert ns.run_cell(data, "batch", 8, 3, s) | {"seconds": 0, "cpu_seconds": 0} == \
        rec | {"seconds": 0, "cpu_seconds": 0}  # reproducible from the seed
    assert "test_acc_recalibrated" not in ns.run_cell(data, "group", 8, 3, s)
    with pytest.raises(ValueError, match="multiple"):
        ns.run_cell(data, "batch", 3, 0, s)


def test_a_diverging_cell_is_marked_not_scored():
    rec = ns.run_cell(synthetic_subset(), "none", 8, 0, tiny_settings(lr_at_32=1e12))
    assert rec["diverged"] and rec["test_acc"] is None and rec["train_loss_curve"] is None


def test_renorm_bounds_are_scheduled_during_training(monkeypatch):
    seen = []
    from bnbook.torch_norms import BatchRenorm2d

    forward = BatchRenorm2d.forward

    def spy(self, x):
        if self.training:
            seen.append((self.r_max, self.d_max))
        return forward(self, x)

    monkeypatch.setattr(BatchRenorm2d, "forward", spy)
    s = tiny_settings(images_seen=160)
    ns.run_cell(synthetic_subset(), "renorm", 8, 0, s)  # 20 steps, 4 layers each
    per_step = seen[::4]
    assert per_step[0] == (1.0, 0.0)
    assert per_step[-1] == pytest.approx((s["renorm"]["r_max"], s["renorm"]["d_max"]))
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(per_step, per_step[1:]))


def _quick(tmp_path, *extra):
    return ns.main(["--quick", "--out", str(tmp_path), "--no-progress", *extra])


def test_quick_profile_schema_resume_and_methods_differ(tmp_path, monkeypatch):
    assert _quick(tmp_path, "--max-cells", "3") == 3
    partial = json.loads((tmp_path / "sweep-quick.partial.json").read_text())
    assert len(partial["runs"]) == 3 and partial["settings"]["profile"] == "quick"
    computed = []
    run_cell = ns.run_cell
    monkeypatch.setattr(ns, "run_cell", lambda *a: computed.append(a[1:4]) or run_cell(*a))
    assert _quick(tmp_path) == 0
    assert len(computed) == N_QUICK - 3  # the three stored cells were not run again
    assert not (tmp_path / "sweep-quick.partial.json").exists()
    result = read_result(tmp_path / "sweep-quick.json")
    for key, rec in partial["runs"].items():
        assert result["runs"][key] == rec  # same record, timings included
    check_sweep(result, "quick")
    with pytest.raises(ValueError, match="quick"):
        check_sweep(result, "full")
    prov = result["provenance"]
    assert prov["dataset"].startswith("cifar10/") and len(prov["dataset_sha256"]) == 64
    assert prov["command"] == f"{ns.PROG} --quick --out {tmp_path} --no-progress"
    assert [s["cells"] for s in prov["sessions"]] == [3, N_QUICK - 3]
    assert prov["precision"] == "float32" and prov["wall_seconds"] > 0
    for m in QUICK["batch_sizes"]:  # every method run at m trains a different network
        methods = [meth for meth in QUICK["methods"] if not ns.same_as_batch_norm(meth, m, QUICK)]
        curves = {tuple(result["runs"][ns.cell_key(meth, m, 0)]["train_loss_curve"])
                  for meth in methods}
        assert len(curves) == len(methods) >= len(QUICK["methods"]) - 1
    # a partial file made with other settings is refused, and --restart removes it
    assert _quick(tmp_path, "--max-cells", "1") == 3
    path = tmp_path / "sweep-quick.partial.json"
    saved = json.loads(path.read_text())
    saved["settings"]["settings"]["width"] = 5
    path.write_text(json.dumps(saved))
    assert _quick(tmp_path) == 2
    assert _quick(tmp_path, "--restart", "--max-cells", "1") == 3


def test_a_killed_sweep_resumes_without_recomputing(tmp_path, monkeypatch):
    slow = ("import sys, time; import bnbook.experiments.norms.sweep as ns; f = ns.run_cell; "
            "ns.run_cell = lambda *a: (time.sleep(0.4), f(*a))[1]; "
            f"sys.exit(ns.main(['--quick', '--out', {str(tmp_path)!r}, '--no-progress']))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", slow], cwd=REPO_ROOT, env=env)
    partial = tmp_path / "sweep-quick.partial.json"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists(), "the sweep wrote no partial result before it was killed"
    stored = json.loads(partial.read_text())["runs"]
    assert 1 <= len(stored) < N_QUICK
    computed = []
    run_cell = ns.run_cell
    monkeypatch.setattr(ns, "run_cell", lambda *a: computed.append(a[1:4]) or run_cell(*a))
    assert _quick(tmp_path) == 0
    assert len(computed) == N_QUICK - len(stored)
    result = read_result(tmp_path / "sweep-quick.json")
    assert all(result["runs"][k] == v for k, v in stored.items())


def test_two_processes_give_the_numbers_one_gives():
    settings = dict(QUICK, methods=["batch", "group"], batch_sizes=[8])
    one, two = {}, {}
    ns.run_sweep(settings, one, lambda d: None, jobs=1, progress=False)
    ns.run_sweep(settings, two, lambda d: None, jobs=2, progress=False)
    drop = {"seconds", "cpu_seconds"}
    assert {k: {f: v for f, v in r.items() if f not in drop} for k, r in one.items()} == \
        {k: {f: v for f, v in r.items() if f not in drop} for k, r in two.items()}


def fake_sweep(accs: dict, profile="full") -> dict:
    """A result with hand-made accuracies: ``accs[(method, m)] = [acc per seed]``."""
    methods = sorted({k[0] for k in accs})
    sizes = sorted({k[1] for k in accs})
    seeds = list(range(len(next(iter(accs.values())))))
    settings = dict(QUICK, methods=methods, batch_sizes=sizes, seeds=seeds)
    runs = {ns.cell_key(meth, m, s): {"diverged": a is None, "test_acc": a,
                                      "test_acc_recalibrated": a}
            for (meth, m), vals in accs.items() for s, a in enumerate(vals)}
    return {"provenance": {"wall_seconds": 7200.0}, "profile": profile, "settings": settings,
            "runs": runs}


def test_summary_table_numbers_and_figure():
    result = fake_sweep({("batch", 2): [0.50, 0.54], ("batch", 32): [0.70, 0.72],
                         ("group", 2): [0.66, None], ("group", 32): [0.68, 0.66]})
    summary = sweep_summary(result)
    assert summary["batch"][2]["mean"] == pytest.approx(52.0)
    assert summary["batch"][2]["sd"] == pytest.approx(2.0 * 2 ** 0.5)
    assert summary["group"][2] == {"mean": pytest.approx(66.0), "sd": None, "min": 66.0,
                                   "max": 66.0, "n": 1, "diverged": 1}
    table = norm_sweep_table(result).splitlines()
    assert table[0] == "| method | m = 2 | m = 32 |"
    assert table[2] == "| BN | 52.0 ± 2.8 | 71.0 ± 1.4 |"
    assert table[3] == "| GN | 66.0 (1 diverged) | 67.0 ± 1.4 |"
    nums = sweep_numbers(result)
    assert nums["acc_batch_m2"] == pytest.approx(52.0)
    assert nums["drop_batch"] == pytest.approx(19.0) and nums["drop_group"] == pytest.approx(1.0)
    assert nums["wall_hours"] == pytest.approx(2.0) and nums["cells"] == 8
    ax = plot_norm_sweep(result)
    assert len(ax.get_lines()) >= 2 and ax.get_ylabel() == "test error (%)"
    y = ax.containers[0].lines[0].get_ydata()  # BN: error = 100 - accuracy
    assert list(y) == pytest.approx([48.0, 29.0])


def test_ghost_cells_that_are_batch_norm_are_not_run_and_say_so():
    result = fake_sweep({("batch", 2): [0.5], ("batch", 32): [0.7], ("ghost", 32): [0.72]})
    check_sweep(result, None)  # no ghost/m2 cell needed (hand-made settings: no profile)
    assert sweep_summary(result)["ghost"][2]["same_as_batch_norm"]
    assert norm_sweep_table(result).splitlines()[3] == "| ghost BN | = BN | 72.0 |"
    assert sweep_numbers(result)["drop_ghost"] is None or sweep_numbers(result)["drop_ghost"] == 0


def test_check_sweep_finds_missing_cells_and_bad_accuracies(tmp_path):
    result = fake_sweep({("batch", 2): [0.5], ("batch", 8): [0.6]})
    check_sweep(result, None)  # hand-made settings: checked without a profile
    with pytest.raises(ValueError, match="differ from the 'full' profile"):
        check_sweep(result)
    del result["runs"][ns.cell_key("batch", 8, 0)]
    with pytest.raises(ValueError, match="lacks 1 cell"):
        check_sweep(result, None)
    bad = fake_sweep({("batch", 2): [1.5]})
    with pytest.raises(ValueError, match="not a fraction"):
        check_sweep(bad, None)
    with pytest.raises(FileNotFoundError, match="produce it"):
        load_norm_sweep(tmp_path / "nothing-here.json")


def test_sweep_shape_measures_each_curve_against_its_own_best():
    from bnbook.experiments.norms.sweep_report import sweep_shape

    result = fake_sweep({("batch", 2): [0.50, 0.54], ("batch", 8): [0.70, 0.70],
                         ("batch", 32): [0.72, 0.68], ("group", 2): [0.66, 0.66],
                         ("group", 8): [0.67, 0.65], ("group", 32): [0.63, 0.65]})
    shape = sweep_shape(result)
    assert shape["batch"]["small"] == pytest.approx(52.0)
    assert shape["batch"]["large"] == pytest.approx(70.0)      # best of 70 (m=8) and 70 (m=32)
    assert shape["batch"]["loss_small"] == pytest.approx(18.0)
    assert shape["group"]["loss_small"] == pytest.approx(0.0)  # best at >= 8 is 66 (m=8)
    assert shape["group"]["range"] == pytest.approx(2.0) and shape["group"]["best_m"] == 2
    # sd per cell: batch 2.83, 0, 2.83; group 0, 1.41, 1.41 -> root mean square
    rms = ((8 + 0 + 8 + 0 + 2 + 2) / 6) ** 0.5
    assert shape["noise"] == pytest.approx(rms)
    assert sweep_shape(result, large_from=32)["batch"]["large"] == pytest.approx(70.0)
    upto8 = sweep_shape(result, range_upto=8)
    assert upto8["group"]["range"] == pytest.approx(0.0)
    assert upto8["noise"] == pytest.approx(((8 + 0 + 0 + 2) / 4) ** 0.5)   # m = 32 left out
    with pytest.raises(ValueError, match="batch size 4 is not in"):
        sweep_shape(result, small=4)
    with pytest.raises(ValueError, match="no batch size >= 64"):
        sweep_shape(result, large_from=64)

"""bnbook.experiments.cifar.ablation on made-up result files: loading checks, statistics, effects, table."""

import copy
import json

import pytest

from bnbook.experiments.cifar.ablation import (ablation_effects, ablation_table, arm_run_name,
                                               arm_statistics, load_arms)
from bnbook.provenance import RESULTS_DIR

TEMPLATE = RESULTS_DIR / "cifar10" / "bn-lr0.001-e50-seed9-bf16.json"


def fake_run(arm, seed, final, model, **config):
    run = copy.deepcopy(json.loads(TEMPLATE.read_text()))
    lr = 1e-3 if model == "bn" else 1e-4
    run["run"], run["model"] = arm_run_name(arm, seed), model
    run["config"].update({"model": model, "lr": lr, "seed": seed, **config})
    for i, h in enumerate(run["history"]):
        h["val_acc"] = final / 100 - 0.001 * (49 - i)   # rising, last epoch = final
    run["provenance"]["command"] = f"python -m bnbook.experiments.cifar --model {model} --seed {seed}"
    return run


def write(tmp_path, run):
    (tmp_path / f"{run['run']}.json").write_text(json.dumps(run))


@pytest.fixture
def results(tmp_path):
    spec = [("baseline", 7, 73.0, "baseline", {}), ("baseline", 8, 74.0, "baseline", {}),
            ("baseline-px", 7, 75.5, "baseline", {"shift_order": 0}),
            ("baseline-px", 8, 76.0, "baseline", {"shift_order": 0}),
            ("bn", 7, 82.0, "bn", {}), ("bn", 8, 83.0, "bn", {}),
            ("bn-dropout", 7, 84.0, "bn", {"keep_dropout": True}),
            ("bn-no-logits", 7, 81.0, "bn", {"bn_on_logits": False})]
    for arm, seed, final, model, config in spec:
        write(tmp_path, fake_run(arm, seed, final, model, **config))
    return tmp_path


SEEDS = {"baseline": (7, 8), "baseline-px": (7, 8), "bn": (7, 8), "bn-dropout": (7,),
         "bn-no-logits": (7,)}


def test_effects_are_paired_differences(results):
    arms = load_arms(results, SEEDS)
    eff = ablation_effects(arms)
    assert eff["shift"]["per_seed"] == pytest.approx({7: 2.5, 8: 2.0})
    assert eff["shift"]["mean"] == pytest.approx(2.25)
    assert eff["dropout"]["seeds"] == [7] and eff["dropout"]["mean"] == pytest.approx(2.0)
    assert eff["logits"]["mean"] == pytest.approx(-1.0)
    assert eff["seed_sd"]["bn"] == pytest.approx(0.7071, abs=1e-4)
    s = arm_statistics(arms["bn-dropout"])
    assert s["n"] == 1 and s["final_sd"] is None and s["final_mean"] == pytest.approx(84.0)
    table = ablation_table(arms)
    assert "73.5 ± 0.7" in table and "| 84.0 |" in table and table.count("\n") == 6
    # fake_run rises 0.1 point per epoch: the last ten average 0.45 below the final value
    assert s["late"] == {7: pytest.approx(83.55)} and s["late_sd"] is None
    assert "| 83.5 |" in table and "last 10 epochs" in table


def test_a_file_with_other_settings_is_refused(results):
    # the whole-pixel arm's file claims bilinear shifts: refused, naming the setting
    run = json.loads((results / f"{arm_run_name('baseline-px', 7)}.json").read_text())
    run["config"]["shift_order"] = 1
    write(results, run)
    with pytest.raises(ValueError, match="shift_order"):
        load_arms(results, {"baseline-px": (7,)})
    # an old file without the setting counts as the default (bilinear, no dropout)
    old = json.loads((results / f"{arm_run_name('baseline', 7)}.json").read_text())
    old["config"].pop("shift_order", None)
    write(results, old)
    assert load_arms(results, {"baseline": (7,)})["baseline"][7]["run"] == old["run"]
    with pytest.raises(FileNotFoundError, match="--keep-dropout.*publish runs/bn-lr0.001-dropout-seed9-bf16"):
        load_arms(results, {"bn-dropout": (9,)})


def test_run_names_match_the_trainer():
    from bnbook.experiments.cifar.cli import build_parser, default_run_name

    for arm, extra in (("baseline-px", ["--model", "baseline", "--shift-order", "0"]),
                       ("bn-dropout", ["--model", "bn", "--keep-dropout"]),
                       ("bn-no-logits", ["--model", "bn", "--no-bn-on-logits"]),
                       ("bn", ["--model", "bn"])):
        args = build_parser().parse_args([*extra, "--precision", "bf16", "--seed", "8",
                                          "--channels-last"])  # as arm_command trains it
        lr = 1e-3 if "bn" in arm else 1e-4
        assert default_run_name(args, lr) == arm_run_name(arm, 8)


def test_neighbour_energy_closed_forms():
    import numpy as np
    import torch

    from bnbook.experiments.cifar.ablation import neighbour_difference_energy
    from bnbook.experiments.cifar.augment import shift_flip

    # a checkerboard of 0/1: every one of the 2 * 8 * 7 neighbour pairs differs by 1
    board = torch.from_numpy((np.indices((8, 8)).sum(0) % 2).astype(np.float64))[None, None]
    assert neighbour_difference_energy(board).item() == 2 * 8 * 7
    # half a pixel bilinear sideways averages each pair of neighbours to 0.5: columns 0-6
    # become flat grey; only the last column, which the border fill copies, keeps its 7
    # vertical differences of 1, and it differs from its grey neighbour by 0.5 in 8 rows
    moved = shift_flip(board, torch.tensor([[0.0, 0.5]], dtype=torch.float64),
                       torch.tensor([False]), order=1)
    assert neighbour_difference_energy(moved).item() == pytest.approx(7 + 8 * 0.25)
    # whole pixels (rounded) move the pattern: only the border's repeated column loses energy
    jumped = shift_flip(board, torch.tensor([[0.0, 1.2]], dtype=torch.float64),
                        torch.tensor([False]), order=0)
    assert neighbour_difference_energy(jumped).item() == 2 * 8 * 7 - 8


def test_whole_pixel_shifts_keep_more_detail_than_bilinear_ones():
    import numpy as np

    from bnbook.experiments.cifar.ablation import shift_energy_kept

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)   # white noise: all detail
    kept0, kept1 = shift_energy_kept(x, 0), shift_energy_kept(x, 1)
    assert 0.85 < kept0 <= 1.0      # only the filled border loses anything
    assert kept1 < 0.8 * kept0      # interpolation averages neighbours


def test_run_endpoint_reads_the_last_epochs():
    import statistics

    from bnbook.experiments.cifar.ablation import run_endpoint

    run = fake_run("bn", 7, 82.0, "bn")
    hist = run["history"]
    hist[20]["val_acc"] = 0.90                       # the best epoch, not the last
    hist[-1]["train_acc"] = 0.891
    losses = [0.5, 0.6, 0.55, 0.52, 0.9, 0.51, 0.58, 0.6, 0.49, 1.0]
    for h, loss in zip(hist[-10:], losses):
        h["val_loss"] = loss
    end = run_endpoint(run, last=10)
    assert end["final_val"] == pytest.approx(82.0) and end["best_val"] == pytest.approx(90.0)
    assert end["final_train"] == pytest.approx(89.1)
    assert end["late_val_loss"] == pytest.approx(statistics.mean(losses))
    assert end["late_val"] == pytest.approx(statistics.mean(100 * h["val_acc"] for h in hist[-10:]))
    assert end["late_val"] == pytest.approx(82.0 - 0.45)         # 0.1 point per epoch, rising
    # fake_run rises by 0.1 point per epoch: the last ten spread like 0, 0.1, ..., 0.9
    assert end["late_val_sd"] == pytest.approx(statistics.stdev(0.1 * k for k in range(10)))
    with pytest.raises(ValueError, match="the last 51 are needed"):
        run_endpoint(run, last=51)


def test_plot_arm_curves_averages_seeds_per_key(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bnbook.experiments.cifar.ablation import plot_arm_curves

    arms = load_arms(results, {"bn": (7, 8)})
    for r, loss in zip(arms["bn"].values(), (0.5, 0.7)):
        r["history"][-1]["val_loss"] = loss
    fig, (a, b) = plt.subplots(1, 2)
    plot_arm_curves(a, arms, {"bn": "C3"})
    plot_arm_curves(b, arms, {"bn": "C3"}, key="val_loss")
    assert a.lines[0].get_ydata()[-1] == pytest.approx(82.5)     # mean of 82 and 83, percent
    assert b.lines[0].get_ydata()[-1] == pytest.approx(0.6)      # nats, not scaled
    assert b.get_ylabel() == "validation loss (nats)" and "2 seeds" in a.get_legend_handles_labels()[1][0]
    plt.close(fig)

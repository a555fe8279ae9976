"""The command lines of the experiments added for chapter 9 (figure1-noise, cnn-noise,
ics-seeds, hessian, weightnorm, filter-angles, decay): each parses its command, has quick
settings with the full ones' keys, runs --quick end to end on the real data into a result with
provenance, resumes from its partial file and refuses a dirty tree writing into the book's
results."""

import json

import pytest

from bnbook.experiments.why import run_cnn_noise as why_cnn_noise
from bnbook.experiments.why import run_decay as why_decay
from bnbook.experiments.why import run_figure1_noise as why_figure1_noise
from bnbook.experiments.why import run_filter_angles as why_filter_angles
from bnbook.experiments.why import run_hessian as why_hessian
from bnbook.experiments.why import run_ics_seeds as why_ics_seeds
from bnbook.experiments.why import run_weightnorm as why_weightnorm
from bnbook.results import read_result

MODULES = [why_figure1_noise, why_cnn_noise, why_ics_seeds, why_hessian, why_weightnorm,
           why_filter_angles, why_decay]


@pytest.mark.parametrize("module", MODULES)
def test_every_new_experiment_parses_its_command_and_has_quick_settings(module):
    exp = module.EXPERIMENT
    args = module.build_parser().parse_args(["--quick", "--threads", "2", "--draft"])
    assert args.quick and args.threads == 2 and args.draft
    assert exp.prog == f"python -m {module.__name__}"
    assert set(exp.quick) == set(exp.full) and exp.quick != exp.full
    json.dumps(exp.full)
    assert len(exp.full["seeds"]) >= 3


@pytest.mark.parametrize("module", MODULES)
def test_a_recorded_command_can_be_rerun(module):
    from bnbook.results import parse_recorded_command

    program, args = parse_recorded_command(f"python -m {module.__name__} --quick")
    assert program == ["python", "-m", module.__name__] and args.quick


#: per experiment: the keys every run of its quick result must hold
RUN_KEYS = {why_figure1_noise: {"steps", "test_acc", "clean_train_loss", "clean_train_acc",
                                "movement"},
            why_cnn_noise: {"test_acc", "clean_train_loss", "epoch_train_loss", "movement"},
            why_ics_seeds: {"measurements", "layers", "test_acc"},
            why_hessian: {"measurements", "two_over_lr", "test_acc"},
            why_weightnorm: {"test_acc", "clean_train_loss", "direction_norm"},
            why_filter_angles: {"window_median", "predicted_momentum", "epoch_rms_angle"},
            why_decay: {"test_acc", "clean_train_loss", "lr"}}


@pytest.mark.parametrize("module", MODULES)
def test_quick_run_end_to_end_writes_a_result_with_provenance(module, tmp_path):
    out = tmp_path / "why"
    assert module.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    name = module.EXPERIMENT.name
    result = read_result(out / f"{name}-quick.json")
    quick = module.EXPERIMENT.quick
    assert result["settings"] == json.loads(json.dumps(quick))
    assert result["provenance"]["command"] == \
        f"python -m {module.__name__} --quick --out {out} --no-progress"
    assert result["provenance"]["threads"] == 1
    units = module.units(None, quick, False)
    assert sorted(result["runs"]) == sorted(k for k, _ in units)
    for run in result["runs"].values():
        assert RUN_KEYS[module] <= set(run) and run["cpu_seconds"] >= 0
    assert not (out / f"{name}-quick.partial.json").exists()


def test_a_partial_result_is_resumed_and_other_settings_are_refused(tmp_path, capsys):
    out = tmp_path / "why"
    exp = why_decay.EXPERIMENT
    assert why_decay.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    first = read_result(out / "decay-quick.json")
    # a partial holding the finished unit, as an interrupted run leaves it
    from bnbook.experiments.why.cli import _partial_settings

    expected = _partial_settings(exp, exp.quick, exp.data_info(exp.quick))
    marked = {**first["runs"]["x1/seed0"], "seconds": 123.0}
    (out / "decay-quick.partial.json").write_text(json.dumps(
        {"settings": expected, "runs": {"x1/seed0": marked}}))
    assert why_decay.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    again = read_result(out / "decay-quick.json")
    assert again["runs"]["x1/seed0"]["seconds"] == 123.0        # not run again
    assert again["runs"]["x5/seed0"]["test_acc"] == first["runs"]["x5/seed0"]["test_acc"]
    other = {**expected, "settings": {**expected["settings"], "epochs": 3}}
    (out / "decay-quick.partial.json").write_text(json.dumps({"settings": other, "runs": {}}))
    assert why_decay.main(["--quick", "--out", str(out), "--no-progress"]) == 2
    assert "refusing to resume" in capsys.readouterr().err


def test_a_dirty_tree_writing_into_the_books_results_is_refused_before_any_work(monkeypatch,
                                                                                 capsys):
    from bnbook import provenance
    from bnbook.experiments.why import cli as why_cli

    monkeypatch.setattr(provenance, "git_commit", lambda *a, **k: "abc123+dirty")
    monkeypatch.setattr(why_cli, "run_units", lambda *a, **k: pytest.fail("work was done"))
    with pytest.raises(SystemExit) as stop:
        why_hessian.main(["--quick", "--out", str(why_cli.WHY_RESULTS_DIR), "--no-progress"])
    assert stop.value.code == 2 and "--draft" in capsys.readouterr().err

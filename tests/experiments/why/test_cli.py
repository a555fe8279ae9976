"""The why-BN experiments' command line (bnbook.experiments.why.cli): partial results saved
after each unit, resumed only with matching settings, refused otherwise; and every experiment
module parses its own command."""

import json

import pytest

from bnbook.experiments.why import (cli as why_cli, run_figure1 as why_figure1,
                                    run_landscape as why_landscape, run_noisy_cnn as why_noisy_cnn,
                                    run_scale as why_scale)
from bnbook.experiments.why.cli import DataInfo, Experiment
from bnbook.results import read_result

SHA = "a" * 64


def fake_experiment(calls, fail_at=None):
    def units(data, settings, progress):
        def one(k):
            if k == fail_at:
                raise KeyboardInterrupt           # an interrupted run
            calls.append(k)
            return {"value": data * k, "seconds": 0.5}
        return [(f"unit{k}", (lambda k=k: one(k))) for k in settings["ks"]]

    return Experiment(name="fake", prog="python -m fake", description="a fake experiment",
                      full=dict(ks=[1, 2, 3]), quick=dict(ks=[1]),
                      data_info=lambda s: DataInfo("synthetic-numbers", None, {"n": 1}),
                      load=lambda s: 10, units=units)


def test_a_run_interrupted_after_one_unit_resumes_with_the_rest(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        why_cli.main(fake_experiment(calls, fail_at=2), ["--out", str(tmp_path),
                                                         "--no-progress"])
    partial = json.loads((tmp_path / "fake.partial.json").read_text())
    assert list(partial["runs"]) == ["unit1"]
    assert partial["settings"]["settings"] == {"ks": [1, 2, 3]}
    assert not (tmp_path / "fake.json").exists()
    assert why_cli.main(fake_experiment(calls), ["--out", str(tmp_path), "--no-progress"]) == 0
    assert calls == [1, 2, 3]                              # unit 1 was not run again
    result = read_result(tmp_path / "fake.json")
    assert result["runs"]["unit3"]["value"] == 30 and result["runs"]["unit3"]["seconds"] == 0.5
    assert result["runs"]["unit3"]["cpu_seconds"] >= 0
    assert result["run_seconds_total"] == 1.5 and result["run_cpu_seconds_total"] >= 0
    assert result["provenance"]["command"] == f"python -m fake --out {tmp_path} --no-progress"
    assert result["provenance"]["threads"] == 1
    assert not (tmp_path / "fake.partial.json").exists()


def test_a_partial_made_with_other_settings_is_refused_unless_restarted(tmp_path, capsys):
    calls = []
    exp = fake_experiment(calls)
    other = {"experiment": "fake", "settings": {"ks": [1, 2]}, "dataset": "synthetic-numbers",
             "dataset_sha256": None, "dataset_subset": {"n": 1}}
    (tmp_path / "fake.partial.json").write_text(json.dumps({"settings": other,
                                                            "runs": {"unit1": {"value": -1}}}))
    assert why_cli.main(exp, ["--out", str(tmp_path), "--no-progress"]) == 2
    assert "refusing to resume" in capsys.readouterr().err and calls == []
    assert why_cli.main(exp, ["--out", str(tmp_path), "--no-progress", "--restart"]) == 0
    assert calls == [1, 2, 3]
    assert read_result(tmp_path / "fake.json")["runs"]["unit1"]["value"] == 10


def test_quick_settings_write_their_own_file(tmp_path):
    calls = []
    assert why_cli.main(fake_experiment(calls), ["--quick", "--out", str(tmp_path),
                                                 "--no-progress"]) == 0
    assert calls == [1] and (tmp_path / "fake-quick.json").exists()


@pytest.mark.parametrize("module", [why_figure1, why_noisy_cnn, why_landscape, why_scale])
def test_every_experiment_parses_its_command_and_has_quick_settings(module):
    exp = module.EXPERIMENT
    args = module.build_parser().parse_args(["--quick", "--threads", "2"])
    assert args.quick and args.threads == 2
    assert exp.prog == f"python -m {module.__name__}"
    assert set(exp.quick) == set(exp.full) and exp.quick != exp.full
    json.dumps(exp.full)                                   # settings are JSON


@pytest.mark.parametrize("name", ["run_figure1", "run_noisy_cnn", "run_landscape", "run_scale"])
def test_a_recorded_command_can_be_rerun(name):
    from bnbook.results import parse_recorded_command, rerun_command

    command = f"python -m bnbook.experiments.why.{name} --quick --threads 2"
    program, args = parse_recorded_command(command)
    assert program == ["python", "-m", f"bnbook.experiments.why.{name}"] and args.threads == 2
    assert rerun_command(command) == command

"""Reliability of the CIFAR-10 runs (issue 23): a command deletes or overwrites only what it
made, every setting that changes a run is in its name, one run at a time per folder, and
outputs that cannot be written are refused before any work."""

import json

import pytest

import bnbook.experiments.cifar.cli as cifar
from bnbook.experiments.cifar.cli import build_parser, default_run_name

from cifar_cli_helpers import BASE, dirs  # noqa: F401  (dirs is a fixture)


def cli(*args, synthetic=16):
    return cifar.main([*BASE, "--synthetic", str(synthetic), "--epochs", "1", *args])


def test_restart_deletes_only_a_bnbook_checkpoint(dirs, tmp_path, capsys):  # item 1
    stored = tmp_path / "dropout.json"
    stored.write_text(json.dumps({"run": "dropout", "history": []}))
    before = stored.read_bytes()
    assert cli("--checkpoint", str(stored), "--restart") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(stored) in err and "not" in err
    assert stored.read_bytes() == before


def test_settings_that_change_the_trajectory_are_in_the_run_name():  # item 2
    parse = build_parser().parse_args
    base = ["--model", "bn", "--precision", "fp32"]
    variants = [[], ["--batch-size", "16"], ["--decay", "0.5"], ["--channels-last"],
                ["--sync-bn"]]
    names = [default_run_name(parse(base + extra), 1e-3) for extra in variants]
    assert len(set(names)) == len(variants), names
    # the book's runs keep their names: bf16 channels_last and fp32 contiguous
    assert names[0] == "bn-lr0.001-e50-seed7-fp32"
    book = parse(["--model", "bn", "--precision", "bf16", "--channels-last"])
    assert default_run_name(book, 1e-3) == "bn-lr0.001-e50-seed7-bf16"
    assert default_run_name(parse(["--model", "bn", "--precision", "bf16"]), 1e-3) != \
        "bn-lr0.001-e50-seed7-bf16"


def test_restart_of_a_run_with_other_settings_keeps_the_first(dirs):  # item 2
    runs, _ = dirs
    assert cli() == 0
    assert cli("--batch-size", "16", "--restart") == 0
    assert len([p for p in runs.iterdir() if p.is_dir()]) == 2


def test_a_second_run_on_a_locked_folder_is_refused(dirs, capsys):  # item 4
    from bnbook.experiments.cifar.run import run_lock

    runs, _ = dirs
    folder = runs / "race"
    with run_lock([folder / "checkpoint.pt"], "race", "first command"):
        assert cli("--run-name", "race") == 2
    err = capsys.readouterr().err
    assert "in use by another run" in err and "first command" in err
    assert not (folder / "result.json").exists()
    assert cli("--run-name", "race") == 0  # released


def test_save_final_weights_never_overwrites(dirs, tmp_path, capsys):  # item 5
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"someone's weights")
    assert cli("--save-final-weights", str(weights)) == 2
    assert weights.read_bytes() == b"someone's weights"
    assert "--save-final-weights" in capsys.readouterr().err
    fresh = tmp_path / "w{rank}.pt"
    assert cli("--save-final-weights", str(fresh), "--run-name", "other") == 0
    assert (tmp_path / "w0.pt").stat().st_size > 0


def test_an_unwritable_output_is_refused_before_any_work(dirs, tmp_path, capsys,
                                                          monkeypatch):  # item 20, 24
    blocker = tmp_path / "file"
    blocker.write_text("x")
    trained = []
    monkeypatch.setattr("bnbook.experiments.cifar.train.train", lambda *a, **k: trained.append(1))
    assert cli("--out", str(blocker / "result.json")) == 2
    assert "cannot write" in capsys.readouterr().err and not trained
    with pytest.raises(SystemExit) as exc:  # argparse's exit: a usage line and error: ...
        cli("--run-name", "x" * 300)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: --run-name" in err and not trained

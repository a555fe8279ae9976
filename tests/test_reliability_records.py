"""Reliability of what runs record and read back (issue 23): published files stay inside
their folder and are validated, resumed state is consistent, result files that are not
results are refused with one line naming the file."""

import json

import pytest
import torch

import bnbook.cifar as cifar
from bnbook import results

from cifar_cli_helpers import BASE as CLI_BASE, dirs  # noqa: F401  (dirs is a fixture)

BASE = [*CLI_BASE, "--synthetic", "16"]


def one_run(runs):
    assert cifar.main([*BASE, "--epochs", "1"]) == 0
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    return folder


@pytest.mark.parametrize("content", [
    {"run": "../practice/zzz-new", "history": "garbage"},
    {"run": "../practice/zzz-new", "model": "bn", "config": {}, "provenance": {},
     "history": []},
    [1, 2], "not json", {"history": []}])
def test_publish_validates_and_stays_in_its_folder(dirs, tmp_path, capsys, content):  # 11, 22
    _, published = dirs
    source = tmp_path / "crafted.json"
    source.write_text(content if isinstance(content, str) else json.dumps(content))
    assert cifar.main(["publish", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(source) in err or "plain name" in err
    assert list(published.iterdir()) == [] and not (published.parent / "practice").exists()


def test_publish_as_and_run_name_cannot_escape(dirs, capsys):  # item 11
    runs, published = dirs
    folder = one_run(runs)
    assert cifar.main(["publish", str(folder), "--as", "../../../escaped"]) == 2
    assert "--as" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cifar.main([*BASE, "--epochs", "1", "--run-name", "../../.."])
    assert exc.value.code == 2 and "--run-name" in capsys.readouterr().err
    assert cifar.main(["publish", str(folder)]) == 0
    assert [p.name for p in published.iterdir()] == ["bn-lr0.001-e1-synthetic16-seed7-fp32.json"]


def _crafted_checkpoint(folder, **changes):
    ck = folder / "checkpoint.pt"
    payload = torch.load(ck, map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if key == "weight":
            name = next(iter(payload["model"]))
            payload["model"][name] = value(payload["model"][name])
        else:
            payload[key] = value
    torch.save(payload, ck)
    return ck


@pytest.mark.parametrize("changes, field", [
    ({"step": 10**30}, "step"), ({"epoch": -3}, "epoch"), ({"history": "garbage"}, "history"),
    ({"started": 5}, "started"), ({"wall_seconds": "abc"}, "wall_seconds"),
    ({"model": [1, 2]}, "model"),
    ({"weight": lambda t: torch.full_like(t, float("nan"))}, "NaN"),
    ({"weight": lambda t: torch.zeros(3, 3)}, "model")])
def test_crafted_checkpoint_state_is_refused_before_an_epoch(dirs, capsys, changes,
                                                             field):  # 12, 20, 23
    runs, _ = dirs
    folder = one_run(runs)
    ck = _crafted_checkpoint(folder, **changes)
    capsys.readouterr()
    assert cifar.main([*BASE, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(ck) in err and field in err
    assert len(err.strip().splitlines()) == 1
    assert json.loads((folder / "result.json").read_text())["history"][-1]["epoch"] == 1


def test_resume_at_another_thread_count_is_refused(dirs, capsys):  # item 12
    runs, _ = dirs
    one_run(runs)
    args = [a if a != "1" else "2" for a in BASE]  # --threads 2
    try:
        assert cifar.main([*args, "--epochs", "2", "--resume"]) == 2
    finally:
        torch.set_num_threads(1)
    assert "--threads 1" in capsys.readouterr().err


@pytest.mark.parametrize("raw", [
    "1" * 5000, '{"a": 1}'.encode("utf-16"), b"\xff\xfe{bad", "[" * 100000])
def test_read_result_names_the_file_for_anything_that_is_not_a_result(tmp_path, raw):  # 21
    path = tmp_path / "r.json"
    path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    with pytest.raises(ValueError, match="r.json"):
        results.read_result(path)


def _run_result():
    return {"run": "r", "model": "bn", "config": {}, "provenance": {},
            "history": [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0,
                         "val_acc": None, "seconds": 1.0}]}


def test_check_run_refuses_non_numbers_with_value_error():  # item 21
    with pytest.raises(ValueError, match="val_acc"):
        results.check_run(_run_result())
    bad = _run_result()
    bad["history"][0] = "epoch one"
    with pytest.raises(ValueError, match="entry 0"):
        results.check_run(bad)


def test_rerun_refusals_are_one_line_errors(tmp_path, capsys):  # item 22
    path = tmp_path / "r.json"
    path.write_text("not json")
    assert results.main(["rerun", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err
    with pytest.raises(ValueError, match="not a command"):
        results.parse_recorded_command("python -m bnbook.experiments.why_cli --quick")


def test_publish_refuses_a_dirty_run_into_the_books_results_unless_a_draft(dirs, monkeypatch,
                                                                          capsys):
    runs, published = dirs
    monkeypatch.setattr(results, "RESULTS_DIR", published.parent)  # the book reads published/
    folder = one_run(runs)
    result = json.loads((folder / "result.json").read_text())
    assert result["provenance"]["provenance_version"] == 1 and result["provenance"]["cpu"]
    result["provenance"]["git_commit"] = "f" * 40 + "+dirty"
    (folder / "result.json").write_text(json.dumps(result))
    assert cifar.main(["publish", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "uncommitted code" in err and "--draft" in err and list(published.iterdir()) == []
    assert cifar.main(["publish", str(folder), "--draft"]) == 0
    (target,) = published.iterdir()
    assert json.loads(target.read_text())["provenance"]["draft"] is True
    with pytest.raises(ValueError, match="is a draft"):
        results.read_result(target)

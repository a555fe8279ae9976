"""Reliability of the CIFAR-10 command line and its checkpoints (``bnbook.experiments.cifar.cli``,
``bnbook.experiments.cifar.train``, ``bnbook.experiments.cifar.checkpoints``): nothing committed or resumable is overwritten
silently, extension and resume work or fail clearly, checkpoints load without running code,
and hostile settings are refused with messages that say what to do."""

import json
import os
import pickle

import pytest
import torch

import bnbook.experiments.cifar.cli as cifar
from bnbook.experiments.cifar.cli import synthetic_cifar
from bnbook.experiments.cifar.checkpoints import restore_checkpoint
from bnbook.experiments.cifar.config import TrainConfig
from bnbook.experiments.cifar.train import train

from cifar_cli_helpers import BASE, dirs  # noqa: F401  (dirs is a fixture)


def cli(*args, synthetic=32):
    return cifar.main([*BASE, "--synthetic", str(synthetic), *args])


def run_dir(runs):
    (only,) = [p for p in runs.iterdir() if p.is_dir()]
    return only


def epoch_of(path):
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


# ------------------------------------------------------------------ 1. where runs go, publishing


def test_default_run_is_written_under_runs_not_into_the_book_results(dirs):
    runs, results = dirs
    assert cli("--epochs", "1") == 0
    assert list(results.iterdir()) == []  # nothing published by training
    folder = run_dir(runs)
    assert "-e1-" not in folder.name  # the folder does not depend on --epochs
    result = json.loads((folder / "result.json").read_text())
    assert result["run"] == "bn-lr0.001-e1-synthetic32-seed7-fp32"
    assert (folder / "checkpoint.pt").exists()


def test_publish_copies_refuses_to_overwrite_and_marks_a_partial_run(dirs, capsys):
    runs, results = dirs
    assert cli("--epochs", "1") == 0
    folder = run_dir(runs)
    assert cifar.main(["publish", str(folder)]) == 0
    target = results / "bn-lr0.001-e1-synthetic32-seed7-fp32.json"
    published = json.loads(target.read_text())
    assert published["history"] == json.loads((folder / "result.json").read_text())["history"]
    assert "partial" not in published["provenance"]
    # publishing the same run again updates its own file
    assert cifar.main(["publish", folder.name]) == 0
    # another run's file at the target is kept unless --force
    other = {"run": "someone-else", "provenance": {"started": "2020-01-01"}, "history": []}
    target.write_text(json.dumps(other))
    capsys.readouterr()
    assert cifar.main(["publish", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "--force" in err
    assert json.loads(target.read_text()) == other
    assert cifar.main(["publish", str(folder), "--force"]) == 0
    assert json.loads(target.read_text())["run"] == published["run"]
    # an unfinished run is published, marked partial
    unfinished = json.loads((folder / "result.json").read_text())
    unfinished["provenance"]["finished"] = None
    (folder / "result.json").write_text(json.dumps(unfinished))
    assert cifar.main(["publish", str(folder), "--as", "in-progress"]) == 0
    assert json.loads((results / "in-progress.json").read_text())["provenance"]["partial"] is True
    assert "partial" in capsys.readouterr().out


def test_publish_flag_publishes_after_training(dirs):
    runs, results = dirs
    assert cli("--epochs", "1", "--publish") == 0
    (published,) = results.iterdir()
    assert json.loads(published.read_text())["provenance"]["finished"] is not None


def test_explicit_out_onto_another_runs_result_is_refused(dirs, tmp_path, capsys):
    out = tmp_path / "committed.json"
    committed = {"run": "bn-e50-seed7-fp32", "model": "bn", "config": {"lr": 1e-3},
                 "provenance": {"started": "2026-01-01T00:00:00", "finished": "2026-01-02"},
                 "history": [{"epoch": 1}]}
    out.write_text(json.dumps(committed))
    assert cli("--epochs", "1", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and str(out) in err
    assert json.loads(out.read_text()) == committed
    # a file that is not a result at all is not overwritten either
    out.write_text("not json")
    assert cli("--epochs", "1", "--out", str(out), "--restart") == 2
    assert out.read_text() == "not json"


# ------------------------------------------------------------------ 2. existing checkpoints


def test_an_existing_checkpoint_is_never_replaced_silently(dirs, capsys):
    runs, _ = dirs
    assert cli("--epochs", "2") == 0
    ckpt = run_dir(runs) / "checkpoint.pt"
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert cli("--epochs", "1") == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "--resume" in err and "--restart" in err
    assert ckpt.read_bytes() == before and epoch_of(ckpt) == 2
    # the library refuses too
    data = synthetic_cifar(32, seed=7)
    with pytest.raises(ValueError, match="restart"):
        train(TrainConfig(model="bn", epochs=1, threads=1, precision="fp32"), data,
              progress=False, checkpoint_path=ckpt)
    assert ckpt.read_bytes() == before
    # --restart deletes it explicitly and starts over (its own result too)
    assert cli("--epochs", "1", "--restart") == 0
    assert epoch_of(ckpt) == 1
    result = json.loads((run_dir(runs) / "result.json").read_text())
    assert [e["epoch"] for e in result["history"]] == [1]


# ------------------------------------------------------------------ 3. extending a run


def test_resume_with_more_epochs_extends_the_run(dirs):
    runs, _ = dirs
    assert cli("--epochs", "1") == 0
    assert cli("--epochs", "2", "--resume") == 0
    folder = run_dir(runs)
    result = json.loads((folder / "result.json").read_text())
    assert [e["epoch"] for e in result["history"]] == [1, 2]
    assert result["run"] == "bn-lr0.001-e2-synthetic32-seed7-fp32"
    assert result["provenance"]["resumes"][0]["at_epoch"] == 1
    assert epoch_of(folder / "checkpoint.pt") == 2


def test_resume_with_fewer_epochs_than_done_is_a_clear_error(dirs, capsys):
    runs, _ = dirs
    assert cli("--epochs", "2") == 0
    capsys.readouterr()
    assert cli("--epochs", "1", "--resume") == 2
    assert "already done 2 epochs" in capsys.readouterr().err
    assert epoch_of(run_dir(runs) / "checkpoint.pt") == 2


# ------------------------------------------------------------------ 4. checkpoints cannot run code


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_a_crafted_checkpoint_does_not_run_code(tmp_path, capsys, form, dirs):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    payload = {"config": {}, "epoch": 1, "step": 1, "history": [], "model": _Exploit(marker)}
    if form == "torch.save":
        torch.save(payload, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(payload))
    assert cli("--epochs", "2", "--resume", "--checkpoint", str(ckpt),
               "--out", str(tmp_path / "r.json")) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert str(ckpt) in err and "tensors and plain values" in err and "--restart" in err


def test_checkpoints_hold_only_tensors_and_plain_values(dirs):
    runs, _ = dirs
    assert cli("--epochs", "1") == 0
    ckpt = torch.load(run_dir(runs) / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert "rng" not in ckpt and ckpt["config"]["seed"] == 7
    assert ckpt["dataset"]["variant"] == "synthetic-random-32"
    assert len(ckpt["dataset"]["data_sha256"]) == 64


# ------------------------------------------------------------------ 8. resuming on other data


def test_resume_on_other_data_is_refused(dirs, tmp_path, capsys):
    ck, out = tmp_path / "c.pt", tmp_path / "r.json"
    assert cli("--epochs", "1", "--checkpoint", str(ck), "--out", str(out), synthetic=32) == 0
    capsys.readouterr()
    assert cli("--epochs", "2", "--resume", "--checkpoint", str(ck), "--out", str(out),
               synthetic=40) == 2
    assert "other data" in capsys.readouterr().err and epoch_of(ck) == 1
    # same dataset label, different images: the arrays' checksum tells them apart
    config = TrainConfig(model="bn", epochs=2, threads=1, precision="fp32", device="cpu")
    label = {"variant": "synthetic-random-32", "sha256": None}
    with pytest.raises(ValueError, match="other data.*data_sha256"):
        train(config, synthetic_cifar(32, seed=99), progress=False, checkpoint_path=ck,
              resume=True, dataset=label)
    # ... and a different dataset checksum with the same arrays
    with pytest.raises(ValueError, match="other data.*'sha256'"):
        train(config, synthetic_cifar(32, seed=7), progress=False, checkpoint_path=ck,
              resume=True, dataset={**label, "sha256": "0" * 64})


# ------------------------------------------------------------------ 9. hostile settings


@pytest.mark.parametrize("n", ["0", "-1", "4"])
def test_synthetic_too_small_is_an_error_not_real_cifar(dirs, monkeypatch, capsys, n):
    import bnbook.data

    def no_real_data(*args, **kwargs):
        raise AssertionError("--synthetic fell through to the real CIFAR-10")

    monkeypatch.setattr(bnbook.data, "load_cifar10", no_real_data)
    with pytest.raises(SystemExit) as exit_:
        cifar.main([*BASE, "--epochs", "1", "--synthetic", n])
    assert exit_.value.code == 2
    assert "--synthetic N needs N >= 5" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [
    ("decay", float("nan")), ("decay", float("inf")), ("rho", float("nan")),
    ("eps", float("inf")), ("eps", float("nan")), ("lr", float("nan")), ("lr", float("inf"))])
def test_non_finite_hyperparameters_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(model="bn", **{field: value})


def test_non_finite_decay_on_the_command_line(dirs, capsys):
    assert cli("--epochs", "1", "--decay", "nan") == 2
    assert "decay must be a finite number" in capsys.readouterr().err


def test_a_last_batch_of_one_image_is_dropped(dirs):
    result = train(TrainConfig(model="bn", epochs=1, threads=1, precision="fp32",
                               device="cpu", batch_size=32), synthetic_cifar(33),
                   progress=False)
    assert result["config"]["steps_per_epoch"] == 1
    assert len(result["history"]) == 1
    # a last batch of two is kept
    result = train(TrainConfig(model="bn", epochs=1, threads=1, precision="fp32",
                               device="cpu", batch_size=32), synthetic_cifar(34),
                   progress=False)
    assert result["config"]["steps_per_epoch"] == 2


# ------------------------------------------------------------------ 10. clear errors


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_checkpoint_gives_a_clear_error(dirs, tmp_path, capsys, damage):
    ck, out = tmp_path / "c.pt", tmp_path / "r.json"
    assert cli("--epochs", "1", "--checkpoint", str(ck), "--out", str(out)) == 0
    good = ck.read_bytes()
    ck.write_bytes({"truncated": good[:len(good) // 2], "empty": b"",
                    "garbage": b"\x00not a checkpoint" * 10}[damage])
    capsys.readouterr()
    assert cli("--epochs", "2", "--resume", "--checkpoint", str(ck), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert str(ck) in err and "--restart" in err and "Traceback" not in err


@pytest.mark.parametrize("seed", ["-1", str(2**70), str(2**63)])
def test_out_of_range_seeds_are_refused(dirs, capsys, seed):
    assert cli("--epochs", "1", "--seed", seed) == 2
    assert "seed must be in 0..2**63-1" in capsys.readouterr().err


def test_largest_seed_is_accepted():
    assert TrainConfig(seed=2**63 - 1).seed == 2**63 - 1


def test_restore_checkpoint_api_raises_checkpoint_error(tmp_path):
    from bnbook.experiments.cifar.checkpoints import CheckpointError

    ck = tmp_path / "c.pt"
    ck.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match=str(ck)):
        restore_checkpoint(ck, TrainConfig(), 1, {}, {}, None)

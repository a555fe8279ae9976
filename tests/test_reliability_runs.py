"""Reliability of the CIFAR-10 runs (issue 23): a command deletes or overwrites only what it
made, every setting that changes a run is in its name, one run at a time per folder, and
outputs that cannot be written are refused before any work."""

import ctypes
import json
import os
import resource
import shlex
import subprocess
import sys

import pytest

import bnbook.experiments.cifar.cli as cifar
from bnbook import results
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
    assert not (tmp_path / ".bnbook-run.lock").exists()  # no lock file left beside it


def _real_checkpoint(folder):
    """A checkpoint (and result) a finished one-epoch run wrote into ``folder``."""
    ck = folder / "checkpoint.pt"
    assert cli("--run-name", folder.name, "--checkpoint", str(ck),
               "--out", str(folder / "result.json")) == 0
    return ck


def test_restart_keeps_a_bnbook_checkpoint_outside_the_run_folder(dirs, tmp_path,
                                                                  capsys):  # item 1
    runs, _ = dirs
    ck = _real_checkpoint(tmp_path / "elsewhere")
    before = ck.read_bytes()
    capsys.readouterr()
    assert cli("--checkpoint", str(ck), "--restart") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(ck) in err and "outside" in err and ck.read_bytes() == before
    # a link in the run's folder is resolved: the file it names is outside, and kept
    linked = runs / "linked"
    linked.mkdir(parents=True)
    (linked / "checkpoint.pt").symlink_to(ck)
    assert cli("--run-name", "linked", "--restart") == 2
    assert "outside" in capsys.readouterr().err and ck.read_bytes() == before
    assert (linked / "checkpoint.pt").is_symlink()


def test_rerun_of_a_crafted_restart_command_keeps_the_checkpoint(dirs, tmp_path,
                                                                 capfd):  # item 1
    ck = _real_checkpoint(tmp_path / "elsewhere")
    before = ck.read_bytes()
    crafted = json.loads((ck.parent / "result.json").read_text())
    crafted["provenance"]["command"] = shlex.join([
        "python", "-m", "bnbook.experiments.cifar", *BASE, "--synthetic", "16", "--epochs", "1",
        "--out", str(tmp_path / "rerun" / "result.json"), "--checkpoint", str(ck),
        "--restart"])
    path = tmp_path / "crafted.json"
    path.write_text(json.dumps(crafted))
    capfd.readouterr()
    assert results.main(["rerun", str(path)]) == 2
    err = capfd.readouterr().err
    assert "error: --restart deletes only a checkpoint inside" in err and str(ck) in err
    assert ck.read_bytes() == before and not (tmp_path / "rerun" / "result.json").exists()


def test_restart_does_not_delete_a_published_copy_named_by_out(dirs, capsys):  # item 1
    runs, published_dir = dirs
    assert cli() == 0
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    assert cifar.main(["publish", str(folder)]) == 0
    (published,) = published_dir.iterdir()  # the same `started` as the run's own result
    kept = {p: p.read_bytes() for p in (published, folder / "checkpoint.pt")}
    capsys.readouterr()
    assert cli("--out", str(published), "--restart") == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in kept} == kept  # the checkpoint too: refused first


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
    assert not (folder / ".bnbook-run.lock").exists()  # and removed by the run that held it


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


#: A CIFAR command line in a child process whose writes are limited by ``preexec``.
_CHILD = "import sys, bnbook.experiments.cifar.cli as c; sys.exit(c.main(sys.argv[1:]))"


def _limited_cli(tmp_path, preexec, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *BASE, "--synthetic", "16", "--epochs", "1",
         "--out", str(tmp_path / "out" / "result.json"),
         "--checkpoint", str(tmp_path / "out" / "checkpoint.pt"), *args],
        preexec_fn=preexec, env=env, capture_output=True, text=True, timeout=300)


def _file_size_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))  # a checkpoint is ~10 MiB


def _without_root_file_override():
    """Root writes into a read-only folder unless it drops CAP_DAC_OVERRIDE (and
    CAP_DAC_READ_SEARCH) from the capabilities the child is started with."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # PR_CAPBSET_DROP
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_file_size_limit_is_refused_before_an_epoch(tmp_path):  # item 20
    done = _limited_cli(tmp_path, _file_size_limit)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # not SIGXFSZ (-25)
    assert done.stderr.startswith("error: cannot write ") and "checkpoint.pt" in done.stderr
    assert "probe" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "result.json").exists() and "val_acc" not in done.stdout
    assert not any(p.name.startswith(".bnbook-write-check") for p in (tmp_path / "out").iterdir())


def test_a_read_only_folder_is_refused_before_an_epoch(tmp_path):  # item 20
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o555)
    try:
        probe = subprocess.run(["touch", str(tmp_path / "out" / "x")],
                               preexec_fn=_without_root_file_override, capture_output=True)
        assert probe.returncode != 0, "the test's folder is writable after chmod 555"
        done = _limited_cli(tmp_path, _without_root_file_override)
    finally:
        (tmp_path / "out").chmod(0o755)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stderr.startswith("error: cannot write ") and "result.json" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "val_acc" not in done.stdout
    assert not list((tmp_path / "out").iterdir())


def test_the_trainer_probes_its_outputs_before_an_epoch(tmp_path):  # item 20, the library
    code = ("import sys; from bnbook.experiments.cifar.cli import synthetic_cifar; "
            "from bnbook.experiments.cifar.config import TrainConfig; "
            "from bnbook.experiments.cifar.train import train; "
            "train(TrainConfig(model='bn', epochs=1, threads=1, precision='fp32', "
            "device='cpu', eval_batch_size=32), synthetic_cifar(16, seed=7), progress=False, "
            "out=sys.argv[1] + '/result.json', checkpoint_path=sys.argv[1] + '/ck.pt', "
            "dataset={'variant': 'synthetic', 'sha256': None})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                          preexec_fn=_file_size_limit, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "OSError: cannot write" in done.stderr, done.stderr[-2000:]
    assert "ck.pt" in done.stderr and not (tmp_path / "result.json").exists()


def test_a_run_on_own_cifar_data_has_its_own_name(dirs, tmp_path, monkeypatch,
                                                  capsys):  # item 2's rule, item 7
    import tarfile

    import bnbook.data

    from data_helpers import make_image_folder

    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    archive = tmp_path / "own-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="cifar10")
    monkeypatch.setenv("BNBOOK_CIFAR10", str(archive))
    load = bnbook.data.load_cifar10
    monkeypatch.setattr(bnbook.data, "load_cifar10", lambda *a, **k: pytest.fail("loaded"))
    argv = [*BASE, "--epochs", "1", "--subset", "10"]
    assert cifar.main(argv) == 2  # refused before the data loads
    assert "--allow-unknown-data" in capsys.readouterr().err
    assert cifar.main([*argv, "--allow-unknown-data", "--publish"]) == 2
    assert "--publish" in capsys.readouterr().err
    monkeypatch.setattr(bnbook.data, "load_cifar10", load)
    assert cifar.main([*argv, "--allow-unknown-data"]) == 0
    runs, _ = dirs
    assert [p.name for p in runs.iterdir()] == ["bn-lr0.001-sub10-seed7-fp32-own-data"]

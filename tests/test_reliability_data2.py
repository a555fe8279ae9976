"""Reliability of data and results (issue 23, third pass): unknown data copies are refused
unless the user asks for them (and never land on a stored result), CIFAR-10 copies that are
not the known ones get their own variant, sweeps are checked against their profile."""

import json

import pytest

from data_helpers import (clean_env, fake_fashion, fake_fashion_arrays,  # noqa: F401
                          fashion_source, write_fashion)


@pytest.fixture(scope="module")
def unknown_fashion(tmp_path_factory):
    """Fashion-MNIST-shaped files whose IDX bytes match no published checksum."""
    arrays = fake_fashion_arrays()
    arrays["y_train"] = (arrays["y_train"] + 1) % 10
    return write_fashion(tmp_path_factory.mktemp("own") / "fashion", arrays)


def test_unknown_fashion_mnist_is_refused_unless_allowed(unknown_fashion, monkeypatch,
                                                        tmp_path, capsys):  # item 6
    from bnbook.experiments.practice import cli as practice_cli
    from bnbook.experiments.why import run_figure1 as why_figure1

    monkeypatch.setenv("BNBOOK_FASHION_MNIST", str(unknown_fashion))
    out = tmp_path / "out"
    argv = ["placement", "--quick", "--n-train", "200", "--n-test", "100", "--out", str(out),
            "--no-progress"]
    assert practice_cli.main(argv) == 2
    assert "--allow-unknown-data" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert why_figure1.main(["--quick", "--out", str(out), "--no-progress"]) == 2
    assert "fashion-mnist/unknown" in capsys.readouterr().err
    assert practice_cli.main([*argv, "--allow-unknown-data"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["placement-quick-own-data.json"]
    saved = json.loads((out / "placement-quick-own-data.json").read_text())
    assert saved["provenance"]["dataset"] == "fashion-mnist/unknown"


def _small_image_tar(tmp_path, duplicates: int = 0):
    import tarfile

    from data_helpers import make_image_folder

    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    archive = tmp_path / "own-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="cifar10")
        first = next(p for p in sorted(tree.rglob("*.jpg")))
        for _ in range(duplicates):
            tar.add(first, arcname="cifar10/" + first.relative_to(tree).as_posix())
    return archive


def test_an_unknown_cifar_copy_gets_its_own_variant_and_is_refused_by_results(
        tmp_path, monkeypatch):  # item 7
    from bnbook.data import cifar10, cifar10_info, load_cifar10
    from bnbook.results import read_result
    from data_helpers import sample_provenance

    archive = _small_image_tar(tmp_path)
    monkeypatch.setenv("BNBOOK_CIFAR10", str(archive))
    info = cifar10_info()
    assert info["variant"] == f"unknown-{info['sha256'][:12]}-10train-10test"
    assert load_cifar10(progress=False)[0].shape[0] == 10
    from bnbook.experiments.norms import sweep as norm_sweep

    out = tmp_path / "norms"
    assert norm_sweep.main(["--quick", "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()
    dup = _small_image_tar(tmp_path / "dup", duplicates=3)
    monkeypatch.setenv("BNBOOK_CIFAR10", str(dup))
    with pytest.raises(ValueError, match="duplicate"):
        cifar10_info()
    with pytest.raises(ValueError, match="duplicate"):
        cifar10.read_image_folder(dup)
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"provenance": sample_provenance(
        dataset=f"cifar10/{info['variant']}", dataset_sha256=info["sha256"]), "acc": 0.5}))
    with pytest.raises(ValueError, match="matches no published checksum"):
        read_result(result)


def test_fashion_mnist_memo_rehashes_a_file_changed_in_place(fake_fashion, tmp_path,
                                                              monkeypatch):  # item 8
    import gzip
    import os

    from bnbook.data import fashion_mnist, load_fashion_mnist, provide_fashion_mnist
    from data_helpers import copy_tree, idx_bytes

    folder, arrays = fake_fashion
    data_dir = tmp_path / "d"
    copy_tree(folder, data_dir / "fashion-mnist")
    assert provide_fashion_mnist(data_dir)["status"] == "already present"
    labels = data_dir / "fashion-mnist" / fashion_mnist.FASHION_MNIST_FILES["y_train"]
    before = labels.stat()
    shifted = gzip.compress(idx_bytes((arrays["y_train"] + 1) % 10), compresslevel=1, mtime=0)
    assert len(shifted) <= before.st_size
    # padded with zeros to the same size (gzip skips zero padding), the same mtime
    labels.write_bytes(shifted + b"\0" * (before.st_size - len(shifted)))
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert labels.stat().st_size == before.st_size
    with pytest.raises(ValueError, match="not the published one|SHA-256|corrupt"):
        provide_fashion_mnist(data_dir)
    with pytest.raises(ValueError):
        load_fashion_mnist(data_dir=data_dir)


def _stored_sweep():
    from bnbook.experiments.norms.sweep import SWEEP_RESULT

    return json.loads(SWEEP_RESULT.read_text())


@pytest.mark.parametrize("cut", ["one-seed", "two-methods", "stray-run", "no-recalibrated",
                                 "string-acc", "string-diverged", "no-batch-sizes"])
def test_load_sweep_checks_against_the_profile(cut, tmp_path):  # items 10, 21
    from bnbook.experiments.norms.sweep import cell_key, cells_of
    from bnbook.experiments.norms.sweep_report import check_sweep, load_norm_sweep

    sweep = _stored_sweep()
    s, runs = sweep["settings"], sweep["runs"]
    if cut == "one-seed":
        s["seeds"] = s["seeds"][:1]
    elif cut == "two-methods":
        s["methods"] = s["methods"][:2]
    elif cut == "stray-run":
        runs["batch/m3/seed0"] = dict(runs["batch/m2/seed0"])
    elif cut == "no-recalibrated":
        del runs["batch/m2/seed1"]["test_acc_recalibrated"]
    elif cut == "string-acc":
        runs["layer/m4/seed0"]["test_acc"] = "0.5"
    elif cut == "string-diverged":
        runs["layer/m4/seed0"]["diverged"] = "no"
    else:
        s["batch_sizes"] = []
    sweep["runs"] = {k: v for k, v in runs.items()
                     if k in {cell_key(*c) for c in cells_of(s)} or cut == "stray-run"}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    with pytest.raises(ValueError, match="sweep.json") as err:
        load_norm_sweep(path)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    with pytest.raises(ValueError):
        check_sweep(sweep, None if cut in ("string-acc", "string-diverged",
                                           "no-batch-sizes", "no-recalibrated") else "full")


@pytest.mark.parametrize("crafted", ["acc-5", "sessions-string", "session-without-cells"])
def test_a_crafted_partial_sweep_is_refused_before_any_cell(crafted, tmp_path, monkeypatch,
                                                             capsys):  # item 20
    from bnbook.experiments.norms import sweep as norm_sweep

    info = {"variant": "jpeg-image-folder", "sha256": "a" * 64}
    monkeypatch.setattr("bnbook.data.cifar10_info", lambda *a, **k: info)
    expected = norm_sweep._partial_settings("quick", norm_sweep.PROFILES["quick"], info)
    key = norm_sweep.cell_key(*norm_sweep.cells_of(norm_sweep.PROFILES["quick"])[0])
    run = {"diverged": False, "test_acc": 5.0 if crafted == "acc-5" else 0.5,
           "test_acc_recalibrated": 0.5}  # a valid cell but for what the case crafts
    (tmp_path / "sweep-quick.partial.json").write_text(json.dumps(
        {"settings": expected, "runs": {key: run},
         "sessions": {"sessions-string": "x", "session-without-cells": [{}]}.get(crafted, [])}))
    monkeypatch.setattr(norm_sweep, "run_sweep", lambda *a, **k: pytest.fail("ran a cell"))
    assert norm_sweep.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--restart" in err and {"acc-5": "test_acc", "sessions-string": "sessions",
                                   "session-without-cells": "sessions[0]"}[crafted] in err
    assert not (tmp_path / "sweep-quick.json").exists()


@pytest.mark.parametrize("rel, command", [
    ("why/figure1.json", "python -m bnbook.experiments.why.run_figure1"),
    ("why/noisy-cnn-quick.json", "python -m bnbook.experiments.why.run_noisy_cnn --quick"),
    ("norms/sweep.json", "python -m bnbook.experiments.norms.sweep"),
    ("norms/sequences-quick.json", "python -m bnbook.experiments.norms.sequences --quick")])
def test_a_missing_result_names_the_command_that_makes_it(rel, command, tmp_path,
                                                          monkeypatch):  # item 21
    from bnbook import results

    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)  # nothing committed there
    with pytest.raises(FileNotFoundError) as err:
        results.read_result(tmp_path / "data" / "results" / rel)
    assert f"`{command}`" in str(err.value)


def test_cifar_command_line_refuses_a_huge_lr_and_reports_divergence(tmp_path, monkeypatch,
                                                                     capsys):  # item 24
    from bnbook.experiments.cifar import cli as cifar, train

    with pytest.raises(SystemExit) as exit_:
        cifar.main(["--model", "bn", "--synthetic", "50", "--lr", "1e308"])
    assert exit_.value.code == 2 and "--lr" in capsys.readouterr().err
    real, calls = train.batch_loss, []

    def diverging(*args, **kwargs):
        calls.append(1)
        loss, logits = real(*args, **kwargs)
        return (loss * float("nan") if len(calls) > 2 else loss), logits  # epoch 2 diverges

    monkeypatch.setattr(train, "batch_loss", diverging)
    out, ckpt = tmp_path / "r.json", tmp_path / "c.pt"
    argv = ["--model", "baseline", "--epochs", "2", "--synthetic", "50", "--precision", "fp32",
            "--no-progress", "--out", str(out), "--checkpoint", str(ckpt)]
    assert cifar.main(argv) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "epoch 2" in err and "update 3" in err
    assert "Traceback" not in err and out.is_file() and ckpt.is_file()


def test_too_few_cifar_images_for_the_subset_is_one_line(tmp_path, monkeypatch):  # item 24
    from bnbook.data import subsets

    monkeypatch.setenv("BNBOOK_CIFAR10", str(_small_image_tar(tmp_path)))
    with pytest.raises(ValueError, match="has 10 training and 10 test images, too few"):
        subsets.prepare_cifar10(200, 50)


def test_mirror_entries_that_are_not_files_are_named(fashion_source, tmp_path, monkeypatch,
                                                     capsys):  # item 27
    import os

    from bnbook.data import __main__ as cli
    from bnbook.data import cifar10
    from data_helpers import jpeg_archive_bytes_for

    mirror = tmp_path / "mirror"
    (mirror / "fashion-mnist" / "train-images-idx3-ubyte.gz").mkdir(parents=True)
    os.symlink("/dev/zero", mirror / cifar10.CIFAR10_ARCHIVE)
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    assert cli.main(["--data-dir", str(tmp_path / "d"), "--no-download"]) == 1
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz: the mirror's entry is a folder" in err
    assert f"{cifar10.CIFAR10_ARCHIVE}: the mirror's entry is not a regular file" in err
    # a corrupt canonical archive does not block the valid JPEG copy beside it
    (mirror / cifar10.CIFAR10_ARCHIVE).unlink()
    (mirror / cifar10.CIFAR10_ARCHIVE).write_bytes(b"corrupt")
    jpeg_archive_bytes_for(mirror / cifar10.CIFAR10_JPEG_ARCHIVE, monkeypatch)
    assert cli.main(["--data-dir", str(tmp_path / "d"), "--only", "cifar10",
                     "--no-download"]) == 0
    assert "jpeg-image-folder" in capsys.readouterr().out
    # BNBOOK_MIRROR naming a file, a read-only data directory: one line each
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror / cifar10.CIFAR10_ARCHIVE))
    assert cli.main(["--data-dir", str(tmp_path / "e"), "--only", "cifar10",
                     "--no-download"]) == 1
    assert "which is not a folder" in capsys.readouterr().err
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    import errno

    def full_disk(pairs, check):
        raise OSError(errno.ENOSPC, "No space left on device", str(pairs[0][1]))

    monkeypatch.setattr(cifar10, "copy_verified", full_disk)
    assert cli.main(["--data-dir", str(tmp_path / "f"), "--only", "cifar10",
                     "--no-download"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left on device" in err[-1] and "FAILED" in err[-1]
    assert not any("Traceback" in line for line in err)

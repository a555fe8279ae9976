"""Tests of chapter 6's experiment runners (bnbook.experiments.practice.runs), their command line
(bnbook.experiments.practice.cli) and the seeded Fashion-MNIST subsets (bnbook.data.subsets).
Synthetic data keeps the runner tests fast; the Fashion-MNIST tests read the real data set from
the data folder (`make data` puts it there) and fail, saying how to get it, when it is missing.

The models, the training loop and the diagnostics have their own test files (models/test_mlp.py,
test_training.py, test_diagnostics.py)."""

import json
import subprocess
import sys

import pytest
import torch

import bnbook.experiments.practice.runs as practice
from bnbook.data import FASHION_MNIST_FILES, fashion_mnist_info
from bnbook.data.subsets import brightness_shift, prepare_fashion_mnist
from bnbook.experiments.practice.runs import (FINETUNE_VARIANTS, run_batch_size, run_depth_init,
                                              run_dropout, run_finetune, run_lr_tolerance,
                                              run_placement)
from bnbook.experiments.practice.cli import build_parser, main, parse_command, partial_settings

from practice_helpers import synthetic_subset

torch.set_num_threads(1)

@pytest.fixture
def no_download(monkeypatch):
    """The real-data tests read what `make data` provisioned; they never download."""
    import bnbook.data

    real = bnbook.data.load_fashion_mnist

    def load(root=None, download=True, progress=True, **kw):
        return real(root, download=False, progress=False, **kw)

    monkeypatch.setattr(bnbook.data, "load_fashion_mnist", load)



@pytest.fixture(scope="module")
def data():
    return synthetic_subset()


def test_brightness_shift():
    x = torch.tensor([0.0, 0.5, 0.9])
    assert torch.allclose(brightness_shift(x, 0.2), torch.tensor([0.2, 0.7, 1.0]))
    assert torch.equal(x, torch.tensor([0.0, 0.5, 0.9]))  # input untouched
    with pytest.raises(ValueError, match="delta"):
        brightness_shift(x, 2.0)



# ----------------------------------------------------------------------------- runners

def test_run_finetune_and_dropout_on_synthetic_data(data):
    out = run_finetune(data, n_new=100, seeds=(0,), epochs=2, finetune_epochs=2,
                       hidden=(32, 32), delta=0.7)
    res = out["runs"]["seed0"]
    assert set(res) == set(FINETUNE_VARIANTS)
    # The shift is strong enough to hurt the pretrained net (about 0.25 on shifted images),
    # and recalibrating on the shifted images repairs it (about 1.0): a recalibration that
    # left the running statistics alone would score exactly as the pretrained net does.
    assert res["pretrained"]["old_acc"] > 0.9 and res["pretrained"]["new_acc"] < 0.5
    assert res["recalibrate-only"]["new_acc"] > res["pretrained"]["new_acc"] + 0.3
    # After recalibration the stored statistics describe the (dropout-free) test-time input.
    out = run_dropout(data, rates=(0.5,), seeds=(0,), epochs=1, hidden=(32, 32))
    row = out["runs"]["p0.5/seed0"]
    assert all(abs(r["var_ratio_median"] - 1) < 0.02 for r in row["shift_recalibrated"])


def test_experiment_runner_resumes(data):
    done = {"bn-before/seed0": {"test_acc": -1.0}}
    seen = []
    out = run_placement(data, seeds=(0,), epochs=1, hidden=(16,), done=done,
                          on_result=lambda d: seen.append(len(d)))
    assert out["runs"]["bn-before/seed0"] == {"test_acc": -1.0}  # not re-run
    assert seen == [2, 3] and list(out["runs"]) == ["bn-before/seed0", "bn-after/seed0",
                                                    "no-bn/seed0"]



def spy_on_training(monkeypatch):
    """Record the keyword arguments of every train_classifier call the runners make."""
    calls = []
    real = practice.train_classifier

    def spy(model, x, y, **kw):
        calls.append(kw)
        return real(model, x, y, **kw)

    monkeypatch.setattr(practice, "train_classifier", spy)
    return calls


def test_run_batch_size_trains_with_the_recorded_batch_sizes(data, monkeypatch):
    calls = spy_on_training(monkeypatch)
    sizes, epochs = (4, 24, 120), 1  # all divide the 600 training images: no batch dropped
    out = run_batch_size(data, batch_sizes=sizes, seeds=(0,), norms=("batch", "none"),
                         epochs=epochs, lr_at_128=0.1, hidden=(16,))
    assert out["settings"]["batch_sizes"] == list(sizes)
    assert set(out["runs"]) == {f"{n}/m{m}/seed0" for n in ("batch", "none") for m in sizes}
    # Each run trained with its own batch size and the linear scaling rule for the rate ...
    assert sorted((c["batch_size"], c["lr"]) for c in calls) == sorted(
        (m, 0.1 * m / 128) for m in sizes for _ in range(2))
    for key, row in out["runs"].items():
        norm, m = key.split("/")[0], int(key.split("/")[1][1:])
        # ... and saw the same number of images: steps x batch size = epochs x n_train.
        assert row["steps"] * m == epochs * 600, key
        assert not row["diverged"] and 0 <= row["test_acc"] <= 1
        assert ("test_acc_recalibrated" in row) == (norm == "batch")


def test_run_lr_tolerance_records_divergence_at_an_absurd_rate(data):
    out = run_lr_tolerance(data, lrs=(0.05, 1e4), seeds=(0,), epochs=1, batch_size=32,
                           hidden=(16,))
    runs = out["runs"]
    assert set(runs) == {f"{v}/lr{lr:g}/seed0" for v in ("bn", "no-bn") for lr in (0.05, 1e4)}
    assert out["settings"]["lrs"] == [0.05, 1e4]
    absurd = runs["no-bn/lr10000/seed0"]
    assert absurd["diverged"] and absurd["test_acc"] is None
    assert absurd["steps"] < 600 // 32  # stopped at the first non-finite loss
    for v in ("bn", "no-bn"):
        sane = runs[f"{v}/lr0.05/seed0"]
        assert not sane["diverged"] and sane["test_acc"] > 0.5 and sane["steps"] == 600 // 32


def test_run_depth_init_records_each_depth_and_init(data):
    depths, scales = (1, 3), (0.25, 4.0)
    out = run_depth_init(data, depths=depths, activations=("tanh",), init_scales=scales,
                         seeds=(0,), epochs=1, batch_size=50, width=16)
    runs = out["runs"]
    assert set(runs) == {f"{v}/tanh/depth{d}/scale{s:g}/seed0" for v in ("bn", "no-bn")
                         for d in depths for s in scales}
    assert out["settings"]["depths"] == list(depths) and out["settings"]["width"] == 16
    loss = {k: r["final_train_loss"] for k, r in runs.items()}
    for v in ("bn", "no-bn"):
        for d in depths:
            # The initial scale reaches the network: the two inits train differently.
            small, large = (loss[f"{v}/tanh/depth{d}/scale{s:g}/seed0"] for s in scales)
            assert small != pytest.approx(large, rel=1e-3), (v, d)
        for s in scales:
            # So does the depth.
            shallow, deep = (loss[f"{v}/tanh/depth{d}/scale{s:g}/seed0"] for d in depths)
            assert shallow != pytest.approx(deep, rel=1e-3), (v, s)


# ----------------------------------------------------------------------------- real data, CLI

def test_prepare_fashion_mnist_subset(no_download):
    d = prepare_fashion_mnist(n_train=500, n_test=100, seed=3)
    assert d.x_train.shape == (500, 28, 28) and d.x_test.shape == (100, 28, 28)
    assert d.x_train.dtype == torch.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert d.y_train.dtype == torch.int64 and set(d.y_train.tolist()) <= set(range(10))
    # Fashion-MNIST's pixel mean is about 0.286 and its std about 0.353.
    assert abs(d.pixel_mean - 0.286) < 0.02 and abs(d.pixel_std - 0.353) < 0.02
    again = prepare_fashion_mnist(n_train=500, n_test=100, seed=3)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    with pytest.raises(ValueError, match="n_train"):
        prepare_fashion_mnist(n_train=0)


def test_command_line_writes_result_with_provenance(tmp_path, no_download):
    rc = main(["placement", "--quick", "--n-train", "600", "--n-test", "100",
                 "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    result = json.loads((tmp_path / "placement-quick.json").read_text())
    prov = result["provenance"]
    assert set(prov["dataset_sha256"]) == set(FASHION_MNIST_FILES.values())
    assert all(len(v) == 64 for v in prov["dataset_sha256"].values())
    assert prov["dataset_subset"] == {"n_train": 600, "n_test": 100, "seed": 0}
    assert len(result["runs"]) == 3 and not (tmp_path / "placement-quick.partial.json").exists()

    assert prov["command"].startswith("python -m bnbook.experiments.practice placement --quick")
    assert parse_command(prov["command"]).n_train == 600


def _cli_args(tmp_path, *extra):
    return ["placement", "--quick", "--n-train", "600", "--n-test", "100",
            "--out", str(tmp_path), "--no-progress", *extra]


def _settings(argv):
    args = build_parser().parse_args(argv)
    return partial_settings("placement", args, practice.EXPERIMENTS["placement"][2],
                            fashion_mnist_info()["idx_sha256"])


def test_command_line_resumes_only_from_matching_settings(tmp_path, no_download, capsys):
    partial = tmp_path / "placement-quick.partial.json"
    fake = {"bn-before/seed0": {"test_acc": -1.0}}
    # Made with another training subset: refused, the file kept, the way out named.
    partial.write_text(json.dumps({"settings": _settings(_cli_args(tmp_path, "--n-train", "700")),
                                   "runs": fake}))
    assert main(_cli_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "n_train: saved 700, now 600" in err
    assert "delete" in err and "--restart" in err
    assert partial.exists() and not (tmp_path / "placement-quick.json").exists()
    # Other runner arguments or another data set are refused too.
    for key, value in (("runner_args", {"seeds": [1], "epochs": 1}),
                       ("dataset_sha256", {"train-images-idx3-ubyte.gz": "0" * 64})):
        settings = _settings(_cli_args(tmp_path))
        settings[key] = value
        partial.write_text(json.dumps({"settings": settings, "runs": fake}))
        assert main(_cli_args(tmp_path)) == 2
        assert key in capsys.readouterr().err
    # An old partial file (runs only, no settings) cannot be checked: refused.
    partial.write_text(json.dumps(fake))
    assert main(_cli_args(tmp_path)) == 2
    assert "does not record the settings" in capsys.readouterr().err
    # Matching settings but a run no run could have written (issue 23, item 20): refused
    # before any work, naming the field.
    for bad in ({"test_acc": -1.0}, {"test_acc": 5.0}, {"diverged": "no"},
                {"test_acc": 0.5, "final_train_loss": float("nan")}):
        partial.write_text(json.dumps({"settings": _settings(_cli_args(tmp_path)),
                                       "runs": {"bn-before/seed0": bad}}))
        assert main(_cli_args(tmp_path)) == 2
        err = capsys.readouterr().err
        assert "refusing to resume" in err and "bn-before/seed0" in err and "--restart" in err
        assert not (tmp_path / "placement-quick.json").exists()
    # Matching settings: resumed, the finished run kept as it was.
    kept = {"test_acc": 0.125, "diverged": False}
    partial.write_text(json.dumps({"settings": _settings(_cli_args(tmp_path)),
                                   "runs": {"bn-before/seed0": kept}}))
    assert main(_cli_args(tmp_path)) == 0
    result = json.loads((tmp_path / "placement-quick.json").read_text())
    assert result["runs"]["bn-before/seed0"] == kept and len(result["runs"]) == 3
    assert not partial.exists()


def test_command_line_restart_discards_a_mismatched_partial(tmp_path, no_download):
    partial = tmp_path / "placement-quick.partial.json"
    partial.write_text(json.dumps({"bn-before/seed0": {"test_acc": -1.0}}))
    assert main(_cli_args(tmp_path, "--restart")) == 0
    result = json.loads((tmp_path / "placement-quick.json").read_text())
    assert 0 <= result["runs"]["bn-before/seed0"]["test_acc"] <= 1


@pytest.mark.timeout(120)
def test_python_dash_m_runs_the_command_line():
    out = subprocess.run([sys.executable, "-m", "bnbook.experiments.practice", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "python -m bnbook.experiments.practice" in out.stdout
    assert "batch-size" in out.stdout and "--restart" in out.stdout


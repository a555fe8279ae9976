"""What the CIFAR-10 command-line tests share: the settings of a tiny CPU run, and the CLI's
``runs/`` and ``data/results/cifar10/`` moved into the test's temporary folder."""

import pytest

import bnbook.experiments.cifar.cli as cifar

#: A tiny, deterministic CPU run of the trainer (add ``--synthetic N`` and ``--epochs``).
BASE = ["--model", "bn", "--threads", "1", "--device", "cpu", "--no-progress",
        "--precision", "fp32", "--eval-batch-size", "32"]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """The CLI's runs/ and data/results/cifar10/ moved into ``tmp_path``."""
    runs, results = tmp_path / "runs", tmp_path / "results" / "cifar10"
    results.mkdir(parents=True)
    monkeypatch.setattr(cifar, "RUNS_DIR", runs)
    monkeypatch.setattr(cifar, "RESULTS_DIR", results)
    return runs, results

"""Reliability of data and results (issue 23, third pass): unknown data copies are refused
unless the user asks for them (and never land on a stored result), CIFAR-10 copies that are
not the known ones get their own variant, sweeps are checked against their profile."""

import json

import pytest

from data_helpers import clean_env, fake_fashion_arrays, write_fashion  # noqa: F401


@pytest.fixture(scope="module")
def unknown_fashion(tmp_path_factory):
    """Fashion-MNIST-shaped files whose IDX bytes match no published checksum."""
    arrays = fake_fashion_arrays()
    arrays["y_train"] = (arrays["y_train"] + 1) % 10
    return write_fashion(tmp_path_factory.mktemp("own") / "fashion", arrays)


def test_unknown_fashion_mnist_is_refused_unless_allowed(unknown_fashion, monkeypatch,
                                                        tmp_path, capsys):  # item 6
    from bnbook.experiments import practice_cli, why_figure1

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

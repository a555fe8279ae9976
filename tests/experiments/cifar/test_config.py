"""The CIFAR command line is generated from TrainConfig's fields: every documented command and
every stored result's recorded command gives the TrainConfig it gave before the options were
generated (the expected values below were computed once with the hand-written argparse and
constructor call, and stored results are checked against the config their run recorded)."""

import argparse
import json
from dataclasses import asdict, dataclass, fields

import pytest

from bnbook.experiments.cifar.cli import build_parser
from bnbook.experiments.cifar.config import (TrainConfig, _flag_and_dest, _option, add_config_arguments,
                                 config_from_args)
from bnbook.provenance import RESULTS_DIR
from bnbook.results import parse_recorded_command

#: TrainConfig's settings when a command gives none but --model baseline (lr: the script's).
DEFAULTS = dict(model="baseline", epochs=50, lr=1e-4, decay=1e-6, rho=0.9, eps=1e-7,
                batch_size=32, seed=7, subset=None, augment=True, bn_on_logits=True,
                keep_dropout=False, shift_order=1, precision="auto", channels_last=False,
                compile=False, device="auto", threads=None, eval_batch_size=500, sync_bn=False)

BF16_CPU = dict(precision="bf16", channels_last=True, threads=1)

#: Commands from the README, the chapters and the module docstring, with what they set.
DOCUMENTED = {
    "--model baseline": {},
    "--model bn": dict(model="bn", lr=1e-3),
    "--model baseline --epochs 50 --channels-last": dict(channels_last=True),
    "--model baseline --epochs 50 --precision bf16 --channels-last --threads 1": BF16_CPU,
    "--model bn --epochs 2 --subset 5000": dict(model="bn", lr=1e-3, epochs=2, subset=5000),
    "--model bn --epochs 50 --channels-last --resume": dict(model="bn", lr=1e-3,
                                                            channels_last=True),
    "--model bn --epochs 50 --publish": dict(model="bn", lr=1e-3),
    "--model bn --no-bn-on-logits --epochs 3 --channels-last --threads 1":
        dict(model="bn", lr=1e-3, epochs=3, bn_on_logits=False, channels_last=True, threads=1),
    "--model baseline --lr 0.001 --epochs 3 --precision bf16 --channels-last --threads 1 "
    "--run-name baseline-lr0.001-e3-seed7-bf16": dict(lr=1e-3, epochs=3, **BF16_CPU),
    "--model baseline --epochs 50 --seed 8 --precision bf16 --channels-last --threads 1 "
    "--shift-order 0 --no-progress": dict(seed=8, shift_order=0, **BF16_CPU),
    "--model bn --epochs 50 --seed 7 --precision bf16 --channels-last --threads 1 "
    "--keep-dropout --no-progress": dict(model="bn", lr=1e-3, keep_dropout=True, **BF16_CPU),
    # every other option once
    "--model bn --lr 0.02 --decay 0 --batch-size 64 --no-augment --keep-dropout --device cpu "
    "--precision fp32 --compile --eval-batch-size 100 --sync-bn --shift-order 0 --seed 3 "
    "--subset 50": dict(model="bn", lr=0.02, decay=0.0, batch_size=64, seed=3, subset=50,
                        augment=False, keep_dropout=True, shift_order=0, precision="fp32",
                        compile=True, device="cpu", eval_batch_size=100, sync_bn=True),
}


@pytest.mark.parametrize("command", DOCUMENTED)
def test_documented_commands_give_the_same_config(command):
    args = build_parser().parse_args(command.split())
    assert asdict(config_from_args(args)) == {**DEFAULTS, **DOCUMENTED[command]}


STORED = sorted(p for p in RESULTS_DIR.rglob("*.json")
                if "cifar" in json.loads(p.read_text())["provenance"]["command"].split()[:3]
                or json.loads(p.read_text())["provenance"]["command"].startswith("cifar.py"))


def test_stored_cifar_runs_are_found():
    assert len(STORED) >= 20


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_recorded_commands_give_the_config_their_run_recorded(path):
    result = json.loads(path.read_text())
    _, args = parse_recorded_command(result["provenance"]["command"])
    config = asdict(config_from_args(args))
    shared = set(config) & set(result["config"])
    assert {"model", "lr", "epochs", "seed", "subset", "precision", "batch_size"} <= shared
    assert {k: config[k] for k in shared} == {k: result["config"][k] for k in shared}


@pytest.mark.parametrize("argv, option", [
    (["--model", "bn", "--lr", "nan"], "--lr"), (["--model", "bn", "--threads", "0"], "--threads"),
    (["--model", "bn", "--shift-order", "2"], "--shift-order"),
    (["--model", "vgg"], "--model"), (["--epochs", "3"], "--model")])
def test_usage_errors_name_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2 and option in capsys.readouterr().err.splitlines()[-1]


def test_a_setting_on_by_default_needs_a_no_flag():
    @dataclass
    class Config:
        augment: bool = _option(True, "x", flag="--augment")

    with pytest.raises(TypeError, match="--no-"):
        _flag_and_dest(fields(Config)[0])


def test_settings_without_an_option_keep_their_defaults():
    parser = add_config_arguments(argparse.ArgumentParser())
    assert "--rho" not in parser._option_string_actions
    config = config_from_args(parser.parse_args(["--model", "bn"]))
    assert (config.rho, config.eps) == (0.9, 1e-7) == (TrainConfig().rho, TrainConfig().eps)

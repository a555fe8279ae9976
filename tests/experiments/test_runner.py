"""The one experiment runner (bnbook.experiments.runner): resume only from matching settings,
the partial file written after every unit and deleted once the result is written, the common
flags, the own-data stem, and the four commands that use it."""

import argparse
import json

import pytest

from bnbook.cli import CommandError
from bnbook.experiments.norms import sequences
from bnbook.experiments.norms import sweep as norm_sweep
from bnbook.experiments.practice import cli as practice_cli
from bnbook.experiments.runner import (PartialResultMismatch, ResultFiles, add_run_arguments,
                                       experiment_provenance, result_stem, run_units)
from bnbook.provenance import now_iso


def _args(**kw):
    return argparse.Namespace(**{"quick": False, "allow_unknown_data": False, "draft": True,
                                 "threads": 1, **kw})


def test_result_stem_marks_quick_and_own_data():
    assert result_stem("sweep", _args(), "cifar10/jpeg-image-folder") == "sweep"
    assert result_stem("sweep", _args(quick=True), "cifar10/jpeg-image-folder") == "sweep-quick"
    with pytest.raises(CommandError, match="--allow-unknown-data"):
        result_stem("sweep", _args(), "cifar10/unknown")
    assert result_stem("sweep", _args(quick=True, allow_unknown_data=True),
                       "cifar10/unknown") == "sweep-quick-own-data"


def test_resume_save_and_write(tmp_path):
    files = ResultFiles(tmp_path, "exp", {"seeds": (0, 1)})  # a tuple: compared as JSON gives it
    assert files.partial_path == tmp_path / "exp.partial.json"
    assert files.resume() == {}
    files.save_partial({"a": {"x": 1}}, sessions=[{"cells": 1}])
    assert json.loads(files.partial_path.read_text())["settings"] == {"seeds": [0, 1]}
    assert ResultFiles(tmp_path, "exp", {"seeds": [0, 1]}).resume() == {"a": {"x": 1}}
    assert files.saved_field("sessions") == [{"cells": 1}]
    with pytest.raises(PartialResultMismatch, match=r"seeds: saved \[0, 1\], now \[2\]"):
        ResultFiles(tmp_path, "exp", {"seeds": [2]}).resume()
    assert ResultFiles(tmp_path, "exp", {"seeds": [2]}).resume(restart=True) == {}
    assert not files.partial_path.exists()
    files.save_partial({"a": {"x": 1}})
    prov = experiment_provenance(_args(threads=3), started=now_iso(), wall_seconds=1.234,
                                 command="python -m x", dataset="synthetic-test",
                                 dataset_sha256=None)
    assert prov["threads"] == 3 and prov["wall_seconds"] == 1.23 and prov["draft"] is True
    path = files.write(prov, {"runs": {"a": {"x": 1}}})
    assert path == tmp_path / "exp.json" and not files.partial_path.exists()
    assert json.loads(path.read_text())["runs"] == {"a": {"x": 1}}


def test_a_result_that_breaks_the_schema_keeps_the_partial(tmp_path):
    files = ResultFiles(tmp_path, "exp", {})
    files.save_partial({"a": {}})
    with pytest.raises(ValueError, match="not writing"):
        files.write({"command": "x"}, {"runs": {}})
    assert files.partial_path.exists() and not files.result_path.exists()


def test_a_result_without_settings_has_no_partial_file(tmp_path):
    files = ResultFiles(tmp_path, "sequences")
    assert files.partial_path is None
    (tmp_path / "sequences.partial.json").write_text("not ours")
    prov = experiment_provenance(_args(), started=now_iso(), wall_seconds=0.0, command="c",
                                 dataset="synthetic-test", dataset_sha256=None)
    files.write(prov, {"runs": {}})
    assert (tmp_path / "sequences.partial.json").read_text() == "not ours"


def test_run_units_skips_finished_units_and_saves_after_each():
    calls, saved = [], []

    def unit(key):
        return lambda: calls.append(key) or {"key": key}

    done = {"b": {"key": "old"}}
    runs = run_units([(k, unit(k)) for k in "abc"], done, lambda d: saved.append(sorted(d)),
                     cpu_seconds=True)
    assert calls == ["a", "c"] and list(runs) == ["a", "b", "c"]
    assert runs["b"] == {"key": "old"} and "cpu_seconds" in runs["a"]
    assert saved == [["a", "b"], ["a", "b", "c"]]


def test_add_run_arguments_gives_the_common_flags():
    parser = add_run_arguments(argparse.ArgumentParser(), out="o", quick_help="q",
                               restart_help="r")
    args = parser.parse_args(["--quick", "--threads", "2", "--no-progress", "--restart",
                              "--allow-unknown-data", "--draft"])
    assert (args.quick, args.threads, args.out, args.no_progress, args.restart,
            args.allow_unknown_data, args.draft) == (True, 2, "o", True, True, True, True)
    bare = add_run_arguments(argparse.ArgumentParser(), out="o", quick_help="q",
                             unknown_data=False)
    with pytest.raises(SystemExit):
        bare.parse_args(["--restart"])


@pytest.mark.parametrize("build, argv, flags", [
    (practice_cli.build_parser, ["all"],
     ["--quick", "--n-train", "--n-test", "--data-seed", "--threads", "--out", "--no-progress",
      "--restart", "--allow-unknown-data", "--draft"]),
    (norm_sweep.build_parser, [],
     ["--quick", "--jobs", "--threads", "--out", "--max-cells", "--no-progress", "--restart",
      "--allow-unknown-data", "--draft"]),
    (sequences.build_parser, [], ["--quick", "--threads", "--out", "--no-progress", "--draft"]),
])
def test_every_documented_flag_is_kept(build, argv, flags):
    parser = build()
    assert set(flags) <= set(parser._option_string_actions)
    assert parser.parse_args(argv).threads == 1


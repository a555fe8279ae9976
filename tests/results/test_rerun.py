"""Recorded commands keep rerunning after the package moved into folders (bnbook.results.rerun):
an old module name in a stored result is mapped to today's command line, and no module is left
behind under an old name."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from bnbook.provenance import REPO_ROOT, RESULTS_DIR
from bnbook.results import read_json
from bnbook.results import rerun
from bnbook.results.rerun import RENAMED_COMMANDS, parse_recorded_command, rerun_command

STORED = sorted(RESULTS_DIR.rglob("*.json"))


def recorded_program(command: str) -> str:
    """The module (``-m``) or script a recorded command names, as recorded."""
    words = shlex.split(command)
    words = words[1:] if words and words[0].startswith("python") else words
    return words[1] if words[:1] == ["-m"] else words[0].rsplit("/", 1)[-1]


RECORDED = sorted({recorded_program(read_json(p)["provenance"]["command"]) for p in STORED})


def test_the_stored_results_record_old_names():
    """The mapping is exercised by real files: data/results holds commands of the old layout."""
    assert {"bnbook.cifar", "cifar.py", "experiments.py",
            "bnbook.experiments.why_figure1"} <= set(RECORDED), RECORDED


@pytest.mark.parametrize("program", RECORDED)
def test_every_recorded_program_is_a_command_line_of_today(program):
    """Each program named in data/results is today's command line or mapped to one."""
    if program.startswith("bench_") or program.startswith("benchmarks/"):
        assert (REPO_ROOT / "benchmarks" / program.rsplit("/", 1)[-1]).is_file()
        return
    today = rerun._SCRIPTS.get(program) or RENAMED_COMMANDS.get(program, program)
    assert rerun._has_parser(today), (f"{program!r} (recorded in data/results) names no command "
                                      f"line of today: map it in RENAMED_COMMANDS")


@pytest.mark.parametrize("old, new", sorted(RENAMED_COMMANDS.items()))
def test_each_old_name_maps_to_a_command_line_and_left_nothing_behind(old, new):
    assert rerun._has_parser(new), f"{new} has no build_parser"
    assert not rerun._has_parser(old), f"{old} is still a command line: a module left behind"


@pytest.mark.parametrize("path", [p for p in STORED if p.parent.name != "benchmarks"],
                         ids=lambda p: p.relative_to(RESULTS_DIR).as_posix())
def test_a_stored_command_reruns_as_todays_command(path):
    command = read_json(path)["provenance"]["command"]
    program, _ = parse_recorded_command(command)
    assert program[:2] == ["python", "-m"] and program[2] not in RENAMED_COMMANDS
    assert shlex.split(rerun_command(command))[:3] == program


def test_without_the_mapping_an_old_command_is_refused(monkeypatch):
    command = "python -m bnbook.cifar --model bn --epochs 3"
    assert rerun_command(command) == "python -m bnbook.experiments.cifar --model bn --epochs 3"
    monkeypatch.setattr(rerun, "RENAMED_COMMANDS", {})
    with pytest.raises(ValueError, match="not a command"):
        parse_recorded_command(command)


@pytest.mark.timeout(120)
def test_make_results_dry_run_prints_the_new_command_of_an_old_file():
    path = RESULTS_DIR / "norms" / "sweep.json"
    assert recorded_program(read_json(path)["provenance"]["command"]) == \
        "bnbook.experiments.norm_sweep"
    out = subprocess.run([sys.executable, "-m", "bnbook.results", "rerun", str(path), "--dry-run"],
                         capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("python -m bnbook.experiments.norms.sweep ")

"""Every stored result under data/results, once: it passes the strict reader (the current
provenance; a null only where the one migration recorded it), its recorded command line parses
with today's parser and names the run the file holds, and a CIFAR-10 training run has the
layout of one."""

import pytest

from bnbook.provenance import PROVENANCE_FIELDS, REPO_ROOT, RESULTS_DIR
from bnbook.results import check_run, parse_recorded_command, read_result

STORED = sorted(RESULTS_DIR.rglob("*.json"))


def test_there_are_stored_results():
    assert {p.parent.name for p in STORED} >= {"cifar10", "practice", "benchmarks", "norms",
                                               "why"}


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.relative_to(RESULTS_DIR).as_posix())
def test_every_stored_result_passes_the_strict_reader(path):
    result = read_result(path)  # strict: current layout, no draft, no unkept +dirty commit
    prov = result["provenance"]
    assert prov["provenance_version"] == 1 and "draft" not in prov
    nulls = {f for f in PROVENANCE_FIELDS if prov[f] is None} - {"dataset_sha256", "finished"}
    assert nulls <= set(prov.get("migrated", {}).get("fields_set_null", []))
    if prov["git_commit"].endswith("+dirty"):
        assert prov["migrated"]["dirty_commit_kept"] is True
    if path.parent.name == "cifar10":  # a training run: history, config, precision
        check_run(result)
        assert prov["precision"] in ("fp32", "bf16", "fp16")


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.relative_to(RESULTS_DIR).as_posix())
def test_every_stored_command_parses_with_todays_parser(path):
    result = read_result(path)
    program, args = parse_recorded_command(result["provenance"]["command"])
    folder = path.parent.name
    want = {"cifar10": ["python", "-m", "bnbook.experiments.cifar"],
            "practice": ["python", "-m", "bnbook.experiments.practice"]}.get(folder)
    if want is not None:
        assert program == want
    elif program[1] == "-m":  # another experiment's command line, python -m bnbook.<module>
        assert program[0] == "python" and program[2].startswith("bnbook.")
    else:
        assert program[0] == "python" and program[1].startswith("benchmarks/bench_")
        assert (REPO_ROOT / program[1]).is_file()
    if folder == "cifar10":  # the parsed command names the run this file holds
        assert args.model == result["model"]
    if folder == "practice":
        assert args.experiment in ("all", path.stem)

"""The one migration of stored results into the current provenance (bnbook.result_migration)."""

import json
import subprocess
import sys

import pytest

from data_helpers import sample_provenance

from bnbook.provenance import REPO_ROOT, check_provenance
from bnbook.result_migration import migrate_results
from bnbook.results import read_json, validate_result


def unversioned_file(path, **drop_or_rename):
    """A result as the files stored before the layout were: no provenance_version, no cpu,
    ``created`` (when the file was written) for ``finished``, ``wall_time_s``."""
    prov = sample_provenance(git_commit="ab" * 20 + "+dirty", seeds=[1, 2])
    del prov["provenance_version"], prov["cpu"]
    prov["created"] = prov.pop("finished")
    prov["wall_time_s"] = prov.pop("wall_seconds")
    result = {"rows": [0.1, 0.25, 1e-300], "provenance": prov, "note": "x"}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def test_migration_keeps_values_and_commit_and_sets_only_the_missing_fields_null(tmp_path):
    old = unversioned_file(tmp_path / "a.json")
    migrated, unchanged = migrate_results([tmp_path])
    assert migrated == [tmp_path / "a.json"] and unchanged == []
    new = read_json(tmp_path / "a.json")
    validate_result(new)
    assert list(new) == list(old) and new["rows"] == old["rows"] and new["note"] == "x"
    prov, before = new["provenance"], old["provenance"]
    assert prov["git_commit"] == before["git_commit"] == "ab" * 20 + "+dirty"
    assert prov["finished"] == before["created"] and prov["wall_seconds"] == before["wall_time_s"]
    assert "created" not in prov and "wall_time_s" not in prov
    for k, v in before.items():
        if k not in ("created", "wall_time_s"):
            assert prov[k] == v, k
    assert prov["cpu"] is None
    assert prov["migrated"] == {"from": "unversioned", "by": "python -m bnbook.results migrate",
                                "fields_set_null": ["cpu"],
                                "fields_renamed": {"created": "finished",
                                                   "wall_time_s": "wall_seconds"},
                                "dirty_commit_kept": True}
    assert {k for k, v in prov.items() if v is None} == {"cpu", "dataset_sha256"}
    # a null the note does not name is refused
    with pytest.raises(ValueError, match="'device'"):
        check_provenance({**prov, "device": None})


def test_a_second_migration_changes_nothing(tmp_path):
    unversioned_file(tmp_path / "a.json")
    migrate_results([tmp_path])
    once = (tmp_path / "a.json").read_bytes()
    assert migrate_results([tmp_path]) == ([], [tmp_path / "a.json"])
    assert (tmp_path / "a.json").read_bytes() == once


def test_a_current_clean_file_is_left_alone_and_a_dirty_one_is_marked(tmp_path):
    clean = {"provenance": sample_provenance(), "rows": [1]}
    (tmp_path / "clean.json").write_text(json.dumps(clean))
    dirty = {"provenance": sample_provenance(git_commit="c" * 40 + "+dirty"), "rows": [1]}
    (tmp_path / "dirty.json").write_text(json.dumps(dirty))
    migrated, unchanged = migrate_results([tmp_path])
    assert migrated == [tmp_path / "dirty.json"] and unchanged == [tmp_path / "clean.json"]
    note = read_json(tmp_path / "dirty.json")["provenance"]["migrated"]
    assert note["from"] == "version 1" and note["fields_set_null"] == []
    assert note["dirty_commit_kept"] is True


@pytest.mark.parametrize("content, why", [
    ([1, 2], "not a result file"),
    ({"rows": [1]}, "not a result file"),
    ({"provenance": {**sample_provenance(), "provenance_version": 7}, "rows": [1]},
     "provenance_version 7"),
    ({"provenance": {k: v for k, v in sample_provenance().items()
                     if k not in ("provenance_version", "torch")}, "rows": [1]}, "'torch'"),
])
def test_a_file_it_does_not_recognise_stops_it_before_anything_is_written(tmp_path, content, why):
    unversioned_file(tmp_path / "a.json")
    before = (tmp_path / "a.json").read_bytes()
    (tmp_path / "b.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"b.json.*{why}"):
        migrate_results([tmp_path])
    assert (tmp_path / "a.json").read_bytes() == before  # a.json comes first: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_the_command_line_migrates_and_reports(tmp_path):
    unversioned_file(tmp_path / "a.json")
    cmd = [sys.executable, "-m", "bnbook.results", "migrate", str(tmp_path)]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert "1 migrated, 0 already current" in out
    (tmp_path / "b.json").write_text("[]")
    bad = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "b.json" in bad.stderr and bad.stderr.count("\n") == 1

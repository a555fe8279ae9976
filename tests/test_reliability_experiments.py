"""Reliability of the experiment command lines (issue 23): a bad thread count is a usage
error, a partial result made with another thread count or that is not JSON is refused naming
the file and --restart, before any work."""

import json

import pytest

from bnbook.experiments.practice import cli as practice_cli
from bnbook.experiments.norms import sequences
from bnbook.experiments.runner import PartialResultMismatch, load_partial


@pytest.mark.parametrize("main, argv", [
    (sequences.main, ["--threads", "0"]),
    (practice_cli.main, ["placement", "--quick", "--threads", "0"]),
])
def test_threads_zero_is_a_usage_error(main, argv, capsys):  # item 24
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "--threads" in capsys.readouterr().err


def test_a_corrupt_partial_names_the_file_and_restart(tmp_path):  # item 22
    path = tmp_path / "sweep.partial.json"
    path.write_text('{"settings": ')
    with pytest.raises(PartialResultMismatch, match="sweep.partial.json.*--restart"):
        load_partial(path, {})


def test_the_thread_count_is_a_setting_a_resume_must_match(tmp_path):  # item 12
    from bnbook.experiments.norms.sweep import _partial_settings

    info = {"variant": "v", "sha256": "s"}
    one, two = (_partial_settings("quick", {"a": 1}, info, n) for n in (1, 2))
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"settings": one, "runs": {"k": {}}}))
    assert load_partial(path, one) == {"k": {}}
    with pytest.raises(PartialResultMismatch, match="threads"):
        load_partial(path, two)
    args = practice_cli.build_parser().parse_args(["placement", "--threads", "2"])
    assert practice_cli.partial_settings("placement", args, {}, {})["threads"] == 2

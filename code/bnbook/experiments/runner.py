"""The one partial -> resume -> provenance -> write sequence of the book's experiment commands.

Chapter 6's experiments (:mod:`bnbook.experiments.practice.cli`), the batch-size sweep
(:mod:`bnbook.experiments.norms.sweep`) and its per-method learning rates
(:mod:`bnbook.experiments.norms.lr_sweep`, whose stage files go through
:func:`bnbook.results.write_result` as each stage completes), the sequence experiment
(:mod:`bnbook.experiments.norms.sequences`), the why-BN experiments
(:mod:`bnbook.experiments.why.cli`) and the DCGAN (:mod:`bnbook.experiments.gan.cli`) run the
same way:

1. :func:`parse_run_arguments`: parse the command line (the common flags come from
   :func:`add_run_arguments`), refuse a ``+dirty`` tree that would write a result the book
   reads unless ``--draft`` (:func:`bnbook.cli.refuse_dirty_tree`), set the thread count;
2. :func:`result_stem`: the result file's name, ``<name>[-quick][-own-data]``, refusing an
   unknown data copy unless ``--allow-unknown-data``;
3. :meth:`ResultFiles.resume`: with ``--restart`` delete the partial file first, then load the
   finished runs from ``<out>/<stem>.partial.json``, refusing (:class:`PartialResultMismatch`)
   a file made with other settings - checked before any work;
4. the experiment runs, calling :meth:`ResultFiles.save_partial` after every finished unit
   (:func:`run_units` is the loop with a tqdm bar for experiments made of independent units);
5. :meth:`ResultFiles.write`: :func:`experiment_provenance` (command, commit, machine, data,
   thread count, wall time) and the payload go through :func:`bnbook.results.write_result`
   (validated, atomic) to ``<out>/<stem>.json``, and the partial file is deleted.

Every file is written atomically (:func:`bnbook.provenance.atomic_write_json`); a command
deletes only its own partial file.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bnbook.cli import (OWN_DATA_SUFFIX, add_allow_unknown_data, add_draft_argument,
                        check_known_data, positive_int, refuse_dirty_tree)
from bnbook.provenance import atomic_write_json, collect_provenance
from bnbook.results import write_result

__all__ = ["PartialResultMismatch", "add_run_arguments", "parse_run_arguments", "result_stem",
           "load_partial", "ResultFiles", "experiment_provenance", "run_units", "refused"]


class PartialResultMismatch(RuntimeError):
    """A partial result file was made with other settings than the command asks for."""


def add_run_arguments(parser: argparse.ArgumentParser, *, out: str, quick_help: str,
                      restart_help: str | None = None, unknown_data: bool = True,
                      threads_help: str | None = None) -> argparse.ArgumentParser:
    """Add the flags every experiment command has: ``--quick`` (``quick_help``), ``--threads``
    (default 1), ``--out`` (default ``out``), ``--no-progress``, ``--restart`` (only for a
    resumable command: ``restart_help``), ``--allow-unknown-data`` (if ``unknown_data``) and
    ``--draft``. Returns ``parser``."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--threads", type=positive_int, default=1, help=threads_help)
    parser.add_argument("--out", default=out)
    parser.add_argument("--no-progress", action="store_true")
    if restart_help is not None:
        parser.add_argument("--restart", action="store_true", help=restart_help)
    if unknown_data:
        add_allow_unknown_data(parser)
    add_draft_argument(parser)
    return parser


def parse_run_arguments(parser: argparse.ArgumentParser, argv=None,
                        writes: Callable[[argparse.Namespace], bool] | None = None):
    """``(args, argv)``: ``argv`` (default ``sys.argv[1:]``, as a list) parsed by ``parser``,
    after the checks that come before any work (a ``+dirty`` tree writing a result the book
    reads needs ``--draft``; not checked when ``writes(args)`` says the command writes
    nothing); sets torch's thread count to ``args.threads``."""
    import torch

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if writes is None or writes(args):
        refuse_dirty_tree(parser, args)
    torch.set_num_threads(args.threads)
    return args, argv


def result_stem(name: str, args: argparse.Namespace, dataset: str) -> str:
    """``<name>[-quick][-own-data]``: the stem of the files a run of ``name`` writes.
    ``-own-data`` marks a run on a data copy that matches no published checksum
    (``dataset``), which needs ``--allow-unknown-data`` (:class:`bnbook.cli.CommandError`
    otherwise)."""
    stem = f"{name}-quick" if args.quick else name
    own_data = check_known_data(dataset, getattr(args, "allow_unknown_data", False))
    return stem + (OWN_DATA_SUFFIX if own_data else "")


def refused(label: str, err: BaseException, error: bool = False) -> int:
    """Say on stderr why a command stops before any work (``<label>: [error: ]<message>``);
    returns the exit status 2."""
    print(f"{label}: {'error: ' if error else ''}{err}", file=sys.stderr)
    return 2


def load_partial(path: Path, expected: dict) -> dict:
    """The finished runs saved in ``path`` ({} if there is none), after checking that they
    were made with the ``expected`` settings; raises :class:`PartialResultMismatch` if not."""
    saved = _read_partial(path)
    if saved is None:
        return {}
    stored = saved.get("settings") if isinstance(saved, dict) else None
    if stored is None or not isinstance(saved.get("runs"), dict):
        why = "it does not record the settings it was made with"
    elif stored != expected:
        diff = [f"{k}: saved {stored.get(k)!r}, now {expected.get(k)!r}"
                for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k)]
        why = "its settings differ from this command's (" + "; ".join(diff) + ")"
    else:
        problem = _run_value_problem(saved["runs"], "runs")
        if problem is None:
            return saved["runs"]
        raise PartialResultMismatch(f"refusing to resume from {path}: {problem}, which no run "
                                    f"writes (a damaged or crafted file); rerun with --restart "
                                    f"to start over")
    raise PartialResultMismatch(
        f"refusing to resume from {path}: {why}. To start over, delete that file or rerun "
        f"with --restart; to finish it, rerun with the settings it was made with.")


_ACCURACY_KEY = re.compile(r"(^|_)acc($|_)")


def _run_value_problem(value, where: str, accuracy: bool = False) -> str | None:
    """What in the finished runs of a partial file no run could have written, or ``None``:
    a number that is not finite (the partial writer refuses NaN), a ``diverged`` that is
    not true or false, or an accuracy (a key such as ``test_acc``) outside ``[0, 1]``."""
    if isinstance(value, dict):
        for key, v in value.items():
            if key == "diverged" and not isinstance(v, bool):
                return f"{where}.{key} = {str(v)[:40]!r} is not true or false"
            problem = _run_value_problem(v, f"{where}.{key}",
                                         accuracy or bool(_ACCURACY_KEY.search(str(key))))
            if problem:
                return problem
    elif isinstance(value, list):
        return next((p for i, v in enumerate(value)
                     if (p := _run_value_problem(v, f"{where}[{i}]", accuracy))), None)
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{where} = {value}"
    elif accuracy and not (value is None or (isinstance(value, (int, float))
                                             and not isinstance(value, bool)
                                             and 0.0 <= value <= 1.0)):
        return f"{where} = {str(value)[:40]!r} is not an accuracy in [0, 1]"
    return None


def _read_partial(path: Path):
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PartialResultMismatch(
            f"refusing to resume from {path}: it is not valid JSON "
            f"({str(exc).splitlines()[0][:120]}); rerun with --restart to start over") from None


@dataclass(frozen=True)
class ResultFiles:
    """The files of one experiment's result: ``<out>/<stem>.json`` and, for a resumable
    experiment (``settings`` given), ``<out>/<stem>.partial.json`` with the finished runs and
    the ``settings`` they were made with (normalised to what JSON gives back)."""

    out: Path
    stem: str
    settings: dict | None = None

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        if self.settings is not None:
            object.__setattr__(self, "settings", json.loads(json.dumps(self.settings)))

    @property
    def result_path(self) -> Path:
        return self.out / f"{self.stem}.json"

    @property
    def partial_path(self) -> Path | None:
        return None if self.settings is None else self.out / f"{self.stem}.partial.json"

    def resume(self, restart: bool = False, label: str | None = None) -> dict:
        """The finished runs (:func:`load_partial`; {} if none), after deleting the partial
        file if ``restart``; says on stderr how many there are (as ``label``)."""
        if restart:
            self.partial_path.unlink(missing_ok=True)
        done = load_partial(self.partial_path, self.settings)
        if done and label:
            print(f"{label}: resuming, {len(done)} run(s) already done", file=sys.stderr)
        return done

    def saved_field(self, key: str, default=None):
        """Another field of the partial file (``default`` without the file or the field)."""
        saved = _read_partial(self.partial_path)
        return default if not isinstance(saved, dict) else saved.get(key, default)

    def save_partial(self, runs: dict, **fields) -> Path:
        """Write the finished ``runs`` (and ``fields``) with the settings, atomically."""
        return atomic_write_json(self.partial_path,
                                 {"settings": self.settings, "runs": runs, **fields})

    def write(self, provenance: dict, payload: dict) -> Path:
        """Write ``{"provenance", **payload}`` through :func:`bnbook.results.write_result`,
        then delete the partial file; returns the result's path."""
        path = write_result(self.result_path, {"provenance": provenance, **payload})
        if self.partial_path is not None:
            self.partial_path.unlink(missing_ok=True)
        return path


def experiment_provenance(args: argparse.Namespace, *, started: str, wall_seconds: float,
                          command: str, dataset: str, dataset_sha256, **fields) -> dict:
    """The provenance of a CPU float32 experiment run by an :func:`add_run_arguments` command:
    :func:`bnbook.provenance.collect_provenance` with ``args``' draft flag and thread count,
    ``wall_seconds`` rounded to hundredths, and ``fields`` (``dataset_subset``, ...)."""
    return collect_provenance(device="cpu", precision="float32", draft=args.draft,
                              started=started, command=command,
                              wall_seconds=round(wall_seconds, 2), threads=args.threads,
                              dataset=dataset, dataset_sha256=dataset_sha256, **fields)


def run_units(units: list[tuple[str, Callable[[], dict]]], done: dict, on_result=None, *,
              progress: bool = False, desc: str = "", cpu_seconds: bool = False) -> dict:
    """Run each ``(key, thunk)`` of ``units`` whose key is not in ``done`` (updated in
    place), calling ``on_result(done)`` after each, with a tqdm bar if ``progress``;
    ``cpu_seconds`` adds the unit's ``time.process_time`` to its record. Returns the records
    of ``units`` in their order."""
    todo = [(key, thunk) for key, thunk in units if key not in done]
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc=desc)
    for key, thunk in todo:
        cpu_start = time.process_time()
        record = thunk()
        if cpu_seconds:
            record = {**record, "cpu_seconds": round(time.process_time() - cpu_start, 2)}
        done[key] = record
        if on_result is not None:
            on_result(done)
    return {key: done[key] for key, _ in units}

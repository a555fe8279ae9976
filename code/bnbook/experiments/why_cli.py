"""The shared command line of the why-BN experiments (``python -m bnbook.experiments.why_*``).

Each experiment module (:mod:`~bnbook.experiments.why_figure1`,
:mod:`~bnbook.experiments.why_noisy_cnn`, :mod:`~bnbook.experiments.why_landscape`,
:mod:`~bnbook.experiments.why_scale`) describes itself as an :class:`Experiment`: its full and
``--quick`` settings, how to load its data and which runs ("units") it consists of. This module
runs them the way chapter 6's command line does (:mod:`bnbook.experiments.practice_cli`):

* tqdm progress over the units (and inside each, where the runner draws one);
* after every finished unit, ``<out>/<name>.partial.json`` holds the finished units and the
  settings they were made with (experiment, settings, data checksums); the same command
  resumes from it, a command with other settings is refused (exit status 2) unless
  ``--restart`` is given;
* at the end, ``<out>/<name>.json`` (``<name>-quick.json`` with ``--quick``) is written with
  :func:`bnbook.results.write_result`: provenance (command, commit, machine, data checksums,
  thread count, wall time of this session) and the payload ``{"settings", "runs",
  "run_seconds_total", "run_cpu_seconds_total"}``: the summed wall time and CPU time
  (``time.process_time``, recorded per unit as ``cpu_seconds``) of all units, whichever
  session ran them. On a busy machine the wall time overstates the work; the CPU time does
  not.

Runs are reproducible from their seeds on one machine and thread count (``--threads``,
default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from bnbook.cli import (OWN_DATA_SUFFIX, CommandError, add_allow_unknown_data, add_draft_argument,
                        refuse_dirty_tree,
                        check_known_data, positive_int)
from bnbook.experiments.practice_cli import PartialResultMismatch, load_partial
from bnbook.provenance import (RESULTS_DIR, atomic_write_json, collect_provenance, command_line,
                               now_iso)
from bnbook.results import write_result

__all__ = ["WHY_RESULTS_DIR", "Experiment", "DataInfo", "build_parser", "main"]

#: Where the why-BN experiments write their results.
WHY_RESULTS_DIR = RESULTS_DIR / "why"


@dataclass(frozen=True)
class DataInfo:
    """What provenance records about the data: ``dataset`` (variant name),
    ``sha256`` (checksum or ``{file: checksum}``) and ``subset`` (how it was drawn)."""

    dataset: str
    sha256: object
    subset: dict


@dataclass(frozen=True)
class Experiment:
    """One stored experiment.

    ``name``: the result file's stem; ``prog``: the command that runs it; ``full`` and
    ``quick``: its settings (JSON-ready dicts); ``data_info(settings)`` returns a
    :class:`DataInfo` without loading the data (checked before any work); ``load(settings)``
    returns the data; ``units(data, settings, progress)`` returns ``[(key, thunk)]``, each
    thunk returning a JSON-ready dict that includes ``"seconds"``.
    """

    name: str
    prog: str
    description: str
    full: dict
    quick: dict
    data_info: Callable
    load: Callable
    units: Callable


def build_parser(exp: Experiment) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=exp.prog, description=exp.description)
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--out", default=str(WHY_RESULTS_DIR))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--restart", action="store_true",
                        help="delete the partial result of this experiment first")
    add_allow_unknown_data(parser)
    add_draft_argument(parser)
    return parser


def entry_points(exp: Experiment):
    """``(build_parser, main)`` of an experiment module: ``build_parser()`` is what
    ``python -m bnbook.results rerun`` reads, ``main(argv=None)`` runs :func:`main` on ``exp``."""
    def module_build_parser() -> argparse.ArgumentParser:
        return build_parser(exp)

    def module_main(argv=None) -> int:
        return main(exp, argv)

    return module_build_parser, module_main


def _expected(exp: Experiment, settings: dict, info: DataInfo, threads: int = 1) -> dict:
    return json.loads(json.dumps({"experiment": exp.name, "settings": settings,
                                  "threads": threads,
                                  "dataset": info.dataset, "dataset_sha256": info.sha256,
                                  "dataset_subset": info.subset}))


def _run_units(units, done: dict, save, progress: bool, desc: str) -> dict:
    todo = [(k, f) for k, f in units if k not in done]
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc=desc)
    for key, thunk in todo:
        cpu = time.process_time()
        done[key] = {**thunk(), "cpu_seconds": round(time.process_time() - cpu, 2)}
        save(done)
    return {k: done[k] for k, _ in units}


def main(exp: Experiment, argv=None) -> int:
    """Run ``exp`` as ``argv`` asks (module docstring). Returns 0, or 2 after saying why
    when a partial result cannot be resumed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(exp)
    args = parser.parse_args(argv)
    refuse_dirty_tree(parser, args)
    torch.set_num_threads(args.threads)
    settings = exp.quick if args.quick else exp.full
    stem = f"{exp.name}-quick" if args.quick else exp.name
    out = Path(args.out)
    info = exp.data_info(settings)
    try:
        stem += OWN_DATA_SUFFIX if check_known_data(info.dataset, args.allow_unknown_data) else ""
    except CommandError as e:
        print(f"{exp.prog}: error: {e}", file=sys.stderr)
        return 2
    partial_path = out / f"{stem}.partial.json"
    expected = _expected(exp, settings, info, args.threads)
    if args.restart:
        partial_path.unlink(missing_ok=True)
    try:
        done = load_partial(partial_path, expected)
    except PartialResultMismatch as e:
        print(f"{exp.name}: {e}", file=sys.stderr)
        return 2
    if done:
        print(f"{exp.name}: resuming, {len(done)} run(s) already done", file=sys.stderr)
    started, start = now_iso(), time.perf_counter()
    data = exp.load(settings)
    units = exp.units(data, settings, not args.no_progress)
    runs = _run_units(units, done,
                      lambda d: atomic_write_json(partial_path, {"settings": expected, "runs": d}),
                      not args.no_progress, exp.name)
    prov = collect_provenance(
        device="cpu", precision="float32", draft=args.draft, started=started,
        command=command_line(argv, prog=exp.prog),
        wall_seconds=round(time.perf_counter() - start, 2), threads=args.threads,
        dataset=info.dataset, dataset_sha256=info.sha256, dataset_subset=info.subset)
    total = round(sum(float(r.get("seconds", 0.0)) for r in runs.values()), 2)
    cpu = round(sum(float(r.get("cpu_seconds", 0.0)) for r in runs.values()), 2)
    path = write_result(out / f"{stem}.json", {"provenance": prov, "settings": settings,
                                               "runs": runs, "run_seconds_total": total,
                                               "run_cpu_seconds_total": cpu})
    partial_path.unlink(missing_ok=True)
    print(f"{exp.name}: wrote {path}", file=sys.stderr)
    return 0

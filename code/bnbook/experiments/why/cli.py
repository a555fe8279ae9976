"""The shared command line of the why-BN experiments (``python -m bnbook.experiments.why.run_*``).

Each experiment module (:mod:`~bnbook.experiments.why.run_figure1`,
:mod:`~bnbook.experiments.why.run_noisy_cnn`, :mod:`~bnbook.experiments.why.run_landscape`,
:mod:`~bnbook.experiments.why.run_scale`) describes itself as an :class:`Experiment`: its full and
``--quick`` settings, how to load its data and which runs ("units") it consists of. This module
runs them with the book's one experiment runner (:mod:`bnbook.experiments.runner`):

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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bnbook.cli import CommandError
from bnbook.experiments.runner import (PartialResultMismatch, ResultFiles, add_run_arguments,
                                       experiment_provenance, parse_run_arguments, refused,
                                       result_stem, run_units)
from bnbook.provenance import RESULTS_DIR, command_line, now_iso

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
    thunk returning a JSON-ready dict that includes ``"seconds"``. ``results_dir``: the default
    ``--out`` (``None``: :data:`WHY_RESULTS_DIR`), for an experiment of another chapter that
    uses this command line.
    """

    name: str
    prog: str
    description: str
    full: dict
    quick: dict
    data_info: Callable
    load: Callable
    units: Callable
    results_dir: Path | None = None


def build_parser(exp: Experiment) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=exp.prog, description=exp.description)
    return add_run_arguments(parser, out=str(exp.results_dir or WHY_RESULTS_DIR),
                             quick_help="tiny settings (seconds)",
                             restart_help="delete the partial result of this experiment first")


def entry_points(exp: Experiment):
    """``(build_parser, main)`` of an experiment module: ``build_parser()`` is what
    ``python -m bnbook.results rerun`` reads, ``main(argv=None)`` runs :func:`main` on ``exp``."""
    def module_build_parser() -> argparse.ArgumentParser:
        return build_parser(exp)

    def module_main(argv=None) -> int:
        return main(exp, argv)

    return module_build_parser, module_main


def _partial_settings(exp: Experiment, settings: dict, info: DataInfo,
                      threads: int = 1) -> dict:
    """What the partial result records, and what resuming from it must match."""
    return {"experiment": exp.name, "settings": settings, "threads": threads,
            "dataset": info.dataset, "dataset_sha256": info.sha256,
            "dataset_subset": info.subset}


def main(exp: Experiment, argv=None) -> int:
    """Run ``exp`` as ``argv`` asks (module docstring). Returns 0, or 2 after saying why
    when a partial result cannot be resumed."""
    args, argv = parse_run_arguments(build_parser(exp), argv)
    settings = exp.quick if args.quick else exp.full
    info = exp.data_info(settings)
    try:
        files = ResultFiles(args.out, result_stem(exp.name, args, info.dataset),
                            _partial_settings(exp, settings, info, args.threads))
    except CommandError as err:
        return refused(exp.prog, err, error=True)
    try:
        done = files.resume(restart=args.restart, label=exp.name)
    except PartialResultMismatch as err:
        return refused(exp.name, err)
    started, start = now_iso(), time.perf_counter()
    data = exp.load(settings)
    units = exp.units(data, settings, not args.no_progress)
    runs = run_units(units, done, files.save_partial, progress=not args.no_progress,
                     desc=exp.name, cpu_seconds=True)
    prov = experiment_provenance(
        args, started=started, command=command_line(argv, prog=exp.prog),
        wall_seconds=time.perf_counter() - start, dataset=info.dataset,
        dataset_sha256=info.sha256, dataset_subset=info.subset)
    total = round(sum(float(r.get("seconds", 0.0)) for r in runs.values()), 2)
    cpu = round(sum(float(r.get("cpu_seconds", 0.0)) for r in runs.values()), 2)
    path = files.write(prov, {"settings": settings, "runs": runs, "run_seconds_total": total,
                              "run_cpu_seconds_total": cpu})
    print(f"{exp.name}: wrote {path}", file=sys.stderr)
    return 0

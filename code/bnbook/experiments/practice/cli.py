"""The command line of chapter 6's experiments: run them, save partial results, resume.

::

    python -m bnbook.experiments.practice all            # every experiment, full settings
    python -m bnbook.experiments.practice batch-size     # one of them
    python -m bnbook.experiments.practice all --quick    # the small version, in seconds
    python -m bnbook.experiments.practice all --restart  # throw away partial results, start over

Each experiment writes ``<out>/<name>.json`` (``<name>-quick.json`` with ``--quick``) with
provenance. Runs are reproducible from their seed (same machine, same thread count), show
progress with tqdm, and after every finished run ``<out>/<name>.partial.json`` is saved with
the runs done so far and the settings that made them (experiment, data subset, the runner's
arguments, the Fashion-MNIST IDX checksums). The same command resumes from it; a command
whose settings differ is refused, since mixing runs made with different settings would make
one result file out of two experiments.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

from bnbook.cli import CommandError
from bnbook.data import fashion_mnist_info
from bnbook.data.subsets import prepare_fashion_mnist
from bnbook.experiments.practice.runs import EXPERIMENTS
from bnbook.experiments.runner import (PartialResultMismatch, ResultFiles, add_run_arguments,
                                       experiment_provenance, parse_run_arguments, refused,
                                       result_stem)
from bnbook.provenance import RESULTS_DIR, command_line, now_iso

__all__ = ["PROG", "build_parser", "parse_command", "partial_settings", "main"]

PROG = "python -m bnbook.experiments.practice"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--data-seed", type=int, default=0)
    return add_run_arguments(parser, out=str(RESULTS_DIR / "practice"),
                             quick_help="tiny settings (seconds)",
                             restart_help="delete partial results of the selected experiments "
                                          "first")


def parse_command(command: str) -> argparse.Namespace:
    """Parse a command recorded in a result's provenance (``python -m bnbook.experiments.practice
    batch-size ...``, or the older ``experiments.py batch-size ...``)."""
    words = shlex.split(command)
    for prefix in (PROG.split(), ["experiments.py"], ["__main__.py"]):
        if words[:len(prefix)] == prefix:
            return build_parser().parse_args(words[len(prefix):])
    raise ValueError(f"not a command of {PROG}: {command!r}")


def partial_settings(name: str, args: argparse.Namespace, runner_args: dict,
                     checksums: dict) -> dict:
    """What a partial result file records, and what resuming from it must match."""
    return {"experiment": name, "n_train": args.n_train, "n_test": args.n_test,
            "data_seed": args.data_seed, "runner_args": runner_args, "dataset_sha256": checksums,
            "threads": getattr(args, "threads", 1)}


class PracticeJob(NamedTuple):
    """One experiment of a command: its runner, the runner's arguments (full or ``--quick``)
    and the files it writes."""

    runner: Callable
    runner_args: dict
    files: ResultFiles


def _practice_job(name: str, args: argparse.Namespace, checksums: dict,
                  dataset: str) -> PracticeJob:
    runner, full, quick = EXPERIMENTS[name]
    runner_args = quick if args.quick else full
    return PracticeJob(runner, runner_args,
                       ResultFiles(Path(args.out), result_stem(name, args, dataset),
                                   partial_settings(name, args, runner_args, checksums)))


def _run_experiment(name: str, job: PracticeJob, args: argparse.Namespace, data,
                    checksums: dict, dataset: str, command: str) -> Path:
    done = job.files.resume(label=name)
    start, started = time.perf_counter(), now_iso()
    payload = job.runner(data, progress=not args.no_progress, done=done,
                         on_result=job.files.save_partial, **job.runner_args)
    prov = experiment_provenance(
        args, started=started, command=command, wall_seconds=time.perf_counter() - start,
        dataset=dataset, dataset_sha256=checksums,
        dataset_subset=dict(n_train=args.n_train, n_test=args.n_test, seed=args.data_seed))
    return job.files.write(prov, payload)


def main(argv=None) -> int:
    """Run the experiments ``argv`` names and write ``<out>/<name>.json`` with provenance.

    Returns 0, or 2 (after saying why) when a partial result cannot be resumed.
    """
    args, argv = parse_run_arguments(build_parser(), argv)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    info = fashion_mnist_info()
    checksums, dataset = info["idx_sha256"], f"fashion-mnist/{info['variant']}"
    try:
        jobs = {name: _practice_job(name, args, checksums, dataset) for name in names}
    except CommandError as err:
        return refused(PROG, err, error=True)
    # Every partial file is checked before the first run, so that "all" fails before any work.
    for name, job in jobs.items():
        try:
            job.files.resume(restart=args.restart)
        except PartialResultMismatch as err:
            return refused(name, err)
    data = prepare_fashion_mnist(args.n_train, args.n_test, seed=args.data_seed)
    command = command_line(argv, prog=PROG)
    for name, job in jobs.items():
        path = _run_experiment(name, job, args, data, checksums, dataset, command)
        print(f"{name}: wrote {path}", file=sys.stderr)
    return 0

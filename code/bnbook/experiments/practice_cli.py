"""The command line of chapter 6's experiments: run them, save partial results, resume.

::

    python -m bnbook.experiments all            # every experiment, full settings
    python -m bnbook.experiments batch-size     # one of them
    python -m bnbook.experiments all --quick    # the small version, in seconds
    python -m bnbook.experiments all --restart  # throw away partial results, start over

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
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from bnbook.cli import (OWN_DATA_SUFFIX, CommandError, add_allow_unknown_data, add_draft_argument,
                        refuse_dirty_tree,
                        check_known_data, positive_int)
from bnbook.data import fashion_mnist_info
from bnbook.data.subsets import prepare_fashion_mnist
from bnbook.experiments.practice import EXPERIMENTS
from bnbook.provenance import (RESULTS_DIR, atomic_write_json, collect_provenance, command_line,
                               now_iso)
from bnbook.results import write_result

__all__ = ["PROG", "build_parser", "parse_command", "partial_settings", "load_partial",
           "PartialResultMismatch", "main"]

PROG = "python -m bnbook.experiments"


class PartialResultMismatch(RuntimeError):
    """A partial result file was made with other settings than the command asks for."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--out", default=str(RESULTS_DIR / "practice"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--restart", action="store_true",
                        help="delete partial results of the selected experiments first")
    add_allow_unknown_data(parser)
    add_draft_argument(parser)
    return parser


def parse_command(command: str) -> argparse.Namespace:
    """Parse a command recorded in a result's provenance (``python -m bnbook.experiments
    batch-size ...``, or the older ``experiments.py batch-size ...``)."""
    words = shlex.split(command)
    for prefix in (PROG.split(), ["experiments.py"], ["__main__.py"]):
        if words[:len(prefix)] == prefix:
            return build_parser().parse_args(words[len(prefix):])
    raise ValueError(f"not a command of {PROG}: {command!r}")


def partial_settings(name: str, args: argparse.Namespace, runner_args: dict,
                     checksums: dict) -> dict:
    """What a partial result file records, and what resuming from it must match (as JSON)."""
    return json.loads(json.dumps({
        "experiment": name, "n_train": args.n_train, "n_test": args.n_test,
        "data_seed": args.data_seed, "runner_args": runner_args, "dataset_sha256": checksums,
        "threads": getattr(args, "threads", 1)}))


def load_partial(path: Path, expected: dict) -> dict:
    """The finished runs saved in ``path`` ({} if there is none), after checking that they
    were made with the ``expected`` settings; raises :class:`PartialResultMismatch` if not."""
    if not path.exists():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PartialResultMismatch(
            f"refusing to resume from {path}: it is not valid JSON "
            f"({str(exc).splitlines()[0][:120]}); rerun with --restart to start over") from None
    stored = saved.get("settings") if isinstance(saved, dict) else None
    if stored is None or not isinstance(saved.get("runs"), dict):
        why = "it does not record the settings it was made with"
    elif stored != expected:
        diff = [f"{k}: saved {stored.get(k)!r}, now {expected.get(k)!r}"
                for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k)]
        why = "its settings differ from this command's (" + "; ".join(diff) + ")"
    else:
        return saved["runs"]
    raise PartialResultMismatch(
        f"refusing to resume from {path}: {why}. To start over, delete that file or rerun "
        f"with --restart; to finish it, rerun with the settings it was made with.")


def _job(name: str, args: argparse.Namespace, checksums: dict):
    """``(runner, its arguments, result file stem, partial file, partial settings)``."""
    fn, full, quick = EXPERIMENTS[name]
    runner_args = quick if args.quick else full
    stem = f"{name}-quick" if args.quick else name
    stem += OWN_DATA_SUFFIX if getattr(args, "own_data", False) else ""
    return (fn, runner_args, stem, Path(args.out) / f"{stem}.partial.json",
            partial_settings(name, args, runner_args, checksums))


def _run_experiment(name: str, args: argparse.Namespace, data, checksums: dict,
                    variant: str, command: str) -> Path:
    fn, runner_args, stem, partial_path, settings = _job(name, args, checksums)
    done = load_partial(partial_path, settings)
    if done:
        print(f"{name}: resuming, {len(done)} run(s) already done", file=sys.stderr)
    start = time.perf_counter()
    started = now_iso()
    payload = fn(data, progress=not args.no_progress, done=done,
                 on_result=lambda d: atomic_write_json(partial_path,
                                                       {"settings": settings, "runs": d}),
                 **runner_args)
    prov = collect_provenance(
        device="cpu", precision="float32", draft=args.draft, started=started, command=command,
        wall_seconds=round(time.perf_counter() - start, 2), threads=args.threads,
        dataset=f"fashion-mnist/{variant}", dataset_sha256=checksums,
        dataset_subset=dict(n_train=args.n_train, n_test=args.n_test, seed=args.data_seed))
    path = write_result(Path(args.out) / f"{stem}.json", {"provenance": prov, **payload})
    partial_path.unlink(missing_ok=True)
    return path


def main(argv=None) -> int:
    """Run the experiments ``argv`` names and write ``<out>/<name>.json`` with provenance.

    Returns 0, or 2 (after saying why) when a partial result cannot be resumed.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_dirty_tree(parser, args)
    torch.set_num_threads(args.threads)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    info = fashion_mnist_info()
    checksums, variant = info["idx_sha256"], info["variant"]
    try:
        args.own_data = check_known_data(f"fashion-mnist/{variant}", args.allow_unknown_data)
    except CommandError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    # Every partial file is checked before the first run, so that "all" fails before any work.
    for name in names:
        _, _, _, partial_path, settings = _job(name, args, checksums)
        if args.restart:
            partial_path.unlink(missing_ok=True)
        try:
            load_partial(partial_path, settings)
        except PartialResultMismatch as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 2
    data = prepare_fashion_mnist(args.n_train, args.n_test, seed=args.data_seed)
    command = command_line(argv, prog=PROG)
    for name in names:
        path = _run_experiment(name, args, data, checksums, variant, command)
        print(f"{name}: wrote {path}", file=sys.stderr)
    return 0

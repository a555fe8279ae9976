"""Experiment 1 of the "beyond batch normalisation" chapter: the convolutional batch-size sweep.

Every cell of the sweep trains :func:`bnbook.models.small_cnn.small_cifar_cnn` with one
normalisation ``method`` on its four convolutions, one batch size ``m`` and one ``seed`` on a
seeded CIFAR-10 subset (:func:`bnbook.data.subsets.prepare_cifar10`) and reports its test
accuracy. All cells see the same number of training images, whatever ``m``; the learning
rate follows the linear scaling rule as Wu & He use it for their batch-size study,
``lr = lr_at_32 * m / 32`` (Goyal et al., 2017), with SGD and heavy-ball momentum 0.9,
multiplied by 0.1 for the last quarter of the updates. Batch renormalisation starts as plain
batch norm and relaxes its bounds linearly (Ioffe, 2017; :func:`renorm_bounds`).

::

    python -m bnbook.experiments.norms.sweep --jobs 2       # the full sweep (about 2 h, 2 cores)
    python -m bnbook.experiments.norms.sweep --quick        # the tiny profile (seconds)
    python -m bnbook.experiments.norms.sweep --restart      # throw away the partial result

The sweep writes ``data/results/norms/sweep.json`` (``sweep-quick.json`` for ``--quick``) in the
book's one result schema, with provenance and the profile that made it. After every finished
cell, ``sweep.partial.json`` holds the cells done so far and the settings; the same command
resumes from it (a cell is never computed twice) and a command with other settings is
refused. ``--jobs 2`` runs two cells at a time in separate processes, each at ``--threads``
(default 1) threads; a cell's numbers do not depend on which process ran it.

:mod:`bnbook.experiments.norms.sweep_report` turns a result into the chapter's table and figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import multiprocessing
import sys
import time
from typing import Callable
from collections.abc import Mapping

import torch
from torch.nn import functional as F

from bnbook.cli import CommandError, positive_int
from bnbook.data.subsets import Cifar10Subset, prepare_cifar10
from bnbook.diagnostics import eval_mode, recalibrate_batchnorm
from bnbook.experiments.runner import (PartialResultMismatch, ResultFiles, add_run_arguments,
                                       experiment_provenance, parse_run_arguments, refused,
                                       result_stem)
from bnbook.provenance import RESULTS_DIR, command_line, git_commit, now_iso
from bnbook.models.small_cnn import CONV_NORMS, small_cifar_cnn
from bnbook.training import NonFiniteLoss, cross_entropy_loss, epoch_batches, fit

__all__ = ["PROG", "METHODS", "PROFILES", "SWEEP_RESULT", "cell_key", "cells_of",
           "same_as_batch_norm",
           "learning_rate", "renorm_bounds", "run_cell", "train_cell", "evaluate_cell",
           "evaluate", "run_sweep", "build_parser", "main"]

PROG = "python -m bnbook.experiments.norms.sweep"
#: Where the full sweep's result lives (the chapter reads it).
SWEEP_RESULT = RESULTS_DIR / "norms" / "sweep.json"

#: The methods in the order the chapter lists them: ``small_cifar_cnn``'s ``norm`` names.
METHODS = ("batch", "renorm", "ghost", "group", "group_ws", "layer", "instance", "none")
assert set(METHODS) == set(CONV_NORMS)

_COMMON = dict(methods=list(METHODS), momentum=0.9, weight_decay=1e-4, lr_at_32=0.01,
               decay_at=0.75, groups=4, ghost_batch_size=8, data_seed=0,
               renorm=dict(r_max=3.0, d_max=5.0, plain_until=0.05, r_full_at=0.4,
                           d_full_at=0.25))

#: The profiles: ``full`` is the stored sweep, ``quick`` a tiny version for tests (seconds).
PROFILES = {
    "full": dict(_COMMON, batch_sizes=[2, 4, 8, 16, 32, 128], seeds=[0, 1, 2], width=16,
                 n_train=20000, n_test=10000, images_seen=128000, n_train_eval=2000,
                 n_recalibrate=5000),
    "quick": dict(_COMMON, batch_sizes=[2, 8, 32], seeds=[0], width=4, n_train=256, n_test=256,
                  images_seen=256, n_train_eval=256, n_recalibrate=256),
}


def cell_key(method: str, batch_size: int, seed: int) -> str:
    """The key of one cell in a result's ``runs``: ``"<method>/m<batch size>/seed<seed>"``."""
    return f"{method}/m{batch_size}/seed{seed}"


def same_as_batch_norm(method: str, batch_size: int, settings: dict) -> bool:
    """Whether ``method`` at ``batch_size`` is plain batch norm by definition: ghost batch norm
    with chunks of ``ghost_batch_size >= batch_size`` images is one chunk, the whole batch."""
    return method == "ghost" and batch_size <= settings["ghost_batch_size"]


def cells_of(settings: dict) -> list[tuple[str, int, int]]:
    """Every ``(method, batch size, seed)`` the sweep trains, seeds outermost (so an early
    stop leaves whole seeds), then batch sizes, then methods; cells that are batch norm by
    definition (:func:`same_as_batch_norm`) are left out."""
    return [(method, m, s) for s in settings["seeds"] for m in settings["batch_sizes"]
            for method in settings["methods"] if not same_as_batch_norm(method, m, settings)]


def _fraction(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0.0 <= value <= 1.0)


def check_cell(key: str, run) -> None:
    """Refuse (``ValueError`` naming ``key`` and the field) a sweep cell that is not a dict
    with a boolean ``diverged`` and, unless it diverged, a ``test_acc`` fraction (and for
    batch norm a ``test_acc_recalibrated`` fraction)."""
    if not isinstance(run, Mapping):
        raise ValueError(f"run {key}: expected an object, got {type(run).__name__}")
    if not isinstance(run.get("diverged"), bool):
        raise ValueError(f"run {key}: diverged is {run.get('diverged')!r}, not true or false")
    if run["diverged"]:
        return
    fields = ["test_acc"] + (["test_acc_recalibrated"] if key.startswith("batch/") else [])
    for field in fields:
        if not _fraction(run.get(field)):
            raise ValueError(f"run {key}: {field} is {run.get(field)!r}, not a fraction in "
                             f"[0, 1]" + ("" if field in run else " (missing)"))


def check_cells(runs, settings: Mapping, complete: bool = True) -> None:
    """Refuse runs that are not the cells of ``settings`` (a stray key, or with ``complete``
    a missing cell) or that break :func:`check_cell`."""
    for field in ("methods", "batch_sizes", "seeds"):
        value = settings.get(field)
        if not isinstance(value, list) or not value:
            raise ValueError(f"settings.{field} is {value!r}, not a non-empty list")
    if not isinstance(runs, Mapping):
        raise ValueError(f"runs is a {type(runs).__name__}, not an object")
    cells = [cell_key(*c) for c in cells_of(settings)]
    stray = sorted(set(runs) - set(cells))
    if stray:
        raise ValueError(f"{len(stray)} run(s) that are not cells of these settings, e.g. "
                         f"{stray[0]!r}")
    missing = [k for k in cells if k not in runs]
    if complete and missing:
        raise ValueError(f"the sweep lacks {len(missing)} cell(s), e.g. {missing[0]}")
    for key, run in runs.items():
        check_cell(key, run)


def learning_rate(batch_size: int, lr_at_32: float) -> float:
    """The linear scaling rule: ``lr_at_32 * batch_size / 32``."""
    return lr_at_32 * batch_size / 32


def renorm_bounds(fraction: float, r_max: float, d_max: float, plain_until: float,
                  r_full_at: float, d_full_at: float) -> tuple[float, float]:
    """Batch renormalisation's bounds ``(r_max, d_max)`` after ``fraction`` of training.

    Plain batch norm (``r_max = 1``, ``d_max = 0``) until ``plain_until``, then each bound
    grows linearly to its final value, reached at ``r_full_at`` and ``d_full_at``: the shape
    of Ioffe's (2017) schedule, in fractions of our shorter runs.
    """
    def ramp(full_at):
        if fraction <= plain_until:
            return 0.0
        return min(1.0, (fraction - plain_until) / (full_at - plain_until))
    return 1.0 + (r_max - 1.0) * ramp(r_full_at), d_max * ramp(d_full_at)


def _batches(x, y, batch_size: int, steps: int, seed: int):
    """``steps`` batches from successive seeded epochs (incomplete last batches dropped)."""
    gen = torch.Generator().manual_seed(seed)
    epochs = (epoch_batches(x, y, batch_size, gen) for _ in itertools.count())
    return itertools.islice(itertools.chain.from_iterable(epochs), steps)


@torch.no_grad()
def evaluate(model, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)`` in evaluation mode."""
    correct, loss = 0, 0.0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            logits = model(x[i:i + batch_size])
            correct += int((logits.argmax(dim=1) == y[i:i + batch_size]).sum())
            loss += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
    return correct / x.shape[0], loss / x.shape[0]


def run_cell(data: Cifar10Subset, method: str, batch_size: int, seed: int,
             settings: dict) -> dict:
    """Train one cell of the sweep and return its record (plain JSON types).

    The record: ``method``, ``batch_size``, ``seed``, ``lr``, ``steps``, ``images_seen``,
    ``diverged``, ``test_acc`` and ``test_loss`` (``None`` if diverged), ``train_acc`` (on
    ``n_train_eval`` training images drawn with ``data_seed``, evaluation mode),
    ``train_loss_curve`` (mean training loss of each tenth of the updates), ``seconds`` (wall)
    and ``cpu_seconds``; for ``batch`` also ``test_acc_recalibrated``, with running statistics
    re-estimated on ``n_recalibrate`` such images
    (:func:`bnbook.diagnostics.recalibrate_batchnorm`).
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model, record = train_cell(data, method, batch_size, seed, settings)
    evaluate_cell(model, data, record, settings)
    record["seconds"] = round(time.perf_counter() - wall0, 3)
    record["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    return record


def train_cell(data: Cifar10Subset, method: str, batch_size: int, seed: int, settings: dict,
               *, lr: float | None = None, model: torch.nn.Module | None = None):
    """Train one cell as :func:`run_cell` does; return ``(model, record)``, the record without
    its evaluation (``test_acc``, ``test_loss``, ``train_acc`` are ``None``) and timings.

    ``lr``: the base learning rate (default :func:`learning_rate` of ``batch_size`` and
    ``lr_at_32``); ``model``: the network to train (default ``small_cifar_cnn`` with
    ``method`` on its convolutions, seeded by ``seed``).
    """
    if settings["images_seen"] % batch_size:
        raise ValueError(f"images_seen ({settings['images_seen']}) must be a multiple of the "
                         f"batch size ({batch_size})")
    steps = settings["images_seen"] // batch_size
    lr = learning_rate(batch_size, settings["lr_at_32"]) if lr is None else lr
    if model is None:
        model = small_cifar_cnn(settings["width"], method, groups=settings["groups"],
                                ghost_batch_size=settings["ghost_batch_size"], seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=settings["momentum"],
                          weight_decay=settings["weight_decay"])
    decay_step = int(settings["decay_at"] * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < decay_step else 0.1)
    renorms = [m for m in model.modules() if hasattr(m, "r_max") and hasattr(m, "d_max")]
    chunk = max(1, steps // 10)
    sums = [0.0] * ((steps + chunk - 1) // chunk)

    def on_step(step, loss, logits, batch):
        sums[(step - 1) // chunk] += float(loss.detach())
        for module in renorms:
            module.r_max, module.d_max = renorm_bounds(step / steps, **settings["renorm"])

    for module in renorms:
        module.r_max, module.d_max = renorm_bounds(0.0, **settings["renorm"])
    diverged = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        try:
            fit(model, _batches(data.x_train, data.y_train, batch_size, steps, seed),
                cross_entropy_loss, opt, scheduler=sched, on_step=on_step, check_finite=True)
        except NonFiniteLoss:
            diverged = True
    diverged = diverged or not all(torch.isfinite(p).all() for p in model.parameters())
    sizes = [min(chunk, steps - i * chunk) for i in range(len(sums))]
    record = dict(method=method, batch_size=batch_size, seed=seed, lr=lr, steps=steps,
                  images_seen=steps * batch_size, diverged=diverged, test_acc=None,
                  test_loss=None, train_acc=None,
                  train_loss_curve=None if diverged else
                  [round(s / n, 5) for s, n in zip(sums, sizes)])
    return model, record


def evaluate_cell(model, data: Cifar10Subset, record: dict, settings: dict) -> dict:
    """Fill in ``record``'s ``test_acc``, ``test_loss``, ``train_acc`` (and for ``batch``
    ``test_acc_recalibrated``) as :func:`run_cell` describes, unless it diverged; return it."""
    if record["diverged"]:
        return record
    record["test_acc"], record["test_loss"] = evaluate(model, data.x_test, data.y_test)
    # A seeded sample, not the first images: a subset may be stored sorted by class.
    order = torch.randperm(data.x_train.shape[0],
                           generator=torch.Generator().manual_seed(settings["data_seed"]))
    idx = order[:settings["n_train_eval"]]
    record["train_acc"] = evaluate(model, data.x_train[idx], data.y_train[idx])[0]
    if record["method"] == "batch":
        recalibrate_batchnorm(model, data.x_train[order[:settings["n_recalibrate"]]])
        record["test_acc_recalibrated"] = evaluate(model, data.x_test, data.y_test)[0]
    return record


# --- running many cells: in this process or in worker processes ------------------------------

_WORKER: dict = {}


def _init_worker(settings: dict, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["settings"] = settings
    _WORKER["data"] = prepare_cifar10(settings["n_train"], settings["n_test"],
                                      seed=settings["data_seed"])


def _work(cell: tuple[str, int, int]) -> tuple[str, dict]:
    return cell_key(*cell), run_cell(_WORKER["data"], *cell, _WORKER["settings"])


def run_sweep(settings: dict, done: dict, on_result, *, jobs: int = 1, threads: int = 1,
              max_cells: int | None = None, progress: bool = True, data=None) -> dict:
    """Run every cell of ``settings`` not in ``done`` (key -> record, updated in place),
    calling ``on_result(done)`` after each; return ``done``.

    ``jobs > 1`` runs cells in that many worker processes (each loads the data itself and
    uses ``threads`` threads); ``jobs == 1`` runs them here, on ``data`` if given.
    ``max_cells`` stops after that many new cells (the rest stays for a later run).
    """
    todo = [c for c in cells_of(settings) if cell_key(*c) not in done]
    if max_cells is not None:
        todo = todo[:max_cells]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells_of(settings)), initial=len(done), desc="norm sweep",
                   unit="cell", smoothing=0.05)

    def finish(key, record):
        done[key] = record
        on_result(done)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{key}: acc {record['test_acc']}", refresh=False)

    try:
        if jobs == 1:
            if data is None:
                _init_worker(settings, threads)
                data = _WORKER["data"]
            for cell in todo:
                finish(cell_key(*cell), run_cell(data, *cell, settings))
        else:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                        initargs=(settings, threads)) as pool:
                finish_as_completed([pool.submit(_work, cell) for cell in todo], finish)
    finally:
        if bar is not None:
            bar.close()
    return done


def finish_as_completed(futures: list, finish: Callable) -> None:
    """``finish(*result)`` for each of ``futures`` as it completes; on any exception (Ctrl-C
    included) the ones not yet started are cancelled and the exception goes on."""
    try:
        for future in cf.as_completed(futures):
            finish(*future.result())
    except BaseException:
        for future in futures:
            future.cancel()
        raise


# --- the command line ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="cells run at a time (processes)")
    parser.add_argument("--max-cells", type=int, default=None,
                        help="stop after this many new cells (resume later)")
    return add_run_arguments(parser, out=str(RESULTS_DIR / "norms"),
                             quick_help="the tiny profile (seconds)",
                             threads_help="torch threads per job",
                             restart_help="delete the partial result first")


def _partial_settings(profile: str, settings: dict, data_info: dict, threads: int = 1) -> dict:
    """What a partial result records, and what resuming from it must match; the thread count
    too, since cells computed with other counts differ."""
    return {"profile": profile, "settings": settings, "threads": threads,
            "dataset": data_info["variant"], "dataset_sha256": data_info["sha256"]}


def _resume_sweep(files: ResultFiles, settings: dict, restart: bool) -> tuple[dict, list]:
    """The finished cells and the sessions that made them; ``ValueError`` for a crafted or
    damaged partial file (refused before any new cell runs)."""
    done = files.resume(restart=restart, label=PROG)
    sessions = files.saved_field("sessions", []) if done else []
    check_cells(done, settings, complete=False)
    if not isinstance(sessions, list) or not all(isinstance(x, dict) for x in sessions):
        raise ValueError("sessions is not a list of objects")
    _check_sessions(sessions)
    return done, sessions


def main(argv=None) -> int:
    """Run the sweep and write ``<out>/sweep[-quick].json``.

    Returns 0 when the result is written, 3 when ``--max-cells`` stopped it early (the
    partial result is kept), 2 when a partial result with other settings is in the way.
    """
    from bnbook.data import cifar10_info

    args, argv = parse_run_arguments(build_parser(), argv)
    profile = "quick" if args.quick else "full"
    settings = PROFILES[profile]
    info = cifar10_info()
    dataset = f"cifar10/{info['variant']}"
    try:
        files = ResultFiles(args.out, result_stem("sweep", args, dataset),
                            _partial_settings(profile, settings, info, args.threads))
    except CommandError as exc:
        return refused(PROG, exc, error=True)
    try:
        done, sessions = _resume_sweep(files, settings, args.restart)
    except PartialResultMismatch as exc:
        return refused(PROG, exc)
    except ValueError as exc:
        return refused(PROG, f"refusing to resume from {files.partial_path}: {exc}; rerun "
                             f"with --restart to start over", error=True)
    session = {"started": now_iso(), "git_commit": git_commit(),
               "command": command_line(argv, prog=PROG), "jobs": args.jobs,
               "threads": args.threads, "cells": 0}
    sessions.append(session)
    wall0 = time.perf_counter()

    def save(runs):
        session["cells"] = len(runs) - sum(s["cells"] for s in sessions[:-1])
        session["wall_seconds"] = round(time.perf_counter() - wall0, 2)
        files.save_partial(runs, sessions=sessions)

    run_sweep(settings, done, save, jobs=args.jobs, threads=args.threads,
              max_cells=args.max_cells, progress=not args.no_progress)
    total = len(cells_of(settings))
    if len(done) < total:
        save(done)
        print(f"{PROG}: {len(done)} of {total} cells done; rerun the same command to go on",
              file=sys.stderr)
        return 3
    session["wall_seconds"] = round(time.perf_counter() - wall0, 2)
    prov = experiment_provenance(
        args, started=sessions[0]["started"], command=session["command"],
        commit=sessions[0]["git_commit"],
        wall_seconds=sum(s.get("wall_seconds", 0.0) for s in sessions),
        dataset=dataset, dataset_sha256=info["sha256"],
        dataset_subset=dict(n_train=settings["n_train"], n_test=settings["n_test"],
                            seed=settings["data_seed"]),
        jobs=args.jobs, sessions=sessions)
    runs = {cell_key(*c): done[cell_key(*c)] for c in cells_of(settings)}
    path = files.write(prov, {"profile": profile, "settings": settings, "runs": runs})
    print(f"{PROG}: wrote {path}", file=sys.stderr)
    return 0


def _check_sessions(sessions: list) -> None:
    """Refuse earlier sessions without what the next save and the result take from them
    (``cells``, ``started``, ``git_commit``, ``wall_seconds``), before a new cell runs."""
    for i, s in enumerate(sessions):
        cells, wall = s.get("cells"), s.get("wall_seconds", 0.0)
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 0:
            raise ValueError(f"sessions[{i}].cells is {str(cells)[:40]!r}, not a count")
        if not isinstance(s.get("started"), str) or not isinstance(s.get("git_commit", 0),
                                                                   (str, type(None))):
            raise ValueError(f"sessions[{i}] lacks a 'started' time or has a bad git_commit")
        if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not wall >= 0:
            raise ValueError(f"sessions[{i}].wall_seconds is {str(wall)[:40]!r}, not seconds")


if __name__ == "__main__":
    sys.exit(main())

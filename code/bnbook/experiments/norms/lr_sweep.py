"""Experiment 1 of the "beyond batch normalisation" chapter, each method at its own learning rate.

:mod:`bnbook.experiments.norms.sweep` trains every normalisation at one learning rate (chosen for
the unnormalised network). This experiment gives each method, at each batch size ``m`` of
``batch_sizes`` (32 and 2), the learning rate that suits it, then measures it on fresh seeds:

1. **grid stage**: one run (seed ``sweep_seed``) per learning rate of a grid a factor
   ``10 ** lr_step`` (about 3) apart, ``lr = lr_centre[m] * 10 ** (lr_step * k)`` rounded to
   3 significant digits, first for ``k`` in ``initial_grid`` (today's rate and one step either
   side), then extended one step at a time on the side of the best rate while the best is at
   an edge of the grid (at most ``max_extensions`` steps each way; a best still at an edge
   after that is recorded as ``best_at_edge``;
   :func:`bnbook.experiments.norms.lr_grid.next_grid_points`);
2. **seeds stage**: ``final_seeds`` runs at the selected rate. Those seeds are not the seed
   that selected the rate, so the winner's luck of the grid run does not enter the table.

**Selection rule** (:func:`bnbook.experiments.norms.lr_grid.select_best`): the highest accuracy
on a held-out validation split, ``n_val`` CIFAR-10 training images outside the training subset
(:func:`prepare_data`); a run that diverged ranks below every other; a tie goes to the smaller
rate. The test images never choose the rate. Every run trains on ``norm_sweep``'s training
subset for its ``images_seen`` with its schedule (SGD with momentum, the rate divided by 10 for
the last quarter; :func:`bnbook.experiments.norms.sweep.train_cell`).

The methods are ``norm_sweep``'s, plus weight standardisation
(:class:`bnbook.torch_norms.WSConv2d`, Qiao et al. 2019) on the convolutions of batch norm
(``batch_ws``) and of the unnormalised network (``ws``: the standardised filters have unit
variance per weight and no gain, so without a normalisation after them each layer multiplies
the scale of its input by about the square root of its fan-in). Ghost batch norm at
``m <= ghost_batch_size`` is batch norm and is not run.

::

    python -m bnbook.experiments.norms.lr_sweep --jobs 1       # the full experiment (hours)
    python -m bnbook.experiments.norms.lr_sweep --quick        # the tiny profile (seconds)
    python -m bnbook.experiments.norms.lr_sweep --estimate     # time one cell per m, print the cost

Stages run in the order ``m = 32`` grid, ``m = 32`` seeds, ``m = 2`` grid, ``m = 2`` seeds; each
writes its result file as soon as it is complete, ``<out>/lr_sweep-m<m>-<stage>.json``
(``lr_sweep-quick-...`` for ``--quick``), with provenance. Every finished run is saved at once
in the checkpoint ``<out>/lr_sweep.partial.json``; the same command resumes from it (no run is
computed twice; Ctrl-C or a kill loses at most the runs in progress), and a command with other
settings is refused. ``--draft`` and the refusal of a ``+dirty`` tree work as in the other
experiments (:func:`bnbook.cli.refuse_dirty_tree`).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bnbook.cli import CommandError, positive_int
from bnbook.data.subsets import Cifar10Subset, prepare_cifar10
from bnbook.experiments.norms import sweep as norm_sweep
from bnbook.experiments.norms.lr_grid import (SELECTION_RULE, STAGES, cell_key, estimate_seconds,
                                             grid_lr, pending_cells, planned_cells, stage_cells)
from bnbook.experiments.runner import (PartialResultMismatch, ResultFiles, add_run_arguments,
                                       experiment_provenance, parse_run_arguments, refused,
                                       result_stem)
from bnbook.provenance import RESULTS_DIR, command_line, git_commit, now_iso
from bnbook.results import write_result
from bnbook.models.small_cnn import small_cifar_cnn

__all__ = ["METHODS", "WS_ARMS", "PROFILES", "OUT_DIR", "build_model",
           "standardise_convolutions_", "prepare_data", "run_cell", "run_stages", "StoppedEarly",
           "PROG", "build_parser", "check_records", "load_checkpoint", "stage_path", "main"]

#: Where the stage files and the checkpoint go (the chapter reads the stage files).
OUT_DIR = RESULTS_DIR / "norms"

#: The arms with weight-standardised convolutions, and the normalisation each has after them.
WS_ARMS = {"batch_ws": "batch", "ws": "none"}
#: ``norm_sweep``'s methods and the two weight-standardised arms.
METHODS = (*norm_sweep.METHODS, *WS_ARMS)
_TODAY = norm_sweep.PROFILES["full"]
_SHARED = {k: _TODAY[k] for k in ("momentum", "weight_decay", "decay_at", "groups",
                                  "ghost_batch_size", "data_seed", "renorm")}
_GRID = dict(lr_step=0.5, initial_grid=[-1, 0, 1], sweep_seed=0, selection=SELECTION_RULE)

#: ``full`` is the chapter's experiment; ``quick`` a tiny version for the tests (seconds).
#: ``lr_centre`` is today's fixed rate at each m (``norm_sweep.learning_rate``).
PROFILES = {
    "full": dict(_SHARED, **_GRID, methods=list(METHODS), batch_sizes=[32, 2],
                 lr_centre={str(m): norm_sweep.learning_rate(m, _TODAY["lr_at_32"])
                            for m in (32, 2)},
                 max_extensions=4, final_seeds=[1, 2, 3], width=_TODAY["width"],
                 n_train=_TODAY["n_train"], n_test=_TODAY["n_test"], n_val=5000,
                 images_seen=_TODAY["images_seen"], n_train_eval=_TODAY["n_train_eval"],
                 n_recalibrate=_TODAY["n_recalibrate"]),
    "quick": dict(_SHARED, **_GRID, methods=["batch", "ghost", "ws"],
                  batch_sizes=[32, 8], lr_centre={"32": 0.03, "8": 0.01}, max_extensions=2,
                  final_seeds=[1, 2], width=4, n_train=256, n_test=128, n_val=128,
                  images_seen=128, n_train_eval=128, n_recalibrate=128),
}


# --- one run -------------------------------------------------------------------------------------

def standardise_convolutions_(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv2d`` in ``model`` by a :class:`bnbook.torch_norms.WSConv2d` with
    the same shape and the same weight and bias values; return ``model`` (changed in place)."""
    from bnbook.torch_norms import WSConv2d

    for name, child in model.named_children():
        if type(child) is nn.Conv2d:
            ws = WSConv2d(child.in_channels, child.out_channels, child.kernel_size,
                          stride=child.stride, padding=child.padding,
                          bias=child.bias is not None)
            with torch.no_grad():
                ws.weight.copy_(child.weight)
                if child.bias is not None:
                    ws.bias.copy_(child.bias)
            setattr(model, name, ws)
        else:
            standardise_convolutions_(child)
    return model


def build_model(method: str, settings: Mapping, seed: int) -> nn.Module:
    """The network of ``method``: ``small_cifar_cnn`` with that normalisation, or for an arm of
    :data:`WS_ARMS` with its normalisation after weight-standardised convolutions (the same
    initial weights for one seed, whatever the method)."""
    model = small_cifar_cnn(settings["width"], WS_ARMS.get(method, method),
                            groups=settings["groups"],
                            ghost_batch_size=settings["ghost_batch_size"], seed=seed)
    return standardise_convolutions_(model) if method in WS_ARMS else model


def prepare_data(settings: Mapping) -> tuple[Cifar10Subset, torch.Tensor, torch.Tensor]:
    """``(subset, x_val, y_val)``: ``norm_sweep``'s training and test subset
    (:func:`bnbook.data.subsets.prepare_cifar10`) and ``n_val`` validation images ``(n_val, 3,
    32, 32)`` drawn (seeded by ``data_seed``) from the CIFAR-10 training images outside the
    training subset, standardised with the training subset's channel statistics."""
    import bnbook.data

    subset = prepare_cifar10(settings["n_train"], settings["n_test"], seed=settings["data_seed"])
    x_all, y_all, x_test_all, _ = bnbook.data.load_cifar10()
    # the subset's training indices, drawn as prepare_cifar10 draws them (checked below)
    rng = np.random.default_rng(settings["data_seed"])
    i_train = np.sort(rng.choice(len(x_all), size=settings["n_train"], replace=False))
    mean, std = subset.channel_mean[:, None, None], subset.channel_std[:, None, None]

    def as_standardised(idx):
        x = torch.from_numpy(np.ascontiguousarray(x_all[idx].transpose(0, 3, 1, 2)))
        return (x.float() / 255.0 - mean) / std

    probe = i_train[:: max(1, len(i_train) // 64)]
    if not torch.equal(as_standardised(probe), subset.x_train[:: max(1, len(i_train) // 64)]):
        raise RuntimeError("prepare_cifar10 no longer draws its training subset as "
                           "prepare_data assumes; the validation split could overlap it")
    rest = np.setdiff1d(np.arange(len(x_all)), i_train)
    if settings["n_val"] > len(rest):
        raise ValueError(f"n_val={settings['n_val']} exceeds the {len(rest)} training images "
                         f"outside the subset")
    pick = np.random.default_rng([settings["data_seed"], 1]).choice(
        len(rest), size=settings["n_val"], replace=False)
    i_val = np.sort(rest[pick])
    return subset, as_standardised(i_val), torch.from_numpy(y_all[i_val])


def run_cell(data: Cifar10Subset, x_val, y_val, method: str, batch_size: int, lr: float,
             seed: int, settings: Mapping) -> dict:
    """Train one run and return its record: ``norm_sweep.run_cell``'s fields (``lr`` is the
    one given) plus ``val_acc`` and ``val_loss`` (``None`` if diverged). A mean loss too large
    for float32 (a network that trained without diverging but predicts with huge logits) is
    recorded as ``None``, since JSON has no infinity; its accuracy still counts."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model = build_model(method, settings, seed)
    model, record = norm_sweep.train_cell(data, method, batch_size, seed, dict(settings),
                                          lr=lr, model=model)
    norm_sweep.evaluate_cell(model, data, record, settings)
    record["val_acc"] = record["val_loss"] = None
    if not record["diverged"]:
        record["val_acc"], record["val_loss"] = norm_sweep.evaluate(model, x_val, y_val)
    for field in ("test_loss", "val_loss"):
        if record[field] is not None and not math.isfinite(record[field]):
            record[field] = None
    record["seconds"] = round(time.perf_counter() - wall0, 3)
    record["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    return record


# --- running the stages -------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(settings: dict, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["settings"] = settings
    _WORKER["data"] = prepare_data(settings)


def _work(cell: tuple) -> tuple[str, dict]:
    method, m, lr, seed, k = cell
    record = run_cell(*_WORKER["data"], method, m, lr, seed, _WORKER["settings"])
    return cell_key(method, m, lr, seed), dict(record, grid_k=k)


class StoppedEarly(Exception):
    """``max_cells`` new runs are done; the rest is left for a later command."""


def run_stages(settings: dict, done: dict, on_result, on_stage=None, *, jobs: int = 1,
               threads: int = 1, max_cells: int | None = None, progress: bool = True,
               data=None) -> dict:
    """Run every stage in order (the grid, then the seeds, of each batch size), each run not
    in ``done`` (key -> record, updated in place); call ``on_result(done)`` after every run and
    ``on_stage(batch_size, stage, done)`` when a stage is complete; return ``done``.

    ``jobs > 1`` runs the runs a stage can start at once (the grid points of all methods) in
    that many processes at ``threads`` threads each; ``jobs == 1`` runs them here, on
    ``data`` (``prepare_data``'s triple) if given. Raises :class:`StoppedEarly` after
    ``max_cells`` new runs.
    """
    budget = [max_cells]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=planned_cells(settings, done), initial=len(done), unit="run",
                   desc="norm lr sweep", smoothing=0.05)

    def finish(key, record):
        done[key] = record
        on_result(done)
        if bar is not None:
            bar.total = planned_cells(settings, done)
            bar.update(1)
            bar.set_postfix_str(f"{key}: val {record['val_acc']}", refresh=False)

    pool = None
    try:
        if jobs == 1 and data is None:
            _init_worker(settings, threads)
            data = _WORKER["data"]
        if jobs > 1:
            pool = cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_init_worker, initargs=(settings, threads))
        for m in settings["batch_sizes"]:
            for stage in STAGES:
                while cells := pending_cells(settings, m, stage, done):
                    _run_round(cells, finish, budget, pool, data, settings)
                if on_stage is not None:
                    on_stage(m, stage, done)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return done


def _run_round(cells, finish, budget, pool, data, settings) -> None:
    """Run ``cells`` (in ``pool`` if given), calling ``finish(key, record)`` for each."""
    if budget[0] is not None:
        if budget[0] <= 0:
            raise StoppedEarly
        cells = cells[:budget[0]]
        budget[0] -= len(cells)
    if pool is None:
        for method, m, lr, seed, k in cells:
            finish(cell_key(method, m, lr, seed),
                   dict(run_cell(*data, method, m, lr, seed, settings), grid_k=k))
        return
    norm_sweep.finish_as_completed([pool.submit(_work, cell) for cell in cells], finish)


# --- the command line ----------------------------------------------------------------------------

PROG = "python -m bnbook.experiments.norms.lr_sweep"
_RECORD_FIELDS = ("method", "batch_size", "lr", "seed", "grid_k", "diverged", "val_acc",
                  "test_acc", "train_acc", "seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs at a time (processes)")
    parser.add_argument("--max-cells", type=int, default=None,
                        help="stop after this many new runs (resume later)")
    parser.add_argument("--estimate", action="store_true",
                        help="time one batch-norm run per batch size, print the estimated "
                             "total and stop (nothing is written)")
    return add_run_arguments(parser, out=str(OUT_DIR), quick_help="the tiny profile (seconds)",
                             threads_help="torch threads per job",
                             restart_help="delete the checkpoint first (stage files are kept "
                                          "until rewritten)")


def check_records(done: Mapping, settings: Mapping) -> None:
    """Refuse (``ValueError`` naming the run) a checkpoint record that lacks a field, does not
    match its key, or (unless diverged) has accuracies outside ``[0, 1]``."""
    for key, rec in done.items():
        if not isinstance(rec, Mapping) or any(f not in rec for f in _RECORD_FIELDS):
            raise ValueError(f"run {key}: not a record with the fields {_RECORD_FIELDS}")
        if cell_key(rec["method"], rec["batch_size"], rec["lr"], rec["seed"]) != key or \
                rec["method"] not in settings["methods"]:
            raise ValueError(f"run {key}: its fields describe another run")
        if not rec["diverged"] and not all(
                isinstance(rec[f], (int, float)) and 0.0 <= rec[f] <= 1.0
                for f in ("val_acc", "test_acc", "train_acc")):
            raise ValueError(f"run {key}: an accuracy is not a fraction in [0, 1]")


def load_checkpoint(files: ResultFiles, restart: bool = False) -> tuple[dict, list]:
    """``(runs, sessions)`` saved in the checkpoint ``files.partial_path`` (empty if there is
    none; deleted first if ``restart``), made with the settings ``files.settings``; a damaged or
    foreign checkpoint is refused before any new run (:class:`PartialResultMismatch` or
    ``ValueError``)."""
    done = files.resume(restart=restart)
    if not done:
        return {}, []
    sessions = files.saved_field("sessions")
    if not isinstance(sessions, list) or not all(isinstance(x, dict) for x in sessions):
        raise ValueError(f"{files.partial_path}: sessions is not a list of objects")
    check_records(done, files.settings["settings"])
    return done, sessions


def _partial_settings(profile: str, settings: dict, info: Mapping, threads: int,
                      draft: bool) -> dict:
    """What the checkpoint records, and what resuming from it must match (the layout of
    every checkpoint written so far: keep it, or older runs can no longer be resumed)."""
    return {"profile": profile, "settings": settings, "threads": threads, "draft": draft,
            "dataset": info["variant"], "dataset_sha256": info["sha256"]}


def stage_path(out: Path, stem: str, batch_size: int, stage: str) -> Path:
    """``<out>/<stem>-m<batch size>-<stage>.json``."""
    return out / f"{stem}-m{batch_size}-{stage}.json"


def _stage_result(settings, profile, m, stage, done, sessions, args, prov_fields) -> dict:
    """A complete stage's result: provenance, settings, the stage summary and its runs."""
    summary = stage_cells(settings, m, stage, done)
    if stage == "grid":
        keys = [cell_key(meth, m, lr, settings["sweep_seed"])
                for meth, row in summary.items() for lr in row["lrs"]]
    else:
        keys = [cell_key(meth, m, row["lr"], s) for meth, row in summary.items()
                for s in row["seeds"]]
    runs = {k: done[k] for k in keys}
    prov = experiment_provenance(
        args, started=sessions[0]["started"], git_commit=sessions[0]["git_commit"],
        wall_seconds=sum(r["seconds"] for r in runs.values()),
        run_commits=sorted({r.get("git_commit", "unknown") for r in runs.values()}),
        sessions=sessions, **prov_fields)
    return {"provenance": prov, "profile": profile, "stage": stage, "batch_size": m,
            "selection": settings["selection"], "settings": settings, "methods": summary,
            "runs": runs}


def _estimate(settings: dict, jobs: int) -> int:
    """Time one batch-norm run at each batch size and print the estimated total."""
    data = prepare_data(settings)
    wall, cpu = {}, {}
    for m in settings["batch_sizes"]:
        rec = run_cell(*data, "batch", m, grid_lr(settings, m, 0), 0, settings)
        wall[m], cpu[m] = rec["seconds"], rec["cpu_seconds"]
        print(f"m={m}: one batch-norm run took {wall[m]:.0f} s ({cpu[m]:.0f} s CPU)")
    for ext in (0, 1, 2):
        print(f"with {ext} grid extension(s) per method and batch size: "
              f"{estimate_seconds(settings, wall, ext) / 3600 / jobs:.1f} h at {jobs} job(s) "
              f"({estimate_seconds(settings, cpu, ext) / 3600:.1f} CPU-hours)")
    return 0


def main(argv=None) -> int:
    """Run the stages and write each stage file as it completes.

    Returns 0 when every stage is written, 3 when ``--max-cells`` stopped it early, 130 on
    Ctrl-C (the checkpoint keeps every finished run), 2 when the checkpoint is in the way.
    """
    from bnbook.data import cifar10_info

    args, argv = parse_run_arguments(build_parser(), argv, writes=lambda a: not a.estimate)
    profile = "quick" if args.quick else "full"
    settings = PROFILES[profile]
    if args.estimate:
        return _estimate(settings, args.jobs)
    info = cifar10_info()
    dataset = f"cifar10/{info['variant']}"
    try:
        files = ResultFiles(args.out, result_stem("lr_sweep", args, dataset),
                            _partial_settings(profile, settings, info, args.threads, args.draft))
    except CommandError as exc:
        return refused(PROG, exc, error=True)
    try:
        done, sessions = load_checkpoint(files, restart=args.restart)
    except (PartialResultMismatch, ValueError) as exc:
        return refused(PROG, f"{exc}; rerun with --restart to start over", error=True)
    commit = git_commit()
    session = {"started": now_iso(), "git_commit": commit,
               "command": command_line(argv, prog=PROG), "jobs": args.jobs,
               "threads": args.threads, "runs": 0}
    sessions.append(session)
    if done:
        print(f"{PROG}: resuming, {len(done)} run(s) already done", file=sys.stderr)
    wall0, before = time.perf_counter(), len(done)

    def save(d):
        for rec in d.values():
            rec.setdefault("git_commit", commit)
        session["runs"] = len(d) - before
        session["wall_seconds"] = round(time.perf_counter() - wall0, 2)
        files.save_partial(d, sessions=sessions)

    prov_fields = dict(
        command=session["command"], jobs=args.jobs, dataset=dataset,
        dataset_sha256=info["sha256"],
        dataset_subset=dict(n_train=settings["n_train"], n_test=settings["n_test"],
                            n_val=settings["n_val"], seed=settings["data_seed"]))

    def write_stage(m, stage, d):
        path = stage_path(files.out, files.stem, m, stage)
        result = _stage_result(settings, profile, m, stage, d, sessions, args, prov_fields)
        if path.exists() and json.loads(path.read_text()).get("runs") == result["runs"]:
            return
        write_result(path, result)
        print(f"{PROG}: wrote {path}", file=sys.stderr)

    try:
        run_stages(settings, done, save, write_stage, jobs=args.jobs, threads=args.threads,
                   max_cells=args.max_cells, progress=not args.no_progress)
    except (StoppedEarly, KeyboardInterrupt) as exc:
        save(done)
        print(f"{PROG}: {'stopped' if isinstance(exc, StoppedEarly) else 'interrupted'} "
              f"with {len(done)} run(s) done; rerun the same command to go on", file=sys.stderr)
        return 3 if isinstance(exc, StoppedEarly) else 130
    save(done)
    print(f"{PROG}: every stage is written ({len(done)} runs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

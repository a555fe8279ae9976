"""The learning-rate grid of :mod:`bnbook.experiments.norms.lr_sweep`: where its points lie,
when it grows, which point it selects, and which runs each stage needs.

Pure functions of the settings and of the runs done (``key -> record``); they train nothing,
so the tests drive them with a made-up objective. A grid point is an integer ``k``; its rate
is ``lr_centre[m] * 10 ** (lr_step * k)`` (:func:`grid_lr`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bnbook.experiments.norms.sweep import same_as_batch_norm

__all__ = ["STAGES", "SELECTION_RULE", "grid_lr", "cell_key", "methods_at", "select_best",
           "next_grid_points", "grid_scores", "pending_cells", "stage_cells", "planned_cells",
           "estimate_seconds"]

#: The stages of each batch size, in the order they run.
STAGES = ("grid", "seeds")

SELECTION_RULE = ("highest validation accuracy (n_val CIFAR-10 training images outside the "
                  "training subset) of the sweep_seed run; diverged runs rank last; ties go "
                  "to the smaller learning rate; the test set does not take part")


def grid_lr(settings: Mapping, batch_size: int, k: int) -> float:
    """The learning rate at grid point ``k`` for ``batch_size``:
    ``lr_centre[m] * 10 ** (lr_step * k)``, rounded to 3 significant digits."""
    lr = settings["lr_centre"][str(batch_size)] * 10 ** (settings["lr_step"] * k)
    return float(f"{lr:.3g}")


def cell_key(method: str, batch_size: int, lr: float, seed: int) -> str:
    """A run's key, ``"<method>/m<batch size>/lr<lr>/seed<seed>"``: ``batch/m32/lr0.0316/seed0``."""
    return f"{method}/m{batch_size}/lr{lr:g}/seed{seed}"


def methods_at(settings: Mapping, batch_size: int) -> list[str]:
    """The methods run at ``batch_size``: all but ghost batch norm where it is batch norm."""
    return [meth for meth in settings["methods"]
            if not same_as_batch_norm(meth, batch_size, settings)]


def select_best(scores: Mapping[int, float | None]) -> int:
    """The grid point with the highest score (``None``, a diverged run, ranks last; a tie goes
    to the smaller ``k``); with every run diverged, the smallest ``k``."""
    if not scores:
        raise ValueError("no grid point has been run")
    return min(scores, key=lambda k: (scores[k] is None, -(scores[k] or 0.0), k))


def next_grid_points(scores: Mapping[int, float | None], initial_grid, max_extensions: int
                     ) -> list[int]:
    """The grid points to run next, given the ``scores`` (``k -> score``) of those done.

    The points of ``initial_grid`` not run yet; else one step beyond the best point if it is
    at an edge of the points run (and within ``max_extensions`` of ``initial_grid``); else
    nothing (the grid is finished).
    """
    missing = [k for k in initial_grid if k not in scores]
    if missing:
        return missing
    best, low, high = select_best(scores), min(scores), max(scores)
    if best == high and high < max(initial_grid) + max_extensions:
        return [high + 1]
    if best == low and low > min(initial_grid) - max_extensions:
        return [low - 1]
    return []


def grid_scores(done: Mapping, settings: Mapping, method: str, batch_size: int) -> dict:
    """``k -> validation accuracy`` (``None`` if diverged) of the grid runs of one method and
    batch size in ``done``, for every ``k`` the grid could reach."""
    lo = min(settings["initial_grid"]) - settings["max_extensions"]
    hi = max(settings["initial_grid"]) + settings["max_extensions"]
    scores = {}
    for k in range(lo, hi + 1):
        key = cell_key(method, batch_size, grid_lr(settings, batch_size, k),
                       settings["sweep_seed"])
        if key in done:
            scores[k] = None if done[key]["diverged"] else done[key]["val_acc"]
    return scores


def _grid_finished(done, settings, method, batch_size):
    scores = grid_scores(done, settings, method, batch_size)
    todo = next_grid_points(scores, settings["initial_grid"], settings["max_extensions"])
    return scores, todo


def pending_cells(settings: Mapping, batch_size: int, stage: str, done: Mapping) -> list[tuple]:
    """The runs ``(method, batch size, lr, seed, k)`` that ``stage`` needs next at
    ``batch_size`` given the runs ``done``: the grid's next points of every method; for
    ``seeds``, the missing final seeds at the selected rate of each method whose grid is
    finished. Empty when the stage is complete."""
    cells = []
    for method in methods_at(settings, batch_size):
        scores, todo = _grid_finished(done, settings, method, batch_size)
        if stage == "grid":
            cells += [(method, batch_size, grid_lr(settings, batch_size, k),
                       settings["sweep_seed"], k) for k in todo]
        elif not todo:
            k = select_best(scores)
            lr = grid_lr(settings, batch_size, k)
            cells += [(method, batch_size, lr, s, k) for s in settings["final_seeds"]
                      if cell_key(method, batch_size, lr, s) not in done]
        else:
            raise ValueError(f"the seeds stage at m={batch_size} needs {method}'s grid "
                             f"finished first")
    return cells


def stage_cells(settings: Mapping, batch_size: int, stage: str, done: Mapping) -> dict:
    """The summary of a complete stage: per method, for ``grid`` the rates run (ascending),
    their ``k``, validation accuracies, ``best_lr`` and ``best_at_edge``; for ``seeds`` the
    rate, seeds, test, validation and training accuracies and the test mean and s.d."""
    summary = {}
    for method in methods_at(settings, batch_size):
        scores = grid_scores(done, settings, method, batch_size)
        ks = sorted(scores)
        best = select_best(scores)
        lr = grid_lr(settings, batch_size, best)
        if stage == "grid":
            summary[method] = dict(
                grid_k=ks, lrs=[grid_lr(settings, batch_size, k) for k in ks],
                val_acc=[scores[k] for k in ks], best_k=best, best_lr=lr,
                best_at_edge=best in (ks[0], ks[-1]))
            continue
        recs = [done[cell_key(method, batch_size, lr, s)] for s in settings["final_seeds"]]
        tests = [r["test_acc"] for r in recs]
        ok = [t for t in tests if t is not None]
        summary[method] = dict(
            lr=lr, seeds=list(settings["final_seeds"]), test_acc=tests,
            val_acc=[r["val_acc"] for r in recs], train_acc=[r["train_acc"] for r in recs],
            diverged=sum(r["diverged"] for r in recs),
            test_acc_mean=float(np.mean(ok)) if ok else None,
            test_acc_sd=float(np.std(ok, ddof=1)) if len(ok) > 1 else None)
    return summary


def planned_cells(settings: Mapping, done: Mapping) -> int:
    """How many runs the experiment needs as far as is known: the initial grids and final
    seeds of every method and batch size, plus the grid extensions run or due so far."""
    total = 0
    for m in settings["batch_sizes"]:
        for method in methods_at(settings, m):
            scores, todo = _grid_finished(done, settings, method, m)
            total += len(set(scores) | set(todo) | set(settings["initial_grid"]))
            total += len(settings["final_seeds"])
    return total


def estimate_seconds(settings: Mapping, seconds_per_run: Mapping[int, float],
                     extensions: int = 1) -> float:
    """The experiment's cost in seconds at one job, from the cost of one run at each batch
    size: the initial grid, ``extensions`` grid extensions and the final seeds of every
    method run at that batch size."""
    per_method = len(settings["initial_grid"]) + extensions + len(settings["final_seeds"])
    return sum(seconds_per_run[m] * per_method * len(methods_at(settings, m))
               for m in settings["batch_sizes"])

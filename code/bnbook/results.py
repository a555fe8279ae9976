"""The one result schema: write (validated, atomic), read, rerun, summarise and tabulate.

Every file under ``data/results/`` is a JSON object with a ``"provenance"`` mapping in the
layout of :mod:`bnbook.provenance` (data variant and checksum, device and CPU, torch version,
precision, git commit, command, started/finished, wall time) and the experiment's own payload
beside it. :func:`write_result` checks that schema and writes atomically; :func:`read_result`
is the one reader, and checks it again; a file under ``data/results/`` (one the book reads)
must not be a draft nor come from uncommitted code (:func:`bnbook.provenance.refuse_draft`).
``python -m bnbook.results rerun <file> [--dry-run]`` (``make results RESULT=<file>``) reruns
the command a result records; ``python -m bnbook.results migrate`` is the one migration of the
stored files into the current provenance (:mod:`bnbook.result_migration`).

Training results (the CIFAR-10 runs, written by :func:`bnbook.train.train`) add::

    {"run", "model", "config", "provenance": {..., "precision_requested", "cpu_native_bf16"},
     "history": [{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}, ...]}

Conventions: accuracies are fractions in ``[0, 1]`` (the chapter prints them in percent),
losses are mean cross-entropies in nats, ``seconds`` is the wall time of one epoch including
its validation pass, epochs are counted from 1. A run is *complete* when its ``finished``
time is set and its history holds ``config["epochs"]`` epochs; a file whose run is still
going (or was interrupted) is *partial*, and every summary here says how many epochs it holds.
``precision`` is the one the run used (``fp32``, ``bf16`` or ``fp16``); newer runs also record
``precision_requested`` and ``cpu_native_bf16`` (:func:`bnbook.train.resolve_precision`).
Chapter 7 uses these helpers on the runs of ``python -m bnbook.cifar`` (tables and headline
numbers: :mod:`bnbook.cifar_report`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bnbook.cli import refuse_unknown_result, report_errors
from bnbook.provenance import (REPO_ROOT, RESULTS_DIR, atomic_write_bytes, check_provenance,
                               is_book_result, refuse_draft)

__all__ = [
    "CIFAR10_RESULTS_DIR",
    "CIFAR10_SPEED_RESULT",
    "HISTORY_KEYS",
    "validate_result",
    "write_result",
    "read_result",
    "read_json",
    "resolve_result_path",
    "producing_command",
    "parse_recorded_command",
    "rerun_command",
    "load_run_if_present",
    "check_run",
    "seed_statistics",
    "run_status",
    "history_columns",
    "first_epoch_reaching",
    "summarize_run",
    "max_history_difference",
    "markdown_table",
    "layer_summary",
    "plot_training_curves",
    "plot_layer_stacks",
]

#: Where ``python -m bnbook.cifar`` writes its result files.
CIFAR10_RESULTS_DIR = RESULTS_DIR / "cifar10"
#: The speed benchmark's result (``benchmarks/bench_cifar_speed.py``).
CIFAR10_SPEED_RESULT = RESULTS_DIR / "benchmarks" / "cifar_speed_cpu.json"
#: The fields of one history entry.
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")

_TOP_KEYS = ("run", "model", "config", "provenance", "history")


def check_run(result: Mapping) -> Mapping:
    """Raise ``ValueError`` unless ``result`` has the layout of a training result file.

    Checks the top-level keys, that every history entry has :data:`HISTORY_KEYS`, that the
    epochs are ``1, 2, ..., n`` in order, and that accuracies lie in ``[0, 1]``. Returns
    ``result``."""
    missing = [k for k in _TOP_KEYS if k not in result]
    if missing:
        raise ValueError(f"not a training result: missing keys {missing}")
    history = result["history"]
    if not isinstance(history, Sequence):
        raise ValueError(f"{result['run']}: history must be a list, got {type(history).__name__}")
    if not isinstance(result["run"], str):
        raise ValueError(f"run must be a string, got {type(result['run']).__name__}")
    for i, entry in enumerate(history):
        if not isinstance(entry, Mapping):
            raise ValueError(f"{result['run']}: history entry {i} must be an object, got "
                             f"{type(entry).__name__}")
        absent = [k for k in HISTORY_KEYS if k not in entry]
        if absent:
            raise ValueError(f"{result['run']}: history entry {i} lacks {absent}")
        if entry["epoch"] != i + 1:
            raise ValueError(f"{result['run']}: history entry {i} is epoch {entry['epoch']}, "
                             f"expected {i + 1}")
        for key in ("train_loss", "val_loss", "seconds"):
            if not _is_number(entry[key]):
                raise ValueError(f"{result['run']}: epoch {i + 1} {key} = {entry[key]!r} is "
                                 f"not a number")
        for key in ("train_acc", "val_acc"):
            if not _is_number(entry[key]) or not 0.0 <= entry[key] <= 1.0:
                raise ValueError(f"{result['run']}: epoch {i + 1} {key} = {entry[key]} is not "
                                 f"a fraction in [0, 1]")
    return result


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)  # a JSON number, not a bool


def validate_result(result) -> dict:
    """Raise ``ValueError`` naming the missing or malformed field unless ``result`` follows
    the result schema; return it.

    The schema: a JSON object with a ``"provenance"`` mapping that passes
    :func:`bnbook.provenance.check_provenance`, and at least one payload key beside it; a
    training result (one with ``"history"``) must also pass :func:`check_run`.
    """
    if not isinstance(result, Mapping):
        raise ValueError(f"a result must be a JSON object, got {type(result).__name__}")
    if "provenance" not in result:
        raise ValueError("result lacks the field 'provenance'")
    check_provenance(result["provenance"])
    if len(result) < 2:
        raise ValueError("result has provenance but no payload")
    if "history" in result:
        check_run(result)
    return dict(result)


def write_result(path: os.PathLike | str, result: Mapping) -> Path:
    """Check ``result`` against the schema, then write it to ``path`` as indented JSON,
    atomically; return the path.

    ``result`` is ``{"provenance": bnbook.provenance.collect_provenance(...), **payload}``.
    A result that breaks the schema raises ``ValueError`` naming the field (and so does a
    value JSON cannot hold, such as NaN); either way nothing is written and an older file at
    ``path`` is left as it was. Readers never see a half-written file (the text goes to a
    temporary file beside ``path`` that is renamed into place). Missing folders are created.
    A result for ``data/results/`` (one the book reads) from a ``+dirty`` tree is refused
    unless its provenance marks it ``"draft": true`` (:func:`bnbook.provenance.refuse_draft`).
    """
    path = Path(path)
    try:
        validate_result(result)
        if is_book_result(path, RESULTS_DIR) and result["provenance"].get("draft") is not True:
            refuse_draft(result["provenance"], "the result")
        text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not writing {path}: {exc}") from exc
    return atomic_write_bytes(path, text.encode("utf-8"))


def resolve_result_path(path: os.PathLike | str) -> Path:
    """``path`` as given if it exists; otherwise, for a relative path, the same path under
    ``data/results/`` (``"practice/placement"`` and ``"practice/placement.json"`` both name
    ``data/results/practice/placement.json``). Returns the first candidate that exists, else
    the path as given (with ``.json`` added when it does not end in ``.json``; run names such
    as ``bn-lr0.001-e50-seed7-bf16`` contain dots)."""
    path = Path(path)
    with_suffix = path if path.suffix == ".json" else path.with_name(path.name + ".json")
    candidates = [path, with_suffix]
    if not path.is_absolute():
        candidates += [REPO_ROOT / with_suffix, RESULTS_DIR / with_suffix]
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return found
    if not path.is_absolute() and (RESULTS_DIR / with_suffix).parent.is_dir():
        return RESULTS_DIR / with_suffix
    return with_suffix


# Which folder of data/results/ each command writes, for a missing file without history.
_PRODUCERS = {"cifar10": "python -m bnbook.cifar --help",
              "practice": "python -m bnbook.experiments {stem}{quick}",
              "why": "python -m bnbook.experiments.why_{module}{quick}",
              "norms": "python -m bnbook.experiments.{norms}{quick}",
              "benchmarks": "python benchmarks/bench_*.py (see benchmarks/)"}


def producing_command(path: os.PathLike | str) -> str:
    """The command that makes the result file ``path``: the one its committed version
    records (``git show HEAD:<path>``) when there is one, else the producer of its folder."""
    path = Path(path).resolve()
    try:
        rel = path.relative_to(REPO_ROOT)
        text = subprocess.run(["git", "show", f"HEAD:{rel.as_posix()}"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout
        return rerun_command(json.loads(text)["provenance"]["command"])
    except (ValueError, OSError, KeyError, TypeError, subprocess.CalledProcessError):
        pass
    stem = path.stem.removesuffix("-quick")
    hint = _PRODUCERS.get(path.parent.name, "the script named in the chapter that reads it")
    return hint.format(stem=stem, module=stem.replace("-", "_"), quick=" --quick" * (
        stem != path.stem), norms={"sweep": "norm_sweep"}.get(stem, stem))


def read_result(path: os.PathLike | str) -> dict:
    """The one reader of result files: load ``path`` and check it against the schema.

    ``path`` is a file, or a path relative to ``data/results/`` with or without ``.json``
    (``read_result("practice/placement")``), see :func:`resolve_result_path`. Returns the
    result as a dict. A missing file raises ``FileNotFoundError`` that says which command
    produces it (:func:`producing_command`); a file that is not JSON or breaks the schema
    raises ``ValueError`` naming the file and the field.
    """
    resolved = resolve_result_path(path)
    if not resolved.is_file():
        raise FileNotFoundError(f"no result file {resolved}; produce it with "
                                f"`{producing_command(resolved)}` from the repository root")
    try:
        validated = validate_result(read_json(resolved))
        if is_book_result(resolved, RESULTS_DIR):
            refuse_draft(validated["provenance"], "the file")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{resolved}: {exc}") from exc
    refuse_unknown_result(resolved, validated)
    return validated


def read_json(path: os.PathLike | str):
    """The JSON value in ``path`` (UTF-8); anything else (other encodings, invalid bytes,
    numbers too long to convert, nesting too deep) raises ``ValueError`` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError too
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not valid JSON in UTF-8 ({why}); restore it with "
                         f"git checkout, or rerun the command that produced it") from None


def load_run_if_present(path: os.PathLike | str) -> dict | None:
    """The training result at ``path`` (:func:`read_result`, then :func:`check_run`);
    ``None`` if there is no such file (a run may not have started yet); a file that exists
    but is not a training result raises ``ValueError`` naming it."""
    if not Path(path).exists():
        return None
    try:
        return dict(check_run(read_result(path)))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# --- recorded commands ---------------------------------------------------------------------

def _module_parser(module: str):
    def build():
        return importlib.import_module(module).build_parser()
    return build


def _has_parser(module: str) -> bool:
    """Whether ``python -m module`` is one of the book's command lines (it has ``build_parser``)."""
    try:
        build = getattr(importlib.import_module(module), "build_parser", None)
    except ImportError:
        return False
    if not callable(build):
        return False
    try:  # a helper's build_parser(exp) is not a command line of its own
        return inspect.signature(build).bind() is not None
    except (TypeError, ValueError):
        return False


def _benchmark_parser(script: str):
    def build():
        file = REPO_ROOT / "benchmarks" / script
        spec = importlib.util.spec_from_file_location(f"_bench_{file.stem}", file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.build_parser()
    return build


# Older files name the script (``cifar.py ...``, ``experiments.py ...``, ``bench_x.py``); newer
# ones the command to type (``python -m bnbook.cifar ...``, ``python benchmarks/bench_x.py``).
_MODULES = {"bnbook.cifar": ("cifar.py",),
            "bnbook.experiments": ("experiments.py",)}


def parse_recorded_command(command: str) -> tuple[list[str], argparse.Namespace]:
    """Parse a command recorded in a result's provenance with today's parser of its program.

    Returns ``(program, args)``: ``program`` is how to start it from the repository root
    (``["python", "-m", "bnbook.cifar"]`` or ``["python", "benchmarks/bench_x.py"]``) and
    ``args`` the parsed ``argparse.Namespace``. Raises ``ValueError`` for an unknown program
    or arguments today's parser rejects.
    """
    words = shlex.split(command)
    if words and Path(words[0]).name.startswith("python"):
        words = words[1:]
    if words[:1] == ["-m"] and len(words) >= 2:
        module, rest = words[1], words[2:]
    elif words:
        name, rest = Path(words[0]).name, words[1:]
        module = next((m for m, scripts in _MODULES.items() if name in scripts), None)
        if module is None and name.startswith("bench_") and name.endswith(".py") \
                and (REPO_ROOT / "benchmarks" / name).is_file():
            module = f"benchmarks/{name}"
    else:
        module = None
    if module in _MODULES:
        program, build = ["python", "-m", module], _module_parser(
            "bnbook.experiments.practice_cli" if module == "bnbook.experiments" else module)
    elif module is not None and module.startswith("bnbook.") and _has_parser(module):
        program, build = ["python", "-m", module], _module_parser(module)
    elif module is not None and module.startswith("benchmarks/"):
        program, build = ["python", module], _benchmark_parser(Path(module).name)
    else:
        raise ValueError(f"not a command of the book's programs: {command!r}")
    parser = build()
    parser.exit_on_error = False
    try:
        args = parser.parse_args(rest)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ValueError(f"today's parser of {' '.join(program)} rejects {command!r}: "
                         f"{exc}") from None
    return program, args


def rerun_command(command: str) -> str:
    """The recorded ``command`` as one types it today, from the repository root
    (``cifar.py --model bn`` -> ``python -m bnbook.cifar --model bn``)."""
    program, _ = parse_recorded_command(command)
    rest = shlex.split(command)
    if rest and Path(rest[0]).name.startswith("python"):
        rest = rest[1:]
    rest = rest[2:] if rest[:1] == ["-m"] else rest[1:]
    return shlex.join(program + rest)


def run_status(result: Mapping) -> dict:
    """``{"epochs_done", "epochs_planned", "complete", "label"}`` for a result.

    ``label`` is ``"complete"`` or ``"partial: k of n epochs"``."""
    done = len(result["history"])
    planned = int(result["config"]["epochs"])
    complete = done == planned and result["provenance"].get("finished") is not None
    label = "complete" if complete else f"partial: {done} of {planned} epochs"
    return {"epochs_done": done, "epochs_planned": planned, "complete": complete, "label": label}


def history_columns(history: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """The history as one float64 array per key of :data:`HISTORY_KEYS` (``epoch`` as int)."""
    cols = {k: np.array([h[k] for h in history], dtype=np.float64) for k in HISTORY_KEYS}
    cols["epoch"] = cols["epoch"].astype(np.int64)
    return cols


def first_epoch_reaching(history: Sequence[Mapping], threshold: float,
                         key: str = "val_acc") -> int | None:
    """The first epoch whose ``key`` is at least ``threshold``; ``None`` if none is.
    ``threshold`` is a fraction in ``[0, 1]`` for accuracies (0.7 means 70 %)."""
    if key not in HISTORY_KEYS or key == "epoch":
        raise ValueError(f"key must be one of {HISTORY_KEYS[1:]}, got {key!r}")
    if key.endswith("_acc") and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"an accuracy threshold is a fraction in [0, 1], got {threshold}")
    return next((int(h["epoch"]) for h in history if h[key] >= threshold), None)


def summarize_run(result: Mapping, thresholds: Sequence[float] = (0.7,)) -> dict:
    """Headline numbers of one run (accuracies as fractions, losses in nats, seconds).

    Returns ``final_epoch``, ``final_val_acc``, ``final_train_acc``, ``final_val_loss``,
    ``final_train_loss``, ``best_val_acc``, ``best_epoch`` (first epoch with the best
    ``val_acc``), ``min_val_loss``, ``median_seconds`` (median wall time of one epoch),
    ``first_epoch_at`` (``{threshold: epoch or None}``) and the fields of :func:`run_status`.
    Raises ``ValueError`` for a run without any finished epoch.
    """
    history = result["history"]
    if not history:
        raise ValueError(f"{result['run']}: no finished epoch yet")
    cols = history_columns(history)
    best = int(np.argmax(cols["val_acc"]))
    last = history[-1]
    return {
        **run_status(result),
        "final_epoch": int(last["epoch"]),
        "final_val_acc": float(last["val_acc"]),
        "final_train_acc": float(last["train_acc"]),
        "final_val_loss": float(last["val_loss"]),
        "final_train_loss": float(last["train_loss"]),
        "best_val_acc": float(cols["val_acc"][best]),
        "best_epoch": int(cols["epoch"][best]),
        "min_val_loss": float(cols["val_loss"].min()),
        "median_seconds": float(statistics.median(cols["seconds"])),
        "first_epoch_at": {float(t): first_epoch_reaching(history, t) for t in thresholds},
    }


def seed_statistics(runs: Sequence[Mapping]) -> dict:
    """Mean and sample standard deviation over seeds of a network's final and best validation
    accuracy, in percent. ``runs`` are complete results of one setting that differ only in the
    seed. Returns ``n``, ``final_mean``, ``final_sd``, ``best_mean``, ``best_sd``, ``final_min``,
    ``final_max``. Raises ``ValueError`` for fewer than two runs or an unfinished run.
    """
    if len(runs) < 2:
        raise ValueError(f"a spread needs at least two seeds, got {len(runs)}")
    unfinished = [r["run"] for r in runs if not run_status(r)["complete"]]
    if unfinished:
        raise ValueError(f"runs not complete: {', '.join(unfinished)}")
    final = [100.0 * float(r["history"][-1]["val_acc"]) for r in runs]
    best = [100.0 * max(float(h["val_acc"]) for h in r["history"]) for r in runs]
    return {"n": len(runs), "final_mean": statistics.mean(final),
            "final_sd": statistics.stdev(final), "best_mean": statistics.mean(best),
            "best_sd": statistics.stdev(best), "final_min": min(final), "final_max": max(final)}


def max_history_difference(a: Sequence[Mapping], b: Sequence[Mapping],
                           key: str = "val_acc") -> tuple[int, float]:
    """``(epochs compared, max |a[key] - b[key]|)`` over the epochs both histories hold."""
    n = min(len(a), len(b))
    if n == 0:
        raise ValueError("no common epoch to compare")
    return n, float(max(abs(a[i][key] - b[i][key]) for i in range(n)))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """A Markdown (GFM/MyST) pipe table; ``align`` is one letter per column, ``l`` or ``r``.

    Cells are converted with ``str``; ``|`` inside a cell is escaped."""
    if align is None:
        align = "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one 'l' or 'r' per column ({len(header)}), got {align!r}")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells, the header {len(header)}")

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def layer_summary(model, input_shape: Sequence[int] = (1, 3, 32, 32)) -> list[dict]:
    """One row per leaf module of ``model``, in forward order, as Keras' ``summary()`` lists.

    Each row: ``module`` (the module itself), ``name`` (its class), ``detail`` (its
    ``extra_repr``), ``output_shape`` (per example, channels first), ``params`` (trainable
    parameters) and ``buffers`` (elements of running statistics). The model is run once on
    zeros of ``input_shape`` in eval mode (its mode is restored; its state is not changed).
    """
    import torch

    rows: list[dict] = []

    def hook(module, inputs, output):
        rows.append({
            "module": module,
            "name": type(module).__name__,
            "detail": module.extra_repr(),
            "output_shape": tuple(output.shape[1:]),
            "params": sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad),
            "buffers": sum(b.numel() for n, b in module.named_buffers(recurse=False)
                           if n != "num_batches_tracked"),
        })

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows


def plot_training_curves(runs: Mapping[str, Mapping], axes=None, colours=None):
    """The 2x2 learning curves of several runs: validation/training accuracy (top) and
    validation/training loss (bottom) against the epoch.

    ``runs`` maps a legend label to a result dict. ``axes``: a 2x2 array of ``Axes`` (new
    figure if ``None``). Accuracies are drawn in percent, losses in nats. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(2, 2, figsize=(8.0, 5.6), sharex=True)
    else:
        fig = axes[0][0].figure
    panels = [(0, 0, "val_acc", "validation accuracy (%)"),
              (0, 1, "train_acc", "training accuracy (%)"),
              (1, 0, "val_loss", "validation loss (nats)"),
              (1, 1, "train_loss", "training loss (nats)")]
    for k, (label, result) in enumerate(runs.items()):
        cols = history_columns(result["history"])
        colour = (colours or {}).get(label, f"C{k}")
        for r, c, key, _ in panels:
            scale = 100.0 if key.endswith("_acc") else 1.0
            axes[r][c].plot(cols["epoch"], scale * cols[key], "-", color=colour, lw=1.4,
                            marker="." if len(cols["epoch"]) < 15 else None, label=label)
    for r, c, _, ylabel in panels:
        ax = axes[r][c]
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if r == 1:
            ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=8, loc="lower right")
    return fig


_KIND_COLOURS = {"Conv2d": "#9ecae1", "BatchNorm2d": "#fdae6b", "BatchNorm1d": "#fdae6b",
                 "ReLU": "#d9d9d9", "MaxPool2d": "#a1d99b", "Dropout": "#fcbba1",
                 "Linear": "#bcbddc", "FlattenNHWC": "#f0f0f0"}


def plot_layer_stacks(ax, stacks: Mapping[str, Sequence[Mapping]]) -> None:
    """Draw models as columns of boxes, input at the top, one box per row of
    :func:`layer_summary`, coloured by layer kind and labelled with the output shape.

    ``stacks`` maps a column title to a layer summary; the boxes a model lacks show where
    the networks differ."""
    from matplotlib.patches import FancyBboxPatch

    depth = max(len(rows) for rows in stacks.values())
    width, gap = 1.0, 0.35
    for j, (title, rows) in enumerate(stacks.items()):
        x0 = j * (width + gap)
        ax.text(x0 + width / 2, 0.6, title, ha="center", va="bottom", fontsize=9,
                fontweight="bold")
        for i, row in enumerate(rows):
            y = -i
            ax.add_patch(FancyBboxPatch(
                (x0, y - 0.42), width, 0.84, boxstyle="round,pad=0.0,rounding_size=0.08",
                facecolor=_KIND_COLOURS.get(row["name"], "white"), edgecolor="0.4", lw=0.6))
            shape = "x".join(str(s) for s in row["output_shape"])
            ax.text(x0 + 0.04, y, row["name"].replace("NHWC", ""), ha="left", va="center",
                    fontsize=7)
            ax.text(x0 + width - 0.04, y, shape, ha="right", va="center", fontsize=7,
                    family="monospace")
    ax.set_xlim(-0.05, len(stacks) * (width + gap) - gap + 0.05)
    ax.set_ylim(-depth + 0.4, 1.1)
    ax.axis("off")


# --- python -m bnbook.results ---------------------------------------------------------------

def main(argv=None) -> int:
    """``rerun <result.json> [--dry-run]``: print (and unless ``--dry-run`` run) the command a
    result records; ``migrate [paths]``: :mod:`bnbook.result_migration`."""
    parser = argparse.ArgumentParser(prog="python -m bnbook.results",
                                     description="Rerun or migrate stored results.")
    sub = parser.add_subparsers(dest="action", required=True)
    rerun = sub.add_parser("rerun", help="print and rerun the command of a result file")
    rerun.add_argument("path", help="a result file, e.g. data/results/practice/dropout.json")
    rerun.add_argument("--dry-run", action="store_true", help="print the command only")
    migrate = sub.add_parser("migrate", help="rewrite stored results into today's provenance")
    migrate.add_argument("paths", nargs="*", help="files or folders (default: data/results/)")
    args = parser.parse_args(argv)
    if args.action == "migrate":
        from bnbook.result_migration import migrate_main
        return report_errors(lambda a: migrate_main(a.paths), args)
    return report_errors(_rerun, args)


def _rerun(args) -> int:
    result = read_result(args.path)
    command = rerun_command(result["provenance"]["command"])
    print(command, flush=True)
    if args.dry_run:
        return 0
    words = shlex.split(command)
    words[0] = sys.executable  # "python" as the environment that runs this
    return subprocess.run(words, cwd=REPO_ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())

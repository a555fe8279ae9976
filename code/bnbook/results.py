"""Reading, summarising, tabulating and plotting the CIFAR-10 experiment's result files.

The files are the JSON that :func:`bnbook.train.train` rewrites after every epoch::

    {"run", "model", "config", "provenance": {"dataset", "dataset_sha256", "device", "torch",
     "precision", "git_commit", "command", "started", "finished", "wall_seconds"},
     "history": [{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}, ...]}

Conventions: accuracies are fractions in ``[0, 1]`` (the chapter prints them in percent),
losses are mean cross-entropies in nats, ``seconds`` is the wall time of one epoch including
its validation pass, epochs are counted from 1. A run is *complete* when its ``finished``
time is set and its history holds ``config["epochs"]`` epochs; a file whose run is still
going (or was interrupted) is *partial*, and every summary here says how many epochs it holds.
``precision`` is the one the run used (``fp32``, ``bf16`` or ``fp16``); runs written since
``--precision auto`` existed also record ``precision_requested`` and ``cpu_native_bf16``
(:func:`bnbook.train.resolve_precision`); older files lack them.

The chapter ``chapters/07_cifar10.ipynb`` uses these helpers; the runs themselves come from
``python -m bnbook.cifar`` (:mod:`bnbook.cifar`); the chapter's tables and headline numbers are
assembled from them in :mod:`bnbook.cifar_report`.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bnbook.provenance import RESULTS_DIR

__all__ = [
    "CIFAR10_RESULTS_DIR",
    "CIFAR10_SPEED_RESULT",
    "HISTORY_KEYS",
    "load_run_if_present",
    "check_run",
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
    ``result``.
    """
    missing = [k for k in _TOP_KEYS if k not in result]
    if missing:
        raise ValueError(f"not a training result: missing keys {missing}")
    history = result["history"]
    if not isinstance(history, Sequence):
        raise ValueError(f"{result['run']}: history must be a list, got {type(history).__name__}")
    for i, entry in enumerate(history):
        absent = [k for k in HISTORY_KEYS if k not in entry]
        if absent:
            raise ValueError(f"{result['run']}: history entry {i} lacks {absent}")
        if entry["epoch"] != i + 1:
            raise ValueError(f"{result['run']}: history entry {i} is epoch {entry['epoch']}, "
                             f"expected {i + 1}")
        for key in ("train_acc", "val_acc"):
            if not 0.0 <= entry[key] <= 1.0:
                raise ValueError(f"{result['run']}: epoch {i + 1} {key} = {entry[key]} is not "
                                 f"a fraction in [0, 1]")
    return result


def load_run_if_present(path: os.PathLike | str) -> dict | None:
    """The result file at ``path``, checked with :func:`check_run`; ``None`` if there is none.

    A missing file is not an error (a run may not have started yet); a file that exists but
    is not a training result raises ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.exists():
        return None
    with open(path) as f:
        try:
            result = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return dict(check_run(result))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def run_status(result: Mapping) -> dict:
    """``{"epochs_done", "epochs_planned", "complete", "label"}`` for a result.

    ``label`` is ``"complete"`` or ``"partial: k of n epochs"``.
    """
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

    ``threshold`` is a fraction in ``[0, 1]`` for accuracies (0.7 means 70 %).
    """
    if key not in HISTORY_KEYS or key == "epoch":
        raise ValueError(f"key must be one of {HISTORY_KEYS[1:]}, got {key!r}")
    if key.endswith("_acc") and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"an accuracy threshold is a fraction in [0, 1], got {threshold}")
    for h in history:
        if h[key] >= threshold:
            return int(h["epoch"])
    return None


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


def max_history_difference(a: Sequence[Mapping], b: Sequence[Mapping],
                           key: str = "val_acc") -> tuple[int, float]:
    """``(epochs compared, max |a[key] - b[key]|)`` over the epochs both histories hold."""
    n = min(len(a), len(b))
    if n == 0:
        raise ValueError("no common epoch to compare")
    diff = max(abs(a[i][key] - b[i][key]) for i in range(n))
    return n, float(diff)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """A Markdown (GFM/MyST) pipe table; ``align`` is one letter per column, ``l`` or ``r``.

    Cells are converted with ``str``; ``|`` inside a cell is escaped.
    """
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
    ``extra_repr``), ``output_shape``
    (per example, channels first, without the batch dimension), ``params`` (trainable
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

    ``stacks`` maps a column title to a layer summary. Layers that a model lacks are left
    out, so BN boxes and dropout boxes show where the two networks differ.
    """
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

"""What a CIFAR-10 run leaves on disk - its checkpoint and its result file - and how it resumes.

A checkpoint holds the model, optimizer, learning-rate scheduler and gradient-scaler states,
the step and epoch counters, the history so far, the full settings, the dataset's checksums
and the provenance of the first session - tensors and plain values only, read back with
``torch.load(weights_only=True)`` (:func:`load_checkpoint`). :func:`restore_checkpoint`
refuses one written under different trajectory settings
(:data:`bnbook.cifar_config.TRAJECTORY_FIELDS`), data or process counts, or with more epochs
done than asked for; problems are :class:`CheckpointError` (a ``ValueError``).
The result file is JSON ``{"run", "model", "config", "provenance", "history"}``
(:func:`load_result`, :func:`load_history`), rewritten atomically after every epoch.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bnbook.cifar_config import TRAJECTORY_FIELDS
from bnbook.provenance import atomic_write_bytes, command_line, git_commit, now_iso

__all__ = ["RunState", "CheckpointError", "new_run_state", "save_checkpoint", "load_checkpoint",
           "restore_checkpoint",
           "write_result_file", "load_result", "load_history", "command_line"]


@dataclass
class RunState:
    """What carries over from epoch to epoch and across a resume.

    ``step`` counts updates (the schedule's ``t``), ``epoch`` completed epochs;
    ``wall_before`` is the wall time of earlier sessions; ``started``, ``git_commit``,
    ``command`` and ``precision_record`` describe the first session, ``resumes`` the others.
    """

    history: list = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    wall_before: float = 0.0
    started: str = ""
    git_commit: str | None = None
    command: str = ""
    precision_record: dict = field(default_factory=dict)
    resumes: list = field(default_factory=list)


def new_run_state(command: str | None, precision_record: dict) -> RunState:
    """The state of a run that starts now."""
    return RunState(started=now_iso(), git_commit=git_commit(), command=command or command_line(),
                    precision_record=precision_record)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated, not a plain-data checkpoint,
    or written by a different run (settings, data, process count, epochs)."""


#: What a checkpoint holds besides the state dicts; all plain types or tensors, so that
#: ``torch.load(weights_only=True)`` reads it and nothing in it can run code.
CHECKPOINT_FORMAT = 2


def save_checkpoint(path: Path, parts: dict, config: dict, world_size: int, state: RunState,
                    wall: float, dataset: dict | None = None) -> None:
    """Write, atomically, everything :func:`restore_checkpoint` needs.

    ``parts``: ``{"model", "optimizer", "scheduler", "scaler"}`` (objects with ``state_dict``).
    ``config``: the full settings (``dataclasses.asdict(TrainConfig)``); ``dataset``: what the
    run trains on (``{"variant", "sha256", "data_sha256"}``), checked on resume. Only tensors
    and plain Python values are stored: no random-number-generator states (everything random
    in an epoch is a function of the seed and the epoch, see :mod:`bnbook.cifar_augment`), so
    :func:`load_checkpoint` can read it with ``weights_only=True``.
    """
    payload = {name: part.state_dict() for name, part in parts.items()}
    payload.update({
        "format": CHECKPOINT_FORMAT, "step": state.step, "epoch": state.epoch,
        "history": state.history, "config": dict(config), "dataset": dict(dataset or {}),
        "world_size": world_size, "wall_seconds": wall, "threads": torch.get_num_threads(),
        "started": state.started, "git_commit": state.git_commit, "command": state.command,
        "precision_record": state.precision_record, "resumes": state.resumes})
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: os.PathLike | str) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain values only.

    A file that is missing, truncated, not a checkpoint, or that asks the unpickler for
    anything else (a crafted file that would run code, or a checkpoint from before bnbook
    stored only plain values) raises :class:`CheckpointError` naming the file; nothing in
    it is executed.
    """
    path = Path(path)
    hint = ("start the run over with --restart (it deletes the checkpoint), or point "
            "--checkpoint elsewhere")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain values (a crafted "
            f"file, or one written before checkpoints stored only those); refusing to "
            f"unpickle it: {hint}. ({str(err).splitlines()[0][:200]})") from None
    except (EOFError, OSError, RuntimeError, ValueError, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a "
                              f"checkpoint: {type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''}); "
                              f"{hint}") from None
    required = ("config", "epoch", "step", "history", "model")
    missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a bnbook CIFAR checkpoint (it lacks "
                              f"{missing}); {hint}")
    return ckpt


def _check_state(path: Path, ckpt: dict, steps_per_epoch: int | None) -> None:
    """Refuse a checkpoint whose counters, history, provenance or weights are not what
    :func:`save_checkpoint` writes (a crafted or damaged file), naming the field."""
    def bad(field, why):
        raise CheckpointError(f"checkpoint {path}: {field} {why}; start the run over with "
                              f"--restart, or point --checkpoint elsewhere")

    for field in ("epoch", "step"):
        v = ckpt[field]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            bad(field, f"must be a non-negative integer, got {str(v)[:40]!r}")
    if steps_per_epoch is not None and ckpt["step"] != ckpt["epoch"] * steps_per_epoch:
        bad("step", f"= {str(ckpt['step'])[:40]} does not match {ckpt['epoch']} epoch(s) of "
                    f"{steps_per_epoch} steps")
    history = ckpt["history"]
    if (not isinstance(history, list) or len(history) != ckpt["epoch"]
            or any(not isinstance(e, dict) or e.get("epoch") != i + 1
                   for i, e in enumerate(history))):
        bad("history", f"must list epochs 1..{ckpt['epoch']}")
    wall = ckpt.get("wall_seconds", 0.0)
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not 0 <= wall < 1e9:
        bad("wall_seconds", f"must be a non-negative number, got {str(wall)[:40]!r}")
    for field in ("started", "command"):
        if not isinstance(ckpt.get(field, ""), str):
            bad(field, "must be a string")
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        bad("config/model", "must be mappings")
    for name, t in ckpt["model"].items():
        if not isinstance(t, torch.Tensor):
            bad(f"model[{name!r}]", "is not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad(f"model[{name!r}]", "holds NaN or infinite weights")


def _load_parts(path: Path, ckpt: dict, parts: dict) -> None:
    for name in ("model", "optimizer", "scheduler", "scaler"):
        if name in ckpt:
            try:
                parts[name].load_state_dict(ckpt[name])
            except (RuntimeError, KeyError, TypeError, ValueError, AttributeError,
                    IndexError) as err:
                first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                raise CheckpointError(f"checkpoint {path}: its {name} state does not fit this "
                                      f"run ({type(err).__name__}: {first}); start over with "
                                      f"--restart, or point --checkpoint elsewhere") from None


def _check_threads(path: Path, ckpt: dict) -> None:
    """Results depend on the thread count (reductions split differently): a resume must use
    the count the checkpoint was trained with (checkpoints from before it was stored pass)."""
    saved = ckpt.get("threads")
    if saved is not None and saved != torch.get_num_threads():
        raise CheckpointError(f"--resume: checkpoint {path} was trained with {saved} "
                              f"thread(s), now {torch.get_num_threads()}: pass --threads "
                              f"{saved} (results depend on the thread count)")


def _check_settings(saved: dict, config, precision_record: dict) -> None:
    mismatched = {k: (saved.get(k), getattr(config, k)) for k in TRAJECTORY_FIELDS
                  if saved.get(k) != getattr(config, k)}
    if mismatched:
        hint = ""
        if "precision" in mismatched and precision_record["precision_requested"] == "auto":
            hint = (f"; precision 'auto' resolves to {config.precision!r} here "
                    f"(cpu_native_bf16={precision_record['cpu_native_bf16']}): pass precision "
                    f"{saved.get('precision')!r} explicitly to continue the run")
        raise CheckpointError(f"--resume: the checkpoint was trained with different settings "
                              f"(saved, now): {mismatched}{hint}")


def _check_dataset(path: Path, saved: dict, dataset: dict | None) -> None:
    """Refuse to continue on other data than the checkpoint was trained on."""
    if not saved or not dataset:
        return  # checkpoints from before the dataset was stored; callers without a record
    differ = {k: (saved[k], dataset[k]) for k in saved.keys() & dataset.keys()
              if saved[k] != dataset[k]}
    if differ:
        raise CheckpointError(f"--resume: checkpoint {path} was trained on other data "
                              f"(saved, now): {differ}; resume on the same dataset, or "
                              f"start over with --restart")


def restore_checkpoint(path: Path | None, config, world_size: int, parts: dict,
                       precision_record: dict, command: str | None,
                       dataset: dict | None = None,
                       steps_per_epoch: int | None = None) -> RunState:
    """Load ``path`` into ``parts`` (as in :func:`save_checkpoint`).

    Refuses (:class:`CheckpointError`) a checkpoint whose trajectory settings, data
    (``dataset``, compared key by key with the stored record) or process count differ from
    ``config``, ``dataset`` and ``world_size``, and one that has done more epochs than
    ``config.epochs`` (a larger ``epochs`` extends the run). A checkpoint from before the
    scheduler was saved resumes with the schedule set to its ``step``. Also refused: counters,
    history or weights that are not what :func:`save_checkpoint` writes (``step`` must be
    ``epoch * steps_per_epoch`` when that is given), tensors that do not fit ``parts``, and
    another thread count than the checkpoint's (:func:`_check_threads`). Returns the run's
    state, this session appended to ``resumes``.
    """
    if path is None or not Path(path).exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    path = Path(path)
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    if not isinstance(saved, dict) or not isinstance(ckpt.get("dataset") or {}, dict):
        raise CheckpointError(f"checkpoint {path}: config and dataset must be mappings; start "
                              f"the run over with --restart, or point --checkpoint elsewhere")
    _check_settings(saved, config, precision_record)
    _check_threads(path, ckpt)
    _check_dataset(path, ckpt.get("dataset"), dataset)
    if ckpt.get("world_size", 1) != world_size:
        raise CheckpointError(f"--resume: checkpoint written with {ckpt.get('world_size')} "
                              f"processes, now {world_size}")
    _check_state(path, ckpt, steps_per_epoch)  # after the settings: they fix the step count
    if ckpt["epoch"] > config.epochs:
        raise CheckpointError(f"--resume: checkpoint {path} has already done {ckpt['epoch']} "
                              f"epochs, more than --epochs {config.epochs}; pass --epochs "
                              f"{ckpt['epoch']} or more (a larger value extends the run)")
    _load_parts(path, ckpt, parts)
    if "scheduler" not in ckpt:  # older checkpoints: set the rate of update number `step`
        parts["scheduler"].last_epoch = ckpt["step"] - 1
        with warnings.catch_warnings():  # "step() before optimizer.step()": intended here
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            parts["scheduler"].step()
    # checkpoints from before "auto" existed: the precision was given explicitly
    first_record = ckpt.get("precision_record", {
        "precision_requested": saved.get("precision"), "cpu_native_bf16": None})
    resumes = ckpt.get("resumes", []) + [{"at_epoch": ckpt["epoch"], "git_commit": git_commit(),
                                          "command": command or command_line(),
                                          "started": now_iso(), **precision_record}]
    return RunState(history=ckpt["history"], step=ckpt["step"], epoch=ckpt["epoch"],
                    wall_before=ckpt["wall_seconds"], started=ckpt["started"],
                    git_commit=ckpt["git_commit"], command=ckpt["command"],
                    precision_record=first_record, resumes=resumes)


def write_result_file(path: Path, result: dict) -> None:
    """Write ``result`` atomically with the one validated writer,
    :func:`bnbook.results.write_result`."""
    from bnbook.results import write_result

    write_result(path, result)


def load_result(path: os.PathLike | str) -> dict:
    """Read a run's result JSON (``{"run", "model", "config", "provenance", "history"}``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result file {path}; `python -m bnbook.cifar --help` "
                                f"shows how to produce one")
    with open(path) as f:
        return json.load(f)


def load_history(path: os.PathLike | str) -> list[dict]:
    """The per-epoch history of a result file: a list of ``{"epoch", "train_loss",
    "train_acc", "val_loss", "val_acc", "seconds"}`` dicts, epoch 1 first."""
    return load_result(path)["history"]

"""What a CIFAR-10 run leaves on disk - its checkpoint and its result file - and how it resumes.

A checkpoint holds the model, optimizer, learning-rate scheduler and gradient-scaler states,
the step and epoch counters, the history so far, the full settings, the dataset's checksums
and the provenance of the first session - tensors and plain values only, read back with
``torch.load(weights_only=True)`` (:func:`load_checkpoint`). :func:`restore_checkpoint`
refuses one written under different trajectory settings
(:data:`bnbook.experiments.cifar.config.TRAJECTORY_FIELDS`), data or process counts, or with more epochs
done than asked for; problems are :class:`CheckpointError` (a ``ValueError``).
The result file is JSON ``{"run", "model", "config", "provenance", "history"}``
(:func:`load_result`, :func:`load_history`), rewritten atomically after every epoch.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bnbook.experiments.cifar.config import TRAJECTORY_FIELDS
from bnbook.provenance import atomic_write_bytes, command_line, git_commit, now_iso

__all__ = ["RunState", "CheckpointError", "new_run_state", "save_checkpoint", "load_checkpoint",
           "restore_checkpoint",
           "write_result_file", "load_result", "load_history", "command_line"]


@dataclass
class RunState:
    """What carries over from epoch to epoch and across a resume.

    ``step`` counts updates (the schedule's ``t``), ``epoch`` completed epochs;
    ``wall_before`` is the wall time of earlier sessions; ``started``, ``git_commit``,
    ``command`` and ``resolved_precision`` describe the first session, ``resumes`` the others.
    """

    history: list = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    wall_before: float = 0.0
    started: str = ""
    git_commit: str | None = None
    command: str = ""
    resolved_precision: dict = field(default_factory=dict)
    resumes: list = field(default_factory=list)


def new_run_state(command: str | None, resolved_precision: dict) -> RunState:
    """The state of a run that starts now."""
    return RunState(started=now_iso(), git_commit=git_commit(), command=command or command_line(),
                    resolved_precision=resolved_precision)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated, not a plain-data checkpoint,
    or written by a different run (settings, data, process count, epochs)."""


#: The layout :func:`save_checkpoint` writes and :func:`load_checkpoint` accepts (no other).
CHECKPOINT_FORMAT = 2
#: What a checkpoint holds besides the state dicts; all plain types or tensors, so that
#: ``torch.load(weights_only=True)`` reads it and nothing in it can run code.
CHECKPOINT_FIELDS = ("model", "optimizer", "scheduler", "scaler", "format", "step", "epoch",
                     "history", "config", "dataset", "world_size", "wall_seconds", "threads",
                     "started", "git_commit", "command", "precision_record", "resumes")


def save_checkpoint(path: Path, checkpointed: dict, config: dict, world_size: int,
                    state: RunState, wall: float, dataset: dict | None = None) -> None:
    """Write, atomically, everything :func:`restore_checkpoint` needs.

    ``checkpointed``: the objects a checkpoint saves and restores, ``{"model", "optimizer",
    "scheduler", "scaler"}`` (each with ``state_dict``).
    ``config``: the full settings (``dataclasses.asdict(TrainConfig)``); ``dataset``: what the
    run trains on (``{"variant", "sha256", "data_sha256"}``), checked on resume. Only tensors
    and plain Python values are stored: no random-number-generator states (everything random
    in an epoch is a function of the seed and the epoch, see :mod:`bnbook.experiments.cifar.augment`), so
    :func:`load_checkpoint` can read it with ``weights_only=True``.
    """
    payload = {name: obj.state_dict() for name, obj in checkpointed.items()}
    payload.update({
        "format": CHECKPOINT_FORMAT, "step": state.step, "epoch": state.epoch,
        "history": state.history, "config": dict(config), "dataset": dict(dataset or {}),
        "world_size": world_size, "wall_seconds": wall, "threads": torch.get_num_threads(),
        "started": state.started, "git_commit": state.git_commit, "command": state.command,
        "precision_record": state.resolved_precision, "resumes": state.resumes})
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
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a bnbook CIFAR checkpoint; {hint}")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {ckpt.get('format')!r}, this "
                              f"bnbook reads format {CHECKPOINT_FORMAT} only; {hint}")
    missing = [k for k in CHECKPOINT_FIELDS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a complete format-{CHECKPOINT_FORMAT} "
                              f"checkpoint (it lacks {missing}); {hint}")
    return ckpt


def _check_state(path: Path, ckpt: dict, steps_per_epoch: int | None) -> None:
    """Refuse a checkpoint whose counters, history, provenance or weights are not what
    :func:`save_checkpoint` writes (a crafted or damaged file), naming the field."""
    def bad(field, why):
        _bad_field(path, field, why)

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
    wall = ckpt["wall_seconds"]
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not 0 <= wall < 1e9:
        bad("wall_seconds", f"must be a non-negative number, got {str(wall)[:40]!r}")
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        bad("config/model", "must be mappings")
    for name, t in ckpt["model"].items():
        if not isinstance(t, torch.Tensor):
            bad(f"model[{name!r}]", "is not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad(f"model[{name!r}]", "holds NaN or infinite weights")
        if name.endswith("running_var") and bool((t < 0).any()):
            bad(f"model[{name!r}]", "holds a negative variance")
    if not _all_finite(ckpt["optimizer"]):
        bad("optimizer", "holds NaN or infinite values")


def _bad_field(path: Path, field: str, why: str):
    raise CheckpointError(f"checkpoint {path}: {field} {why}; start the run over with "
                          f"--restart, or point --checkpoint elsewhere")


def _check_plain_fields(path: Path, ckpt: dict) -> None:
    """Refuse plain fields (the ones a resumed run copies into its result and its next
    checkpoint, and the process and thread counts) that are not what
    :func:`save_checkpoint` writes, naming the field."""
    def bad(field, why):
        _bad_field(path, field, why)

    for name in ("started", "command"):
        if not isinstance(ckpt[name], str):
            bad(name, "must be a string")
    if not isinstance(ckpt["git_commit"], (str, type(None))):
        bad("git_commit", "must be a string")
    resumes = ckpt["resumes"]
    if not isinstance(resumes, list) or not all(isinstance(r, dict) for r in resumes):
        bad("resumes", "must be a list of mappings")
    if not isinstance(ckpt["precision_record"], dict):
        bad("precision_record", "must be a mapping")
    for name in ("world_size", "threads"):
        v = ckpt[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            bad(name, f"must be a positive integer, got {str(v)[:40]!r}")


def _all_finite(value) -> bool:
    """Whether every floating-point tensor in ``value`` (nested dicts and lists) is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def _load_state_dicts(path: Path, ckpt: dict, checkpointed: dict) -> None:
    for name in ("model", "optimizer", "scheduler", "scaler"):
        try:
            checkpointed[name].load_state_dict(ckpt[name])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError,
                IndexError) as err:
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise CheckpointError(f"checkpoint {path}: its {name} state does not fit this "
                                  f"run ({type(err).__name__}: {first}); start over with "
                                  f"--restart, or point --checkpoint elsewhere") from None


def _check_threads(path: Path, ckpt: dict) -> None:
    """Results depend on the thread count (reductions split differently): a resume must use
    the count the checkpoint was trained with."""
    saved = ckpt["threads"]
    if saved != torch.get_num_threads():
        raise CheckpointError(f"--resume: checkpoint {path} was trained with {saved} "
                              f"thread(s), now {torch.get_num_threads()}: pass --threads "
                              f"{saved} (results depend on the thread count)")


def _check_settings(saved: dict, config, resolved_precision: dict) -> None:
    mismatched = {k: (saved.get(k), getattr(config, k)) for k in TRAJECTORY_FIELDS
                  if saved.get(k) != getattr(config, k)}
    if mismatched:
        hint = ""
        if "precision" in mismatched and resolved_precision["precision_requested"] == "auto":
            hint = (f"; precision 'auto' resolves to {config.precision!r} here "
                    f"(cpu_native_bf16={resolved_precision['cpu_native_bf16']}): pass precision "
                    f"{saved.get('precision')!r} explicitly to continue the run")
        raise CheckpointError(f"--resume: the checkpoint was trained with different settings "
                              f"(saved, now): {mismatched}{hint}")


def _check_dataset(path: Path, saved: dict, dataset: dict | None) -> None:
    """Refuse to continue on other data than the checkpoint was trained on."""
    if not saved or not dataset:
        return  # a run (or a caller) without a record of its data
    differ = {k: (saved[k], dataset[k]) for k in saved.keys() & dataset.keys()
              if saved[k] != dataset[k]}
    if differ:
        raise CheckpointError(f"--resume: checkpoint {path} was trained on other data "
                              f"(saved, now): {differ}; resume on the same dataset, or "
                              f"start over with --restart")


def restore_checkpoint(path: Path | None, config, world_size: int, checkpointed: dict,
                       resolved_precision: dict, command: str | None,
                       dataset: dict | None = None,
                       steps_per_epoch: int | None = None) -> RunState:
    """Load ``path`` into ``checkpointed`` (as in :func:`save_checkpoint`).

    Refuses (:class:`CheckpointError`) a checkpoint whose trajectory settings, data
    (``dataset``, compared key by key with the stored record) or process count differ from
    ``config``, ``dataset`` and ``world_size``, and one that has done more epochs than
    ``config.epochs`` (a larger ``epochs`` extends the run). Also refused: counters,
    history or weights that are not what :func:`save_checkpoint` writes (``step`` must be
    ``epoch * steps_per_epoch`` when that is given), tensors that do not fit ``checkpointed``, and
    another thread count than the checkpoint's (:func:`_check_threads`). Returns the run's
    state, this session appended to ``resumes``.
    """
    if path is None or not Path(path).exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    path = Path(path)
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    if not isinstance(saved, dict) or not isinstance(ckpt["dataset"], dict):
        raise CheckpointError(f"checkpoint {path}: config and dataset must be mappings; start "
                              f"the run over with --restart, or point --checkpoint elsewhere")
    _check_settings(saved, config, resolved_precision)
    _check_plain_fields(path, ckpt)
    _check_threads(path, ckpt)
    _check_dataset(path, ckpt["dataset"], dataset)
    if ckpt["world_size"] != world_size:
        raise CheckpointError(f"--resume: checkpoint written with {ckpt['world_size']} "
                              f"processes, now {world_size}")
    _check_state(path, ckpt, steps_per_epoch)  # after the settings: they fix the step count
    if ckpt["epoch"] > config.epochs:
        raise CheckpointError(f"--resume: checkpoint {path} has already done {ckpt['epoch']} "
                              f"epochs, more than --epochs {config.epochs}; pass --epochs "
                              f"{ckpt['epoch']} or more (a larger value extends the run)")
    _load_state_dicts(path, ckpt, checkpointed)
    resumes = ckpt["resumes"] + [{"at_epoch": ckpt["epoch"], "git_commit": git_commit(),
                                          "command": command or command_line(),
                                          "started": now_iso(), **resolved_precision}]
    return RunState(history=ckpt["history"], step=ckpt["step"], epoch=ckpt["epoch"],
                    wall_before=ckpt["wall_seconds"], started=ckpt["started"],
                    git_commit=ckpt["git_commit"], command=ckpt["command"],
                    resolved_precision=ckpt["precision_record"], resumes=resumes)


def write_result_file(path: Path, result: dict) -> None:
    """Write ``result`` atomically with the one validated writer,
    :func:`bnbook.results.write_result`."""
    from bnbook.results import write_result

    write_result(path, result)


def load_result(path: os.PathLike | str) -> dict:
    """Read a run's result JSON (``{"run", "model", "config", "provenance", "history"}``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result file {path}; `python -m bnbook.experiments.cifar --help` "
                                f"shows how to produce one")
    with open(path) as f:
        return json.load(f)


def load_history(path: os.PathLike | str) -> list[dict]:
    """The per-epoch history of a result file: a list of ``{"epoch", "train_loss",
    "train_acc", "val_loss", "val_acc", "seconds"}`` dicts, epoch 1 first."""
    return load_result(path)["history"]

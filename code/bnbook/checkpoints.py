"""What a CIFAR-10 run leaves on disk - its checkpoint and its result file - and how it resumes.

A checkpoint holds the model, optimizer, learning-rate scheduler and gradient-scaler states,
the step and epoch counters, the history so far, the random-number states and the provenance
of the first session; :func:`restore_checkpoint` refuses one written under different
trajectory settings (:data:`bnbook.cifar_config.TRAJECTORY_FIELDS`) or process counts.
The result file is JSON ``{"run", "model", "config", "provenance", "history"}``
(:func:`load_result`, :func:`load_history`), rewritten atomically after every epoch.
"""

from __future__ import annotations

import io
import json
import os
import random
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bnbook.cifar_config import TRAJECTORY_FIELDS
from bnbook.provenance import atomic_write_bytes, atomic_write_json, git_commit, now_iso

__all__ = ["RunState", "new_run_state", "save_checkpoint", "restore_checkpoint",
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


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:])


def new_run_state(command: str | None, precision_record: dict) -> RunState:
    """The state of a run that starts now."""
    return RunState(started=now_iso(), git_commit=git_commit(), command=command or command_line(),
                    precision_record=precision_record)


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, parts: dict, config: dict, world_size: int, state: RunState,
                    wall: float) -> None:
    """Write, atomically, everything :func:`restore_checkpoint` needs.

    ``parts``: ``{"model", "optimizer", "scheduler", "scaler"}`` (objects with ``state_dict``).
    """
    payload = {name: part.state_dict() for name, part in parts.items()}
    payload.update({
        "step": state.step, "epoch": state.epoch, "history": state.history, "config": config,
        "world_size": world_size, "rng": _rng_states(), "wall_seconds": wall,
        "started": state.started, "git_commit": state.git_commit, "command": state.command,
        "precision_record": state.precision_record, "resumes": state.resumes})
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _check_settings(saved: dict, config, precision_record: dict) -> None:
    mismatched = {k: (saved.get(k), getattr(config, k)) for k in TRAJECTORY_FIELDS
                  if saved.get(k) != getattr(config, k)}
    if mismatched:
        hint = ""
        if "precision" in mismatched and precision_record["precision_requested"] == "auto":
            hint = (f"; precision 'auto' resolves to {config.precision!r} here "
                    f"(cpu_native_bf16={precision_record['cpu_native_bf16']}): pass precision "
                    f"{saved.get('precision')!r} explicitly to continue the run")
        raise ValueError(f"--resume: the checkpoint was trained with different settings "
                         f"(saved, now): {mismatched}{hint}")


def restore_checkpoint(path: Path | None, config, world_size: int, parts: dict,
                       precision_record: dict, command: str | None) -> RunState:
    """Load ``path`` into ``parts`` (as in :func:`save_checkpoint`) and the global RNGs.

    Refuses a checkpoint whose trajectory settings or process count differ from ``config``
    and ``world_size``. A checkpoint from before the scheduler was saved resumes with the
    schedule set to its ``step``. Returns the run's state, this session appended to
    ``resumes``.
    """
    if path is None or not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    saved = ckpt["config"]
    _check_settings(saved, config, precision_record)
    if ckpt.get("world_size", 1) != world_size:
        raise ValueError(f"--resume: checkpoint written with {ckpt.get('world_size')} "
                         f"processes, now {world_size}")
    for name in ("model", "optimizer", "scheduler", "scaler"):
        if name in ckpt:
            parts[name].load_state_dict(ckpt[name])
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
    _set_rng_states(ckpt["rng"])
    return RunState(history=ckpt["history"], step=ckpt["step"], epoch=ckpt["epoch"],
                    wall_before=ckpt["wall_seconds"], started=ckpt["started"],
                    git_commit=ckpt["git_commit"], command=ckpt["command"],
                    precision_record=first_record, resumes=resumes)


def write_result_file(path: Path, result: dict) -> None:
    """Write ``result`` atomically, with :func:`bnbook.results.write_result` where it exists."""
    from bnbook import results

    write = getattr(results, "write_result", None)
    if write is None:
        atomic_write_json(path, result)
    else:
        write(path, result)


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

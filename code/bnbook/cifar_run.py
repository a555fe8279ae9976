"""One CIFAR-10 run as a whole: its data, its record, and what it may overwrite.

:func:`prepare_data` checks the arrays and cuts them to ``--subset``; :func:`data_sha256` is
their checksum, which the checkpoint and the result file keep. :class:`Run` holds the facts a
run's result file records and builds it (:meth:`Run.result`, with :func:`config_record`).
Nothing is replaced silently: :func:`existing_checkpoint` refuses an existing checkpoint
unless the run resumes or restarts it (deleting it), :func:`remove_restarted_result` deletes
the result of a restarted run, and :func:`check_out` refuses a result file that is not the
run's own (:func:`own_result`). The loop that uses all this is :func:`bnbook.train.train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from bnbook.checkpoints import CheckpointError, RunState, load_checkpoint
from bnbook.cifar_augment import subset_indices
from bnbook.cifar_config import TRAJECTORY_FIELDS, TrainConfig
from bnbook.provenance import provenance_record

__all__ = ["prepare_data", "data_sha256", "Run", "config_record", "own_result", "check_out",
           "existing_checkpoint", "remove_restarted_result", "LOCK_NAME", "run_lock",
           "check_writable"]


def prepare_data(config: TrainConfig, data) -> tuple[torch.Tensor, ...]:
    """``data`` as tensors, checked, labels int64, cut to ``config.subset`` if set."""
    x_train, y_train, x_test, y_test = (torch.as_tensor(np.asarray(a)) for a in data)
    if x_train.dtype != torch.uint8 or x_train.ndim != 4 or x_train.shape[-1] != 3:
        raise ValueError(f"x_train must be uint8 (N, H, W, 3), got {x_train.dtype} "
                         f"{tuple(x_train.shape)}")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError("images and labels differ in length")
    y_train, y_test = y_train.long(), y_test.long()
    if config.subset is not None:
        if config.subset > len(x_train):
            raise ValueError(f"subset {config.subset} exceeds the {len(x_train)} training images")
        train_idx = torch.from_numpy(subset_indices(len(x_train), config.subset))
        test_idx = torch.from_numpy(subset_indices(len(x_test), config.subset // 5))
        x_train, y_train = x_train[train_idx], y_train[train_idx]
        x_test, y_test = x_test[test_idx], y_test[test_idx]
    return x_train, y_train, x_test, y_test


def data_sha256(*arrays: torch.Tensor) -> str:
    """sha256 of the arrays a run trains and validates on (after ``subset``)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((tuple(a.shape), str(a.dtype))).encode())
        h.update(a.contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class Run:
    """The fixed facts of one run that its result file and checkpoints record, and where
    they go."""

    name: str
    config: TrainConfig
    device: torch.device
    world_size: int
    rank: int
    dataset: dict
    record: dict = dataclasses.field(default_factory=dict)
    #: Where rank 0 writes the result and the checkpoint after every epoch (``None``: not
    #: written), and the data facts the checkpoint stores (``dataset`` plus ``data_sha256``).
    out: Path | None = None
    checkpoint_path: Path | None = None
    data_record: dict = dataclasses.field(default_factory=dict)

    def result(self, state: RunState, finished: str | None, wall: float) -> dict:
        """The result file's content after ``state`` (``finished``: when, or ``None``)."""
        provenance = provenance_record(
            str(self.device), self.config.precision, dataset=self.dataset.get("variant"),
            dataset_sha256=self.dataset.get("sha256"), started=state.started,
            finished=finished, wall_seconds=round(wall, 1), command=state.command,
            git_commit=state.git_commit, **state.precision_record,
            **({"resumes": state.resumes} if state.resumes else {}))
        return {"run": self.name, "model": self.config.model, "config": self.record,
                "provenance": provenance, "history": state.history}


def config_record(config: TrainConfig, world_size: int, n_train: int, n_test: int,
                  steps_per_epoch: int) -> dict:
    """The result file's ``config``: the settings, the run's sizes and what the optimizer and
    the augmentation are, in words."""
    return {**dataclasses.asdict(config), "world_size": world_size, "train_images": n_train,
            "test_images": n_test, "steps_per_epoch": steps_per_epoch,
            "global_batch_size": config.batch_size * world_size,
            "optimizer": "RMSprop (Keras 2.x rule, eps outside sqrt), "
                         "lr_t = lr / (1 + decay * t) per update",
            "augmentation": (f"shift U(-3.2, 3.2) px each axis, "
                             f"{'bilinear' if config.shift_order == 1 else 'whole pixels'}, "
                             "nearest fill; "
                             "horizontal flip p=0.5") if config.augment else "none"}


def own_result(existing: dict, run: Run, state: RunState) -> bool:
    """Whether a result file already at ``out`` belongs to this run: it was written by the
    session that started the checkpoint being continued, or it is an unfinished result of the
    same run name, settings and data."""
    prov = existing.get("provenance") or {}
    if state.started and prov.get("started") == state.started:
        return True
    if existing.get("run") != run.name or prov.get("finished") is not None:
        return False
    saved = existing.get("config") or {}
    return (all(saved.get(k) == getattr(run.config, k) for k in TRAJECTORY_FIELDS)
            and prov.get("dataset") == run.dataset.get("variant")
            and prov.get("dataset_sha256") == run.dataset.get("sha256"))


def check_out(out: Path, run: Run, state: RunState) -> None:
    """Refuse to overwrite a result file that is not this run's own (:func:`own_result`)."""
    if not out.exists():
        return
    try:
        existing = json.loads(out.read_text())
        assert isinstance(existing, dict)
    except (OSError, ValueError, AssertionError):
        raise FileExistsError(f"refusing to overwrite {out}: it exists and is not a result "
                              f"file; choose another --out or remove it") from None
    if not own_result(existing, run, state):
        prov = existing.get("provenance") or {}
        raise FileExistsError(
            f"refusing to overwrite {out}: it holds another run's result (run "
            f"{existing.get('run')!r}, started {prov.get('started')}, finished "
            f"{prov.get('finished')}), not this run's ({run.name!r}); choose another --out, "
            f"or remove the file if it is no longer wanted")


def existing_checkpoint(checkpoint_path: Path | None, resume: bool, restart: bool,
                        rank: int, world_size: int) -> str | None:
    """Refuse to replace a checkpoint silently: without ``resume`` an existing checkpoint is
    an error unless ``restart``, which deletes it (on rank 0). Returns the deleted run's
    ``started`` (to delete its result too), or ``None``."""
    if resume and restart:
        raise ValueError("--resume continues the checkpoint and --restart deletes it: pass one")
    if checkpoint_path is None or resume or not checkpoint_path.exists():
        return None
    try:
        old = load_checkpoint(checkpoint_path)
        started, done = old.get("started"), f"{old['epoch']} epoch(s) done"
    except CheckpointError:
        started, done = None, "unreadable"
        if restart and not _is_torch_file(checkpoint_path):
            raise CheckpointError(
                f"--restart deletes only a bnbook checkpoint, and {checkpoint_path} is not one "
                f"(not a file torch.save wrote); it is kept: point --checkpoint at the run's "
                f"own checkpoint (default runs/<run>/checkpoint.pt)") from None
    if not restart:
        raise CheckpointError(
            f"a checkpoint exists at {checkpoint_path} ({done}): continue it with --resume "
            f"(resume=True; a larger --epochs extends it), or start over with --restart "
            f"(restart=True), which deletes it; it is never replaced silently")
    if rank == 0:
        checkpoint_path.unlink()
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return started


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` is a file ``torch.save`` wrote (a zip archive), perhaps cut short: a
    damaged checkpoint ``--restart`` may delete, unlike a result, a notebook or anything else."""
    try:
        with open(path, "rb") as f:
            return path.is_file() and f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def remove_restarted_result(out: Path, deleted_started: str | None, restart: bool, rank: int,
                            world_size: int) -> None:
    """After ``restart`` deleted a checkpoint (:func:`existing_checkpoint`), delete its run's
    result at ``out`` too (on rank 0), if that is the one the checkpoint's session started;
    all ranks wait for it."""
    if rank == 0 and restart and out.exists() and deleted_started is not None:
        try:
            old_started = (json.loads(out.read_text()).get("provenance") or {}).get("started")
        except (OSError, ValueError, AttributeError):
            old_started = None
        if old_started == deleted_started:
            out.unlink()  # the deleted checkpoint's own result
    if restart and world_size > 1:
        import torch.distributed as dist

        dist.barrier()


#: The lock file a running run holds (``flock``) in each folder it writes to.
LOCK_NAME = ".bnbook-run.lock"


@contextlib.contextmanager
def run_lock(paths, run_name: str, command: str = ""):
    """Hold an exclusive lock on the folders of ``paths`` (the checkpoint and the result
    file; ``None`` entries are skipped) while the run writes there. A second run on the same
    folder is refused (``FileExistsError``) naming the first; the operating system releases
    the lock when the process ends, also on ``kill -9``, so no stale lock is left to clear."""
    folders = sorted({Path(p).parent.resolve() for p in paths if p is not None})
    with contextlib.ExitStack() as stack:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            lock = folder / LOCK_NAME
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                raise FileExistsError(
                    f"{folder} is in use by another run ({holder or 'unknown'}); wait for it "
                    f"to finish, or give this run another --run-name") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"run {run_name!r}, process {os.getpid()}: {command}"[:4000]
                      .encode(), 0)
        yield


def check_writable(*paths) -> None:
    """Refuse, before any work, a run whose output files (``None`` entries skipped) cannot be
    written: each one's folder is created and a scratch file written and removed there."""
    import tempfile

    for path in paths:
        if path is None:
            continue
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".bnbook-write-check-"):
                pass
        except OSError as err:
            raise OSError(f"cannot write {path} ({err.strerror or err}): choose a writable "
                          f"--out/--checkpoint folder or free space there") from None

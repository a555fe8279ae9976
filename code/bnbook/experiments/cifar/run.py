"""One CIFAR-10 run as a whole: its data, its record, and what it may overwrite.

:func:`prepare_data` checks the arrays and cuts them to ``--subset``; :func:`data_sha256` is
their checksum, which the checkpoint and the result file keep. :class:`Run` holds the facts a
run's result file records and builds it (:meth:`Run.result`, with :func:`result_config`).
Nothing is replaced silently: :func:`checkpoint_to_delete` refuses an existing checkpoint
unless the run resumes it or restarts it, and then names the one to delete (a bnbook checkpoint
inside the run's own folder); :func:`result_to_delete` names the restarted run's own result,
:func:`delete_restarted_files` deletes both, and :func:`refuse_another_runs_result` refuses a result file that
is not the run's own (:func:`is_this_runs_result`). :func:`check_writable` writes a probe of the
checkpoint's size (:func:`checkpoint_bytes`) where the run will write, before any work, and
:func:`check_resumed_result` refuses a resumed state whose result could not be written. The
loop that uses all this is :func:`bnbook.experiments.cifar.train.train`.
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

from bnbook.experiments.cifar.checkpoints import CheckpointError, RunState, load_checkpoint
from bnbook.experiments.cifar.augment import subset_indices
from bnbook.experiments.cifar.config import TRAJECTORY_FIELDS, TrainConfig
from bnbook.provenance import unchecked_provenance

__all__ = ["prepare_data", "data_sha256", "Run", "check_resumed_result", "result_config",
           "is_this_runs_result", "refuse_another_runs_result",
           "checkpoint_to_delete", "is_inside", "checkpoint_started", "result_to_delete",
           "delete_restarted_files", "LOCK_NAME", "run_lock", "checkpoint_bytes",
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
    #: The result file's ``config`` (:func:`result_config`).
    result_config: dict = dataclasses.field(default_factory=dict)
    #: Where rank 0 writes the result and the checkpoint after every epoch (``None``: not
    #: written), and (``checkpoint_dataset``) the data facts the checkpoint stores
    #: (``dataset`` plus ``data_sha256``).
    out: Path | None = None
    checkpoint_path: Path | None = None
    #: The run's own folder: ``restart`` deletes only files inside it (``None``: the
    #: checkpoint's and the result's own folders).
    folder: Path | None = None
    checkpoint_dataset: dict = dataclasses.field(default_factory=dict)

    def result(self, state: RunState, finished: str | None, wall: float) -> dict:
        """The result file's content after ``state`` (``finished``: when, or ``None``)."""
        provenance = unchecked_provenance(
            str(self.device), self.config.precision, dataset=self.dataset.get("variant"),
            dataset_sha256=self.dataset.get("sha256"), started=state.started,
            finished=finished, wall_seconds=round(wall, 1), command=state.command,
            commit=state.git_commit, **state.resolved_precision,
            **({"resumes": state.resumes} if state.resumes else {}))
        return {"run": self.name, "model": self.config.model, "config": self.result_config,
                "provenance": provenance, "history": state.history}


def check_resumed_result(run: Run, state: RunState) -> None:
    """Refuse, before an epoch is trained, a resumed ``state`` whose result file could not be
    written (a history entry or a record that the result schema refuses, NaN included; the
    history alone for a run without a result file): :class:`CheckpointError` naming the
    checkpoint and the field."""
    from bnbook.results import check_run, validate_result

    try:
        result = run.result(state, None, state.wall_before)
        if run.out is not None:
            validate_result(result)
        else:
            check_run(result)
        json.dumps(result, allow_nan=False)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {run.checkpoint_path} would not make a valid "
                              f"result file ({str(err)[:300]}); start the run over with "
                              f"--restart, or point --checkpoint elsewhere") from None


def result_config(config: TrainConfig, world_size: int, n_train: int, n_test: int,
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


def is_this_runs_result(existing: dict, run: Run, state: RunState) -> bool:
    """Whether a result file already at ``out`` belongs to this run: it was written by the
    session that started the checkpoint being continued (a resumed ``state``; a new run's
    start time, to the second, may equal another run's), or it is an unfinished result of
    the same run name, settings and data."""
    prov = existing.get("provenance") or {}
    if state.resumes and state.started and prov.get("started") == state.started:
        return True
    if existing.get("run") != run.name or prov.get("finished") is not None:
        return False
    saved = existing.get("config") or {}
    return (all(saved.get(k) == getattr(run.config, k) for k in TRAJECTORY_FIELDS)
            and prov.get("dataset") == run.dataset.get("variant")
            and prov.get("dataset_sha256") == run.dataset.get("sha256"))


def refuse_another_runs_result(out: Path, run: Run, state: RunState) -> None:
    """Refuse to overwrite a result file that is not this run's own
    (:func:`is_this_runs_result`)."""
    if not out.exists():
        return
    try:
        existing = json.loads(out.read_text())
        assert isinstance(existing, dict)
    except (OSError, ValueError, AssertionError):
        raise FileExistsError(f"refusing to overwrite {out}: it exists and is not a result "
                              f"file; choose another --out or remove it") from None
    if not is_this_runs_result(existing, run, state):
        prov = existing.get("provenance") or {}
        raise FileExistsError(
            f"refusing to overwrite {out}: it holds another run's result (run "
            f"{existing.get('run')!r}, started {prov.get('started')}, finished "
            f"{prov.get('finished')}), not this run's ({run.name!r}); choose another --out, "
            f"or remove the file if it is no longer wanted")


def checkpoint_to_delete(checkpoint_path: Path | None, resume: bool, restart: bool,
                         run_dir: Path | None = None) -> Path | None:
    """The existing checkpoint that ``restart`` is to delete, or ``None`` (there is none, or
    the run resumes it). Refuses (:class:`CheckpointError`), deleting nothing: an existing
    checkpoint without ``resume`` or ``restart`` (it is never replaced silently), and for
    ``restart`` a file that is not a bnbook checkpoint (:func:`_is_torch_file`) or that lies
    outside ``run_dir``, the run's own folder (default: the checkpoint's folder), links
    resolved."""
    if resume and restart:
        raise ValueError("--resume continues the checkpoint and --restart deletes it: pass one")
    if checkpoint_path is None or resume or not checkpoint_path.exists():
        return None
    try:
        done = f"{load_checkpoint(checkpoint_path)['epoch']} epoch(s) done"
    except CheckpointError:
        done = "unreadable"
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
    folder = run_dir or checkpoint_path.parent
    if not is_inside(checkpoint_path, folder):
        raise CheckpointError(
            f"--restart deletes only a checkpoint inside the run's own folder {folder}, and "
            f"{checkpoint_path} (-> {checkpoint_path.resolve()}) is outside it; it is kept: "
            f"delete it yourself if it is no longer wanted, or resume it with --resume")
    return checkpoint_path


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` once links and ``..`` are resolved."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` is a file ``torch.save`` wrote (a zip archive), perhaps cut short: a
    damaged checkpoint ``--restart`` may delete, unlike a result, a notebook or anything else."""
    try:
        with open(path, "rb") as f:
            return path.is_file() and f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def checkpoint_started(checkpoint_path: Path) -> str | None:
    """When the session that began the checkpoint's run started (its ``started``), or
    ``None`` for a checkpoint that cannot be read."""
    try:
        started = load_checkpoint(checkpoint_path).get("started")
    except CheckpointError:
        return None
    return started if isinstance(started, str) and started else None


def result_to_delete(out: Path | None, started: str | None,
                     run_dir: Path | None = None) -> Path | None:
    """The result at ``out`` that ``restart`` deletes with its checkpoint: the one the
    checkpoint's session wrote (its ``provenance.started`` is ``started``), inside
    ``run_dir`` (default: the result's folder), links resolved; else ``None``."""
    if out is None or started is None or not out.is_file():
        return None
    if not is_inside(out, run_dir or out.parent):
        return None  # e.g. a published copy: the same `started`, but not the run's own file
    try:
        old_started = (json.loads(out.read_text()).get("provenance") or {}).get("started")
    except (OSError, ValueError, AttributeError):
        return None
    return out if old_started == started else None


def delete_restarted_files(paths, rank: int, world_size: int) -> None:
    """Delete ``paths`` (``None`` entries skipped) on rank 0; all ranks wait for it."""
    if rank == 0:
        for path in paths:
            if path is not None:
                path.unlink()
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


#: The lock file a running run holds (``flock``) in each folder it writes to, while it runs.
LOCK_NAME = ".bnbook-run.lock"


@contextlib.contextmanager
def run_lock(paths, run_name: str, command: str = ""):
    """Hold an exclusive lock on the folders of ``paths`` (the checkpoint and the result
    file; ``None`` entries are skipped) while the run writes there. A second run on the same
    folder is refused (``FileExistsError``) naming the first; the operating system releases
    the lock when the process ends, also on ``kill -9``, so no stale lock is left to clear.
    The lock file is removed when the run ends normally (a folder such as ``data/results/``
    keeps no file it did not have)."""
    folders = sorted({Path(p).parent.resolve() for p in paths if p is not None})
    with contextlib.ExitStack() as stack:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            lock = folder / LOCK_NAME
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            stack.callback(os.close, fd)
            _lock_or_refuse(fd, lock, folder)
            stack.callback(_unlink_if_same, lock, fd)  # runs before the close above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"run {run_name!r}, process {os.getpid()}: {command}"[:4000]
                      .encode(), 0)
        yield


def _lock_or_refuse(fd: int, lock: Path, folder: Path) -> None:
    """``flock`` the open lock file ``fd``, or refuse naming the holder. A lock on a file
    that its holder removed meanwhile (the path names another file now) counts as held."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _is_same_file(lock, fd):
            raise BlockingIOError
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        raise FileExistsError(
            f"{folder} is in use by another run ({holder or 'unknown'}); wait for it "
            f"to finish, or give this run another --run-name") from None


def _is_same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _unlink_if_same(path: Path, fd: int) -> None:
    """Remove the lock file ``fd`` holds, while still holding it."""
    if _is_same_file(path, fd):
        path.unlink()


def checkpoint_bytes(config: TrainConfig) -> int:
    """About the size of the run's checkpoint in bytes: the model's state twice (the weights
    and RMSprop's running averages of their squared gradients) and 1 MiB for the rest."""
    from bnbook.models import keras_cnn

    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = keras_cnn(batch_norm=config.model == "bn", bn_on_logits=config.bn_on_logits,
                          keep_dropout=config.keep_dropout)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 2 * weights + (1 << 20)


def check_writable(*targets) -> None:
    """Refuse, before any work, a run whose output files cannot be written. ``targets``:
    ``(path, size)`` pairs (``None`` paths skipped); in each path's folder (created) a probe
    of ``size`` bytes is written, flushed to disk and removed, so that a read-only folder, a
    full disk or a file-size limit (``RLIMIT_FSIZE``; ``SIGXFSZ`` is ignored meanwhile, so the
    limit is an ``OSError``, not a kill) is a one-line ``OSError`` naming the path."""
    import tempfile

    for path, size in targets:
        if path is None:
            continue
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _file_size_signal_ignored(), tempfile.NamedTemporaryFile(
                    dir=folder, prefix=".bnbook-write-check-") as probe:
                block = bytes(min(size, 1 << 20))
                for start in range(0, size, len(block) or 1):
                    probe.write(block[:size - start])
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as err:
            raise OSError(f"cannot write {path} (a {size / 2**20:.1f} MiB probe there failed: "
                          f"{err.strerror or err}): choose a writable --out/--checkpoint folder, "
                          f"free space there, or raise the file-size limit (ulimit -f)") from None


@contextlib.contextmanager
def _file_size_signal_ignored():
    """``SIGXFSZ`` ignored (in the main thread; elsewhere signals cannot be changed): a write
    past ``RLIMIT_FSIZE`` then fails with ``EFBIG`` instead of killing the process."""
    import signal
    import threading

    if not hasattr(signal, "SIGXFSZ") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGXFSZ, previous)

"""Training loop for the Keras ``cifar10_cnn`` experiment: faithful, fast and resumable.

:func:`train` trains :func:`bnbook.models.keras_cnn` on images held in memory as uint8 arrays,
the way Keras' ``model.fit_generator(ImageDataGenerator(...).flow(x, y, batch_size=32))`` does:
RMSprop with inverse-time learning-rate decay, random shifts and horizontal flips, the test set
evaluated in eval mode after every epoch. After every epoch it writes, atomically, a JSON
result file (:func:`load_result`, :func:`load_history`) and a checkpoint; ``resume=True``
continues from the checkpoint and ends with the same history and weights as an uninterrupted
run, because everything random in an epoch (data order, shifts, flips, dropout masks) is a
function of ``(seed, epoch, rank)`` only (:mod:`bnbook.experiments.cifar.augment`). Each epoch is one call
of the book's loop, :func:`bnbook.training.fit`; the settings are :mod:`bnbook.experiments.cifar.config`,
the checkpoint and result files :mod:`bnbook.experiments.cifar.checkpoints`, the run's data, record and refusal
to overwrite what is not its own :mod:`bnbook.experiments.cifar.run`.

Keras-to-PyTorch translation of the training procedure (the network's is in
:mod:`bnbook.models.keras_cifar_cnn`):

============================== ================================== ================================
Keras 2.x (cifar10_cnn)        here                               note
============================== ================================== ================================
``rmsprop(lr, decay=1e-6)``    ``torch.optim.RMSprop`` with       identical rule: both add eps
rho 0.9, epsilon 1e-7          ``alpha=rho``, ``eps=1e-7``        *outside* the root, ``p -=``
(``K.epsilon()``)              (:func:`make_optimizer`)           ``lr_t g / (sqrt(a) + eps)``,
                                                                  and start ``a`` at 0
``lr_t = lr / (1 + decay t)``  :class:`InverseTimeLR`, a          identical (tf.keras 2.x RMSprop
``t`` = updates done so far    ``LambdaLR`` stepped after every   without momentum adds eps
                               update and saved in the            outside the root too; only its
                               checkpoint                         fused momentum op and TF >= 2.11
                                                                  / Keras 3 put it inside)
``ImageDataGenerator``:        :func:`shift_flip` on the batch,   same distribution; Keras
``width_shift_range=0.1``,     ``F.grid_sample`` (bilinear,       draws per image with NumPy,
``height_shift_range=0.1``,    ``padding_mode='border'``);        we per epoch from
``fill_mode='nearest'``,       shifts ``U(-3.2, 3.2)`` px,        ``(seed, epoch)``; Keras 2
``horizontal_flip=True``       flip probability 0.5               samples with SciPy
                                                                  ``order=1`` (bilinear) since
                                                                  Keras 2.1.4, ``order=0``
                                                                  (whole pixels) before;
                                                                  ``shift_order=0`` gives that
``flow(shuffle=True)``         :func:`epoch_order`: a new         same as Keras >= 2.1 (the
                               permutation every epoch;           2.0.x example ran
                               1563 batches, the last of 16       ``50000 // 32 = 1562``)
training loss and accuracy     mean over the epoch's images,      same definition
in the progress bar            in train mode (dropout on, BN
                               with batch statistics)
``validation_data``:           :func:`evaluate` in eval mode,     the batch size does not
the test set, batches of 32    batches of ``eval_batch_size``     change eval-mode results
                               (default 500)
``numpy.random.seed(7)``       ``seed=7`` drives the init,        Keras runs are not
                               order, augmentation, dropout       bit-reproducible anyway
============================== ================================== ================================

Distributed data parallel: run the CLI (:mod:`bnbook.experiments.cifar.cli`) under ``torchrun``; each process
takes every ``world_size``-th position of the epoch's permutation (padded like PyTorch's
``DistributedSampler``) and uses ``batch_size`` images per step, so the global batch is
``world_size * batch_size``. ``sync_bn=True`` converts BN layers to ``SyncBatchNorm``, which
PyTorch only runs on GPUs: on CPU it is refused with a ``ValueError``.

Precision: ``precision="auto"`` (the default) is turned into a concrete setting by
:func:`resolve_precision` before anything else happens: bf16 autocast where the hardware
computes bfloat16 natively (a CPU with AVX-512 BF16 or AMX, :func:`cpu_has_native_bf16`; a
CUDA GPU with bf16), fp16 with a ``GradScaler`` on older CUDA GPUs, float32 everywhere else.
The resolved value is what the run uses, what the checkpoint's settings check compares and
what the result file records; the provenance adds ``precision_requested`` and
``cpu_native_bf16``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnbook.experiments.cifar.augment import (epoch_batches, shard_positions, shift_flip,
                                              steps_per_epoch, stream_seed, to_float_images)
from bnbook.experiments.cifar.checkpoints import (RunState, new_run_state, restore_checkpoint,
                                                  save_checkpoint, write_result_file)
from bnbook.experiments.cifar.config import PRECISION_CHOICES, TrainConfig
from bnbook.experiments.cifar.run import (Run, check_resumed_result, check_writable,
                                          checkpoint_bytes, checkpoint_started,
                                          checkpoint_to_delete, result_config, data_sha256,
                                          delete_restarted_files, prepare_data,
                                          refuse_another_runs_result, result_to_delete,
                                          run_lock)
from bnbook.models import keras_cnn
from bnbook.provenance import now_iso
from bnbook.training import fit



# ---------------------------------------------------------------- optimizer and schedule


def keras_inverse_time_lr(lr: float, decay: float, step: int) -> float:
    """Keras' per-update decay: ``lr_t = lr / (1 + decay * t)``, ``t`` = updates done before.

    The first update (``t = 0``) uses ``lr`` itself; after one epoch of 1563 updates at
    ``decay = 1e-6`` the rate is ``lr / 1.001563``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return lr / (1.0 + decay * step)


def make_optimizer(model: nn.Module, lr: float, rho: float = 0.9,
                   eps: float = 1e-7) -> torch.optim.RMSprop:
    """Keras 2.x ``RMSprop(lr, rho, epsilon)`` as ``torch.optim.RMSprop``.

    Update per parameter (both libraries): ``a <- rho a + (1 - rho) g^2``,
    ``p <- p - lr_t g / (sqrt(a) + eps)``, ``a`` starting at zero. PyTorch calls ``rho``
    ``alpha``. :class:`InverseTimeLR` sets ``lr_t`` (:func:`keras_inverse_time_lr`).
    """
    return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=rho, eps=eps, momentum=0.0,
                               centered=False, weight_decay=0.0)


class InverseTimeLR(torch.optim.lr_scheduler.LambdaLR):
    """Keras' inverse-time decay as a ``LambdaLR`` (``lambda t: 1 / (1 + decay * t)``), to be
    stepped once per update, so that update ``t`` (from 0) uses :func:`keras_inverse_time_lr`.

    The rate is computed as :func:`keras_inverse_time_lr` does, ``lr / (1 + decay * t)``, the
    form the stored runs were trained with, rather than ``LambdaLR``'s (and Keras 2's own)
    ``lr * (1 / (1 + decay * t))``: the two differ in the last bit for about one ``t`` in
    three. ``t`` is ``last_epoch`` and travels in ``state_dict()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, decay: float, last_epoch: int = -1):
        self.decay = decay
        super().__init__(optimizer, lambda t: 1.0 / (1.0 + decay * t), last_epoch)

    def get_lr(self) -> list[float]:
        return [keras_inverse_time_lr(base, self.decay, self.last_epoch) for base in self.base_lrs]


# ---------------------------------------------------------------- devices, precision


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` on a machine without it is an error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")


#: Where :func:`cpu_has_native_bf16` looks when torch cannot tell (Linux only).
_CPUINFO = Path("/proc/cpuinfo")
#: /proc/cpuinfo flags of bfloat16 arithmetic in hardware: AVX-512 BF16 and AMX BF16 tiles.
_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def _cpuinfo_flags(path: os.PathLike | str | None = None) -> frozenset[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo``; empty if unreadable."""
    try:
        with open(_CPUINFO if path is None else path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX).

    Why: bf16 autocast only pays off where oneDNN has bf16 instructions to run it on. On a
    CPU without them (e.g. an AVX2-only AMD EPYC) every bf16 convolution and matrix product
    is emulated with conversions to and from float32, and one training step of the book's
    BN CNN (batch 32, 2 threads) took 696 ms in bf16 against 89 ms in float32. With AVX-512
    BF16 the same step is faster in bf16 than in float32.

    Asks torch (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``, which
    read CPUID) where this torch has them, else the ``avx512_bf16`` / ``amx_bf16`` flags of
    ``/proc/cpuinfo``. Anything it cannot establish - macOS, other systems, ARM CPUs (their
    bf16 support is not probed), an unreadable ``/proc/cpuinfo`` - counts as not native, so
    that ``auto`` falls back to float32, which is never the slow choice.
    """
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if callable(probe)]
    if probes:
        try:
            return any(bool(probe()) for probe in probes)
        except Exception:  # private torch API: fall back to the kernel's flags
            pass
    return bool(_cpuinfo_flags() & _CPU_BF16_FLAGS)


def _cuda_has_bf16() -> bool:
    """``torch.cuda.is_bf16_supported`` without counting emulated bf16 (pre-Ampere GPUs)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without the keyword
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """The concrete precision (``"fp32"``, ``"bf16"`` or ``"fp16"``) that ``precision`` means
    on ``device``.

    ``fp32``, ``bf16`` and ``fp16`` are returned unchanged (an explicit choice is obeyed, even
    a slow one). ``auto`` picks bf16 autocast only where it is native and therefore fast:

    * CPU: ``bf16`` if :func:`cpu_has_native_bf16` (AVX-512 BF16 or AMX), else ``fp32``:
      emulated bf16 is several times *slower* than float32 (696 ms against 89 ms per step
      on an AVX2-only CPU), and its rounding would buy nothing;
    * CUDA: ``bf16`` if the GPU computes it (``torch.cuda.is_bf16_supported``, compute
      capability 8.0 and up), else ``fp16``, which :func:`train` runs with a ``GradScaler``;
    * anything else (``mps``, ...): ``fp32``.

    ``device`` is a ``torch.device``, ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"`` (CUDA if
    available, as :func:`resolve_device`). Raises ``ValueError`` for an unknown ``precision``.
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    if isinstance(device, str) and device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if _cuda_has_bf16() else "fp16"
    if kind == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def _autocast(device: torch.device, precision: str):
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ---------------------------------------------------------------- one update


def batch_loss(net: nn.Module, batch, precision: str = "fp32",
               channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_fn`` of :func:`bnbook.training.fit` for CIFAR: ``(loss, logits)`` of one batch.

    ``batch = (x_uint8, y, augmentation)``: ``(B, 32, 32, 3)`` uint8 on the model's device,
    ``(B,)`` int64, and ``None`` or ``(shifts (B, 2), flips (B,)[, order])`` for
    :func:`shift_flip`.
    The forward runs under autocast for ``precision`` (see :func:`resolve_precision`), the
    cross-entropy in float32.
    """
    x_uint8, y, augmentation = batch
    xb = to_float_images(x_uint8)
    if augmentation is not None:
        xb = shift_flip(xb, *augmentation)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with _autocast(xb.device, precision):
        logits = net(xb)
    return F.cross_entropy(logits.float(), y), logits


def training_step(net: nn.Module, optimizer: torch.optim.Optimizer, scaler, x_uint8: torch.Tensor,
                  y: torch.Tensor, lr: float | None = None, augmentation=None,
                  precision: str = "fp32", channels_last: bool = False):
    """One RMSprop update on one batch, as the training loop does it (:func:`batch_loss`
    through :func:`bnbook.training.fit`).

    ``scaler``: a ``torch.amp.GradScaler`` (disabled unless fp16; resolve ``precision`` first
    if it may mean fp16). ``lr``: sets the learning rate first (the loop leaves that to
    :class:`InverseTimeLR`). Returns ``(loss, logits)`` (detached use only).
    """
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    done = []
    fit(net, [(x_uint8, y, augmentation)],
        lambda m, b: batch_loss(m, b, precision=precision, channels_last=channels_last),
        optimizer, scaler=scaler, on_step=lambda _, loss, logits, __: done.append((loss, logits)))
    return done[0]


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             device: torch.device | str = "cpu", precision: str = "fp32",
             channels_last: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode on ``(x_uint8, y)``.

    ``x_uint8``: ``(N, 32, 32, 3)`` uint8; ``y``: ``(N,)`` int64. Restores the training mode
    the model had. Returns ``(loss, accuracy)`` as Python floats.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    try:
        for start in range(0, len(x_uint8), batch_size):
            xb = to_float_images(x_uint8[start:start + batch_size].to(device))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y[start:start + batch_size].to(device)
            with _autocast(device, precision):
                logits = model(xb)
            logits = logits.float()
            total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
            n += len(yb)
    finally:
        model.train(was_training)
    return total_loss / n, correct / n


# ---------------------------------------------------------------- the run


def _dist_info():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _resolve_settings(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, dict]:
    """``config`` with its precision resolved (what runs, what the checkpoint's settings check
    compares and what the result records; the caller's config is untouched), and the precision
    settings it resolved (what was asked, which native bf16 the machine has). Refuses what
    cannot run on ``device``; sets the thread count."""
    resolved = {"precision_requested": config.precision, "cpu_native_bf16": cpu_has_native_bf16(),
                **({"cuda_native_bf16": _cuda_has_bf16()} if device.type == "cuda" else {})}
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, device))
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs CUDA (autocast + GradScaler); on CPU use "
                         "auto, fp32 or bf16")
    if config.sync_bn and device.type == "cpu":
        raise ValueError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm raises 'SyncBatchNorm "
                         "expected input tensor to be on GPU' on CPU tensors. On CPU each "
                         "process normalises over its own shard of the batch; run without "
                         "--sync-bn, or on CUDA devices with the NCCL backend.")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return config, resolved


def _build(config: TrainConfig, device: torch.device) -> dict:
    """The model (initialised from ``config.seed``), optimizer, schedule and gradient scaler."""
    torch.manual_seed(config.seed)
    model = keras_cnn(batch_norm=config.model == "bn", bn_on_logits=config.bn_on_logits,
                      keep_dropout=config.keep_dropout, lrn=config.model == "lrn")
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model, config.lr, config.rho, config.eps)
    return {"model": model, "optimizer": optimizer,
            "scheduler": InverseTimeLR(optimizer, config.decay),
            "scaler": torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")}


def _parallel(model: nn.Module, config: TrainConfig, device: torch.device, world_size: int):
    """What the loop calls: ``model``, wrapped in DDP (with SyncBN) and compiled as asked."""
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if config.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if config.compile else model


def _train_epoch(net, checkpointed: dict, batches, run: Run, state: RunState, bar) -> tuple:
    """One epoch through :func:`bnbook.training.fit`; mean training loss and accuracy over
    all ranks. Without SyncBN every rank updated its own running statistics: rank 0's win."""
    device, config = run.device, run.config
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = [0]
    first_bad = torch.full((), float("inf"), dtype=torch.float64, device=device)

    def record(step, loss, logits, batch):
        yb = batch[1]
        with torch.no_grad():  # the first non-finite step, without a sync per step
            first_bad.copy_(torch.where(torch.isfinite(loss.detach()) | first_bad.isfinite(),
                                        first_bad, torch.tensor(float(step), device=device,
                                                                dtype=torch.float64)))
            loss_sum.add_(loss.detach().double() * len(yb))
            correct.add_((logits.detach().argmax(1) == yb).sum())
        seen[0] += len(yb)
        if bar is not None:
            bar.update(1)
            if bar.n % 50 == 1 or bar.n == bar.total:
                bar.set_postfix(loss=f"{loss_sum.item() / seen[0]:.4f}",
                                acc=f"{correct.item() / seen[0]:.4f}", refresh=False)

    state.step = fit(net, batches,
                     lambda m, b: batch_loss(m, b, precision=config.precision,
                                                 channels_last=config.channels_last),
                     checkpointed["optimizer"], scheduler=checkpointed["scheduler"],
                     scaler=checkpointed["scaler"], on_step=record, start_step=state.step)
    if not math.isfinite(loss_sum.item()):
        if bar is not None:
            bar.close()
        bad = first_bad.item()
        where = f" (first at update {int(bad)})" if math.isfinite(bad) else ""
        raise FloatingPointError(f"{run.name}: the run diverged: training loss is not finite "
                                 f"in epoch {state.epoch + 1}{where}; the checkpoint and "
                                 f"result of the epochs before are kept; try a smaller --lr")
    stats = torch.stack([loss_sum, correct.double(),
                         torch.tensor(float(seen[0]), dtype=torch.float64, device=device)])
    if run.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(stats)
        for buf in checkpointed["model"].buffers():
            dist.broadcast(buf, src=0)
    return stats[0].item() / stats[2].item(), stats[1].item() / stats[2].item()


def _progress_bar(run: Run, epoch: int, steps: int):
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"{run.name} epoch {epoch + 1}/{run.config.epochs}",
                unit="step", leave=True, mininterval=2.0, file=sys.stderr)


def train(config: TrainConfig, data, *, run_name: str | None = None,
          out: os.PathLike | str | None = None,
          checkpoint_path: os.PathLike | str | None = None, resume: bool = False,
          dataset: dict | None = None, progress: bool = True,
          command: str | None = None, restart: bool = False,
          run_dir: os.PathLike | str | None = None) -> dict:
    """Train one model and return its result dict (also written to ``out`` every epoch).

    ``data``: ``(x_train, y_train, x_test, y_test)``, uint8 ``(N, 32, 32, 3)`` images and
    int64 ``(N,)`` labels (NumPy arrays or tensors), e.g. from ``bnbook.data.load_cifar10``.
    ``run_name`` names the run (default ``"<model>-seed<seed>"``). ``out``: result JSON and
    ``checkpoint_path``: checkpoint, both rewritten atomically after every epoch by rank 0
    (``None``: not written). ``resume``: continue from ``checkpoint_path`` (an error if there
    is none). ``dataset``: ``{"variant", "sha256"}`` for the provenance
    (``bnbook.data.cifar10_info``), required with ``out``. ``progress``: a tqdm bar per epoch on
    rank 0. ``command``: the command line for the provenance (default ``sys.argv``). The returned dict also holds
    the final ``"model_state"``.

    Nothing is replaced silently: an existing checkpoint without ``resume`` is refused
    (:class:`CheckpointError`) unless ``restart=True``, which deletes it (and its run's
    result at ``out``) if it is a bnbook checkpoint inside ``run_dir``, the run's own folder
    (default: the checkpoint's folder); an existing ``out`` that is not this run's own result
    is refused (``FileExistsError``). Before the first epoch a probe of the checkpoint's size
    is written and removed where ``out`` and the checkpoint go (:func:`check_writable`). A
    checkpoint resumes only on the same settings, data (the checkpoint stores ``dataset`` and
    a sha256 of the arrays) and process count, and with
    ``config.epochs`` at least the epochs it has done (more extends the run). Each process
    needs at least 2 training images; a last batch of exactly one image is dropped
    (:func:`bnbook.experiments.cifar.augment.steps_per_epoch`).

    Distributed: if ``torch.distributed`` is initialised, the model is wrapped in
    ``DistributedDataParallel`` and each rank trains on its shard (see :func:`shard_positions`).

    The run's data, record and overwrite guards are :mod:`bnbook.experiments.cifar.run`; the epochs are
    :func:`_train_epochs`.
    """
    if out is not None and dataset is None:
        raise ValueError("a result file names its data: pass dataset={'variant', 'sha256'} "
                         "with out (bnbook.data.cifar10_info, or 'synthetic-...' and None)")
    world_size, rank = _dist_info()
    x_train, y_train, x_test, y_test = prepare_data(config, data)
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    config, resolved_precision = _resolve_settings(config, device)
    run = Run(run_name or f"{config.model}-seed{config.seed}", config, device, world_size, rank,
              dataset or {"variant": "unspecified", "sha256": None},
              out=Path(out) if out is not None else None,
              checkpoint_path=Path(checkpoint_path) if checkpoint_path is not None else None,
              folder=Path(run_dir) if run_dir is not None else None)
    positions = shard_positions(len(x_train), world_size, rank)
    if len(positions) < 2:
        raise ValueError(f"{len(x_train)} training image(s) over {world_size} process(es): "
                         f"batch norm needs at least 2 images per process and step")
    run.checkpoint_dataset = {**run.dataset,
                              "data_sha256": data_sha256(x_train, y_train, x_test, y_test)}
    lock = (run_lock([run.checkpoint_path, run.out], run.name, command or "") if rank == 0
            else contextlib.nullcontext())
    with lock:
        return _start(run, (x_train, y_train, x_test, y_test), positions, resume, restart,
                      command, resolved_precision, progress)


def _start(run: Run, data: tuple, positions: np.ndarray, resume: bool, restart: bool,
           command: str | None, resolved_precision: dict, progress: bool) -> dict:
    """:func:`train` once the run's folders are locked: restore (``resume``) the checkpoint,
    or find what ``restart`` deletes; check ``out`` and that the outputs can be written; only
    then delete; train. Every refusal comes before anything is deleted or trained."""
    config, device, world_size, rank = run.config, run.device, run.world_size, run.rank
    x_train, x_test = data[0], data[2]
    old_checkpoint = checkpoint_to_delete(run.checkpoint_path, resume, restart, run.folder)
    old_result = (result_to_delete(run.out, checkpoint_started(old_checkpoint), run.folder)
                  if old_checkpoint is not None else None)
    checkpointed = _build(config, device)
    state = new_run_state(command, resolved_precision)
    if resume:
        state = restore_checkpoint(run.checkpoint_path, config, world_size, checkpointed,
                                   resolved_precision, command, dataset=run.checkpoint_dataset,
                                   steps_per_epoch=steps_per_epoch(len(positions),
                                                                   config.batch_size))
    run.result_config = result_config(config, world_size, len(x_train), len(x_test),
                                      steps_per_epoch(len(positions), config.batch_size))
    if resume:
        check_resumed_result(run, state)
    if run.out is not None and old_result is None:
        refuse_another_runs_result(run.out, run, state)  # on every rank, so that all of them stop
    # on every rank, so that all of them stop (only rank 0 writes; the others share its disk)
    check_writable((run.out, 1 << 20), (run.checkpoint_path, checkpoint_bytes(config)))
    if restart:
        delete_restarted_files([old_checkpoint, old_result], rank, world_size)
    net = _parallel(checkpointed["model"], config, device, world_size)
    return _train_epochs(net, checkpointed, run, state, data, positions, progress)


def _train_epochs(net, checkpointed: dict, run: Run, state: RunState, data: tuple,
                  positions: np.ndarray, progress: bool) -> dict:
    """The epochs from ``state.epoch`` to ``config.epochs``: train (:func:`_train_epoch`),
    evaluate, append to the history; after each, rank 0 rewrites the checkpoint and the
    result file. Returns the final result, with the model's ``"model_state"``."""
    config, device, rank = run.config, run.device, run.rank
    x_train, y_train, x_test, y_test = data
    steps = steps_per_epoch(len(positions), config.batch_size)
    session_start = time.perf_counter()
    x_train_dev, y_train_dev = x_train.to(device), y_train.to(device)
    for epoch in range(state.epoch, config.epochs):
        t0 = time.perf_counter()
        batches = epoch_batches(x_train_dev, y_train_dev, positions, config, epoch)
        torch.manual_seed(stream_seed(config.seed, epoch, 2, rank))  # dropout masks
        net.train()
        bar = _progress_bar(run, epoch, steps) if progress and rank == 0 else None
        train_loss, train_acc = _train_epoch(net, checkpointed, batches, run, state, bar)
        val_loss, val_acc = evaluate(checkpointed["model"], x_test, y_test, config.eval_batch_size,
                                     device, config.precision, config.channels_last)
        state.history.append({"epoch": epoch + 1, "train_loss": train_loss,
                              "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
                              "seconds": round(time.perf_counter() - t0, 2)})
        state.epoch = epoch + 1
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{train_acc:.4f}",
                            val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
            bar.close()
        _save_epoch(run, checkpointed, state,
                    state.wall_before + time.perf_counter() - session_start)
    final = run.result(state, now_iso(), state.wall_before + time.perf_counter() - session_start)
    final["model_state"] = checkpointed["model"].state_dict()
    return final


def _save_epoch(run: Run, checkpointed: dict, state: RunState, wall: float) -> None:
    """On rank 0, the checkpoint and the result file after an epoch (where they are wanted);
    the result is ``finished`` after the last epoch."""
    if run.rank == 0 and run.checkpoint_path is not None:
        save_checkpoint(run.checkpoint_path, checkpointed, dataclasses.asdict(run.config),
                        run.world_size, state, wall, dataset=run.checkpoint_dataset)
    if run.rank == 0 and run.out is not None:
        finished = now_iso() if state.epoch == run.config.epochs else None
        write_result_file(run.out, run.result(state, finished, wall))

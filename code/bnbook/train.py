"""Training loop for the Keras ``cifar10_cnn`` experiment: faithful, fast and resumable.

:func:`train` trains :func:`bnbook.models.keras_cnn` on images held in memory as uint8 arrays,
the way Keras' ``model.fit_generator(ImageDataGenerator(...).flow(x, y, batch_size=32))`` does:
RMSprop with inverse-time learning-rate decay, random shifts and horizontal flips, the test set
evaluated in eval mode after every epoch. After every epoch it writes, atomically, a JSON
result file (:func:`load_result`, :func:`load_history`) and a checkpoint; ``resume=True``
continues from the checkpoint and ends with the same history and weights as an uninterrupted
run, because everything random in an epoch (data order, shifts, flips, dropout masks) is a
function of ``(seed, epoch, rank)`` only.

Keras-to-PyTorch translation of the training procedure (the network's is in
:mod:`bnbook.models`):

============================== ================================== ================================
Keras 2.x (cifar10_cnn)        here                               note
============================== ================================== ================================
``rmsprop(lr, decay=1e-6)``    ``torch.optim.RMSprop`` with       identical rule: both add eps
rho 0.9, epsilon 1e-7          ``alpha=rho``, ``eps=1e-7``        *outside* the root, ``p -=``
(``K.epsilon()``)              (:func:`make_optimizer`)           ``lr_t g / (sqrt(a) + eps)``,
                                                                  and start ``a`` at 0
``lr_t = lr / (1 + decay t)``  :func:`keras_inverse_time_lr`, set identical (tf.keras 2.x puts
``t`` = updates done so far    before every update; ``t`` is      eps inside the root; the
                               saved in the checkpoint            Keras 2.2 of the example
                                                                  does not)
``ImageDataGenerator``:        :func:`shift_flip` on the batch,   same distribution; Keras
``width_shift_range=0.1``,     ``F.grid_sample`` (bilinear,       draws per image with NumPy,
``height_shift_range=0.1``,    ``padding_mode='border'``);        we per epoch from
``fill_mode='nearest'``,       shifts ``U(-3.2, 3.2)`` px,        ``(seed, epoch)``; Keras 2
``horizontal_flip=True``       flip probability 0.5               samples with SciPy
                                                                  ``order=1`` (bilinear),
                                                                  Keras 1 used ``order=0``
``flow(shuffle=True)``         :func:`epoch_order`: a new         same
                               permutation every epoch;
                               1563 batches, the last of 16
training loss and accuracy     mean over the epoch's images,      same definition
in the progress bar            in train mode (dropout on, BN
                               with batch statistics)
``validation_data``:           :func:`evaluate` in eval mode,     the batch size does not
the test set, batches of 32    batches of ``eval_batch_size``     change eval-mode results
                               (default 500)
``numpy.random.seed(7)``       ``seed=7`` drives the init,        Keras runs are not
                               order, augmentation, dropout       bit-reproducible anyway
============================== ================================== ================================

Distributed data parallel: run the CLI (:mod:`bnbook.cifar`) under ``torchrun``; each process
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
import io
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnbook.models import keras_cnn
from bnbook.provenance import (REPO_ROOT, atomic_write_bytes, atomic_write_json,
                               device_description, git_commit, now_iso)

__all__ = [
    "KERAS_LR",
    "TrainConfig",
    "keras_inverse_time_lr",
    "make_optimizer",
    "stream_seed",
    "epoch_order",
    "shard_positions",
    "subset_indices",
    "augmentation_params",
    "shift_flip",
    "to_float_images",
    "training_step",
    "evaluate",
    "train",
    "load_result",
    "load_history",
    "resolve_device",
    "resolve_precision",
    "cpu_has_native_bf16",
]

#: The learning rates of the two Keras scripts: the example's baseline and the article's BN net.
KERAS_LR = {"baseline": 1e-4, "bn": 1e-3}
#: Concrete autocast settings: float32 (no autocast), bfloat16 and float16 autocast.
PRECISIONS = ("fp32", "bf16", "fp16")
#: What ``precision`` accepts: a concrete setting or ``"auto"`` (:func:`resolve_precision`).
PRECISION_CHOICES = ("auto",) + PRECISIONS


@dataclass
class TrainConfig:
    """Everything that determines a run's trajectory (plus a few speed-only switches).

    ``lr=None`` takes the script's value (:data:`KERAS_LR`). ``subset=N`` trains on ``N``
    training images and validates on ``N // 5`` test images (:func:`subset_indices`).
    ``threads``, ``compile``, ``device``, ``eval_batch_size`` and ``epochs`` may change on
    resume; the rest may not. ``precision="auto"`` is resolved by :func:`train` with
    :func:`resolve_precision` (bf16 only where it is native); the resolved value is the one
    compared on resume.
    """

    model: str = "baseline"
    epochs: int = 50
    lr: float | None = None
    decay: float = 1e-6
    rho: float = 0.9
    eps: float = 1e-7
    batch_size: int = 32
    seed: int = 7
    subset: int | None = None
    augment: bool = True
    bn_on_logits: bool = True
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    threads: int | None = None
    eval_batch_size: int = 500
    sync_bn: bool = False

    def __post_init__(self):
        if self.model not in KERAS_LR:
            raise ValueError(f"model must be one of {sorted(KERAS_LR)}, got {self.model!r}")
        if self.lr is None:
            self.lr = KERAS_LR[self.model]
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {PRECISION_CHOICES}, "
                             f"got {self.precision!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.decay < 0 or not 0 <= self.rho < 1 or self.eps <= 0:
            raise ValueError(f"need decay >= 0, 0 <= rho < 1, eps > 0; got decay={self.decay}, "
                             f"rho={self.rho}, eps={self.eps}")
        if self.subset is not None and self.subset < 5:
            raise ValueError(f"subset must be at least 5 (it also takes subset // 5 test images), "
                             f"got {self.subset}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive, got {self.threads}")


# Fields that shape the trajectory: a checkpoint only resumes under the same values.
_TRAJECTORY_FIELDS = ("model", "lr", "decay", "rho", "eps", "batch_size", "seed", "subset",
                      "augment", "bn_on_logits", "precision", "channels_last", "sync_bn")


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
    ``alpha``. Set ``lr_t`` with :func:`keras_inverse_time_lr` before each ``step()``.
    """
    return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=rho, eps=eps, momentum=0.0,
                               centered=False, weight_decay=0.0)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------- randomness as f(seed, epoch)


def stream_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A 63-bit seed for one random stream of one epoch (NumPy ``SeedSequence`` mixing).

    Streams: 0 data order, 1 augmentation, 2 dropout (torch global RNG).
    """
    ss = np.random.SeedSequence([int(seed), int(epoch), int(stream), int(rank)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(n)`` used in ``epoch`` (int64, shape ``(n,)``)."""
    return np.random.default_rng(stream_seed(seed, epoch, 0)).permutation(n).astype(np.int64)


def shard_positions(n: int, world_size: int = 1, rank: int = 0) -> np.ndarray:
    """Positions in an epoch's order that process ``rank`` trains on.

    Like ``DistributedSampler``: the order is padded by wrapping around to a multiple of
    ``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...``. With one process
    it is ``arange(n)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    total = math.ceil(n / world_size) * world_size
    return np.arange(rank, total, world_size, dtype=np.int64) % n


def augmentation_params(n: int, seed: int, epoch: int, height: int = 32, width: int = 32,
                        height_shift: float = 0.1, width_shift: float = 0.1,
                        flip_probability: float = 0.5):
    """Per-position shifts and flips for one epoch, as ImageDataGenerator draws them.

    Returns ``shifts`` (float32, ``(n, 2)``: ``(dy, dx)`` in pixels, each uniform in
    ``[-height_shift * height, height_shift * height]`` resp. width) and ``flips`` (bool,
    ``(n,)``, true with probability ``flip_probability``).
    """
    rng = np.random.default_rng(stream_seed(seed, epoch, 1))
    dy = rng.uniform(-height_shift * height, height_shift * height, size=n)
    dx = rng.uniform(-width_shift * width, width_shift * width, size=n)
    flips = rng.random(n) < flip_probability
    return np.stack([dy, dx], axis=1).astype(np.float32), flips


def shift_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Shift each image by a fractional number of pixels, then flip it left-right.

    ``x``: ``(N, C, H, W)`` float; ``shifts``: ``(N, 2)`` = ``(dy, dx)`` in pixels; ``flips``:
    ``(N,)`` bool. Output pixel ``(i, j)`` is the input sampled bilinearly at
    ``(i + dy, j' + dx)`` with ``j' = W - 1 - j`` for a flipped image and ``j`` otherwise;
    samples outside the image take the nearest border pixel (Keras' ``fill_mode='nearest'``,
    SciPy's ``affine_transform(order=1, mode='nearest')``, which Keras calls). Returns a tensor
    like ``x``.
    """
    if x.ndim != 4 or shifts.shape != (x.shape[0], 2) or flips.shape != (x.shape[0],):
        raise ValueError(f"need x (N, C, H, W), shifts (N, 2), flips (N,); got {tuple(x.shape)}, "
                         f"{tuple(shifts.shape)}, {tuple(flips.shape)}")
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    rows = torch.arange(h, device=dev, dtype=dt)
    cols = torch.arange(w, device=dev, dtype=dt)
    src_cols = torch.where(flips.to(dev)[:, None], (w - 1) - cols[None, :], cols[None, :])
    src_rows = rows[None, :] + shifts[:, 0:1].to(dev, dt)
    src_cols = src_cols + shifts[:, 1:2].to(dev, dt)
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gy = (src_rows * (2.0 / (h - 1)) - 1.0)[:, :, None].expand(n, h, w)
    gx = (src_cols * (2.0 / (w - 1)) - 1.0)[:, None, :].expand(n, h, w)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def to_float_images(x_uint8: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 -> ``(N, C, H, W)`` float32 in ``[0, 1]`` (Keras' ``x / 255``)."""
    return x_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def subset_indices(n: int, size: int) -> np.ndarray:
    """Indices of the ``--subset`` images: the first ``size`` of a fixed permutation of
    ``range(n)`` (NumPy ``default_rng(0)``, independent of the run's seed).

    A fixed shuffle rather than the first ``size`` images, because an image-folder copy of
    CIFAR-10 is sorted by class; every run with the same ``size`` sees the same images.
    """
    if not 0 <= size <= n:
        raise ValueError(f"subset size must be in [0, {n}], got {size}")
    return np.random.default_rng(0).permutation(n)[:size].astype(np.int64)


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


def training_step(net: nn.Module, optimizer: torch.optim.Optimizer, scaler, x_uint8: torch.Tensor,
                  y: torch.Tensor, lr: float, augmentation=None, precision: str = "fp32",
                  channels_last: bool = False):
    """One RMSprop update on one batch, as the training loop does it.

    ``x_uint8``: ``(B, 32, 32, 3)`` uint8 on the model's device; ``y``: ``(B,)`` int64;
    ``augmentation``: ``None`` or ``(shifts (B, 2), flips (B,))`` for :func:`shift_flip`;
    ``scaler``: a ``torch.amp.GradScaler`` (disabled unless fp16). Sets the learning rate to
    ``lr``, runs forward under autocast for ``precision`` (``auto``: see
    :func:`resolve_precision`; resolve it first if it may mean fp16, which needs the scaler),
    the loss in float32, backward and the optimizer step. Returns ``(loss, logits)``
    (detached use only).
    """
    xb = to_float_images(x_uint8)
    if augmentation is not None:
        xb = shift_flip(xb, *augmentation)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    _set_lr(optimizer, lr)
    with _autocast(xb.device, precision):
        logits = net(xb)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


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


# ---------------------------------------------------------------- checkpoints and results


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


def _save_checkpoint(path: Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


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


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:])


# ---------------------------------------------------------------- the loop


def _dist_info():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def train(config: TrainConfig, data, *, run_name: str | None = None,
          out: os.PathLike | str | None = None,
          checkpoint_path: os.PathLike | str | None = None, resume: bool = False,
          dataset: dict | None = None, progress: bool = True,
          command: str | None = None) -> dict:
    """Train one model and return its result dict (also written to ``out`` every epoch).

    Parameters
    ----------
    config : TrainConfig
    data : tuple
        ``(x_train, y_train, x_test, y_test)``: uint8 ``(N, 32, 32, 3)`` images and int64
        ``(N,)`` labels (NumPy arrays or tensors), e.g. from ``bnbook.data.load_cifar10``.
    run_name : str
        Names the run in the result file; default ``"<model>-seed<seed>"``.
    out : path or None
        Result JSON, rewritten atomically after every epoch (rank 0 only). ``None``: no file.
    checkpoint_path : path or None
        Checkpoint rewritten atomically after every epoch (rank 0 only). ``None``: none.
    resume : bool
        Continue from ``checkpoint_path`` if it exists (error if it does not).
    dataset : dict or None
        ``{"variant", "sha256"}`` for the provenance (``bnbook.data.cifar10_info``).
    progress : bool
        tqdm bar per epoch (rank 0 only).
    command : str or None
        Command line for the provenance; default ``sys.argv``.

    Distributed: if ``torch.distributed`` is initialised, the model is wrapped in
    ``DistributedDataParallel`` and each rank trains on its shard (see :func:`shard_positions`).
    """
    import torch.distributed as dist

    world_size, rank = _dist_info()
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

    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    # From here on config.precision is the resolved one: what runs, what the checkpoint's
    # settings check compares and what the result records. The caller's config is untouched.
    precision_requested = config.precision
    cpu_native_bf16 = cpu_has_native_bf16()
    cuda_native_bf16 = _cuda_has_bf16() if device.type == "cuda" else None
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
    run_name = run_name or f"{config.model}-seed{config.seed}"
    precision_record = {"precision_requested": precision_requested,
                        "cpu_native_bf16": cpu_native_bf16,
                        **({"cuda_native_bf16": cuda_native_bf16} if device.type == "cuda" else {})}
    first_precision_record = precision_record
    out = Path(out) if out is not None else None
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    is_main = rank == 0

    torch.manual_seed(config.seed)
    model = keras_cnn(batch_norm=config.model == "bn", bn_on_logits=config.bn_on_logits)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model, config.lr, config.rho, config.eps)
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")

    history: list[dict] = []
    step = 0
    start_epoch = 0
    wall_before = 0.0
    started = now_iso()
    first_commit = git_commit()
    first_command = command or _command_line()
    resumes: list[dict] = []
    if resume:
        if checkpoint_path is None or not checkpoint_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint_path}")
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        saved = ckpt["config"]
        mismatched = {k: (saved.get(k), getattr(config, k)) for k in _TRAJECTORY_FIELDS
                      if saved.get(k) != getattr(config, k)}
        if mismatched:
            hint = ""
            if "precision" in mismatched and precision_requested == "auto":
                hint = (f"; precision 'auto' resolves to {config.precision!r} here "
                        f"(cpu_native_bf16={cpu_native_bf16}): pass precision "
                        f"{saved.get('precision')!r} explicitly to continue the run")
            raise ValueError(f"--resume: the checkpoint was trained with different settings "
                             f"(saved, now): {mismatched}{hint}")
        if ckpt.get("world_size", 1) != world_size:
            raise ValueError(f"--resume: checkpoint written with {ckpt.get('world_size')} "
                             f"processes, now {world_size}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        step, start_epoch, history = ckpt["step"], ckpt["epoch"], ckpt["history"]
        wall_before, started = ckpt["wall_seconds"], ckpt["started"]
        first_commit, first_command = ckpt["git_commit"], ckpt["command"]
        # checkpoints from before "auto" existed: the precision was given explicitly
        first_precision_record = ckpt.get("precision_record", {
            "precision_requested": saved.get("precision"), "cpu_native_bf16": None})
        resumes = ckpt.get("resumes", []) + [{"at_epoch": start_epoch, "git_commit": git_commit(),
                                              "command": command or _command_line(),
                                              "started": now_iso(), **precision_record}]
        _set_rng_states(ckpt["rng"])

    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if config.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp_model = model
    net = torch.compile(ddp_model) if config.compile else ddp_model

    n_train = len(x_train)
    positions = shard_positions(n_train, world_size, rank)
    steps_per_epoch = math.ceil(len(positions) / config.batch_size)
    dataset = dataset or {"variant": "unspecified", "sha256": None}
    config_record = {**dataclasses.asdict(config), "world_size": world_size,
                     "train_images": n_train, "test_images": len(x_test),
                     "steps_per_epoch": steps_per_epoch,
                     "global_batch_size": config.batch_size * world_size,
                     "optimizer": "RMSprop (Keras 2.x rule, eps outside sqrt), "
                                  "lr_t = lr / (1 + decay * t) per update",
                     "augmentation": ("shift U(-3.2, 3.2) px each axis, bilinear, nearest fill; "
                                      "horizontal flip p=0.5") if config.augment else "none"}

    def result(finished: str | None, wall: float) -> dict:
        return {
            "run": run_name,
            "model": config.model,
            "config": config_record,
            "provenance": {
                "dataset": dataset.get("variant"),
                "dataset_sha256": dataset.get("sha256"),
                "device": device_description(str(device)),
                "torch": torch.__version__,
                "precision": config.precision,
                **first_precision_record,
                "git_commit": first_commit,
                "command": first_command,
                "started": started,
                "finished": finished,
                "wall_seconds": round(wall, 1),
                **({"resumes": resumes} if resumes else {}),
            },
            "history": history,
        }

    session_start = time.perf_counter()
    x_train_dev = x_train.to(device)
    y_train_dev = y_train.to(device)
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        order = epoch_order(n_train, config.seed, epoch)
        if config.augment:
            shifts_np, flips_np = augmentation_params(n_train, config.seed, epoch,
                                                      x_train.shape[1], x_train.shape[2])
            shifts_all = torch.from_numpy(shifts_np)
            flips_all = torch.from_numpy(flips_np)
        torch.manual_seed(stream_seed(config.seed, epoch, 2, rank))  # dropout masks
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        bar = None
        if progress and is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"{run_name} epoch {epoch + 1}/{config.epochs}",
                       unit="step", leave=True, mininterval=2.0, file=sys.stderr)
        for b in range(steps_per_epoch):
            pos = positions[b * config.batch_size:(b + 1) * config.batch_size]
            idx = torch.from_numpy(order[pos]).to(device)
            yb = y_train_dev[idx]
            augmentation = None
            if config.augment:
                pos_t = torch.from_numpy(pos)
                augmentation = (shifts_all[pos_t], flips_all[pos_t])
            loss, logits = training_step(
                net, optimizer, scaler, x_train_dev[idx], yb,
                keras_inverse_time_lr(config.lr, config.decay, step), augmentation,
                precision=config.precision, channels_last=config.channels_last)
            step += 1
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(yb)
                correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
            if bar is not None:
                bar.update(1)
                if b % 50 == 0 or b == steps_per_epoch - 1:
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}",
                                    acc=f"{correct.item() / seen:.4f}", refresh=False)
        if not math.isfinite(loss_sum.item()):
            if bar is not None:
                bar.close()
            raise FloatingPointError(f"{run_name}: training loss is not finite in epoch "
                                     f"{epoch + 1}")
        stats = torch.stack([loss_sum, correct.double(),
                             torch.tensor(float(seen), dtype=torch.float64, device=device)])
        if world_size > 1:
            dist.all_reduce(stats)
            # Without SyncBN every rank updated its own running statistics; use rank 0's.
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        train_loss = stats[0].item() / stats[2].item()
        train_acc = stats[1].item() / stats[2].item()
        val_loss, val_acc = evaluate(model, x_test, y_test, config.eval_batch_size, device,
                                     config.precision, config.channels_last)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                        "val_loss": val_loss, "val_acc": val_acc, "seconds": round(seconds, 2)})
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{train_acc:.4f}",
                            val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
            bar.close()
        wall = wall_before + time.perf_counter() - session_start
        done = epoch + 1 == config.epochs
        if is_main:
            if checkpoint_path is not None:
                _save_checkpoint(checkpoint_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "step": step, "epoch": epoch + 1,
                    "history": history, "config": dataclasses.asdict(config),
                    "world_size": world_size, "rng": _rng_states(), "wall_seconds": wall,
                    "started": started, "git_commit": first_commit, "command": first_command,
                    "precision_record": first_precision_record, "resumes": resumes})
            if out is not None:
                atomic_write_json(out, result(now_iso() if done else None, wall))
    wall = wall_before + time.perf_counter() - session_start
    final = result(now_iso(), wall)
    final["model_state"] = model.state_dict()
    return final

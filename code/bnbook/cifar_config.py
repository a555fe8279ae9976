"""The settings of a CIFAR-10 run (:class:`TrainConfig`) and which of them fix its trajectory.

:func:`bnbook.train.train` takes a :class:`TrainConfig`; a checkpoint resumes only under the
same :data:`TRAJECTORY_FIELDS` (:mod:`bnbook.checkpoints`). ``bnbook.train`` re-exports all of it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["KERAS_LR", "MAX_SEED", "PRECISIONS", "PRECISION_CHOICES", "TrainConfig",
           "TRAJECTORY_FIELDS"]

#: The learning rates of the two Keras scripts: the example's baseline and the article's BN net;
#: ``lrn`` (the baseline with AlexNet's local response normalisation) keeps the baseline's.
KERAS_LR = {"baseline": 1e-4, "bn": 1e-3, "lrn": 1e-4}
#: Concrete autocast settings: float32 (no autocast), bfloat16 and float16 autocast.
PRECISIONS = ("fp32", "bf16", "fp16")
#: What ``precision`` accepts: a concrete setting or ``"auto"`` (:func:`resolve_precision`).
PRECISION_CHOICES = ("auto",) + PRECISIONS
#: The largest seed: ``torch.manual_seed`` takes 0..2**64-1, NumPy any non-negative int; the
#: per-stream seeds (:func:`bnbook.cifar_augment.stream_seed`) are derived from it.
MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    """Everything that determines a run's trajectory (plus a few speed-only switches).

    ``keep_dropout`` keeps the baseline's dropout in the BN model (an ablation);
    ``shift_order`` is 1 for bilinear sub-pixel shifts (Keras >= 2.1.4, the default) or 0 for
    whole-pixel shifts (nearest neighbour, Keras < 2.1.4). ``lr=None`` takes the script's value (:data:`KERAS_LR`). ``subset=N`` trains on ``N``
    training images and validates on ``N // 5`` test images (:func:`subset_indices`).
    ``compile``, ``device``, ``eval_batch_size`` and ``epochs`` may change on resume
    (``epochs`` only upwards); the rest may not, nor may the thread count in effect
    (results depend on it; the checkpoint records it). ``lr``, ``decay``, ``rho`` and
    ``eps`` must be finite, ``seed`` in ``0..2**63-1``. ``precision="auto"`` is resolved by
    :func:`train` with :func:`resolve_precision` (bf16 only where it is native); the
    resolved value is the one compared on resume.
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
    keep_dropout: bool = False
    shift_order: int = 1
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
        for name in ("decay", "rho", "eps"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
                or not 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be in 0..2**63-1, got {self.seed!r}")
        if self.decay < 0 or not 0 <= self.rho < 1 or self.eps <= 0:
            raise ValueError(f"need decay >= 0, 0 <= rho < 1, eps > 0; got decay={self.decay}, "
                             f"rho={self.rho}, eps={self.eps}")
        if self.subset is not None and self.subset < 5:
            raise ValueError(f"subset must be at least 5 (it also takes subset // 5 test images), "
                             f"got {self.subset}")
        if self.keep_dropout and self.model != "bn":
            raise ValueError("keep_dropout only applies to the bn model (the baseline always "
                             "has its dropout)")
        if self.shift_order not in (0, 1):
            raise ValueError(f"shift_order must be 0 (whole pixels, Keras < 2.1.4) or 1 "
                             f"(bilinear, Keras >= 2.1.4), got {self.shift_order!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive, got {self.threads}")


#: Fields that shape the trajectory: a checkpoint only resumes under the same values.
TRAJECTORY_FIELDS = ("model", "lr", "decay", "rho", "eps", "batch_size", "seed", "subset",
                     "augment", "bn_on_logits", "keep_dropout", "shift_order", "precision",
                     "channels_last", "sync_bn")

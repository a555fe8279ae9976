"""The settings of a CIFAR-10 run (:class:`TrainConfig`) and which of them fix its trajectory.

:func:`bnbook.experiments.cifar.train.train` takes a :class:`TrainConfig`; a checkpoint resumes only under the
same :data:`TRAJECTORY_FIELDS` (:mod:`bnbook.experiments.cifar.checkpoints`).

Each setting and its default are written once, as a field of :class:`TrainConfig`; the field's
``metadata["cli"]`` (made by :func:`_option`) says how ``python -m bnbook.experiments.cifar`` spells it.
:func:`add_config_arguments` turns the fields into ``argparse`` options (``--batch-size`` for
``batch_size``; ``--no-augment`` for a setting that is on by default) and
:func:`config_from_args` turns the parsed options back into a :class:`TrainConfig`.
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import dataclass, field, fields

from bnbook.cli import bounded_float, positive_int

__all__ = ["KERAS_LR", "MAX_SEED", "PRECISIONS", "PRECISION_CHOICES", "TrainConfig",
           "TRAJECTORY_FIELDS", "add_config_arguments", "config_from_args"]

#: The learning rates of the two Keras scripts: the example's baseline and the article's BN net.
KERAS_LR = {"baseline": 1e-4, "bn": 1e-3, "lrn": 1e-4}
#: Concrete autocast settings: float32 (no autocast), bfloat16 and float16 autocast.
PRECISIONS = ("fp32", "bf16", "fp16")
#: What ``precision`` accepts: a concrete setting or ``"auto"`` (:func:`resolve_precision`).
PRECISION_CHOICES = ("auto",) + PRECISIONS
#: The largest seed: ``torch.manual_seed`` takes 0..2**64-1, NumPy any non-negative int; the
#: per-stream seeds (:func:`bnbook.experiments.cifar.augment.stream_seed`) are derived from it.
MAX_SEED = 2**63 - 1


def _option(default, help: str | None = None, *, flag: str | None = None, cli: bool = True,
            **argparse_kwargs):
    """A :class:`TrainConfig` field with ``default`` and how the command line spells it:
    ``flag`` (default ``--`` and the field's name with dashes; a boolean that defaults to
    ``True`` needs a ``--no-...`` flag that switches it off), ``help``, and further
    ``argparse`` arguments (``type``, ``choices``, ``required``). ``cli=False``: a setting with
    no option (it keeps its default on the command line)."""
    spec = dict(flag=flag, help=help, **argparse_kwargs) if cli else None
    return field(default=default, metadata={"cli": spec})


@dataclass
class TrainConfig:
    """Everything that determines a run's trajectory (plus a few speed-only switches).

    ``keep_dropout`` keeps the baseline's dropout in the BN model (an ablation);
    ``shift_order`` is 1 for bilinear sub-pixel shifts (Keras >= 2.1.4, the default) or 0 for
    whole-pixel shifts (nearest neighbour, Keras < 2.1.4). ``lr=None`` takes the script's
    value (:data:`KERAS_LR`). ``subset=N`` trains on ``N`` training images and validates on
    ``N // 5`` test images (:func:`subset_indices`).
    ``compile``, ``device``, ``eval_batch_size`` and ``epochs`` may change on resume
    (``epochs`` only upwards); the rest may not, nor may the thread count in effect
    (results depend on it; the checkpoint records it). ``lr``, ``decay``, ``rho`` and
    ``eps`` must be finite, ``seed`` in ``0..2**63-1``. ``precision="auto"`` is resolved by
    :func:`train` with :func:`resolve_precision` (bf16 only where it is native); the
    resolved value is the one compared on resume.
    """

    model: str = _option("baseline", "the Keras example (baseline), the article's BN variant "
                         "(bn) or the baseline with AlexNet's local response normalisation "
                         "(lrn)", choices=["baseline", "bn", "lrn"], required=True)
    epochs: int = _option(50, type=int)
    lr: float | None = _option(None, "initial learning rate (default: 1e-4 baseline and lrn, 1e-3 bn)",
                               type=bounded_float(0.0, 10.0, low_open=True))
    decay: float = _option(1e-6, "Keras inverse-time decay per update", type=float)
    rho: float = _option(0.9, cli=False)
    eps: float = _option(1e-7, cli=False)
    batch_size: int = _option(32, "images per step and process", type=int)
    seed: int = _option(7, type=int)
    subset: int | None = _option(None, "train on N images, validate on N//5 test images (a "
                                       "fixed random choice)", type=int)
    augment: bool = _option(True, "switch off shifts and flips", flag="--no-augment")
    bn_on_logits: bool = _option(True, "bn model: leave the 10 logits unnormalised (the article "
                                       "normalises them)", flag="--no-bn-on-logits")
    keep_dropout: bool = _option(False, "BN model only: keep the baseline's dropout (an ablation)")
    shift_order: int = _option(1, "1: bilinear sub-pixel shifts (Keras >= 2.1.4, default); "
                                  "0: whole-pixel shifts (Keras < 2.1.4)",
                               type=int, choices=[0, 1])
    precision: str = _option("auto", "autocast dtype; auto (default): bf16 where the CPU "
                                     "(AVX-512 BF16, AMX) or GPU computes it natively, else fp32 "
                                     "on CPU and fp16 on CUDA; fp16 only on CUDA, with a "
                                     "GradScaler", choices=list(PRECISION_CHOICES))
    channels_last: bool = _option(False, "NHWC memory format")
    compile: bool = _option(False, "torch.compile the model")
    device: str = _option("auto", choices=["auto", "cpu", "cuda"])
    threads: int | None = _option(None, "torch intra-op threads", type=positive_int)
    eval_batch_size: int = _option(500, type=int)
    sync_bn: bool = _option(False, "under torchrun: SyncBatchNorm across processes (GPUs only)")

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


def _flag_and_dest(f) -> tuple[str, str, bool]:
    """``(flag, argparse dest, whether the option switches the setting off)`` of a field."""
    spec = f.metadata["cli"]
    flag = spec["flag"] or "--" + f.name.replace("_", "-")
    negated = f.default is True
    if negated and not flag.startswith("--no-"):
        raise TypeError(f"TrainConfig.{f.name} is on by default: its flag must be --no-...")
    return flag, flag[2:].replace("-", "_"), negated


def _cli_fields():
    return [f for f in fields(TrainConfig) if f.metadata.get("cli") is not None]


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one option per :class:`TrainConfig` field that has one, with the field's default
    (a boolean is a switch: ``--channels-last`` turns it on, ``--no-augment`` off)."""
    for f in _cli_fields():
        flag, dest, _ = _flag_and_dest(f)
        kwargs = {k: v for k, v in f.metadata["cli"].items() if k != "flag" and v is not None}
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=dest, action="store_true", **kwargs)
        else:
            parser.add_argument(flag, dest=dest, default=f.default, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` that options parsed with :func:`add_config_arguments` ask
    for (settings without an option keep their defaults)."""
    values = {}
    for f in _cli_fields():
        _, dest, negated = _flag_and_dest(f)
        value = getattr(args, dest)
        values[f.name] = (not value) if negated else value
    return TrainConfig(**values)

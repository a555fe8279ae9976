"""Command line for the CIFAR-10 experiment: ``python -m bnbook.cifar --model baseline|bn``.

Examples (from the repository root)::

    # the book's two 50-epoch runs (CPU: channels_last, 2 threads; precision auto)
    python -m bnbook.cifar --model baseline --epochs 50 --channels-last
    python -m bnbook.cifar --model bn --epochs 50 --channels-last

    # interrupted? the same command with --resume continues from the last finished epoch
    python -m bnbook.cifar --model bn --epochs 50 --channels-last --resume

    # quick look on a subset; distributed over 2 processes (gloo on CPU, NCCL on GPUs)
    python -m bnbook.cifar --model bn --epochs 2 --subset 5000
    torchrun --nproc_per_node=2 -m bnbook.cifar --model bn --epochs 2 --subset 5000

Results go to ``data/results/cifar10/<run-name>.json`` (``--out``), checkpoints to
``runs/<run-name>/checkpoint.pt`` (``--checkpoint``); both are rewritten atomically after
every epoch. ``--synthetic N`` trains on ``N`` random images instead of CIFAR-10 (for tests
and benchmarks). ``--sync-bn`` converts BN to ``SyncBatchNorm``, which PyTorch runs on GPUs
only; on CPU the run stops with a message that says so.

``--precision auto`` (the default) uses bf16 autocast where the hardware computes bf16
natively - a CPU with AVX-512 BF16 or AMX, a CUDA GPU with bf16 - and float32 on other CPUs,
where emulated bf16 is several times slower than float32 (fp16 with a gradient scaler on
CUDA GPUs without bf16); see ``bnbook.train.resolve_precision``. The run name, the result
file and the checkpoint carry the resolved precision; the result's provenance also records
``precision_requested`` and ``cpu_native_bf16``. ``--precision fp32|bf16|fp16`` forces one.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from bnbook.provenance import REPO_ROOT

__all__ = ["build_parser", "synthetic_cifar", "main"]

RESULTS_DIR = REPO_ROOT / "data" / "results" / "cifar10"
RUNS_DIR = REPO_ROOT / "runs"


def synthetic_cifar(n: int, seed: int = 0):
    """``n`` random CIFAR-shaped training images and ``max(n // 5, 1)`` test images.

    Returns ``(x_train, y_train, x_test, y_test)`` like ``bnbook.data.load_cifar10``: uint8
    ``(n, 32, 32, 3)``, int64 labels in ``[0, 10)``. Each class gets its own mean colour so
    that there is something to learn.
    """
    if n < 1:
        raise ValueError(f"synthetic dataset size must be positive, got {n}")
    rng = np.random.default_rng(seed)
    n_test = max(n // 5, 1)
    y = rng.integers(0, 10, size=n + n_test).astype(np.int64)
    colours = rng.uniform(40, 215, size=(10, 3))
    x = colours[y][:, None, None, :] + rng.normal(0, 40, size=(n + n_test, 32, 32, 3))
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x[:n], y[:n], x[n:], y[n:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bnbook.cifar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["baseline", "bn"], required=True,
                   help="the Keras example (baseline) or the article's BN variant (bn)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default: 1e-4 baseline, 1e-3 bn)")
    p.add_argument("--decay", type=float, default=1e-6, help="Keras inverse-time decay per update")
    p.add_argument("--batch-size", type=int, default=32, help="images per step and process")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--subset", type=int, default=None,
                   help="train on N images, validate on N//5 test images (a fixed random choice)")
    p.add_argument("--no-augment", action="store_true", help="switch off shifts and flips")
    p.add_argument("--no-bn-on-logits", action="store_true",
                   help="bn model: leave the 10 logits unnormalised (the article normalises them)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast dtype; auto (default): bf16 where the CPU (AVX-512 BF16, "
                        "AMX) or GPU computes it natively, else fp32 on CPU and fp16 on "
                        "CUDA; fp16 only on CUDA, with a GradScaler")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: SyncBatchNorm across processes (GPUs only)")
    p.add_argument("--run-name", default=None,
                   help="default: <model>-lr<lr>-e<epochs>[-sub<N>]-seed<seed>-<precision>, "
                        "with auto replaced by the precision it resolves to")
    p.add_argument("--out", default=None, help="result JSON (default data/results/cifar10/<run>.json)")
    p.add_argument("--checkpoint", default=None, help="default runs/<run>/checkpoint.pt")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="train on N random images instead of CIFAR-10")
    p.add_argument("--data-dir", default=None, help="where CIFAR-10 is cached (default $BNBOOK_DATA)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--save-final-weights", default=None, metavar="PATH",
                   help="save the final state_dict of every process to PATH, where '{rank}' "
                        "in PATH becomes the process rank (to check that DDP replicas agree)")
    return p


def default_run_name(args, lr: float, precision: str | None = None) -> str:
    """``<model>-lr<lr>-e<epochs>[-sub<N>][-synthetic<N>]-seed<seed>-<precision>``.

    ``precision`` is the resolved precision; by default ``args.precision`` resolved on
    ``args.device`` with :func:`bnbook.train.resolve_precision`, so the name never says
    ``auto`` and runs in different precisions never share a file.
    """
    if precision is None:
        precision = getattr(args, "precision", "auto")
    if precision == "auto":
        from bnbook.train import resolve_precision

        precision = resolve_precision("auto", getattr(args, "device", "auto"))
    name = f"{args.model}-lr{lr:g}-e{args.epochs}"
    if args.subset:
        name += f"-sub{args.subset}"
    if args.synthetic:
        name += f"-synthetic{args.synthetic}"
    return f"{name}-seed{args.seed}-{precision}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    import torch.distributed as dist

    from bnbook.train import KERAS_LR, TrainConfig, resolve_precision, train

    config = TrainConfig(
        model=args.model, epochs=args.epochs, lr=args.lr, decay=args.decay,
        batch_size=args.batch_size, seed=args.seed, subset=args.subset,
        augment=not args.no_augment, bn_on_logits=not args.no_bn_on_logits,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile,
        device=args.device, threads=args.threads, eval_batch_size=args.eval_batch_size,
        sync_bn=args.sync_bn)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        if args.sync_bn and not use_cuda:
            print("error: --sync-bn needs CUDA devices: PyTorch's SyncBatchNorm refuses CPU "
                  "tensors ('SyncBatchNorm expected input tensor to be on GPU'). On CPU run "
                  "without --sync-bn (each process then normalises over its own shard).",
                  file=sys.stderr)
            return 2
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        # after set_device: on CUDA the bf16 check looks at the current device
        precision = resolve_precision(args.precision, args.device)
        run_name = args.run_name or default_run_name(args, config.lr or KERAS_LR[args.model],
                                                     precision)
        out = Path(args.out) if args.out else RESULTS_DIR / f"{run_name}.json"
        checkpoint = (Path(args.checkpoint) if args.checkpoint
                      else RUNS_DIR / run_name / "checkpoint.pt")
        if args.synthetic:
            data = synthetic_cifar(args.synthetic, seed=args.seed)
            dataset = {"variant": f"synthetic-random-{args.synthetic}", "sha256": None}
        else:
            from bnbook.data import cifar10_info, load_cifar10

            rank0 = not dist.is_initialized() or dist.get_rank() == 0
            data = load_cifar10(data_dir=args.data_dir, progress=rank0 and not args.no_progress)
            info = cifar10_info(data_dir=args.data_dir)
            dataset = {"variant": info["variant"], "sha256": info["sha256"]}
        # The arguments this run was given (argv, or the command line): a command that reruns it.
        command = shlex.join(["python", "-m", "bnbook.cifar",
                              *(sys.argv[1:] if argv is None else argv)])
        result = train(config, data, run_name=run_name, out=out, checkpoint_path=checkpoint,
                       resume=args.resume, dataset=dataset, progress=not args.no_progress,
                       command=command)
        if args.save_final_weights:
            rank = dist.get_rank() if dist.is_initialized() else 0
            path = Path(args.save_final_weights.replace("{rank}", str(rank)))
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(result["model_state"], path)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    last = result["history"][-1] if result["history"] else None
    if last is not None and (world_size == 1 or int(os.environ.get("RANK", "0")) == 0):
        print(f"{run_name}: epoch {last['epoch']} val_acc {last['val_acc']:.4f} "
              f"val_loss {last['val_loss']:.4f}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

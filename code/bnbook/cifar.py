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

A run lives in ``runs/<run>/`` (git-ignored), where ``<run>`` is ``--run-name`` or the run's
settings without the epoch count: ``result.json`` (``--out``) and ``checkpoint.pt``
(``--checkpoint``), both rewritten atomically after every epoch. Because the folder does not
depend on ``--epochs``, ``--resume --epochs 80`` extends a 50-epoch run. An existing
checkpoint is never replaced silently: continue it with ``--resume`` or delete it with
``--restart``. An explicit ``--out`` onto another run's result file is refused.

Publishing a run into the book's results is a separate, deliberate step::

    python -m bnbook.cifar publish runs/<run>      # -> data/results/cifar10/<run name>.json
    python -m bnbook.cifar --model bn --epochs 50 --publish   # the same, after training

It refuses to overwrite an existing file unless ``--force`` (or the file is this run's own
earlier publication); an unfinished run is published with ``"partial": true`` in its
provenance. ``--synthetic N`` (``N >= 5``) trains on ``N`` random images instead of CIFAR-10
(for tests and benchmarks). ``--sync-bn`` converts BN to ``SyncBatchNorm``, which PyTorch
runs on GPUs only; on CPU the run stops with a message that says so. Refused settings,
checkpoints and files end the command with ``error: ...`` and exit status 2.

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
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from bnbook.cli import (add_allow_unknown_data, bounded_float, check_known_data, positive_int,
                        report_errors)
from bnbook.provenance import REPO_ROOT

__all__ = ["build_parser", "synthetic_cifar", "publish", "main"]

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
    p.add_argument("--lr", type=bounded_float(0.0, 10.0, low_open=True), default=None,
                   help="initial learning rate (default: 1e-4 baseline, 1e-3 bn)")
    p.add_argument("--decay", type=float, default=1e-6, help="Keras inverse-time decay per update")
    p.add_argument("--batch-size", type=int, default=32, help="images per step and process")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--subset", type=int, default=None,
                   help="train on N images, validate on N//5 test images (a fixed random choice)")
    p.add_argument("--no-augment", action="store_true", help="switch off shifts and flips")
    p.add_argument("--keep-dropout", action="store_true",
                   help="BN model only: keep the baseline's dropout (an ablation)")
    p.add_argument("--shift-order", type=int, choices=[0, 1], default=1,
                   help="1: bilinear sub-pixel shifts (Keras >= 2.1.4, default); "
                        "0: whole-pixel shifts (Keras < 2.1.4)")
    p.add_argument("--no-bn-on-logits", action="store_true",
                   help="bn model: leave the 10 logits unnormalised (the article normalises them)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast dtype; auto (default): bf16 where the CPU (AVX-512 BF16, "
                        "AMX) or GPU computes it natively, else fp32 on CPU and fp16 on "
                        "CUDA; fp16 only on CUDA, with a GradScaler")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: SyncBatchNorm across processes (GPUs only)")
    p.add_argument("--run-name", default=None,
                   help="default: <model>-lr<lr>-e<epochs>[-sub<N>]-seed<seed>-<precision>, "
                        "with auto replaced by the precision it resolves to")
    p.add_argument("--out", default=None, help="result JSON (default runs/<run>/result.json)")
    p.add_argument("--checkpoint", default=None, help="default runs/<run>/checkpoint.pt")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint (a larger --epochs extends the run)")
    p.add_argument("--restart", action="store_true",
                   help="delete an existing checkpoint (and its result) and start over")
    p.add_argument("--publish", action="store_true",
                   help="after training, copy the result to data/results/cifar10/<run name>.json")
    add_allow_unknown_data(p)
    p.add_argument("--force", action="store_true",
                   help="with --publish: overwrite an existing published result")
    p.add_argument("--draft", action="store_true", help=_DRAFT_HELP)
    p.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="train on N random images instead of CIFAR-10")
    p.add_argument("--data-dir", default=None, help="where CIFAR-10 is cached (default $BNBOOK_DATA)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--save-final-weights", default=None, metavar="PATH",
                   help="save the final state_dict of every process to PATH, where '{rank}' "
                        "in PATH becomes the process rank (to check that DDP replicas agree)")
    return p


def default_run_name(args, lr: float, precision: str | None = None) -> str:
    """``<model>-lr<lr>-e<epochs>[-sub<N>][-synthetic<N>][-noaug][-shift0][-dropout]
    [-nologitbn][-bs<N>][-decay<d>][-nhwc|-nchw][-syncbn][-ws<N>]-seed<seed>-<precision>``:
    every setting that changes the trajectory (:func:`_setting_suffix`), so that two runs
    with different settings never share a folder or a published file.

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
    # the ablations, so that they never share a folder with the default runs
    if getattr(args, "no_augment", False):
        name += "-noaug"
    if getattr(args, "shift_order", 1) == 0:
        name += "-shift0"
    if getattr(args, "keep_dropout", False):
        name += "-dropout"
    if getattr(args, "no_bn_on_logits", False) and args.model == "bn":
        name += "-nologitbn"
    return f"{name}{_setting_suffix(args, precision)}-seed{args.seed}-{precision}"


#: The memory format each precision's runs use unless the name says otherwise: the book's
#: bf16 runs are channels_last (its CPU setting), its float32 runs contiguous.
CHANNELS_LAST_BY_PRECISION = {"bf16": True, "fp32": False, "fp16": False}


def _setting_suffix(args, precision: str) -> str:
    """The other settings that change a run's trajectory, where they differ from the book's
    (so that runs with the book's settings keep their names): ``-bs<N>``, ``-decay<d>``,
    ``-nhwc``/``-nchw``, ``-syncbn``, ``-ws<N>`` (processes)."""
    suffix = ""
    if getattr(args, "batch_size", 32) != 32:
        suffix += f"-bs{args.batch_size}"
    if getattr(args, "decay", 1e-6) != 1e-6:
        suffix += f"-decay{args.decay:g}"
    channels_last = bool(getattr(args, "channels_last", False))
    if channels_last != CHANNELS_LAST_BY_PRECISION.get(precision, False):
        suffix += "-nhwc" if channels_last else "-nchw"
    if getattr(args, "sync_bn", False):
        suffix += "-syncbn"
    if getattr(args, "world_size", 1) > 1:
        suffix += f"-ws{args.world_size}"
    return suffix


#: The smallest ``--synthetic N``: a test image (``N // 5``) and 2 images per BN batch.
MIN_SYNTHETIC = 5


def default_run_dir_name(args, lr: float, precision: str | None = None) -> str:
    """The folder of a run under ``runs/``: ``--run-name``, or :func:`default_run_name`
    without the epoch count, so that extending a run (``--resume --epochs``) finds it."""
    if getattr(args, "run_name", None):
        return args.run_name
    name = default_run_name(args, lr, precision)
    return name.replace(f"-e{args.epochs}-", "-", 1) if f"-e{args.epochs}-" in name else name


#: What a run or file name may be: no folder separators, no leading dot, at most 150 characters
#: (the file system allows 255 bytes; the checkpoint's temporary file adds a suffix).
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,149}")


def check_name(name, what: str) -> str:
    """``name`` if it is a plain file name (:data:`_SAFE_NAME`), else ``ValueError`` naming
    ``what`` (the argument): a name never leaves its folder."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{what} {str(name)[:80]!r} is not a plain name: use at most 150 "
                         f"letters, digits and . _ + = - (no '/', no '..', no leading dot)")
    return name


def _result_target(source: Path, name: str | None = None) -> tuple[dict, Path]:
    import json

    from bnbook.results import check_run

    source = Path(source)
    if source.is_dir():
        source = source / "result.json"
    elif not source.exists() and (RUNS_DIR / source / "result.json").exists():
        source = RUNS_DIR / source / "result.json"
    if not source.is_file():
        raise FileNotFoundError(f"no run result at {source}: give a runs/<run> folder, its "
                                f"name under runs/, or a result JSON")
    try:
        result = json.loads(source.read_text(encoding="utf-8"))
        if not isinstance(result, dict):
            raise ValueError(f"a JSON {type(result).__name__}, not an object")
        check_run(result)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{source} is not a run's result file ({err}); publish the "
                         f"result.json a run of python -m bnbook.cifar wrote") from None
    target_name = name if name is not None else result["run"]
    check_name(target_name, "--as" if name is not None else f"{source}: the run name")
    return result, RESULTS_DIR / f"{target_name}.json"


_DRAFT_HELP = ("with --publish: publish a run made from uncommitted code (a +dirty commit) "
               "as a draft (provenance draft: true), which the book does not read")


def publish(source: os.PathLike | str, force: bool = False, name: str | None = None,
            results_dir: os.PathLike | str | None = None, draft: bool = False) -> Path:
    """Copy a run's result (a ``runs/<run>`` folder, its name, or a result file) to
    ``data/results/cifar10/<run name>.json`` (``name`` overrides the run name).

    Refuses (``FileExistsError``) to overwrite an existing file unless ``force``, or the file
    is an earlier publication of the same run (same ``provenance.started``). A result whose
    run has not finished is published with ``provenance["partial"] = True``. A run from a
    ``+dirty`` tree is refused (``ValueError``) unless ``draft`` marks it ``"draft": true``.
    Returns the path.
    """
    from bnbook.results import write_result

    result, target = _result_target(Path(source), name)
    if results_dir is not None:
        target = Path(results_dir) / target.name
    result = dict(result)
    prov = dict(result.get("provenance") or {})
    prov.pop("partial", None)
    prov.pop("draft", None)
    if prov.get("finished") is None:
        prov["partial"] = True
    if draft:
        prov["draft"] = True
    result["provenance"] = prov
    if target.exists() and not force:
        import json

        try:
            existing = json.loads(target.read_text())
            same = (existing.get("provenance") or {}).get("started") == prov.get("started")
        except (OSError, ValueError, AttributeError):
            same = False
        if not same:
            raise FileExistsError(f"refusing to overwrite the published result {target} (another "
                                  f"run's); pass --force to replace it")
    return write_result(target, result)  # the one validated writer


def publish_main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m bnbook.cifar publish",
                                description="copy a run's result into data/results/cifar10/")
    p.add_argument("run", help="runs/<run> folder, its name under runs/, or a result JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing result")
    p.add_argument("--as", dest="name", default=None, help="file name (default: the run name)")
    p.add_argument("--draft", action="store_true",
                   help=_DRAFT_HELP.removeprefix("with --publish: "))
    args = p.parse_args(argv)
    return report_errors(_publish_and_say, args)


def _publish_and_say(args) -> int:
    target = publish(args.run, force=args.force, name=args.name, draft=args.draft)
    partial = " (partial: the run has not finished)" if _is_partial(target) else ""
    print(f"published {target}{partial}")
    return 0


def _is_partial(path: Path) -> bool:
    import json

    return bool(json.loads(Path(path).read_text())["provenance"].get("partial"))


def main(argv=None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if argv_list[:1] == ["publish"]:
        return publish_main(argv_list[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.synthetic is not None and args.synthetic < MIN_SYNTHETIC:
        parser.error(f"--synthetic N needs N >= {MIN_SYNTHETIC} images, got {args.synthetic} "
                     f"(without --synthetic the run uses CIFAR-10)")
    if args.resume and args.restart:
        parser.error("--resume continues the checkpoint, --restart deletes it: pass one")
    if args.run_name is not None:
        try:
            check_name(args.run_name, "--run-name")
        except ValueError as err:
            parser.error(str(err))
    return report_errors(_run, args, argv)


def _final_weights_path(args, dist) -> Path | None:
    """``--save-final-weights`` for this process; refused if the file exists (it is never
    overwritten: it may be another run's)."""
    if not args.save_final_weights:
        return None
    rank = dist.get_rank() if dist.is_initialized() else 0
    path = Path(args.save_final_weights.replace("{rank}", str(rank)))
    if path.exists():
        raise FileExistsError(f"--save-final-weights: {path} exists and is not overwritten; "
                              f"choose another path or remove the file")
    return path


def _save_weights(path: Path, state: dict) -> None:
    import io

    import torch

    from bnbook.provenance import atomic_write_bytes

    if path.exists():  # appeared while training
        raise FileExistsError(f"--save-final-weights: {path} appeared during the run and is "
                              f"not overwritten; the weights are in the run's checkpoint")
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _run(args, argv) -> int:
    import torch
    import torch.distributed as dist

    from bnbook.cifar_run import check_writable
    from bnbook.train import KERAS_LR, TrainConfig, resolve_precision, train

    config = TrainConfig(
        model=args.model, epochs=args.epochs, lr=args.lr, decay=args.decay,
        batch_size=args.batch_size, seed=args.seed, subset=args.subset,
        augment=not args.no_augment, bn_on_logits=not args.no_bn_on_logits,
        keep_dropout=args.keep_dropout, shift_order=args.shift_order,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile,
        device=args.device, threads=args.threads, eval_batch_size=args.eval_batch_size,
        sync_bn=args.sync_bn)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args.world_size = world_size
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
        run_dir = RUNS_DIR / default_run_dir_name(args, config.lr or KERAS_LR[args.model],
                                                  precision)
        out = Path(args.out) if args.out else run_dir / "result.json"
        checkpoint = Path(args.checkpoint) if args.checkpoint else run_dir / "checkpoint.pt"
        weights = _final_weights_path(args, dist)
        check_writable(out, checkpoint, weights)  # before the data loads and an epoch trains
        if args.synthetic is not None:
            data = synthetic_cifar(args.synthetic, seed=args.seed)
            dataset = {"variant": f"synthetic-random-{args.synthetic}", "sha256": None}
        else:
            from bnbook.data import cifar10_info, load_cifar10

            rank0 = not dist.is_initialized() or dist.get_rank() == 0
            data = load_cifar10(data_dir=args.data_dir, progress=rank0 and not args.no_progress)
            info = cifar10_info(data_dir=args.data_dir)
            if (check_known_data(info["variant"], args.allow_unknown_data)
                    and args.publish):
                raise ValueError("--publish refuses a run on unknown data (the book's results "
                                 "need the published CIFAR-10); drop --publish")
            dataset = {"variant": info["variant"], "sha256": info["sha256"]}
        # The arguments this run was given (argv, or the command line): a command that reruns it.
        command = shlex.join(["python", "-m", "bnbook.cifar",
                              *(sys.argv[1:] if argv is None else argv)])
        result = train(config, data, run_name=run_name, out=out, checkpoint_path=checkpoint,
                       resume=args.resume, dataset=dataset, progress=not args.no_progress,
                       command=command, restart=args.restart)
        if weights is not None:
            _save_weights(weights, result["model_state"])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    last = result["history"][-1] if result["history"] else None
    if last is not None and (world_size == 1 or int(os.environ.get("RANK", "0")) == 0):
        print(f"{run_name}: epoch {last['epoch']} val_acc {last['val_acc']:.4f} "
              f"val_loss {last['val_loss']:.4f}; results in {out}")
    if args.publish and int(os.environ.get("RANK", "0")) == 0:
        target = publish(out, force=args.force, draft=args.draft)
        print(f"published {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

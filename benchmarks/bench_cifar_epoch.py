"""Whole CIFAR-10 epochs, timed as a user runs them, against this machine's matmul peak.

``bench_cifar_speed.py`` times single updates on random batches and extrapolates; this script
measures instead. For each model it runs the trainer's own command line,

    python -m bnbook.experiments.cifar --model M --epochs 2 --threads 2 --precision P --channels-last

on the real data in a scratch folder, and reads the seconds of each epoch from the result
file: everything an epoch does (batch order, uint8 -> float, shift/flip augmentation, 1563
RMSprop updates at batch 32, evaluation of the 10,000 test images), not the start-up (data
loading). Epoch 1 includes PyTorch's warm-up; the table reports epoch 2.

The ceiling it is compared with: the best of several dense matrix products (``torch.mm`` of
square matrices, in the same precision and thread count) gives the machine's achieved peak in
FLOP/s. A training epoch needs ``50000 * training_flops_per_image + 10000 * 2 * forward_macs``
FLOPs in its convolutions and dense layers (:func:`bnbook.models.training_flops_per_image`),
so the fastest epoch that peak allows is that count divided by the peak. The table gives the
achieved FLOP/s, its fraction of the peak, and the ratio of the measured epoch to the
peak-allowed one (the book's aim: a BN epoch within 1.5x of it). Normalisation, activations,
pooling, augmentation and the optimizer are not counted as work, so they show up as lost time.

Run it on a quiet machine (no training in the background); it records the load average.

    python benchmarks/bench_cifar_epoch.py              # writes data/results/benchmarks/cifar_epoch_cpu.json
    python benchmarks/bench_cifar_epoch.py --quick      # a 2000-image subset, no result file
    python benchmarks/bench_cifar_epoch.py --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bnbook.experiments.cifar.speed import TEST_IMAGES, TRAIN_IMAGES, epoch_flops, matmul_peak
from bnbook.provenance import RESULTS_DIR, collect_provenance, command_line, now_iso
from bnbook.results import markdown_table, write_result
from bnbook.experiments.cifar.train import resolve_precision

AIM_RATIO = 1.5
DTYPES = ("fp32", "bf16")  # the precisions timed on the CPU


def time_epochs(model_name: str, precision: str, threads: int, epochs: int,
                subset: int | None, workdir: Path) -> dict:
    """Run the trainer's CLI for ``epochs`` epochs; the per-epoch seconds it records."""
    out, ckpt = workdir / f"{model_name}.json", workdir / f"{model_name}.pt"
    cmd = [sys.executable, "-m", "bnbook.experiments.cifar", "--model", model_name, "--epochs", str(epochs),
           "--threads", str(threads), "--precision", precision, "--channels-last",
           "--run-name", f"bench-epoch-{model_name}", "--out", str(out),
           "--checkpoint", str(ckpt), "--no-progress",
           *(["--subset", str(subset)] if subset else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{res.stderr[-2000:]}")
    history = json.loads(out.read_text())["history"]
    return {"epoch_seconds": [h["seconds"] for h in history],
            "process_seconds": round(time.perf_counter() - t0, 1),
            "final_val_acc": history[-1]["val_acc"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the CPU computes it natively, else fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="epochs per model (the last is reported)")
    p.add_argument("--quick", action="store_true",
                   help="a 2000-image subset, 1 epoch, no result file (a smoke test)")
    p.add_argument("--out", default=str(RESULTS_DIR / "benchmarks" / "cifar_epoch_cpu.json"))
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.epochs < 1:
        raise SystemExit("--threads and --epochs must be positive")
    precision = resolve_precision(args.precision, "cpu")
    if precision not in DTYPES:
        raise SystemExit(f"precision {precision} is not timed on the CPU (fp32 or bf16)")
    subset, epochs = (2000, 1) if args.quick else (None, args.epochs)
    n_train, n_test = (subset, subset // 5) if subset else (TRAIN_IMAGES, TEST_IMAGES)
    load_before = os.getloadavg()
    started, t_start = now_iso(), time.perf_counter()
    peak = matmul_peak(precision, args.threads)
    print(f"matmul peak ({precision}, {args.threads} threads): "
          f"{peak['flops_per_s'] / 1e9:.0f} GFLOP/s", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-epoch-") as tmp:
        for model_name in ("baseline", "bn"):
            timing = time_epochs(model_name, precision, args.threads, epochs, subset, Path(tmp))
            seconds = timing["epoch_seconds"][-1]
            flops = epoch_flops(model_name, n_train, n_test)
            allowed = flops / peak["flops_per_s"]
            rows[model_name] = {**timing, "seconds_per_epoch": seconds, "epoch_flops": flops,
                                "achieved_flops_per_s": flops / seconds,
                                "fraction_of_peak": flops / seconds / peak["flops_per_s"],
                                "peak_allowed_seconds": allowed, "ratio_to_peak_allowed":
                                    seconds / allowed}
            print(json.dumps({model_name: rows[model_name]}), flush=True)
    load_after = os.getloadavg()
    table = [(m, precision, f"{r['seconds_per_epoch']:.1f}", f"{r['epoch_flops'] / 1e12:.2f}",
              f"{r['achieved_flops_per_s'] / 1e9:.0f}", f"{100 * r['fraction_of_peak']:.0f}%",
              f"{r['peak_allowed_seconds']:.1f}", f"{r['ratio_to_peak_allowed']:.2f}x")
             for m, r in rows.items()]
    print()
    print(markdown_table(["model", "precision", "s/epoch", "TFLOP/epoch", "GFLOP/s", "of peak",
                          "peak-allowed s", "measured / allowed"], table, align="llrrrrrr"))
    bn = rows["bn"]["ratio_to_peak_allowed"]
    print(f"\nBN epoch {'within' if bn <= AIM_RATIO else 'outside'} {AIM_RATIO}x of the "
          f"peak-allowed time ({bn:.2f}x); load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}")
    if args.quick:
        return 0
    payload = {
        "description": "whole CIFAR-10 epochs (python -m bnbook.experiments.cifar, batch 32, augmentation "
                       "and evaluation included) against the dense matmul peak",
        "threads": args.threads, "precision_requested": args.precision, "epochs_run": epochs,
        "reported_epoch": epochs, "matmul_peak": {
            "flops_per_s": peak["flops_per_s"],
            "by_size": {str(n): v for n, v in peak["by_size"].items()}},
        "models": rows, "aim_ratio_to_peak_allowed": AIM_RATIO,
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    from bnbook.data import cifar10_info

    info = cifar10_info()
    prov = collect_provenance(
        "cpu", "float32" if precision == "fp32" else "bf16 autocast", started=started,
        wall_seconds=round(time.perf_counter() - t_start, 1), dataset=info["variant"],
        dataset_sha256=info["sha256"],
        command=command_line(argv, prog="python benchmarks/bench_cifar_epoch.py"))
    write_result(args.out, {"provenance": prov, **payload})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

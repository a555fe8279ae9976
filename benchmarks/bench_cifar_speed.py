"""Seconds per CIFAR-10 epoch of the Keras cifar10_cnn and its BN variant on this machine.

For each model and setting (fp32 or bf16 autocast, contiguous or channels_last memory,
1 or 2 torch threads, optionally ``torch.compile``) it times the trainer's own update
(:func:`bnbook.experiments.cifar.train.training_step`: uint8 batch -> float, shift/flip augmentation,
RMSprop step) on random CIFAR-shaped batches of 32, takes the median over ``--steps``
updates after ``--warmup`` untimed ones, and extrapolates to an epoch:
``1563 * median_step + 20 * median_eval_batch`` (50,000 training images in batches of 32,
the 10,000 validation images in batches of 500). It also times two single-thread
processes side by side (two models trained concurrently) against one two-thread process.

bf16 rows are timed only where the CPU computes bf16 natively (AVX-512 BF16 or AMX,
:func:`bnbook.experiments.cifar.train.cpu_has_native_bf16`), the same rule as the trainer's ``--precision auto``:
elsewhere bf16 autocast is emulated and several times slower than float32 (696 ms against
89 ms per step on an AVX2-only AMD EPYC), so the script times float32 only and says that it
skipped bf16; ``--precision bf16`` times it anyway, ``--precision fp32`` never.

The article's runs took 24-25 s per epoch on a GeForce GTX 1080 (mallick2018batchnorm);
the book's target for this 2-core CPU is at most 25 s per epoch for the BN model.
The machine is shared: the result records the load average before and after.

    python benchmarks/bench_cifar_speed.py            # writes data/results/benchmarks/cifar_speed_cpu.json
    python benchmarks/bench_cifar_speed.py --quick    # fewer steps, no compile, no file
    python benchmarks/bench_cifar_speed.py --precision bf16   # bf16 rows even if not native
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from bnbook.models import keras_cnn
from bnbook.provenance import RESULTS_DIR, collect_provenance, command_line, now_iso
from bnbook.results import markdown_table, write_result
from bnbook.experiments.cifar.train import (cpu_has_native_bf16, evaluate, make_optimizer, resolve_precision,
                                            training_step)

STEPS_PER_EPOCH = 1563  # ceil(50000 / 32)
EVAL_BATCHES = 20  # 10000 / 500
ARTICLE_GTX1080_S_PER_EPOCH = (24.0, 25.0)
TARGET_S_PER_EPOCH = 25.0
STRETCH_S_PER_EPOCH = 20.0


def sweep_precisions(requested: str, native_bf16: bool) -> tuple[tuple[str, ...], str | None]:
    """The precisions to time for ``--precision requested``, and why bf16 is left out (or None).

    fp32 is always timed (it is the reference of the speed-up column). ``auto`` adds bf16
    where the CPU computes it natively, ``bf16`` adds it regardless, ``fp32`` never does.
    """
    if requested not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {requested!r}")
    if requested == "bf16" or (requested == "auto" and native_bf16):
        return ("fp32", "bf16"), None
    if requested == "fp32":
        return ("fp32",), "bf16 autocast skipped: --precision fp32"
    return ("fp32",), ("bf16 autocast skipped: this CPU lacks native bf16 (no AVX-512 BF16 or "
                       "AMX), where it is emulated and slower than fp32; --precision bf16 "
                       "times it anyway")


def time_setting(model_name: str, precision: str, channels_last: bool, threads: int,
                 compile_model: bool, steps: int, warmup: int, eval_repeats: int = 3) -> dict:
    """Median seconds of one training update and of one 500-image evaluation batch."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = keras_cnn(batch_norm=model_name == "bn")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_model else model
    optimizer = make_optimizer(model, 1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 32, 32, 3), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (32,), generator=gen)
    shifts = (torch.rand(32, 2, generator=gen) - 0.5) * 6.4
    flips = torch.rand(32, generator=gen) < 0.5
    net.train()
    t_compile = time.perf_counter()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        training_step(net, optimizer, scaler, x, y, 1e-3, (shifts, flips), precision,
                      channels_last)
        times.append(time.perf_counter() - t0)
        if i == 0:
            t_compile = time.perf_counter() - t_compile
    x_eval = torch.randint(0, 256, (500, 32, 32, 3), dtype=torch.uint8, generator=gen)
    y_eval = torch.randint(0, 10, (500,), generator=gen)
    evaluate(net, x_eval, y_eval, 500, "cpu", precision, channels_last)  # warm-up
    eval_times = []
    for _ in range(eval_repeats):
        t0 = time.perf_counter()
        evaluate(net, x_eval, y_eval, 500, "cpu", precision, channels_last)
        eval_times.append(time.perf_counter() - t0)
    step = statistics.median(times[warmup:])
    ev = statistics.median(eval_times)
    return {"model": model_name, "precision": precision, "channels_last": channels_last,
            "threads": threads, "compile": compile_model,
            "median_step_ms": round(1000 * step, 2),
            "median_eval_batch500_ms": round(1000 * ev, 1),
            "first_step_s": round(t_compile, 2),
            "seconds_per_epoch": round(STEPS_PER_EPOCH * step + EVAL_BATCHES * ev, 1)}


def run_in_subprocess(args: list[str], timeout: float) -> dict | None:
    """Run this script with ``--single ...`` in a fresh process; ``None`` if it fails."""
    cmd = [sys.executable, __file__, "--single", *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def concurrent_pair(steps: int, warmup: int, precision: str) -> dict:
    """Two 1-thread processes (baseline and bn) timed at the same time."""
    common = ["--precision", precision, "--channels-last", "--threads", "1",
              "--steps", str(steps), "--warmup", str(warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--single", "--model", m, *common],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for m in ("baseline", "bn")]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0 or not stdout.strip():
            return {"error": (stderr.strip().splitlines() or ["failed"])[-1]}
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return {"precision": precision, "channels_last": True, "threads_each": 1,
            "baseline_step_ms": out[0]["median_step_ms"], "bn_step_ms": out[1]["median_step_ms"],
            "seconds_per_epoch_each": [out[0]["seconds_per_epoch"], out[1]["seconds_per_epoch"]]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="15 steps, no compile, no result file")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-timeout", type=float, default=300.0)
    p.add_argument("--out", default=str(RESULTS_DIR / "benchmarks" / "cifar_speed_cpu.json"))
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="precisions besides the fp32 reference: auto (default) adds bf16 "
                        "autocast where the CPU computes it natively, bf16 adds it anyway, "
                        "fp32 times fp32 only")
    # internal: time one setting and print it as JSON
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="bn", help=argparse.SUPPRESS)
    p.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)

    if args.single:
        print(json.dumps(time_setting(args.model, resolve_precision(args.precision, "cpu"),
                                      args.channels_last, args.threads, args.compile,
                                      args.steps, args.warmup)))
        return 0

    steps, warmup = (15, 5) if args.quick else (args.steps, args.warmup)
    native_bf16 = cpu_has_native_bf16()
    precisions, skipped = sweep_precisions(args.precision, native_bf16)
    fastest = precisions[-1]  # the precision of the compile rows and the concurrent pair
    print(f"precision {args.precision}: timing {', '.join(precisions)} "
          f"(cpu_native_bf16={native_bf16})", flush=True)
    if skipped:
        print(skipped, flush=True)
    load_before = os.getloadavg()
    started, t_start = now_iso(), time.perf_counter()
    rows = []
    for threads in (2, 1):
        for model_name in ("baseline", "bn"):
            for precision in precisions:
                for cl in (False, True):
                    r = run_in_subprocess(["--model", model_name, "--precision", precision,
                                           *(["--channels-last"] if cl else []),
                                           "--threads", str(threads), "--steps", str(steps),
                                           "--warmup", str(warmup)], timeout=600)
                    r = r if "error" not in r else {"model": model_name, "precision": precision,
                                                    "channels_last": cl, "threads": threads,
                                                    "compile": False, **r}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    if not (args.quick or args.no_compile):
        for model_name in ("baseline", "bn"):
            r = run_in_subprocess(["--model", model_name, "--precision", fastest,
                                   "--channels-last", "--threads", "2", "--compile",
                                   "--steps", str(steps), "--warmup", str(warmup)],
                                  timeout=args.compile_timeout)
            if "error" in r:
                r = {"model": model_name, "precision": fastest, "channels_last": True,
                     "threads": 2, "compile": True, **r}
            rows.append(r)
            print(json.dumps(r), flush=True)
    pair = concurrent_pair(steps, warmup, fastest)
    print(json.dumps(pair), flush=True)
    load_after = os.getloadavg()

    ok = [r for r in rows if "seconds_per_epoch" in r]
    table = []
    for r in ok:
        ref = next((q for q in ok if q["model"] == r["model"] and q["threads"] == r["threads"]
                    and q["precision"] == "fp32" and not q["channels_last"]
                    and not q["compile"]), r)
        table.append((r["model"], r["precision"],
                      "channels_last" if r["channels_last"] else "contiguous", r["threads"],
                      r["compile"], f"{r['median_step_ms']:.2f}", f"{r['seconds_per_epoch']:.1f}",
                      f"{ref['seconds_per_epoch'] / r['seconds_per_epoch']:.2f}x"))
    print()
    print(markdown_table(["model", "precision", "layout", "thr", "compile", "ms/step", "s/epoch",
                          "vs fp32 eager"], table, align="lllrlrrr"))
    best = {m: min((r for r in ok if r["model"] == m), key=lambda r: r["seconds_per_epoch"])
            for m in ("baseline", "bn")}
    print(f"\nbest BN setting: {best['bn']['seconds_per_epoch']} s/epoch "
          f"(target <= {TARGET_S_PER_EPOCH}, stretch {STRETCH_S_PER_EPOCH}; article on a "
          f"GTX 1080: {ARTICLE_GTX1080_S_PER_EPOCH[0]}-{ARTICLE_GTX1080_S_PER_EPOCH[1]})")
    if "error" not in pair:
        print(f"two 1-thread processes side by side: {pair['seconds_per_epoch_each']} s/epoch each")
    if skipped:
        print(skipped)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    if args.quick:
        return 0
    payload = {
        "description": "seconds per CIFAR-10 epoch (batch 32, 1563 updates + 10000-image "
                       "validation), extrapolated from median update times on random batches",
        "steps_timed": steps, "warmup_steps": warmup,
        "precision_requested": args.precision, "cpu_native_bf16": native_bf16,
        "precisions_timed": list(precisions), "bf16_skipped": skipped,
        "rows": rows, "concurrent_two_single_thread_processes": pair,
        "best": best,
        "article_gtx1080_seconds_per_epoch": list(ARTICLE_GTX1080_S_PER_EPOCH),
        "target_seconds_per_epoch": TARGET_S_PER_EPOCH,
        "stretch_seconds_per_epoch": STRETCH_S_PER_EPOCH,
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    prov = collect_provenance(
        "cpu", " and ".join("fp32" if q == "fp32" else f"{q} autocast" for q in precisions),
        started=started, wall_seconds=round(time.perf_counter() - t_start, 1),
        dataset="synthetic-random-normal", dataset_sha256=None,
        command=command_line(argv, prog="python benchmarks/bench_cifar_speed.py"))
    write_result(args.out, {"provenance": prov, **payload})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

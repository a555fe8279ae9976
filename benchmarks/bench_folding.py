"""Inference time on CPU of a small conv net with batch norm, before and after folding BN.

The network is the book's CIFAR-10 model, ``bnbook.models.keras_cnn(batch_norm=True)``: the
Keras ``cifar10_cnn`` example with a batch norm after every convolution and dense layer,
before the activation, and without dropout: four 3x3 convolutions (32, 32, 64, 64
channels), two max-pools, a 512-unit dense layer and 10 outputs, on 3x32x32 inputs. Its
weights are random and its running statistics come from a few training-mode passes: timing
does not depend on the values. Folding (``bnbook.folding.fold_batch_norms_in_sequential``)
removes all six batch norm layers, each of which directly follows a conv or dense layer.

For each batch size the two models are timed alternately (so drift in machine load hits both
alike), under ``torch.inference_mode()``, after warm-up. The table gives the median time of
each model over the repeats, their ratio unfolded / folded (above 1: folding is faster), and
the median and interquartile range of the ratio within each alternating pair, which is less
sensitive to load that changes between pairs.

Usage::

    python benchmarks/bench_folding.py [--batch-sizes 32 256] [--repeats 30] [--threads N]

Writes ``data/results/benchmarks/folding_cpu.json`` (with provenance).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn
from tqdm import tqdm

from bnbook.folding import fold_batch_norms_in_sequential
from bnbook.models import keras_cnn
from bnbook.provenance import RESULTS_DIR, collect_provenance, command_line, now_iso
from bnbook.results import markdown_table, write_result

RESULT_PATH = RESULTS_DIR / "benchmarks" / "folding_cpu.json"


def time_call(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per model and size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    started_at = now_iso()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    model = keras_cnn(batch_norm=True)
    with torch.no_grad():  # running statistics from training-mode passes, as after training
        for _ in range(5):
            model(torch.randn(64, 3, 32, 32) * 2 + 0.5)
    model.eval()
    folded = fold_batch_norms_in_sequential(model)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    n_bn_folded = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())

    rows = []
    with torch.inference_mode():
        for batch_size in args.batch_sizes:
            x = torch.randn(batch_size, 3, 32, 32)
            max_abs_diff = (model(x) - folded(x)).abs().max().item()
            for _ in range(args.warmup):
                model(x), folded(x)
            times = {"unfolded": [], "folded": []}
            for _ in tqdm(range(args.repeats), desc=f"batch {batch_size}", leave=False):
                times["unfolded"].append(time_call(model, x))
                times["folded"].append(time_call(folded, x))
            pair_ratios = [u / f for u, f in zip(times["unfolded"], times["folded"])]
            pair_q = statistics.quantiles(pair_ratios, n=4)
            unfolded_ms = 1e3 * statistics.median(times["unfolded"])
            folded_ms = 1e3 * statistics.median(times["folded"])
            rows.append({
                "batch_size": batch_size,
                "unfolded_ms": unfolded_ms,
                "folded_ms": folded_ms,
                "speedup": unfolded_ms / folded_ms,
                "paired_ratio_median": statistics.median(pair_ratios),
                "paired_ratio_iqr": [pair_q[0], pair_q[2]],
                "unfolded_ms_iqr": _iqr_ms(times["unfolded"]),
                "folded_ms_iqr": _iqr_ms(times["folded"]),
                "max_abs_output_diff": max_abs_diff,
                "repeats": args.repeats,
            })

    print(markdown_table(
        ["batch", "unfolded ms", "folded ms", "ratio", "paired ratio (IQR)", "max |diff|"],
        [(r["batch_size"], f"{r['unfolded_ms']:.2f}", f"{r['folded_ms']:.2f}",
          f"{r['speedup']:.2f}", f"{r['paired_ratio_median']:.3f} "
          f"({r['paired_ratio_iqr'][0]:.2f}-{r['paired_ratio_iqr'][1]:.2f})",
          f"{r['max_abs_output_diff']:.2e}") for r in rows], align="rrrrrr"))
    payload = {
        "description": "CPU inference time of the Keras cifar10_cnn layout with BN, "
                       "before and after folding BN into the preceding conv/linear layers; "
                       "medians over alternating repeats",
        "model": "bnbook.models.keras_cnn(batch_norm=True)",
        "batch_norm_layers": {"unfolded": n_bn, "folded": n_bn_folded},
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    if not args.no_write:
        prov = collect_provenance(
            device="cpu", precision="float32", seed=args.seed, started=started_at,
            wall_seconds=round(time.perf_counter() - started, 2),
            dataset="synthetic-random-normal", dataset_sha256=None,
            command=command_line(argv, prog="python benchmarks/bench_folding.py"))
        path = write_result(RESULT_PATH, {"provenance": prov, **payload})
        print(f"wrote {path}")
    return payload


def _iqr_ms(samples) -> list[float]:
    q = statistics.quantiles(samples, n=4)
    return [1e3 * q[0], 1e3 * q[2]]


if __name__ == "__main__":
    main()

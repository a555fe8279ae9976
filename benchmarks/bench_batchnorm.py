"""CPU benchmark: batch norm forward + backward, NumPy (closed form and staged) vs PyTorch.

What is timed, per shape and dtype, is one training step of the layer alone: forward and
backward, with fresh outputs allocated as a real step would.

* ``numpy closed``: the cache-blocked kernels :func:`bnbook.numpy_fast.batch_norm_forward` +
  :func:`bnbook.numpy_fast.batch_norm_backward`;
* ``numpy staged``: the same forward + :func:`bnbook.numpy_norms.batch_norm_backward_staged`
  (the node-by-node backward of the derivation);
* ``torch``: ``torch.nn.functional.batch_norm(training=True)`` + ``y.backward(dy)`` with
  autograd, with torch's default thread count and again with one thread (NumPy's ufuncs
  and ``einsum`` run on one thread, so the one-thread row is the like-for-like comparison).

Timing: ``time.perf_counter`` around each call, a few warm-up calls, then the methods are
run round-robin (``--repeats`` rounds) so that load from other processes falls on all of
them alike; the table reports medians and quartiles.

Bandwidth: a step must move at least 9 arrays of the size of ``x`` between the cores and
memory: forward reads ``x`` for the mean, again for the variance, and once more to write
``y`` (3 reads + 1 write); backward reads ``dy`` and ``x`` (or ``x_hat``) for the two sums,
then both again to write ``dx`` (4 reads + 1 write). "Achieved bandwidth" is those bytes
divided by the median time, next to the bandwidth of ``np.copyto`` of a large array
(read + write), measured here too.

Writes ``data/results/benchmarks/batchnorm_cpu.json`` with provenance. Run it as
``python benchmarks/bench_batchnorm.py`` (one to two minutes on two cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bnbook.numpy_fast import batch_norm_backward, batch_norm_forward
from bnbook.numpy_norms import batch_norm_backward_staged
from bnbook.provenance import RESULTS_DIR, collect_provenance, command_line, now_iso
from bnbook.results import markdown_table, write_result

SHAPES = [(256, 1024), (64, 64, 32, 32)]
DTYPES = ["float32", "float64"]
#: Arrays of the size of ``x`` that one forward + backward must move at the least.
MIN_PASSES = {"forward_reads": 3, "forward_writes": 1, "backward_reads": 4,
              "backward_writes": 1}
#: The same count for the NumPy closed form, which also writes x_hat for the cache.
NUMPY_CLOSED_PASSES = {"forward_reads": 3, "forward_writes": 2, "backward_reads": 4,
                       "backward_writes": 1}


def make_inputs(shape, dtype, seed=0):
    """x with a non-zero mean and a spread far from 1, gamma far from 1, beta and dy."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2.5 + 3.0).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, size=c).astype(dtype)
    beta = rng.normal(size=c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def numpy_step(backward):
    def step(x, gamma, beta, dy):
        _, cache = batch_norm_forward(x, gamma, beta)
        return backward(dy, cache)
    return step


def torch_step(threads):
    def step(xt, gt, bt, dyt):
        for t in (xt, gt, bt):
            t.grad = None
        y = F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
        y.backward(dyt)
        return xt.grad, gt.grad, bt.grad
    step.threads = threads
    return step


def copy_bandwidth(n_bytes: int, repeats: int) -> dict:
    """Median bandwidth of ``np.copyto`` between two arrays of ``n_bytes`` (read + write)."""
    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    for _ in range(3):
        np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"bytes": int(src.nbytes), "median_s": median,
            "GBps": 2 * src.nbytes / median / 1e9}


def quartiles(times):
    q = statistics.quantiles(times, n=4)
    return q[0], statistics.median(times), q[2]


def bench_case(shape, dtype, repeats, warmup, default_threads):
    x, gamma, beta, dy = make_inputs(shape, dtype)
    tensors = [torch.from_numpy(a) for a in (x, gamma, beta)]
    for t in tensors:
        t.requires_grad_(True)
    dyt = torch.from_numpy(dy)
    methods = {
        "numpy closed": (numpy_step(batch_norm_backward), (x, gamma, beta, dy), 1),
        "numpy staged": (numpy_step(batch_norm_backward_staged), (x, gamma, beta, dy), 1),
        f"torch {default_threads} threads": (torch_step(default_threads), (*tensors, dyt),
                                             default_threads),
        "torch 1 thread": (torch_step(1), (*tensors, dyt), 1),
    }
    # Both implementations must agree before their times mean anything.
    ref = methods["torch 1 thread"]
    torch.set_num_threads(1)
    grads_ref = [g.numpy().copy() for g in ref[0](*ref[1])]
    for name in ("numpy closed", "numpy staged"):
        fn, args, _ = methods[name]
        for g, g_ref in zip(fn(*args), grads_ref):
            scale = np.abs(g_ref).max()
            tol = 1e-3 if dtype == "float32" else 1e-9
            assert np.abs(g - g_ref).max() <= tol * scale, f"{name} disagrees with torch"

    times = {name: [] for name in methods}
    for name, (fn, args, threads) in methods.items():
        torch.set_num_threads(threads)
        for _ in range(warmup):
            fn(*args)
    for _ in range(repeats):
        for name, (fn, args, threads) in methods.items():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - t0)
    torch.set_num_threads(default_threads)
    return times, x.nbytes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=41, help="timed rounds (>= 15)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=DTYPES, choices=DTYPES)
    parser.add_argument("--copy-mib", type=int, default=256,
                        help="size of the arrays for the copy bandwidth (MiB)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "benchmarks" / "batchnorm_cpu.json"))
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 15:
        parser.error("--repeats must be at least 15 for a meaningful median")

    started, t_start = now_iso(), time.perf_counter()
    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()
    copy = copy_bandwidth(args.copy_mib << 20, args.repeats)

    rows = []
    cases = [(s, d) for d in args.dtypes for s in SHAPES]
    for shape, dtype in tqdm(cases, desc="shapes x dtypes"):
        times, nbytes = bench_case(shape, dtype, args.repeats, args.warmup, default_threads)
        min_bytes = sum(MIN_PASSES.values()) * nbytes
        medians = {name: statistics.median(t) for name, t in times.items()}
        torch_default = medians[f"torch {default_threads} threads"]
        torch_one = medians["torch 1 thread"]
        for name, t in times.items():
            q1, med, q3 = quartiles(t)
            rows.append({
                "shape": list(shape), "dtype": dtype, "method": name,
                "threads": 1 if name != f"torch {default_threads} threads" else default_threads,
                "median_ms": med * 1e3, "q1_ms": q1 * 1e3, "q3_ms": q3 * 1e3,
                "min_ms": min(t) * 1e3, "repeats": len(t),
                "min_bytes": min_bytes, "achieved_GBps": min_bytes / med / 1e9,
                "fraction_of_copy": min_bytes / med / 1e9 / copy["GBps"],
                "ratio_to_torch_default": med / torch_default,
                "ratio_to_torch_1_thread": med / torch_one,
            })

    print(f"\ncopy bandwidth (np.copyto, {copy['bytes'] >> 20} MiB, read + write): "
          f"{copy['GBps']:.1f} GB/s")
    print("GB/s: bytes of the minimum number of passes (9 arrays of the size of x) / median time;"
          "\n/torch: median time over torch's median time (below 1: NumPy is faster)")
    print(markdown_table(
        ["shape", "dtype", "method", "thr", "median ms", "IQR ms", "min ms", "GB/s", "of copy",
         f"/torch {default_threads}t", "/torch 1t"],
        [(tuple(r["shape"]), r["dtype"], r["method"], r["threads"], f"{r['median_ms']:.2f}",
          f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f}", f"{r['min_ms']:.2f}",
          f"{r['achieved_GBps']:.1f}", f"{r['fraction_of_copy']:.2f}",
          f"{r['ratio_to_torch_default']:.2f}", f"{r['ratio_to_torch_1_thread']:.2f}")
         for r in rows], align="lllrrrrrrrr"))

    provenance = collect_provenance(
        device="cpu", precision=",".join(args.dtypes), started=started,
        wall_seconds=round(time.perf_counter() - t_start, 1),
        dataset="synthetic-random-normal", dataset_sha256=None,
        command=command_line(argv, prog="python benchmarks/bench_batchnorm.py"),
        torch_default_threads=default_threads, numpy_threads=1,
        repeats=args.repeats, warmup=args.warmup,
        load_average_before=[round(v, 2) for v in load_before],
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        timer="time.perf_counter, median over round-robin repeats",
    )
    payload = {"copy_bandwidth": copy, "min_passes": MIN_PASSES,
               "numpy_closed_passes": NUMPY_CLOSED_PASSES, "rows": rows}
    path = write_result(args.out, {"provenance": provenance, **payload})
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()

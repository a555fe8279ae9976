"""What each normalisation costs per training step on CPU, and what the batch-size sweep costs.

Two measurements, both at ``--threads`` torch threads (default 1, as the sweep runs):

* ``layer``: forward + backward of one normalisation layer alone on activations of a fixed
  shape (default ``32 x 16 x 32 x 32``, the first convolution's output of the sweep's network
  at batch 32), for batch norm (PyTorch's fused kernel, and the book's
  :class:`bnbook.torch_bn.BatchNorm` in plain tensor operations, on which batch renorm and
  ghost batch norm are built), batch renorm, ghost batch norm, group, layer and instance
  norm, and weight standardisation (the conv with and without it, since WS acts on weights);
* ``step``: one SGD step (forward, backward, update) of the sweep's network
  (:func:`bnbook.models.small_cnn.small_cifar_cnn`, width 16) with each method on its four
  convolutions, at each batch size of ``--batch-sizes``.

The methods are timed round-robin (one call of each in turn, repeated), so a change of machine
load hits all of them alike; each row gives the median wall time and the median CPU time of
this thread. On a machine shared with other work the wall time includes waiting for a core
while the CPU time does not, so the CPU time is the better estimate of the time on an idle
machine (the load average before and after is recorded). From the step times the script also
estimates the full sweep of :mod:`bnbook.experiments.norms.sweep`: the sum over its cells of
``steps x median step time``, in core-hours and in wall hours with ``--jobs 2``.

Usage::

    python benchmarks/bench_norms_cost.py [--threads 1] [--repeats 30] [--no-write]

Writes ``data/results/benchmarks/norms_cost_cpu.json`` (with provenance).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from bnbook.experiments.norms.sweep import METHODS, PROFILES, cells_of
from bnbook.provenance import RESULTS_DIR, collect_provenance, command_line, now_iso
from bnbook.results import markdown_table, write_result
from bnbook.models.small_cnn import conv_norm_layer, small_cifar_cnn

RESULT_PATH = RESULTS_DIR / "benchmarks" / "norms_cost_cpu.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--layer-shape", type=int, nargs=4, default=[32, 16, 32, 32])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32, 128])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def round_robin(calls: dict, repeats: int, warmup: int, desc: str) -> dict:
    """``{name: {"wall_ms", "cpu_ms"}}``: medians over ``repeats`` rounds of one call each."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {name: ([], []) for name in calls}
    for _ in tqdm(range(repeats), desc=desc, leave=False):
        for name, fn in calls.items():
            wall, cpu = _timed(fn)
            times[name][0].append(wall)
            times[name][1].append(cpu)
    return {name: {"wall_ms": 1e3 * statistics.median(w), "cpu_ms": 1e3 * statistics.median(c)}
            for name, (w, c) in times.items()}


def _layer_calls(shape) -> dict:
    """Forward + backward of each normalisation layer (and the conv with and without weight
    standardisation) on a fixed input."""
    from bnbook.torch_bn import BatchNorm
    from bnbook.torch_norms import WSConv2d

    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    dy = torch.randn(*shape)
    calls = {}
    for method in ("batch", "renorm", "ghost", "group", "layer", "instance"):
        layer = conv_norm_layer(method, shape[1], groups=4, ghost_batch_size=8).train()

        def call(layer=layer):
            layer(x).backward(dy)
        calls[method] = call
    book_bn = BatchNorm(shape[1]).train()  # the book's unfused batch norm, which renorm and
    calls["batch_book"] = lambda: book_bn(x).backward(dy)  # ghost BN build on
    for name, conv in (("conv", nn.Conv2d(shape[1], shape[1], 3, padding=1)),
                       ("conv_ws", WSConv2d(shape[1], shape[1], 3, padding=1))):
        def call(conv=conv):
            conv(x).backward(dy)
        calls[name] = call
    return calls


def _step_calls(width: int, batch_size: int) -> dict:
    """One SGD step of the sweep's network with each method, on a fixed random batch."""
    torch.manual_seed(0)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    calls = {}
    for method in METHODS:
        model = small_cifar_cnn(width, method).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def call(model=model, opt=opt):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        calls[method] = call
    return calls


def sweep_estimate(step_rows: list[dict], profile: str = "full", key: str = "cpu_ms") -> dict:
    """Hours the sweep ``profile`` needs by these step times: ``core_hours`` (one cell after
    another on one core) and ``wall_hours_jobs2`` (two cells at a time); training steps only."""
    settings = PROFILES[profile]
    ms = {(r["method"], r["batch_size"]): r[key] for r in step_rows}
    seconds = {(meth, m): settings["images_seen"] // m * ms[(meth, m)] / 1e3
               for meth, m, _ in cells_of(settings)}
    core = sum(seconds[(meth, m)] for meth, m, _ in cells_of(settings)) / 3600.0
    return {"profile": profile, "time_key": key, "core_hours": core,
            "wall_hours_jobs2": core / 2, "seconds_per_cell": {
                f"{meth}/m{m}": round(s, 1) for (meth, m), s in sorted(seconds.items())}}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    started_at, start = now_iso(), time.perf_counter()
    load_before = os.getloadavg()
    layer = round_robin(_layer_calls(args.layer_shape), args.repeats, args.warmup, "layers")
    layer_rows = [{"method": k, **v} for k, v in layer.items()]
    step_rows = []
    for m in args.batch_sizes:
        repeats = max(5, args.repeats * 32 // max(m, 32))  # fewer rounds for the big batch
        timed = round_robin(_step_calls(args.width, m), repeats, args.warmup, f"batch {m}")
        step_rows += [{"method": k, "batch_size": m, "repeats": repeats, **v}
                      for k, v in timed.items()]
    load_after = os.getloadavg()
    print(markdown_table(["layer", "wall ms", "cpu ms"],
                         [(r["method"], f"{r['wall_ms']:.2f}", f"{r['cpu_ms']:.2f}")
                          for r in layer_rows], "lrr"))
    print(markdown_table(["method", "batch", "wall ms", "cpu ms"],
                         [(r["method"], r["batch_size"], f"{r['wall_ms']:.2f}",
                           f"{r['cpu_ms']:.2f}") for r in step_rows], "lrrr"))
    payload = {
        "description": "median forward+backward time of each normalisation layer on a fixed "
                       "activation, and median SGD step time of the sweep's network per "
                       "method and batch size; wall and thread CPU time, round-robin",
        "layer_shape": list(args.layer_shape), "width": args.width,
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "layer": layer_rows, "step": step_rows}
    if set(args.batch_sizes) >= set(PROFILES["full"]["batch_sizes"]) \
            and args.width == PROFILES["full"]["width"]:
        payload["sweep_estimate"] = {k: sweep_estimate(step_rows, key=k)
                                     for k in ("cpu_ms", "wall_ms")}
        for k, est in payload["sweep_estimate"].items():
            print(f"full sweep by {k}: {est['core_hours']:.2f} core-hours, "
                  f"{est['wall_hours_jobs2']:.2f} h with --jobs 2 (training steps only)")
    if not args.no_write:
        prov = collect_provenance(
            device="cpu", precision="float32", started=started_at,
            wall_seconds=round(time.perf_counter() - start, 2),
            dataset="synthetic-random-normal", dataset_sha256=None,
            command=command_line(argv, prog="python benchmarks/bench_norms_cost.py"))
        path = write_result(RESULT_PATH, {"provenance": prov, **payload})
        print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

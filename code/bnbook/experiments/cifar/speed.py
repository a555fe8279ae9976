"""Chapter 7's seconds per epoch: the per-update benchmark (``benchmarks/bench_cifar_speed.py``,
extrapolated to an epoch) and the whole-epoch benchmark against the machine's matmul peak
(``benchmarks/bench_cifar_epoch.py``, measured), as tables and headline numbers; and the two
measurements both whole-epoch timings share (:func:`matmul_peak`, :func:`epoch_flops`), on
the CPU or a GPU (``python -m bnbook.experiments.gpu_results``)."""

from __future__ import annotations

import time
from typing import Mapping

from bnbook.experiments.cifar.report import MODELS
from bnbook.results import markdown_table

__all__ = ["speed_table", "speed_facts", "epoch_table", "epoch_facts", "matmul_peak",
           "epoch_flops", "TRAIN_IMAGES", "TEST_IMAGES", "ARTICLE_GTX1080_S_PER_EPOCH"]

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000
#: The article's seconds per epoch on a GeForce GTX 1080, fp32 (mallick2018batchnorm).
ARTICLE_GTX1080_S_PER_EPOCH = (24.0, 25.0)
_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def matmul_peak(precision: str, threads: int | None = None, sizes=(512, 1024, 2048, 3072),
                repeats: int = 5, device: str = "cpu") -> dict:
    """Best achieved FLOP/s of ``torch.mm`` on square ``n x n`` matrices of ``precision``
    (``fp32``, ``bf16`` or ``fp16``) on ``device``.

    Returns ``{"flops_per_s": best, "by_size": {n: flops_per_s}}``; each size is timed
    ``repeats`` times after one untimed product and its fastest run counts (``2 n^3`` FLOPs).
    ``threads`` sets torch's CPU threads first (``None`` leaves them). On a GPU each product
    is timed between two ``synchronize`` calls, so the time is the kernel's, not the launch's.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    dtype = getattr(torch, _DTYPE_NAMES[precision])
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    by_size = {}
    for n in sizes:
        a = torch.randn(n, n, generator=gen, device=device).to(dtype)
        b = torch.randn(n, n, generator=gen, device=device).to(dtype)
        torch.mm(a, b)
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync()
            best = min(best, time.perf_counter() - t0)
        by_size[n] = 2 * n**3 / best
    return {"flops_per_s": max(by_size.values()), "by_size": by_size}


def epoch_flops(model_name: str, train_images: int = TRAIN_IMAGES,
                test_images: int = TEST_IMAGES) -> int:
    """Dense-layer FLOPs of one training epoch plus the evaluation of the test images
    (:func:`bnbook.models.training_flops_per_image`, twice :func:`bnbook.models.forward_macs`
    per test image)."""
    from bnbook.models import forward_macs, keras_cnn, training_flops_per_image

    net = keras_cnn(batch_norm=model_name == "bn")
    return (train_images * training_flops_per_image(net)
            + test_images * 2 * forward_macs(net)["total"])


def _reference_row(rows, r, **match):
    """The successful row of ``rows`` with ``r``'s model and threads and the given fields."""
    return next((q for q in rows if "seconds_per_epoch" in q and q["model"] == r["model"]
                 and q["threads"] == r["threads"]
                 and all(bool(q.get(k)) == v if isinstance(v, bool) else q.get(k) == v
                         for k, v in match.items())), None)


def speed_table(bench: Mapping) -> str:
    """Markdown table of the speed benchmark (``benchmarks/bench_cifar_speed.py``): per
    setting the median ms per update, s per epoch and the speed-up over float32 contiguous
    eager at the same model and thread count (failed settings show their error)."""
    rows = []
    for r in bench["rows"]:
        layout = "channels_last" if r.get("channels_last") else "contiguous"
        if "seconds_per_epoch" not in r:
            rows.append((r["model"], r["precision"], layout, r["threads"], r.get("compile", False),
                         "—", f"failed: {r.get('error', '?')}", "—"))
            continue
        ref = _reference_row(bench["rows"], r, precision="fp32", channels_last=False,
                             compile=False)
        speedup = f"{ref['seconds_per_epoch'] / r['seconds_per_epoch']:.2f}×" if ref else "—"
        rows.append((r["model"], r["precision"], layout, r["threads"], r.get("compile", False),
                     f"{r['median_step_ms']:.1f}", f"{r['seconds_per_epoch']:.0f}", speedup))
    return markdown_table(["model", "precision", "memory format", "threads", "compile",
                           "ms per update", "s per epoch", "vs fp32 contiguous"], rows,
                          align="llllrrrr")


def speed_facts(bench: Mapping) -> dict:
    """The benchmark's headline numbers: ``best_bn`` (the row of the fastest BN setting),
    ``pair_seconds`` (``{model: s per epoch}`` of two single-thread processes side by side),
    ``compiled[model]`` = ``{"eager_ms", "compiled_ms", "first_step_s"}`` for each compiled
    setting that finished and has an eager twin (same precision, layout, threads),
    ``compile_failed`` (models whose compiled run failed) and ``load_before`` /
    ``load_after`` (1-minute load averages)."""
    pair = bench["concurrent_two_single_thread_processes"]["seconds_per_epoch_each"]
    compiled, failed = {}, []
    for r in bench["rows"]:
        if not r.get("compile"):
            continue
        if "seconds_per_epoch" not in r:
            failed.append(r["model"])
            continue
        eager = _reference_row(bench["rows"], r, precision=r["precision"],
                               channels_last=bool(r.get("channels_last")), compile=False)
        if eager is not None:
            compiled[r["model"]] = {"eager_ms": eager["median_step_ms"],
                                    "compiled_ms": r["median_step_ms"],
                                    "first_step_s": r["first_step_s"]}
    load = bench["load_average_1min_before_after"]
    return {"best_bn": bench["best"]["bn"], "pair_seconds": dict(zip(MODELS, pair)),
            "compiled": compiled, "compile_failed": failed,
            "load_before": load[0], "load_after": load[1]}


def epoch_table(bench: Mapping) -> str:
    """Markdown table of the whole-epoch benchmark: per model the measured seconds of an
    epoch, its dense-layer work, the achieved GFLOP/s, their fraction of the matmul peak, the
    epoch that peak would allow and the ratio of measured to allowed."""
    peak = bench["matmul_peak"]["flops_per_s"]
    rows = []
    for m in MODELS:
        r = bench["models"][m]
        rows.append((m, f"{r['seconds_per_epoch']:.1f}", f"{r['epoch_flops'] / 1e12:.2f}",
                     f"{r['achieved_flops_per_s'] / 1e9:.0f}", f"{100 * r['fraction_of_peak']:.0f}%",
                     f"{r['peak_allowed_seconds']:.1f}", f"{r['ratio_to_peak_allowed']:.1f}×"))
    return markdown_table(["model", "s per epoch (measured)", "TFLOP per epoch", "GFLOP/s",
                           f"of peak ({peak / 1e9:.0f} GFLOP/s)", "s per epoch at peak",
                           "measured / at peak"], rows, align="lrrrrrr")


def epoch_facts(bench: Mapping) -> dict:
    """Headline numbers of the whole-epoch benchmark: ``peak_gflops``, ``threads``,
    ``precision``, and per model ``seconds``, ``fraction`` (of peak), ``ratio`` (measured /
    peak-allowed), plus ``aim`` (the ratio the book aims at) and ``load`` (before, after)."""
    out = {"peak_gflops": bench["matmul_peak"]["flops_per_s"] / 1e9,
           "threads": bench["threads"], "precision": bench["provenance"]["precision"],
           "aim": bench["aim_ratio_to_peak_allowed"],
           "load": tuple(bench["load_average_1min_before_after"])}
    for m in MODELS:
        r = bench["models"][m]
        out[m] = {"seconds": r["seconds_per_epoch"], "fraction": r["fraction_of_peak"],
                  "ratio": r["ratio_to_peak_allowed"]}
    return out

"""On a GPU, in one run: chapter 5's and chapter 8's verification, chapter 7's epoch times and,
where they fit, the 50-epoch fp32 pair; stored so that the CPU-built book can show them.

A GPU is lent to this project only now and then, for minutes, so everything it should measure
is one prepared command (``make gpu-results`` runs the same with the system ``python3``)::

    PYTHONPATH=code python3 -m bnbook.experiments.gpu_results --commit <git commit of the tree>
    PYTHONPATH=code python3 -m bnbook.experiments.gpu_results --device cpu --out /tmp/gpu-test  # its test

On the accelerator PyTorch sees (CUDA) it runs, and writes as soon as each part is done (a
later part's failure keeps the earlier files), into ``--out`` (default
``data/results/gpu/``), ``<device>`` being the GPU's name in lower case with dashes:

1. ``verify-<device>.json``: :func:`bnbook.verify.sweep` (chapter 5: ``nn.BatchNorm1d/2d``
   against the float64 NumPy layer in every dtype the device runs, with cuDNN and again with
   cuDNN switched off) and :func:`other_norms_check` (chapter 8: the NumPy layer norm, instance
   norm and group norm against ``F.layer_norm``, ``F.instance_norm``, ``F.group_norm`` in
   float64);
2. ``cifar-speed-<device>.json``: whole epochs of chapter 7's baseline and BN networks
   (:func:`bnbook.experiments.cifar.train.train`, batch 32, 1563 updates, augmentation and the evaluation of
   the 10,000 test images included; epoch 2 reported) in fp32 and in bf16 autocast (fp16
   on a GPU without native bf16),
   against the device's measured matmul peak in the same precision
   (:func:`bnbook.experiments.cifar.speed.matmul_peak`);
3. ``cifar-pair-<device>.json``: if the measured fp32 epochs say that two 50-epoch runs
   (baseline and BN, seed 7, trained side by side as ``python -m bnbook.experiments.cifar`` processes)
   finish inside what is left of ``--budget`` seconds, they run, are published with
   :func:`bnbook.experiments.cifar.cli.publish` into ``cifar10/`` beside the file, and the file lists them
   (``"kind": "measured"``); otherwise, or if the runs' own epochs show they would overrun,
   it holds a projection of their time (``"kind": "projection"``) and nothing is published.

fp32 means IEEE float32 here: TF32 is switched off for matrix products and convolutions
(``NVIDIA_TF32_OVERRIDE=0`` and torch's ``allow_tf32`` flags), as on the article's GTX 1080.
Without an accelerator the command says so and exits with status 2; ``--device cpu`` (with
``--out`` outside ``data/results/``) runs a tiny version of every part in seconds instead.

The machine that runs it need not be a copy of this one: it needs only numpy and torch (and
Pillow, to decode the CIFAR-10 JPEG copy once), and finds CIFAR-10 where
:func:`bnbook.data.load_cifar10` looks (``$BNBOOK_CIFAR10``, else ``data/cache/``, where the
19.6 MB ``cifar10-jpeg.tar.gz`` can travel with the working tree). Where the tree travels
without ``.git``, ``--commit`` says which commit it is. The chapters read the stored files
with :func:`verify_table` and :func:`speed_table`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bnbook.provenance import (REPO_ROOT, RESULTS_DIR, accelerator_description, command_line,
                               atomic_write_json, collect_provenance, git_commit, now_iso)
from bnbook.results import markdown_table, read_result, write_result

__all__ = ["GPU_RESULTS_DIR", "BUDGET_SECONDS", "PAIR_EPOCHS", "PAIR_SEED", "EMPTY_ROW",
           "build_parser", "device_slug", "other_norms_check", "verify_part", "speed_part",
           "pair_plan", "pair_part", "verify_table", "speed_table", "main"]

#: Where a real run stores its files (``--out`` default on an accelerator).
GPU_RESULTS_DIR = RESULTS_DIR / "gpu"
#: Seconds the whole run may take (a lent machine has 15 minutes, its start included).
BUDGET_SECONDS = 360.0
PAIR_EPOCHS, PAIR_SEED = 50, 7
#: Assumed slow-down of each of the two pair runs when they share the GPU (checked against
#: their own epochs once they run), and the seconds a trainer process needs to start.
PAIR_SLOWDOWN, PAIR_START_SECONDS = 1.3, 30.0
#: The tiny version (``--device cpu``): training images per run, cases, trials, epochs.
TINY = {"subset": 64, "cases": 4, "trials": 3, "epochs": 2, "pair_epochs": 2}
#: What the chapters' tables show while no file is stored.
EMPTY_ROW = "no GPU results stored yet (run make gpu-results on a machine with a GPU)"


# --- devices ---------------------------------------------------------------------------------

def device_slug(device: str) -> str:
    """The ``<device>`` of the file names: the GPU's name (``"nvidia-h100-80gb-hbm3"``) or
    ``"cpu"``."""
    if not str(device).startswith("cuda"):
        return "cpu"
    import torch

    name = torch.cuda.get_device_name(torch.device(device))
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cuda"


def _pick_device(requested: str) -> str:
    """``"cuda"`` or ``"cpu"``; ``SystemExit(2)`` with a message when no accelerator is seen."""
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    seen = "only Apple's MPS, which the trainer does not run on" \
        if mps is not None and mps.is_available() else "no CUDA device"
    print(f"error: no accelerator: torch {torch.__version__} sees {seen} "
          f"(torch.cuda.is_available() is False). This command measures a GPU: run it on a "
          f"machine with one (README, 'On a GPU'), or pass --device cpu --out DIR for its "
          f"own tiny test.", file=sys.stderr)
    raise SystemExit(2)


def _fp32_without_tf32() -> None:
    """IEEE float32 for matrix products and convolutions (no TF32), in this process and in
    the trainer processes it starts (``NVIDIA_TF32_OVERRIDE`` is inherited)."""
    import torch

    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# --- part 1: verification --------------------------------------------------------------------

def _norm_pair(method, x, gamma, beta, dy, groups, device):
    """(the NumPy layer's, PyTorch's on ``device``) ``[y, dx, dgamma, dbeta]``, float64."""
    import torch
    import torch.nn.functional as F

    from bnbook.numpy_norms import (group_norm_backward, group_norm_forward,
                                    instance_norm_backward, instance_norm_forward,
                                    layer_norm_backward, layer_norm_forward)

    xt, gt, bt = (torch.tensor(a, device=device, requires_grad=True) for a in (x, gamma, beta))
    if method == "layer":
        y, cache = layer_norm_forward(x, gamma, beta, eps=1e-5)
        mine = [y, *layer_norm_backward(dy, cache)]
        yt = F.layer_norm(xt, x.shape[1:], gt, bt, eps=1e-5)
    elif method == "instance":
        y, cache = instance_norm_forward(x, gamma, beta, eps=1e-5)
        mine = [y, *instance_norm_backward(dy, cache)]
        yt = F.instance_norm(xt, weight=gt, bias=bt, eps=1e-5)
    else:
        y, cache = group_norm_forward(x, gamma, beta, groups, eps=1e-5)
        mine = [y, *group_norm_backward(dy, cache)]
        yt = F.group_norm(xt, groups, gt, bt, eps=1e-5)
    yt.backward(torch.tensor(dy, device=device))
    return mine, [t.detach().cpu().numpy() for t in (yt, xt.grad, gt.grad, bt.grad)]


def other_norms_check(device: str, trials: int = 30, seed: int = 8) -> dict:
    """Chapter 8's check of the NumPy layer norm, instance norm and group norm (``G = 1, 2, C``) on
    ``device``: ``trials`` random ``(N, C, H, W)`` inputs (values from ``1e-2`` to ``1e2``
    around 3), ``y`` and the three gradients against ``torch.nn.functional`` in float64 with
    autograd. Returns ``{"trials", "threshold", "worst": {method: rel_error}, "passed"}``."""
    from bnbook.gradcheck import THRESHOLDS, rel_error

    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}
    for _ in range(trials):
        n, c = int(rng.integers(2, 5)), 2 * int(rng.integers(1, 4))
        shape = (n, c, int(rng.integers(1, 5)), int(rng.integers(2, 5)))
        x = 3.0 + 10.0 ** rng.uniform(-2, 2) * rng.standard_normal(shape)
        dy = rng.standard_normal(shape)
        for method, groups in [("layer", None), ("instance", None), ("group", 1),
                               ("group", 2), ("group", c)]:
            p_shape = shape[1:] if method == "layer" else (c,)
            gamma, beta = rng.uniform(0.5, 2, p_shape), rng.standard_normal(p_shape)
            mine, theirs = _norm_pair(method, x, gamma, beta, dy, groups, device)
            key = method if method != "group" else \
                f"group (G = {'C' if groups == c else groups})"
            worst[key] = max(worst.get(key, 0.0), *(rel_error(a, b)
                                                    for a, b in zip(mine, theirs)))
    threshold = THRESHOLDS["float64_analytic"]
    return {"trials": trials, "threshold": threshold, "worst": worst,
            "passed": all(err < threshold for err in worst.values())}


def verify_part(device: str, tiny: bool = False) -> dict:
    """Part 1's payload: the batch-norm sweep's :func:`bnbook.verify.error_table` rows on
    ``device`` (on CUDA with cuDNN, then again labelled ``"cuda (cuDNN off)"``), the
    dtypes it ran, and :func:`other_norms_check`."""
    import torch

    from bnbook.verify import error_table, random_cases, supported_dtypes, sweep

    cases = random_cases(TINY["cases"] if tiny else 32, seed=0)
    records = sweep(cases, devices=[device], progress=False)
    if device.startswith("cuda"):
        with torch.backends.cudnn.flags(enabled=False):
            records += [{**r, "device": "cuda (cuDNN off)"}
                        for r in sweep(cases, devices=[device], progress=False)]
    rows = error_table(records)
    norms = other_norms_check(device, trials=TINY["trials"] if tiny else 30)
    return {"description": "chapter 5: nn.BatchNorm1d/2d against the float64 NumPy layer "
                           "(bnbook.verify.sweep); chapter 8: layer, instance and group norm "
                           "against torch.nn.functional in float64",
            "dtypes": [str(dt).replace("torch.", "") for dt in supported_dtypes(device)],
            "cases": len(cases), "batch_norm_rows": rows, "other_norms": norms,
            "passed": bool(all(r["worst_ratio"] < 1 for r in rows) and norms["passed"])}


# --- part 2: seconds per epoch ---------------------------------------------------------------

def _precisions(device: str) -> list[str]:
    """fp32, then the autocast precision ``--precision auto`` picks: bf16 where the GPU
    computes it natively, else fp16 (with a gradient scaler); bf16 on the CPU (the test)."""
    from bnbook.experiments.cifar.train import resolve_precision

    amp = resolve_precision("auto", device) if device.startswith("cuda") else "bf16"
    return ["fp32", amp]


def speed_part(device: str, data, tiny: bool = False) -> dict:
    """Part 2's payload: per model and precision the seconds of the last of ``epochs`` whole
    epochs (:func:`bnbook.experiments.cifar.train.train`, channels_last, evaluation included), its dense-layer
    work (:func:`bnbook.experiments.cifar.speed.epoch_flops`), and its fraction of the matmul peak.
    ``data``: ``(x_train, y_train, x_test, y_test)`` as :func:`bnbook.data.load_cifar10`."""
    from bnbook.experiments.cifar.config import TrainConfig
    from bnbook.experiments.cifar.speed import ARTICLE_GTX1080_S_PER_EPOCH, epoch_flops, matmul_peak
    from bnbook.experiments.cifar.train import train

    subset = TINY["subset"] if tiny else None
    epochs = TINY["epochs"] if tiny else 2
    n_train = subset or len(data[0])
    n_test = subset // 5 if subset else len(data[2])
    sizes, repeats = ((128, 256), 2) if tiny else ((2048, 4096, 8192), 10)
    peaks, rows = {}, []
    for precision in _precisions(device):
        peaks[precision] = matmul_peak(precision, sizes=sizes, repeats=repeats, device=device)
        peak = peaks[precision]["flops_per_s"]
        for model in ("baseline", "bn"):
            config = TrainConfig(model=model, epochs=epochs, precision=precision, seed=PAIR_SEED,
                                 channels_last=True, device=device, subset=subset)
            history = train(config, data, progress=False)["history"]
            seconds = history[-1]["seconds"]
            flops = epoch_flops(model, n_train, n_test)
            rows.append({"model": model, "precision": precision,
                         "epoch_seconds": [h["seconds"] for h in history],
                         "seconds_per_epoch": seconds, "epoch_flops": flops,
                         "achieved_flops_per_s": flops / seconds,
                         "fraction_of_peak": flops / seconds / peak,
                         "peak_allowed_seconds": flops / peak,
                         "ratio_to_peak_allowed": seconds * peak / flops})
            print(f"  {model:8s} {precision}: {seconds:.2f} s per epoch", flush=True)
    return {"description": "whole CIFAR-10 epochs of chapter 7's networks (bnbook.experiments.cifar.train.train: "
                           "batch 32, augmentation and evaluation included, channels_last), "
                           "the last of the epochs run, against the dense matmul peak",
            "train_images": n_train, "test_images": n_test, "batch_size": 32,
            "epochs_run": epochs, "reported_epoch": epochs, "channels_last": True,
            "tf32": False, "matmul_peak": {p: {"flops_per_s": v["flops_per_s"],
                                               "by_size": {str(n): f for n, f in
                                                           v["by_size"].items()}}
                                           for p, v in peaks.items()},
            "rows": rows, "article_gtx1080_seconds_per_epoch": list(ARTICLE_GTX1080_S_PER_EPOCH)}


# --- part 3: the 50-epoch fp32 pair ----------------------------------------------------------

def pair_plan(seconds_per_epoch: dict, left_seconds: float, epochs: int = PAIR_EPOCHS,
              slowdown: float = PAIR_SLOWDOWN) -> dict:
    """Whether two runs of ``epochs`` epochs, side by side, fit in ``left_seconds``.

    ``seconds_per_epoch``: ``{model: s}`` measured alone. The projection: the slower model's
    ``epochs`` epochs, each ``slowdown`` times longer for sharing the device, plus the
    processes' start. Returns ``{"fits", "projected_seconds", "sequential_seconds",
    "left_seconds", "slowdown_assumed"}``.
    """
    if not seconds_per_epoch or min(seconds_per_epoch.values()) <= 0:
        raise ValueError(f"need positive seconds per epoch, got {seconds_per_epoch}")
    projected = epochs * max(seconds_per_epoch.values()) * slowdown + PAIR_START_SECONDS
    return {"fits": projected <= left_seconds, "projected_seconds": round(projected, 1),
            "sequential_seconds": round(epochs * sum(seconds_per_epoch.values()), 1),
            "left_seconds": round(left_seconds, 1), "slowdown_assumed": slowdown}


def _history(path: Path) -> list:
    try:
        return json.loads(path.read_text())["history"]
    except (OSError, ValueError, KeyError):
        return []


def _run_pair(commands: dict, outs: dict, deadline: float, epochs: int) -> dict:
    """Start the trainer processes; stop them as soon as their own epochs project past
    ``deadline``. Returns ``{model: {"returncode", "epochs_done", "last_seconds"}}`` and
    ``"stopped"`` (why they were stopped, or ``None``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "code"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    logs = {m: open(outs[m].with_suffix(".log"), "w+") for m in commands}
    procs = {m: subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=logs[m], text=True)  # a file: a pipe could fill up
             for m, cmd in commands.items()}
    stopped = None
    while any(p.poll() is None for p in procs.values()):
        time.sleep(0.5)
        histories = {m: _history(outs[m]) for m in procs}
        if all(histories.values()):
            finish = time.perf_counter() + max(
                (epochs - len(h)) * h[-1]["seconds"] for h in histories.values())
            if finish > deadline and stopped is None:
                stopped = (f"after {min(map(len, histories.values()))} epochs side by side the "
                           f"runs would end {finish - deadline:.0f} s after the budget")
        if stopped is None and time.perf_counter() > deadline:
            stopped = "the budget ran out"
        if stopped is not None:
            for p in procs.values():
                p.terminate()
    report = {}
    for m, p in procs.items():
        p.wait()
        logs[m].seek(0)
        err = logs[m].read().strip().splitlines()
        logs[m].close()
        history = _history(outs[m])
        report[m] = {"returncode": p.wait(), "epochs_done": len(history),
                     "last_seconds": history[-1]["seconds"] if history else None,
                     **({"error": err[-1]} if p.returncode and err and not stopped else {})}
    return {"runs": report, "stopped": stopped}


def pair_part(device: str, seconds_per_epoch: dict, deadline: float, out: Path, commit: str,
              tiny: bool = False) -> dict:
    """Part 3's payload: the fp32 pair measured and published (``"kind": "measured"``), or
    its projection (``"kind": "projection"``) when :func:`pair_plan` or the runs' own epochs
    say it does not fit before ``deadline`` (a ``time.perf_counter`` value)."""
    from bnbook.experiments.cifar.cli import publish

    epochs = TINY["pair_epochs"] if tiny else PAIR_EPOCHS
    plan = pair_plan(seconds_per_epoch, deadline - time.perf_counter(), epochs)
    payload = {"epochs": epochs, "seed": PAIR_SEED, "precision": "fp32", "plan": plan,
               "seconds_per_epoch_alone": seconds_per_epoch}
    if not plan["fits"]:
        return {"kind": "projection", "reason": "the measured fp32 epochs do not fit in what "
                "is left of the budget", **payload}
    slug = device_slug(device)
    with tempfile.TemporaryDirectory(prefix="gpu-pair-") as tmp:
        names, outs, commands = {}, {}, {}
        for m in ("baseline", "bn"):
            names[m] = (f"{m}-e{epochs}{'-sub%d' % TINY['subset'] if tiny else ''}"
                        f"-seed{PAIR_SEED}-fp32-{slug}")
            run_folder = Path(tmp) / m          # one folder a run: each run locks its own
            run_folder.mkdir()
            outs[m] = run_folder / f"{m}.json"
            commands[m] = [sys.executable, "-m", "bnbook.experiments.cifar", "--model", m, "--epochs",
                           str(epochs), "--seed", str(PAIR_SEED), "--precision", "fp32",
                           "--device", "cuda" if device.startswith("cuda") else "cpu",
                           "--channels-last", "--no-progress", "--run-name", names[m],
                           "--out", str(outs[m]), "--checkpoint", str(run_folder / f"{m}.pt"),
                           *(["--subset", str(TINY["subset"]), "--threads", "1"] if tiny else [])]
        ran = _run_pair(commands, outs, deadline, epochs)
        if ran["stopped"] or any(r["returncode"] for r in ran["runs"].values()):
            side_by_side = {m: r["last_seconds"] for m, r in ran["runs"].items()}
            return {"kind": "projection", "reason": ran["stopped"] or "a run failed",
                    **payload, "runs": ran["runs"], "seconds_per_epoch_side_by_side":
                    side_by_side, "projected_seconds_side_by_side": round(
                        epochs * max(s or 0 for s in side_by_side.values()), 1)}
        published = {}
        for m in ("baseline", "bn"):
            path = publish(outs[m], name=names[m], results_dir=out / "cifar10", force=False)
            _record_commit(path, commit)
            history = read_result(path)["history"]
            published[m] = {"file": f"cifar10/{path.name}", "final_val_acc":
                            history[-1]["val_acc"], "best_val_acc": max(
                                h["val_acc"] for h in history),
                            "median_seconds": float(np.median([h["seconds"] for h in history]))}
    return {"kind": "measured", **payload, "published": published}


def _record_commit(path: Path, commit: str) -> None:
    """Where the trainer could not see the commit (a tree without ``.git``), write the one
    this run was given into the published file's provenance."""
    result = json.loads(path.read_text())
    if result["provenance"].get("git_commit") == "unknown" and commit != "unknown":
        result["provenance"]["git_commit"] = commit
        result["provenance"]["git_commit_from"] = "python -m bnbook.experiments.gpu_results --commit"
        atomic_write_json(path, result)


# --- the chapters' tables -------------------------------------------------------------------

def _stored(part: str, results_dir) -> list[dict]:
    """The stored results of ``part`` (``"verify"``, ``"cifar-speed"``, ``"cifar-pair"``),
    each read (and checked) with :func:`bnbook.results.read_result`, by file name."""
    folder = Path(GPU_RESULTS_DIR if results_dir is None else results_dir)
    if not folder.is_dir():
        return []
    return [read_result(p) for p in sorted(folder.glob(f"{part}-*.json"))]


def _versions(prov: dict) -> tuple[str, str, str, str, str]:
    """(GPU, torch, CUDA, cuDNN, driver) of a result's provenance."""
    acc = prov.get("accelerator") or {}
    return (acc.get("name", prov["device"]), prov["torch"], str(acc.get("cuda", "—")),
            str(acc.get("cudnn", "—")), str(acc.get("driver", "—")))


def verify_table(results_dir=None) -> str:
    """Markdown table of the stored GPU verification runs (``verify-<device>.json`` in
    ``results_dir``, default :data:`GPU_RESULTS_DIR`): one row per device, with its versions,
    the date, the dtypes, the worst ratio of a batch-norm error to its tolerance (with and
    without cuDNN) and the worst error of chapter 8's layer, instance and group norm check.
    With no file stored, one row says so (:data:`EMPTY_ROW`)."""
    header = ["GPU", "torch", "CUDA", "cuDNN", "driver", "date", "dtypes",
              "batch norm: worst error / tolerance", "layer, instance, group norm: worst "
              "error", "passed"]
    rows = []
    for r in _stored("verify", results_dir):
        worst: dict[str, float] = {}
        for row in r["batch_norm_rows"]:
            worst[row["device"]] = max(worst.get(row["device"], 0.0), row["worst_ratio"])
        norms = r["other_norms"]
        rows.append((*_versions(r["provenance"]), r["provenance"]["started"][:10],
                     ", ".join(r["dtypes"]),
                     "; ".join(f"{d}: {v:.2f}" for d, v in worst.items()),
                     f"{max(norms['worst'].values()):.1e} (threshold {norms['threshold']:.0e})",
                     "yes" if r["passed"] else "NO"))
    if not rows:
        rows = [(EMPTY_ROW, *["—"] * (len(header) - 1))]
    return markdown_table(header, rows)


def _pair_cells(pair: dict | None) -> str:
    if pair is None:
        return "—"
    if pair["kind"] == "projection":  # the runs' own epochs, where they started, else the plan's
        seconds = pair.get("projected_seconds_side_by_side") or pair["plan"]["projected_seconds"]
        return f"projection: about {seconds:.0f} s side by side, not run"
    return ", ".join(f"{m} {100 * r['final_val_acc']:.1f}%" for m, r in pair["published"].items())


def speed_table(results_dir=None) -> str:
    """Markdown table of the stored GPU epoch timings (``cifar-speed-<device>.json``, default
    folder :data:`GPU_RESULTS_DIR`): per device, model and precision the seconds of a whole
    epoch and their fraction of the device's matmul peak; the fp32 rows add the 50-epoch
    pair's final validation accuracy or, where it did not run, its projection
    (``cifar-pair-<device>.json``). With no file stored, one row says so (:data:`EMPTY_ROW`)."""
    header = ["GPU", "torch", "CUDA", "cuDNN", "date", "model", "precision", "s per epoch",
              "of matmul peak", "50-epoch fp32 pair: final validation accuracy"]
    pairs = {r["provenance"]["device"]: r for r in _stored("cifar-pair", results_dir)}
    rows = []
    for r in _stored("cifar-speed", results_dir):
        gpu, torch_v, cuda, cudnn, _ = _versions(r["provenance"])
        pair = pairs.get(r["provenance"]["device"])
        for row in r["rows"]:
            rows.append((gpu, torch_v, cuda, cudnn, r["provenance"]["started"][:10],
                         row["model"], row["precision"], f"{row['seconds_per_epoch']:.1f}",
                         f"{100 * row['fraction_of_peak']:.1f}%",
                         _pair_cells(pair) if row["precision"] == "fp32" else "—"))
    if not rows:
        rows = [(EMPTY_ROW, *["—"] * (len(header) - 1))]
    return markdown_table(header, rows, align="lllllllrrl")


# --- the run ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bnbook.experiments.gpu_results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="auto/cuda: the GPU PyTorch sees (none: exit status 2); cpu: the tiny "
                        "test of every part (needs --out outside data/results/)")
    p.add_argument("--out", default=None,
                   help=f"folder for the result files (default {GPU_RESULTS_DIR} on a GPU)")
    p.add_argument("--budget", type=float, default=BUDGET_SECONDS,
                   help="seconds the whole run may take; the 50-epoch pair runs only if it "
                        "fits in what is left (default %(default)s)")
    p.add_argument("--commit", default=None,
                   help="the commit of the working tree, recorded where git cannot tell "
                        "(a tree copied without .git)")
    p.add_argument("--force", action="store_true",
                   help="replace this command's earlier files for the same device")
    return p


def _targets(out: Path, slug: str, tiny: bool) -> list[Path]:
    epochs = TINY["pair_epochs"] if tiny else PAIR_EPOCHS
    sub = f"-sub{TINY['subset']}" if tiny else ""
    return [out / f"{part}-{slug}.json" for part in ("verify", "cifar-speed", "cifar-pair")] + \
        [out / "cifar10" / f"{m}-e{epochs}{sub}-seed{PAIR_SEED}-fp32-{slug}.json"
         for m in ("baseline", "bn")]


def _check_out(args, device: str, slug: str) -> Path:
    """The output folder; ``SystemExit(2)`` before any work for a refused one."""
    tiny = device == "cpu"
    if args.out is None and tiny:
        raise SystemExit("error: --device cpu is the tiny test: pass --out DIR (outside "
                         "data/results/), so that no test result lands among the GPU results")
    out = Path(args.out).resolve() if args.out else GPU_RESULTS_DIR
    if tiny and (out == RESULTS_DIR.resolve() or RESULTS_DIR.resolve() in out.parents):
        raise SystemExit(f"error: --out {out} is inside {RESULTS_DIR}: the tiny test's "
                         f"results never go there")
    existing = [p for p in _targets(out, slug, tiny) if p.exists()]
    if existing and not args.force:
        raise SystemExit(f"error: {existing[0]} exists (an earlier run on this device); pass "
                         f"--force to replace this command's files for {slug}")
    if args.budget <= 0:
        raise SystemExit(f"error: --budget must be positive seconds, got {args.budget}")
    return out


def _load_data(tiny: bool):
    """CIFAR-10 and its provenance fields, found where :func:`bnbook.data.load_cifar10`
    looks (``$BNBOOK_CIFAR10``, then ``data/cache/``)."""
    from bnbook.data import cifar10_info, load_cifar10

    data = load_cifar10(progress=False)
    info = cifar10_info()
    return data, {"dataset": info["variant"], "dataset_sha256": info["sha256"]}


def _write(out: Path, part: str, payload: dict, common: dict, started: str, t0: float,
           precision: str, dataset: dict | None = None) -> Path:
    """Write one part's result, ``<out>/<part>-<device>.json``, with its provenance."""
    prov = collect_provenance(common["device"], precision, started=started,
                              wall_seconds=round(time.perf_counter() - t0, 1),
                              **(dataset or {"dataset": "synthetic-random-normal",
                                             "dataset_sha256": None}),
                              command=common["command"], commit=common["commit"],
                              accelerator=common["accelerator"], tf32=False,
                              budget_seconds=common["budget"])
    path = write_result(out / f"{part}-{common['slug']}.json", {"provenance": prov, "part": part,
                                     "tiny_test": common["device"] == "cpu", **payload})
    print(f"wrote {path}", flush=True)
    return path


def _print_tables(verify: dict | None, speed: dict | None, pair: dict | None) -> None:
    from bnbook.verify import format_error_table

    if verify is not None:
        print(format_error_table(verify["batch_norm_rows"]))
        norms = verify["other_norms"]
        print(markdown_table(["chapter 8 check", f"worst rel_error (threshold "
                                                 f"{norms['threshold']:.0e})"],
                             [(k, f"{v:.1e}") for k, v in norms["worst"].items()], "lr"))
    if speed is not None:
        print(markdown_table(
            ["model", "precision", "s per epoch", "of matmul peak", "measured / at peak"],
            [(r["model"], r["precision"], f"{r['seconds_per_epoch']:.2f}",
              f"{100 * r['fraction_of_peak']:.1f}%", f"{r['ratio_to_peak_allowed']:.1f}x")
             for r in speed["rows"]], "llrrr"))
    if pair is not None:
        print(f"fp32 pair ({pair['epochs']} epochs): {pair['kind']}"
              + (f", {pair['reason']}; projected {pair['plan']['projected_seconds']} s side "
                 f"by side" if pair["kind"] == "projection" else
                 "; " + ", ".join(f"{m} final val_acc {r['final_val_acc']:.4f}"
                                  for m, r in pair["published"].items())))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.budget
    _fp32_without_tf32()  # before CUDA's libraries start, which read NVIDIA_TF32_OVERRIDE
    device = _pick_device(args.device)
    tiny = device == "cpu"
    slug = device_slug(device)
    out = _check_out(args, device, slug)
    if tiny:
        import torch

        torch.set_num_threads(1)  # the test shares small CI machines
    commit = git_commit()
    if commit == "unknown" and args.commit:
        commit = args.commit
    elif commit == "unknown":
        print("warning: git cannot tell this tree's commit and no --commit was given: the "
              "results record 'unknown'", file=sys.stderr)
    common = {"device": device, "slug": slug, "commit": commit, "budget": args.budget,
              "accelerator": accelerator_description(device),
              "command": command_line(argv, prog="python -m bnbook.experiments.gpu_results")}
    print(f"{common['accelerator']['name']}: results into {out}"
          + (" (tiny test)" if tiny else ""), flush=True)
    verify = speed = pair = None
    started, t0 = now_iso(), time.perf_counter()
    verify = verify_part(device, tiny)
    _write(out, "verify", verify, common, started, t0,
           ",".join(verify["dtypes"]))
    data, dataset = _load_data(tiny)
    started, t0 = now_iso(), time.perf_counter()
    speed = speed_part(device, data, tiny)
    _write(out, "cifar-speed", speed, common, started, t0,
           " and ".join(["fp32", *(f"{p} autocast" for p in _precisions(device)[1:])]), dataset)
    alone = {r["model"]: r["seconds_per_epoch"] for r in speed["rows"]
             if r["precision"] == "fp32"}
    started, t0 = now_iso(), time.perf_counter()
    pair = pair_part(device, alone, deadline, out, commit, tiny)
    _write(out, "cifar-pair", pair, common, started, t0, "fp32", dataset)
    _print_tables(verify, speed, pair)
    print(f"done in {time.perf_counter() - t_start:.0f} s; all checks passed: "
          f"{verify['passed']}", flush=True)
    return 0 if verify["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

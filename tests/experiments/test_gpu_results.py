"""``python -m bnbook.experiments.gpu_results``: its tiny CPU run end to end (with only the packages a GPU
machine's image is sure to have importable), its refusals, the pair's plan and stop, and the
chapters' tables of stored GPU results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bnbook.experiments import gpu_results
from bnbook.experiments.cifar.speed import epoch_flops
from bnbook.provenance import REPO_ROOT, RESULTS_DIR, collect_provenance
from bnbook.results import read_result, write_result

# A sitecustomize that makes every third-party import fail except numpy, torch (and what torch
# itself needs) and Pillow (the CIFAR-10 JPEG copy is decoded with it once): what the script
# may rely on where it runs, a machine with its own Python and PyTorch but not this book's
# environment. It is inherited by the trainer processes the script starts.
_BLOCKER = textwrap.dedent('''
    import importlib.machinery, importlib.metadata, re, sys
    allowed_dists = {"numpy", "torch", "pillow"}
    for req in importlib.metadata.requires("torch") or []:
        if "extra ==" not in req:
            allowed_dists.add(re.split(r"[ ;<>=!~\\[]", req, maxsplit=1)[0].lower())
    allowed_dists |= {"mpmath"}  # sympy's own requirement
    norm = lambda d: d.lower().replace("-", "_")
    allowed_dists = {norm(d) for d in allowed_dists}
    tops = importlib.metadata.packages_distributions().items()
    allowed = {"bnbook"} | {top for top, dists in tops
                            if any(norm(d) in allowed_dists for d in dists)}

    class ImageOnlyPathFinder(importlib.machinery.PathFinder):
        # A top-level package outside the standard library and the allowed ones is not
        # found, as on a machine without it (import raises, importlib.util.find_spec is None).
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if path is None and not (name in sys.stdlib_module_names or name in allowed
                                     or name.startswith("_")):
                return None
            return super().find_spec(name, path, target)

    sys.meta_path[:] = [ImageOnlyPathFinder if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]
''')


def _run(args, tmp_path, env_extra=None, block=True, timeout=300):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        ([str(tmp_path / "site")] if block else []) + [str(REPO_ROOT / "code")]),
        **(env_extra or {})}
    if block:
        (tmp_path / "site").mkdir(exist_ok=True)
        (tmp_path / "site" / "sitecustomize.py").write_text(_BLOCKER)
    return subprocess.run([sys.executable, "-m", "bnbook.experiments.gpu_results", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _gpu_listing():
    folder = RESULTS_DIR / "gpu"
    return sorted(p.relative_to(folder) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny run once for the module: ``(out folder, completed process, seconds)``."""
    tmp = tmp_path_factory.mktemp("gpu-tiny")
    before = _gpu_listing()
    t0 = time.perf_counter()
    proc = _run(["--device", "cpu", "--out", str(tmp / "out")], tmp)
    seconds = time.perf_counter() - t0
    assert _gpu_listing() == before, "the tiny test wrote into data/results/gpu"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "out", proc, seconds


def test_tiny_run_writes_every_part_readable(tiny_run):
    out, proc, seconds = tiny_run
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert names == ["cifar-pair-cpu.json", "cifar-speed-cpu.json",
                     "cifar10/baseline-e2-sub64-seed7-fp32-cpu.json",
                     "cifar10/bn-e2-sub64-seed7-fp32-cpu.json", "verify-cpu.json"]
    results = {n: read_result(out / n) for n in names}  # the schema check
    for name in ("verify-cpu.json", "cifar-speed-cpu.json", "cifar-pair-cpu.json"):
        prov = results[name]["provenance"]
        assert results[name]["tiny_test"] is True
        assert prov["accelerator"]["kind"] == "cpu" and prov["tf32"] is False
        assert prov["command"].startswith("python -m bnbook.experiments.gpu_results --device cpu")
    assert "all checks passed: True" in proc.stdout
    assert seconds < 120, f"the tiny run took {seconds:.0f} s; it is meant to take seconds"


def test_tiny_run_verification_covers_every_cpu_dtype(tiny_run):
    verify = read_result(tiny_run[0] / "verify-cpu.json")
    assert verify["dtypes"] == ["float64", "float32", "float16", "bfloat16"]
    assert {r["dtype"] for r in verify["batch_norm_rows"]} == set(verify["dtypes"])
    assert all(r["cases"] == gpu_results.TINY["cases"] for r in verify["batch_norm_rows"])
    assert verify["passed"] and all(r["worst_ratio"] < 1 for r in verify["batch_norm_rows"])
    norms = verify["other_norms"]
    assert {"layer", "instance", "group (G = 1)"} <= set(norms["worst"])
    assert max(norms["worst"].values()) < norms["threshold"] == 1e-10


def test_tiny_run_speed_rows_are_consistent(tiny_run):
    speed = read_result(tiny_run[0] / "cifar-speed-cpu.json")
    n = gpu_results.TINY["subset"]
    assert (speed["train_images"], speed["test_images"]) == (n, n // 5)
    assert [(r["model"], r["precision"]) for r in speed["rows"]] == [
        ("baseline", "fp32"), ("bn", "fp32"), ("baseline", "bf16"), ("bn", "bf16")]
    for r in speed["rows"]:
        assert r["epoch_flops"] == epoch_flops(r["model"], n, n // 5)
        assert len(r["epoch_seconds"]) == 2 and r["seconds_per_epoch"] == r["epoch_seconds"][-1]
        peak = speed["matmul_peak"][r["precision"]]["flops_per_s"]
        assert r["fraction_of_peak"] == pytest.approx(r["epoch_flops"] / r["seconds_per_epoch"]
                                                      / peak)


def test_tiny_run_pair_is_published_with_its_history(tiny_run):
    out = tiny_run[0]
    pair = read_result(out / "cifar-pair-cpu.json")
    assert pair["kind"] == "measured" and pair["plan"]["fits"]
    for model, entry in pair["published"].items():
        run = read_result(out / entry["file"])
        assert run["model"] == model and len(run["history"]) == 2
        assert run["config"]["precision"] == "fp32" and run["config"]["seed"] == 7
        assert entry["final_val_acc"] == run["history"][-1]["val_acc"]


def test_no_accelerator_is_refused(tmp_path):
    proc = _run(["--out", str(tmp_path / "out")], tmp_path, {"CUDA_VISIBLE_DEVICES": ""},
                block=False, timeout=120)
    assert proc.returncode == 2
    assert "no accelerator" in proc.stderr and "--device cpu" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--device", "cpu"], "pass --out DIR"),
    (["--device", "cpu", "--out", str(RESULTS_DIR / "gpu-test")], "never go there"),
    (["--device", "cpu", "--out", "{tmp}", "--budget", "0"], "--budget must be positive"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path / "out")) for a in args]
    proc = _run(args, tmp_path, block=False, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "out").exists() and not (RESULTS_DIR / "gpu-test").exists()


def test_an_earlier_run_is_not_replaced_without_force(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "verify-cpu.json").write_text("{}")
    proc = _run(["--device", "cpu", "--out", str(tmp_path / "out")], tmp_path, block=False)
    assert proc.returncode != 0 and "pass --force" in proc.stderr
    assert (tmp_path / "out" / "verify-cpu.json").read_text() == "{}"


def test_pair_plan_projects_the_slower_run_side_by_side():
    fits = gpu_results.pair_plan({"baseline": 2.0, "bn": 4.0}, 300.0, epochs=50, slowdown=1.3)
    assert fits["projected_seconds"] == pytest.approx(50 * 4.0 * 1.3 + 30.0)
    assert fits["sequential_seconds"] == pytest.approx(300.0) and fits["fits"]
    assert not gpu_results.pair_plan({"baseline": 2.0, "bn": 4.0}, 280.0)["fits"]
    with pytest.raises(ValueError):
        gpu_results.pair_plan({"bn": 0.0}, 100.0)


def test_pair_that_does_not_fit_is_a_projection(tmp_path):
    pair = gpu_results.pair_part("cpu", {"baseline": 1.0, "bn": 1.0}, time.perf_counter() + 5,
                                 tmp_path, "abc", tiny=True)
    assert pair["kind"] == "projection" and not pair["plan"]["fits"]
    assert not (tmp_path / "cifar10").exists()


def test_pair_that_overruns_is_stopped_and_projected(tmp_path, monkeypatch):
    # The plan is fooled (no start-up time, instant epochs); the runs themselves cannot
    # finish in 2 seconds, so they are stopped and nothing is published.
    monkeypatch.setattr(gpu_results, "PAIR_START_SECONDS", 0.0)
    pair = gpu_results.pair_part("cpu", {"baseline": 1e-3, "bn": 1e-3},
                                 time.perf_counter() + 2.0, tmp_path, "abc", tiny=True)
    assert pair["kind"] == "projection" and pair["plan"]["fits"]
    assert pair["reason"] in ("the budget ran out",) or "would end" in pair["reason"]
    assert not (tmp_path / "cifar10").exists()


def test_tables_say_when_nothing_is_stored(tmp_path):
    for table in (gpu_results.verify_table(tmp_path), gpu_results.speed_table(tmp_path / "no")):
        lines = table.splitlines()
        assert len(lines) == 3 and gpu_results.EMPTY_ROW in lines[2]


def _fake_gpu_results(folder: Path) -> None:
    accelerator = {"kind": "cuda", "name": "NVIDIA Testcard 9000", "compute_capability": "9.0",
                   "memory_gib": 79.2, "driver": "580.1", "cuda": "13.0",
                   "cuda_driver_api": 13000, "cudnn": 91002, "cudnn_enabled": True}
    prov = collect_provenance("cpu", "fp32", dataset="synthetic-random-normal",
                              dataset_sha256=None, started="2026-11-13T10:00:00+00:00",
                              wall_seconds=1.0, command="python -m bnbook.experiments.gpu_results",
                              accelerator=accelerator)
    prov["device"] = "cuda: NVIDIA Testcard 9000"
    bn_row = {"device": "cuda", "dtype": "float32", "worst_ratio": 0.25}
    write_result(folder / "verify-nvidia-testcard-9000.json", {
        "provenance": prov, "dtypes": ["float64", "float32"], "passed": True,
        "batch_norm_rows": [bn_row, {**bn_row, "dtype": "float64", "worst_ratio": 0.5},
                            {**bn_row, "device": "cuda (cuDNN off)", "worst_ratio": 0.125}],
        "other_norms": {"worst": {"layer": 3e-15, "instance": 7e-15}, "threshold": 1e-10}})
    row = {"model": "bn", "precision": "fp32", "seconds_per_epoch": 4.25,
           "fraction_of_peak": 0.031}
    write_result(folder / "cifar-speed-nvidia-testcard-9000.json", {
        "provenance": prov, "rows": [row, {**row, "precision": "bf16"}]})
    write_result(folder / "cifar-pair-nvidia-testcard-9000.json", {
        "provenance": prov, "kind": "projection", "plan": {"projected_seconds": 612.4}})


def test_tables_show_a_stored_gpu_result(tmp_path):
    _fake_gpu_results(tmp_path)
    verify = gpu_results.verify_table(tmp_path).splitlines()
    assert len(verify) == 3
    cells = [c.strip() for c in verify[2].strip("|").split("|")]
    assert cells == ["NVIDIA Testcard 9000", prov_torch(), "13.0", "91002", "580.1",
                     "2026-11-13", "float64, float32", "cuda: 0.50; cuda (cuDNN off): 0.12",
                     "7.0e-15 (threshold 1e-10)", "yes"]
    speed = gpu_results.speed_table(tmp_path).splitlines()
    assert len(speed) == 4
    fp32 = [c.strip() for c in speed[2].strip("|").split("|")]
    assert fp32[5:] == ["bn", "fp32", "4.2", "3.1%",
                        "projection: about 612 s side by side, not run"]
    assert speed[3].rstrip(" |").endswith("—")  # no pair entry for the bf16 row


def prov_torch() -> str:
    import torch

    return torch.__version__


def test_tables_read_the_tiny_runs_files(tiny_run):
    verify = gpu_results.verify_table(tiny_run[0])
    assert "yes" in verify and gpu_results.EMPTY_ROW not in verify
    speed = gpu_results.speed_table(tiny_run[0]).splitlines()
    assert len(speed) == 2 + 4 and "%" in speed[2]


def test_tables_refuse_a_broken_file(tmp_path):
    (tmp_path / "verify-x.json").write_text(json.dumps({"passed": True}))
    with pytest.raises(ValueError, match="provenance"):
        gpu_results.verify_table(tmp_path)

"""``--precision auto``: bf16 autocast only where the hardware computes bf16 natively.

The capability probes are monkeypatched, so every branch runs on any machine: a CPU with
AVX-512 BF16 / AMX resolves to bf16, any other CPU to fp32, a CUDA GPU with bf16 to bf16 and
one without to fp16. The resolved precision names the run, is used by the training step,
compared on resume and recorded in the result, next to ``precision_requested`` and
``cpu_native_bf16``.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import bnbook.experiments.cifar.train as train_mod
from bnbook.experiments.cifar.cli import build_parser, default_run_name
from bnbook.experiments.cifar.cli import main as cifar_main
from bnbook.experiments.cifar.cli import synthetic_cifar
from bnbook.experiments.cifar.checkpoints import load_result
from bnbook.experiments.cifar.config import PRECISION_CHOICES, TrainConfig
from bnbook.experiments.cifar.train import cpu_has_native_bf16, resolve_precision, train

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def native(monkeypatch):
    """``native(True|False)`` makes the CPU look as if it had (or lacked) native bf16."""
    def set_native(value: bool):
        monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: value)
    return set_native


def fake_cuda(monkeypatch, bf16_native: bool, bf16_emulated: bool = True):
    """A CUDA device whose bf16 is native (Ampere and later) or only emulated."""
    calls = []

    def is_bf16_supported(including_emulation: bool = True):
        calls.append(including_emulation)
        return bf16_native or (including_emulation and bf16_emulated)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    return calls


# ------------------------------------------------------------------ the CPU probe


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (True, False, True), (False, True, True), (True, True, True), (False, False, False)])
def test_cpu_probe_asks_torch(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    # /proc/cpuinfo must not be consulted while torch can answer
    monkeypatch.setattr(train_mod, "_CPUINFO", Path("/nonexistent/cpuinfo"))
    assert cpu_has_native_bf16() is expected


CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: some CPU
flags\t\t: fpu vme sse sse2 avx avx2 fma {extra}
bugs\t\t: none

"""


@pytest.mark.parametrize("extra, expected", [
    ("", False),                                   # AVX2 only, e.g. an AMD EPYC (Zen 2/3)
    ("avx512f avx512bw avx512vl", False),          # AVX-512 without its BF16 extension
    ("avx512f avx512_bf16", True),                 # Cooper Lake, Zen 4
    ("amx_tile amx_bf16 amx_int8", True),          # Sapphire Rapids
    ("avx512_bf16_extra", False),                  # a whole flag, not a prefix
])
def test_cpu_probe_falls_back_to_proc_cpuinfo(monkeypatch, tmp_path, extra, expected):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(vendor="AuthenticAMD", extra=extra))
    monkeypatch.setattr(train_mod, "_CPUINFO", path)
    assert cpu_has_native_bf16() is expected


def test_cpu_probe_without_any_information_says_not_native(monkeypatch, tmp_path):
    # torch's private probe fails and there is no /proc/cpuinfo (macOS): not native
    def broken():
        raise RuntimeError("cpuinfo unavailable")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(train_mod, "_CPUINFO", tmp_path / "absent")
    assert cpu_has_native_bf16() is False
    # ... but a failing probe still falls back to the flags where they exist
    (tmp_path / "absent").write_text(CPUINFO.format(vendor="GenuineIntel", extra="avx512_bf16"))
    assert cpu_has_native_bf16() is True


# ------------------------------------------------------------------ resolve_precision


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_auto_on_cpu_is_bf16_only_where_native(native, device):
    native(True)
    assert resolve_precision("auto", device) == "bf16"
    native(False)
    assert resolve_precision("auto", device) == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("is_native", [True, False])
def test_explicit_precisions_pass_through(native, precision, is_native):
    native(is_native)
    assert resolve_precision(precision, "cpu") == precision
    assert resolve_precision(precision, "cuda") == precision


@pytest.mark.parametrize("bad", ["fp8", "float32", "AUTO", "", None])
def test_an_unknown_precision_is_refused_naming_the_choices(bad):
    with pytest.raises(ValueError) as info:
        resolve_precision(bad, "cpu")
    message = str(info.value)
    assert all(choice in message for choice in PRECISION_CHOICES) and repr(bad) in message
    with pytest.raises(ValueError, match="auto"):
        TrainConfig(precision=bad)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 0), "auto"])
def test_auto_on_cuda_bf16_where_supported_else_fp16(monkeypatch, native, device):
    native(False)  # the CPU does not matter on a GPU
    fake_cuda(monkeypatch, bf16_native=True)
    assert resolve_precision("auto", device) == "bf16"
    native(True)
    calls = fake_cuda(monkeypatch, bf16_native=False, bf16_emulated=True)
    # a pre-Ampere GPU emulates bf16: not native, so fp16 (with the GradScaler in train)
    assert resolve_precision("auto", device) == "fp16"
    assert calls == [False]


def test_auto_device_without_cuda_uses_the_cpu_rule(monkeypatch, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: pytest.fail("asked the GPU"))
    native(True)
    assert resolve_precision("auto", "auto") == "bf16"
    native(False)
    assert resolve_precision("auto", "auto") == "fp32"


def test_auto_on_other_devices_is_fp32(native):
    native(True)
    assert resolve_precision("auto", "mps") == "fp32"
    assert resolve_precision("auto", torch.device("meta")) == "fp32"


# ------------------------------------------------------------------ run names and CLI


@pytest.mark.parametrize("is_native, suffix", [(True, "-bf16"), (False, "-fp32")])
def test_default_run_name_uses_the_resolved_precision(native, is_native, suffix):
    native(is_native)
    # the book's command: bf16 runs are channels_last, float32 runs contiguous (other
    # memory formats add -nchw/-nhwc to the name, tests/test_reliability_runs.py)
    layout = ["--channels-last"] if is_native else []
    args = build_parser().parse_args(["--model", "bn", "--epochs", "3", "--device", "cpu",
                                      *layout])
    assert args.precision == "auto"
    name = default_run_name(args, 1e-3)
    assert name == f"bn-lr0.001-e3-seed7{suffix}" and "auto" not in name
    assert default_run_name(args, 1e-3, "auto") == name
    assert default_run_name(args, 1e-3, "fp16").endswith("-fp16")
    explicit = build_parser().parse_args(["--model", "bn", "--precision", "fp16"])
    assert default_run_name(explicit, 1e-3).endswith("-fp16")


def test_defaults_are_auto():
    assert TrainConfig().precision == "auto"
    assert build_parser().parse_args(["--model", "bn"]).precision == "auto"


@pytest.mark.parametrize("is_native, resolved", [(True, "bf16"), (False, "fp32")])
def test_cli_run_is_named_and_recorded_with_the_resolved_precision(tmp_path, native, is_native,
                                                                   resolved):
    native(is_native)
    out = tmp_path / "r.json"
    rc = cifar_main(["--model", "bn", "--epochs", "1", "--synthetic", "32", "--threads", "1",
                     "--device", "cpu", "--no-progress", "--out", str(out),
                     "--checkpoint", str(tmp_path / "c.pt"),
                     *(["--channels-last"] if is_native else [])])  # the book's bf16 layout
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["run"] == f"bn-lr0.001-e1-synthetic32-seed7-{resolved}"
    assert result["config"]["precision"] == resolved
    prov = result["provenance"]
    assert prov["precision"] == resolved
    assert prov["precision_requested"] == "auto" and prov["cpu_native_bf16"] is is_native


# ------------------------------------------------------------------ the training run


def spy_on_batch_loss(monkeypatch):
    used = []
    real = train_mod.batch_loss

    def spy(*args, precision="fp32", **kwargs):
        used.append(precision)
        return real(*args, precision=precision, **kwargs)

    monkeypatch.setattr(train_mod, "batch_loss", spy)
    return used


KW = dict(model="bn", batch_size=16, threads=1, eval_batch_size=16, device="cpu")


@pytest.mark.parametrize("is_native, resolved", [(True, "bf16"), (False, "fp32")])
def test_auto_training_run_uses_and_records_the_resolved_precision(tmp_path, monkeypatch, native,
                                                                   is_native, resolved):
    native(is_native)
    used = spy_on_batch_loss(monkeypatch)
    data = synthetic_cifar(32, seed=3)
    config = TrainConfig(epochs=1, precision="auto", **KW)
    result = train(config, data, progress=False, out=tmp_path / "r.json",
                   checkpoint_path=tmp_path / "c.pt",
                   dataset={"variant": "synthetic-random-32", "sha256": None})
    assert config.precision == "auto"  # the caller's config is not changed
    assert used == [resolved, resolved]  # 32 images in batches of 16
    on_disk = load_result(tmp_path / "r.json")
    for r in (result, on_disk):
        assert r["config"]["precision"] == resolved
        assert r["provenance"]["precision"] == resolved
        assert r["provenance"]["precision_requested"] == "auto"
        assert r["provenance"]["cpu_native_bf16"] is is_native
    ckpt = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["precision"] == resolved


def test_explicit_precision_is_recorded_as_requested(tmp_path, native):
    native(False)
    result = train(TrainConfig(epochs=1, precision="bf16", **KW), synthetic_cifar(16),
                   progress=False)
    prov = result["provenance"]
    assert (prov["precision"], prov["precision_requested"], prov["cpu_native_bf16"]) == (
        "bf16", "bf16", False)


def test_resume_compares_the_resolved_precision(tmp_path, native):
    data = synthetic_cifar(32, seed=4)
    ckpt = tmp_path / "c.pt"
    native(False)
    train(TrainConfig(epochs=1, precision="auto", **KW), data, progress=False,
          checkpoint_path=ckpt)
    # the explicit value auto stood for continues the run ...
    resumed = train(TrainConfig(epochs=2, precision="fp32", **KW), data, progress=False,
                    checkpoint_path=ckpt, resume=True)
    assert [e["epoch"] for e in resumed["history"]] == [1, 2]
    # ... with the first run's choice in the provenance and the resume's in its entry
    assert resumed["provenance"]["precision_requested"] == "auto"
    assert resumed["provenance"]["resumes"][0]["precision_requested"] == "fp32"
    # on a machine where auto means bf16 the same command is refused, with a hint
    native(True)
    with pytest.raises(ValueError, match="different settings.*resolves to 'bf16'.*'fp32'"):
        train(TrainConfig(epochs=3, precision="auto", **KW), data, progress=False,
              checkpoint_path=ckpt, resume=True)




# ------------------------------------------------------------------ the speed benchmark


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_cifar_speed", REPO / "benchmarks" / "bench_cifar_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_times_bf16_only_where_native_unless_forced():
    sweep = load_benchmark().sweep_precisions
    assert sweep("auto", True) == (("fp32", "bf16"), None)
    precisions, skipped = sweep("auto", False)
    assert precisions == ("fp32",) and "lacks native bf16" in skipped and "--precision bf16" in skipped
    assert sweep("bf16", False) == (("fp32", "bf16"), None)
    assert sweep("fp32", True)[0] == ("fp32",)
    with pytest.raises(ValueError):
        sweep("fp16", True)

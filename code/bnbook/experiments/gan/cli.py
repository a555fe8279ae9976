"""``python -m bnbook.experiments.gan``: the DCGAN experiment on Fashion-MNIST, resumable.

::

    python -m bnbook.experiments.gan            # every arm and seed, full settings
    python -m bnbook.experiments.gan --quick    # the small version, in seconds
    python -m bnbook.experiments.gan --restart  # throw away partial work, start over

What it does (networks and training: :mod:`bnbook.experiments.gan.networks`; scores:
:mod:`bnbook.experiments.gan.scores`):

1. trains the scoring classifier once and stores it in ``<out>/<stem>-scorer.pt`` with its
   settings and test accuracy (a later session reuses it; other settings are refused);
   the Gaussian of its features on the test images is the reference of every Fréchet
   distance, and ``real_vs_real`` (the scores of ``n_score`` real training images) is what a
   perfect generator would get at this sample size;
2. trains a generator and a discriminator for every arm (``norm``) and seed, epoch by
   epoch. After every epoch (and at initialisation, epoch 0) it scores ``n_score``
   generated images from noise fixed per seed, writes the grid of ``grid`` samples (fixed
   noise too) to ``<out>/<stem>-samples/<arm>-seed<s>-epoch<e>.png``, and saves a
   checkpoint ``<out>/<stem>-checkpoints/<arm>-seed<s>.pt``: an interrupted run resumes at
   its last finished epoch and continues exactly as if uninterrupted;
3. after every finished run, ``<out>/<stem>.partial.json`` holds the finished runs and the
   settings they were made with; the same command resumes from it, another is refused;
4. at the end writes ``<out>/<stem>.json`` with :func:`bnbook.results.write_result`
   (provenance, settings, scorer, runs with their per-epoch history, summed wall and CPU
   seconds) and removes the partial file and the run checkpoints (the samples stay).

``<stem>`` is ``dcgan`` (``dcgan-quick`` with ``--quick``). Runs are reproducible from their
seeds on one machine and thread count (``--threads``, default 1).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import torch

from bnbook.cli import CommandError
from bnbook.experiments.gan.networks import (gan_optimizers, generate, make_gan, sample_grid,
                                    train_gan_epoch)
from bnbook.experiments.gan.scores import (FashionScorer, gaussian_statistics, score_images,
                                           to_gan_range, train_scorer)
from bnbook.experiments.runner import (PartialResultMismatch, ResultFiles, add_run_arguments,
                                       experiment_provenance, parse_run_arguments, refused,
                                       result_stem, run_units)
from bnbook.provenance import RESULTS_DIR, atomic_write_bytes, command_line, file_sha256, now_iso

__all__ = ["PROG", "GAN_RESULTS_DIR", "FULL", "QUICK", "build_parser", "run_one", "main"]

PROG = "python -m bnbook.experiments.gan"
#: Where the GAN experiment writes its result.
GAN_RESULTS_DIR = RESULTS_DIR / "gan"

FULL = dict(n_train=60000, n_test=10000, data_seed=0, width=32, nz=100, epochs=20,
            batch_size=64, lr=2e-4, beta1=0.5, arms=["batch", "none", "layer"],
            seeds=[0, 1, 2], n_score=2000, grid=64, scorer_epochs=3, scorer_seed=0)
QUICK = dict(FULL, n_train=640, n_test=500, width=8, epochs=2, seeds=[0], n_score=200,
             grid=16, scorer_epochs=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    return add_run_arguments(parser, out=str(GAN_RESULTS_DIR),
                             quick_help="tiny settings (seconds)",
                             restart_help="delete this experiment's partial result, run "
                                          "checkpoints and scorer first")


class Paths:
    """The files of one experiment under ``out`` besides its result and partial result
    (:class:`bnbook.experiments.runner.ResultFiles`), all named from ``stem``."""

    def __init__(self, out: Path, stem: str):
        self.out, self.stem = out, stem
        self.scorer = out / f"{stem}-scorer.pt"
        self.checkpoints = out / f"{stem}-checkpoints"
        self.samples = out / f"{stem}-samples"

    def checkpoint(self, key: str) -> Path:
        return self.checkpoints / f"{key.replace('/', '-')}.pt"

    def sample(self, key: str, epoch: int) -> Path:
        return self.samples / f"{key.replace('/', '-')}-epoch{epoch:02d}.png"

    def remove_checkpoints(self, keys) -> None:
        """Delete the run checkpoints of ``keys`` (files this command wrote, by name); the
        folder goes when it is empty."""
        for key in keys:
            self.checkpoint(key).unlink(missing_ok=True)
        if self.checkpoints.is_dir() and not any(self.checkpoints.iterdir()):
            self.checkpoints.rmdir()


def _torch_save(path: Path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _write_png(path: Path, grid) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _load_data(settings: dict):
    from bnbook.data.subsets import prepare_fashion_mnist

    data = prepare_fashion_mnist(settings["n_train"], settings["n_test"], settings["data_seed"])
    return (to_gan_range(data.x_train), data.y_train, to_gan_range(data.x_test), data.y_test)


def prepare_scorer(paths: Paths, settings: dict, data, progress: bool) -> dict:
    """The scoring classifier and its reference statistics: ``{"model", "reference",
    "record"}``, trained now or read from ``paths.scorer`` (refused if made otherwise)."""
    x_train, y_train, x_test, y_test = data
    expected = json.dumps({k: settings[k] for k in ("n_train", "n_test", "data_seed",
                                                    "scorer_epochs", "scorer_seed")})
    model = FashionScorer()
    if paths.scorer.exists():
        saved = torch.load(paths.scorer, map_location="cpu", weights_only=True)
        if saved.get("settings") != expected:
            raise CommandError(f"{paths.scorer} was trained with other settings "
                               f"({saved.get('settings')}); rerun with --restart")
        model.load_state_dict(saved["state"])
        test_acc = saved["test_acc"]
    else:
        model, test_acc = train_scorer(x_train, y_train, x_test, y_test,
                                       epochs=settings["scorer_epochs"],
                                       seed=settings["scorer_seed"], progress=progress)
        _torch_save(paths.scorer, {"settings": expected, "state": model.state_dict(),
                                   "test_acc": test_acc})
    model.eval()
    with torch.no_grad():
        reference = gaussian_statistics(model.features(x_test).numpy())
    pick = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(1))
    real = score_images(model, x_train[pick[:settings["n_score"]]], reference)
    return {"model": model, "reference": reference,
            "record": {"test_acc": test_acc, "sha256": file_sha256(paths.scorer),
                       "real_vs_real": real}}


def _fixed_noise(seed: int, n: int, nz: int) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(10_000 + seed))


def _restore(path: Path, expected: str, parts: dict) -> tuple[list, float]:
    """``(history, seconds so far)`` from a run checkpoint, its states loaded into ``parts``;
    ``([], 0.0)`` when there is none."""
    if not path.exists():
        return [], 0.0
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("settings") != expected:
        raise CommandError(f"{path} was written with other settings; rerun with --restart")
    for name, part in parts.items():
        part.load_state_dict(saved[name])
    return json.loads(saved["history"]), float(saved["seconds"])


def run_one(paths: Paths, key: str, norm: str, seed: int, settings: dict, x: torch.Tensor,
            scorer: dict, progress: bool = False) -> dict:
    """Train one arm and seed (resuming from its checkpoint); returns ``{"history",
    "seconds", "diverged"}``, ``history`` holding one entry per epoch from 0 (the scores at
    initialisation) with the epoch's losses (:func:`train_gan_epoch`), its scores
    (:func:`score_images`) and its wall ``seconds``."""
    g, d = make_gan(norm, settings["width"], settings["nz"], seed=seed)
    opt_g, opt_d = gan_optimizers(g, d, settings["lr"], settings["beta1"])
    parts = {"g": g, "d": d, "opt_g": opt_g, "opt_d": opt_d}
    expected = json.dumps({"key": key, **settings}, sort_keys=True)
    history, seconds = _restore(paths.checkpoint(key), expected, parts)
    z_score = _fixed_noise(seed, settings["n_score"], settings["nz"])
    z_grid = z_score[:settings["grid"]]

    def score(epoch: int, start: float, losses: dict) -> None:
        images = generate(g, z_score, settings["batch_size"])
        _write_png(paths.sample(key, epoch), sample_grid(images[:len(z_grid)]))
        scores = score_images(scorer["model"], images, scorer["reference"])
        history.append({"epoch": epoch, **losses, **scores,
                        "seconds": round(time.perf_counter() - start, 2)})

    if not history:
        score(0, time.perf_counter(), {})
    bar = None
    steps = x.shape[0] // settings["batch_size"]
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings["epochs"] * steps, initial=(len(history) - 1) * steps,
                   desc=key, leave=False)
    while len(history) <= settings["epochs"] and not history[-1].get("nonfinite"):
        epoch, start = len(history), time.perf_counter()
        losses = train_gan_epoch(g, d, opt_g, opt_d, x, seed=seed, epoch=epoch,
                                 batch_size=settings["batch_size"],
                                 on_step=bar.update if bar is not None else None)
        if losses["nonfinite"]:
            history.append({"epoch": epoch, **losses,
                            "seconds": round(time.perf_counter() - start, 2)})
        else:
            score(epoch, start, losses)
        seconds += history[-1]["seconds"]
        _torch_save(paths.checkpoint(key), {
            **{name: part.state_dict() for name, part in parts.items()},
            "settings": expected, "history": json.dumps(history), "seconds": seconds})
    if bar is not None:
        bar.close()
    return {"history": history, "seconds": round(seconds, 2),
            "diverged": bool(history[-1].get("nonfinite"))}


def _data_info(settings: dict) -> tuple[str, dict, dict]:
    from bnbook.data import fashion_mnist_info

    info = fashion_mnist_info()
    subset = {k: settings[k] for k in ("n_train", "n_test")} | {"seed": settings["data_seed"]}
    return f"fashion-mnist/{info['variant']}", dict(info["idx_sha256"]), subset


def _units(settings: dict):
    return [(f"{norm}/seed{seed}", norm, seed)
            for seed in settings["seeds"] for norm in settings["arms"]]


def main(argv=None) -> int:
    """Run the experiment as ``argv`` asks (module docstring). Returns 0, or 2 after saying
    why when earlier work cannot be resumed or the data is not the published copy."""
    args, argv = parse_run_arguments(build_parser(), argv)
    settings = QUICK if args.quick else FULL
    dataset, sha256, subset = _data_info(settings)
    try:
        files = ResultFiles(args.out, result_stem("dcgan", args, dataset),
                            {"experiment": "dcgan", "settings": settings, "threads": args.threads,
                             "dataset": dataset, "dataset_sha256": sha256,
                             "dataset_subset": subset})
    except CommandError as e:
        return refused(PROG, e, error=True)
    paths = Paths(files.out, files.stem)
    keys = [key for key, _, _ in _units(settings)]
    if args.restart:
        paths.remove_checkpoints(keys)
        paths.scorer.unlink(missing_ok=True)
    try:
        done = files.resume(restart=args.restart)
        started, start = now_iso(), time.perf_counter()
        data = _load_data(settings)
        scorer = prepare_scorer(paths, settings, data, not args.no_progress)
        units = [(key, lambda key=key, norm=norm, seed=seed: run_one(
                     paths, key, norm, seed, settings, data[0], scorer, not args.no_progress))
                 for key, norm, seed in _units(settings)]
        runs = run_units(units, done, files.save_partial, cpu_seconds=True)
    except (PartialResultMismatch, CommandError) as e:
        return refused(PROG, e, error=True)
    prov = experiment_provenance(
        args, started=started, command=command_line(argv, prog=PROG),
        wall_seconds=time.perf_counter() - start, dataset=dataset, dataset_sha256=sha256,
        dataset_subset=subset)
    path = files.write(prov, {
        "settings": settings, "scorer": scorer["record"], "runs": runs,
        "run_seconds_total": round(sum(r["seconds"] for r in runs.values()), 2),
        "run_cpu_seconds_total": round(sum(r["cpu_seconds"] for r in runs.values()), 2)})
    paths.remove_checkpoints(runs)
    print(f"dcgan: wrote {path}", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())

"""Chapter 7's ablations: which of the article's changes, and which detail of the baseline,
moves CIFAR-10 accuracy (tables, statistics and a figure from the stored 50-epoch runs).

The article changed three things at once (batch norm, a ten times larger learning rate, no
dropout) and normalised the logits too; the baseline's augmentation shifts images by
fractions of a pixel (bilinear, Keras >= 2.1.4), which blurs them. The arms:

================  =========  ==========================================================
arm               model      what differs from the scripts' settings
================  =========  ==========================================================
``baseline``      baseline   nothing (the Keras example)
``baseline-px``   baseline   whole-pixel shifts (``--shift-order 0``, Keras < 2.1.4)
``bn``            bn         nothing (the article's network)
``bn-dropout``    bn         the baseline's three dropout layers kept (``--keep-dropout``)
``bn-no-logits``  bn         no batch norm on the ten logits (``--no-bn-on-logits``)
================  =========  ==========================================================

Every run: 50 epochs, the script's learning rate, bf16 autocast, seeds as stored. Files are
``data/results/cifar10/<run>.json`` as ``python -m bnbook.experiments.cifar publish`` names them.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from bnbook.experiments.cifar.augment import augmentation_params, shift_flip, to_float_images
from bnbook.experiments.cifar.config import KERAS_LR
from bnbook.experiments.cifar.report import load_expected_run
from bnbook.results import markdown_table, run_status

__all__ = ["neighbour_difference_energy", "shift_energy_kept", "ARMS", "arm_run_name",
           "arm_command", "load_arms", "arm_statistics", "ablation_effects",
           "ablation_table", "run_endpoint", "plot_arm_curves"]

#: arm -> (model, run-name tag, settings that must hold, description)
ARMS = {
    "baseline": ("baseline", "", {"shift_order": 1, "keep_dropout": False},
                 "the Keras example (bilinear sub-pixel shifts)"),
    "baseline-px": ("baseline", "-shift0", {"shift_order": 0, "keep_dropout": False},
                    "the Keras example with whole-pixel shifts"),
    "bn": ("bn", "", {"shift_order": 1, "keep_dropout": False, "bn_on_logits": True},
           "the article's BN network"),
    "bn-dropout": ("bn", "-dropout", {"shift_order": 1, "keep_dropout": True,
                                      "bn_on_logits": True},
                   "BN network with the baseline's dropout kept"),
    "bn-no-logits": ("bn", "-nologitbn", {"shift_order": 1, "keep_dropout": False,
                                          "bn_on_logits": False},
                     "BN network without BN on the logits"),
}
#: The trainer's flags of each arm.
_FLAGS = {"baseline": "", "baseline-px": " --shift-order 0", "bn": "",
          "bn-dropout": " --keep-dropout", "bn-no-logits": " --no-bn-on-logits"}
#: What a setting was before the trainer recorded it (files written before the ablations).
_DEFAULTS = {"shift_order": 1, "keep_dropout": False, "bn_on_logits": True}


def neighbour_difference_energy(x: torch.Tensor) -> torch.Tensor:
    """Per image, the sum of squared differences between horizontally and vertically
    neighbouring pixels (all channels): ``(N, C, H, W)`` -> ``(N,)``, in float64. A measure of
    fine detail: blurring lowers it, moving the image by whole pixels keeps it (up to the
    border)."""
    x = x.double()
    return (x.diff(dim=-1).pow(2).sum(dim=(1, 2, 3)) + x.diff(dim=-2).pow(2).sum(dim=(1, 2, 3)))


def shift_energy_kept(x_uint8: np.ndarray, order: int, seed: int = 0) -> float:
    """The fraction of the images' neighbour-difference energy left after the trainer's
    augmentation (shifts drawn as in an epoch with ``seed``, flips included) with ``order`` 0
    (whole pixels) or 1 (bilinear). ``x_uint8``: ``(N, 32, 32, 3)`` as stored. Returns
    ``sum(energy after) / sum(energy before)``."""
    x = to_float_images(torch.as_tensor(np.ascontiguousarray(x_uint8)))
    shifts, flips = augmentation_params(len(x), seed, 0, x.shape[2], x.shape[3])
    y = shift_flip(x, torch.from_numpy(shifts), torch.from_numpy(flips), order=order)
    return float(neighbour_difference_energy(y).sum() / neighbour_difference_energy(x).sum())


def arm_run_name(arm: str, seed: int, epochs: int = 50, precision: str = "bf16") -> str:
    """The run (and file) name of ``arm`` with ``seed``: ``bn-lr0.001-e50-dropout-seed7-bf16``."""
    model, tag, _, _ = ARMS[arm]
    return f"{model}-lr{KERAS_LR[model]:g}-e{epochs}{tag}-seed{seed}-{precision}"


def arm_command(arm: str, seed: int) -> str:
    """The commands that train ``arm`` with ``seed`` and publish it into the book's results."""
    model = ARMS[arm][0]
    return (f"python -m bnbook.experiments.cifar --model {model} --epochs 50 --seed {seed} --precision bf16 "
            f"--channels-last --threads 1{_FLAGS[arm]}, then python -m bnbook.experiments.cifar publish "
            f"runs/{arm_run_name(arm, seed).replace('-e50', '')}")


def load_arms(results_dir, seeds: Mapping[str, tuple[int, ...]]) -> dict:
    """``{arm: {seed: result}}`` for the given seeds of each arm, each checked to be complete,
    50 epochs at the script's learning rate and to have the arm's settings (``ValueError``
    naming the file otherwise; ``FileNotFoundError`` with the command for a missing one)."""
    out = {}
    for arm, arm_seeds in seeds.items():
        model, _, settings, _ = ARMS[arm]
        out[arm] = {}
        for seed in arm_seeds:
            path = Path(results_dir) / f"{arm_run_name(arm, seed)}.json"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run {arm_command(arm, seed)}")
            run = load_expected_run(path, config={"model": model, "lr": KERAS_LR[model],
                                                  "seed": seed, "subset": None})
            wrong = {k: run["config"].get(k, _DEFAULTS[k]) for k, v in settings.items()
                     if run["config"].get(k, _DEFAULTS[k]) != v}
            if wrong or not run_status(run)["complete"] or len(run["history"]) != 50:
                raise ValueError(f"{path.name} is not a complete 50-epoch run of arm {arm!r} "
                                 f"(settings off: {wrong})")
            out[arm][seed] = run
    return out


def _final(run) -> float:
    return 100.0 * float(run["history"][-1]["val_acc"])


def _best(run) -> float:
    return 100.0 * max(float(h["val_acc"]) for h in run["history"])


def arm_statistics(runs_by_seed: Mapping[int, Mapping], last: int = 10) -> dict:
    """Final, best and late validation accuracy (percent) of one arm over its seeds: ``n``,
    ``final_mean``, ``best_mean``, ``late_mean`` (each seed's mean over its last ``last``
    epochs, averaged), with two or more seeds ``final_sd``, ``best_sd`` and ``late_sd`` (sample
    standard deviations over seeds; ``None`` for one seed), and ``final`` and ``late``
    ``{seed: value}``."""
    final = {s: _final(r) for s, r in runs_by_seed.items()}
    late = {s: run_endpoint(r, last)["late_val"] for s, r in runs_by_seed.items()}
    best = [_best(r) for r in runs_by_seed.values()]
    n = len(final)

    def sd(values):
        return statistics.stdev(values) if n > 1 else None

    return {"n": n, "final": final, "late": late, "final_mean": statistics.mean(final.values()),
            "best_mean": statistics.mean(best), "late_mean": statistics.mean(late.values()),
            "final_sd": sd(final.values()), "best_sd": sd(best), "late_sd": sd(late.values())}


def ablation_effects(arms: Mapping[str, Mapping[int, Mapping]]) -> dict:
    """Each ablation against its reference, on the seeds both have (paired), in points of
    final validation accuracy: ``{name: {"seeds", "per_seed", "mean"}}`` for ``shift``
    (baseline-px minus baseline), ``dropout`` (bn-dropout minus bn) and ``logits``
    (bn-no-logits minus bn), for the arms present; plus ``seed_sd`` ``{arm: sd}`` of the
    reference arms, the yardstick of seed-to-seed noise."""
    pairs = {"shift": ("baseline-px", "baseline"), "dropout": ("bn-dropout", "bn"),
             "logits": ("bn-no-logits", "bn")}
    effects = {}
    for name, (arm, ref) in pairs.items():
        if arm not in arms or ref not in arms:
            continue
        seeds = sorted(set(arms[arm]) & set(arms[ref]))
        if not seeds:
            raise ValueError(f"arms {arm!r} and {ref!r} share no seed")
        per_seed = {s: _final(arms[arm][s]) - _final(arms[ref][s]) for s in seeds}
        effects[name] = {"seeds": seeds, "per_seed": per_seed,
                         "mean": statistics.mean(per_seed.values())}
    effects["seed_sd"] = {ref: arm_statistics(arms[ref])["final_sd"]
                          for ref in ("baseline", "bn") if ref in arms and len(arms[ref]) > 1}
    return effects


def ablation_table(arms: Mapping[str, Mapping[int, Mapping]]) -> str:
    """Markdown table: arm, what differs, seeds, final, last-ten-epoch mean and best validation
    accuracy (mean, and ± sample s.d. over seeds where there are several)."""
    def cell(mean, sd):
        return f"{mean:.1f}" if sd is None else f"{mean:.1f} ± {sd:.1f}"

    rows = []
    for arm, runs in arms.items():
        s = arm_statistics(runs)
        rows.append((f"`{arm}`", ARMS[arm][3], ", ".join(str(k) for k in sorted(runs)),
                     cell(s["final_mean"], s["final_sd"]), cell(s["late_mean"], s["late_sd"]),
                     cell(s["best_mean"], s["best_sd"])))
    return markdown_table(["arm", "network", "seeds", "final val. acc. %",
                           "last 10 epochs, mean %", "best val. acc. %"], rows, align="lllrrr")


def run_endpoint(run: Mapping, last: int = 10) -> dict:
    """Where one run ends, in percent (accuracies) and nats (loss): ``final_val``,
    ``best_val``, ``final_train`` (training batches as the updates saw them, dropout active),
    and over the last ``last`` epochs: ``late_val`` (mean validation accuracy, steadier than
    the final epoch's), ``late_val_loss`` (mean validation loss) and ``late_val_sd`` (standard
    deviation of validation accuracy from epoch to epoch)."""
    hist = run["history"]
    if len(hist) < max(last, 2):
        raise ValueError(f"run has {len(hist)} epochs; the last {last} are needed (at least 2)")
    tail = hist[-last:]
    return {"final_val": _final(run), "best_val": _best(run),
            "final_train": 100.0 * float(hist[-1]["train_acc"]),
            "late_val": statistics.mean(100.0 * float(h["val_acc"]) for h in tail),
            "late_val_loss": statistics.mean(float(h["val_loss"]) for h in tail),
            "late_val_sd": statistics.stdev(100.0 * float(h["val_acc"]) for h in tail)}


def plot_arm_curves(ax, arms: Mapping[str, Mapping[int, Mapping]], colours: Mapping[str, str],
                    key: str = "val_acc"):
    """One line per arm: ``key`` per epoch (``val_acc`` in percent, or a loss such as
    ``val_loss`` in nats), the mean over the arm's seeds."""
    scale = 100.0 if key.endswith("acc") else 1.0
    for arm, runs in arms.items():
        hist = [r["history"] for r in runs.values()]
        epochs = [h["epoch"] for h in hist[0]]
        mean = [scale * statistics.mean(float(h[i][key]) for h in hist)
                for i in range(len(epochs))]
        ax.plot(epochs, mean, color=colours[arm], label=f"{arm} ({len(runs)} seed"
                f"{'s' if len(runs) > 1 else ''})", lw=1.4)
    ax.set_xlabel("epoch")
    labels = {"val_acc": "validation accuracy (%)", "val_loss": "validation loss (nats)",
              "train_acc": "training accuracy (%)", "train_loss": "training loss (nats)"}
    ax.set_ylabel(labels.get(key, key))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

"""The numbers, tables and figures of the CIFAR-10 chapter, computed from its result files.

``chapters/07_cifar10.ipynb`` calls these functions and glues what they return; the prose
around the numbers lives in the chapter's Markdown. Every function here computes numbers or
builds a table, none writes a sentence. Conventions follow :mod:`bnbook.results`: accuracies
in result files are fractions, the ``*_points`` and :func:`in_percent` values returned here are
percent (differences of percentages are "points"), losses are in nats, epochs count from 1.

Models are named ``"baseline"`` (the Keras example, dropout, lr 1e-4) and ``"bn"`` (the
article's BN variant, no dropout, lr 1e-3), as in :mod:`bnbook.experiments.cifar.cli`. The speed section's
tables are :mod:`bnbook.experiments.cifar.speed`, the ablations' :mod:`bnbook.experiments.cifar.ablation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bnbook.results import (history_columns, load_run_if_present, markdown_table, producing_command,
                            summarize_run)

__all__ = [
    "MODELS",
    "in_percent",
    "describe_layer",
    "merge_layer_lists",
    "architecture_table",
    "parameter_counts",
    "load_expected_run",
    "status_table",
    "provenance_table",
    "curve_statistics",
    "seed_comparison",
    "seed_table",
    "plot_seed_curves",
    "anchor_table",
    "load_lr_sweep",
    "lr_sweep_table",
    "sweep_statistics",
    "plot_lr_sweep",
    "load_precision_pairs",
    "precision_pair_table",
    "precision_statistics",
    "precision_summary_table",
    "channel_statistics",
    "channel_table",
]

MODELS = ("baseline", "bn")


def in_percent(x):
    """A fraction (or array of fractions) in percent."""
    return 100.0 * x


# --- the architecture table ---------------------------------------------------------------

def describe_layer(row: Mapping) -> str:
    """A short description of one row of :func:`bnbook.results.layer_summary`
    (``"Conv2d 3→32, 3×3, same"``, ``"Linear 2304→512"``, ``"BatchNorm2d(32)"``, ...)."""
    from torch import nn

    from bnbook.models import FlattenNHWC

    mod = row["module"]
    if isinstance(mod, nn.Conv2d):
        k, pad = mod.kernel_size[0], mod.padding[0]
        return (f"Conv2d {mod.in_channels}→{mod.out_channels}, {k}×{k}, "
                f"{'same' if pad else 'valid'}")
    if isinstance(mod, nn.Linear):
        return f"Linear {mod.in_features}→{mod.out_features}"
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return f"{row['name']}({mod.num_features})"
    if isinstance(mod, nn.Dropout):
        return f"Dropout p={mod.p}"
    if isinstance(mod, nn.MaxPool2d):
        return "MaxPool2d 2×2"
    if isinstance(mod, FlattenNHWC):
        return "Flatten (H, W, C order)"
    return row["name"]


def merge_layer_lists(base_rows: Sequence[Mapping],
                      bn_rows: Sequence[Mapping]) -> list[tuple[Mapping, int | None, int | None]]:
    """Align the layer summaries of the baseline and the BN network into one list.

    Returns ``(row, params_baseline, params_bn)`` per layer in forward order, with ``None``
    where a network lacks the layer: BN layers exist only in the BN network, dropout layers
    only in the baseline, every other layer in both (with the same output shape and parameter
    count, which is checked; ``row`` is then the BN network's). Raises ``ValueError`` if the
    lists differ in any other way.
    """
    merged, i, j = [], 0, 0
    while i < len(base_rows) or j < len(bn_rows):
        b = base_rows[i] if i < len(base_rows) else None
        n = bn_rows[j] if j < len(bn_rows) else None
        if b is not None and n is not None and b["name"] == n["name"]:
            if b["output_shape"] != n["output_shape"] or b["params"] != n["params"]:
                raise ValueError(f"shared layer {b['name']} differs between the networks")
            merged.append((n, b["params"], n["params"]))
            i, j = i + 1, j + 1
        elif n is not None and n["name"].startswith("BatchNorm"):
            merged.append((n, None, n["params"]))
            j += 1
        elif b is not None and b["name"] == "Dropout":
            merged.append((b, b["params"], None))
            i += 1
        else:
            raise ValueError(f"cannot align {b and b['name']} (baseline) with "
                             f"{n and n['name']} (BN)")
    return merged


def parameter_counts(summaries: Mapping[str, Sequence[Mapping]]) -> dict:
    """Trainable parameters per model, the BN network's running-statistic elements, and the
    share (%) of the BN network's parameters held by its first dense layer.

    ``summaries`` maps ``"baseline"`` and ``"bn"`` to :func:`bnbook.results.layer_summary`
    lists. Returns ``{"baseline", "bn", "extra", "running", "dense_share"}``.
    """
    params = {m: sum(r["params"] for r in summaries[m]) for m in MODELS}
    first_dense = next(r for r in summaries["bn"] if r["name"] == "Linear")
    return {**params, "extra": params["bn"] - params["baseline"],
            "running": sum(r["buffers"] for r in summaries["bn"]),
            "dense_share": 100.0 * first_dense["params"] / params["bn"]}


def architecture_table(summaries: Mapping[str, Sequence[Mapping]]) -> str:
    """The Markdown table of both networks, one row per layer (:func:`merge_layer_lists`),
    with output shape, parameters per network (a dash where a network lacks the layer) and a
    total row."""
    def count(p):
        return "—" if p is None else f"{p:,}"

    rows = [(describe_layer(row), " × ".join(map(str, row["output_shape"])), count(pb), count(pn))
            for row, pb, pn in merge_layer_lists(summaries["baseline"], summaries["bn"])]
    totals = parameter_counts(summaries)
    rows.append(("**total trainable**", "", f"**{totals['baseline']:,}**",
                 f"**{totals['bn']:,}**"))
    return markdown_table(["layer", "output shape", "params, baseline", "params, BN"], rows,
                          align="llrr")


# --- the long runs --------------------------------------------------------------------------

def load_expected_run(path, config: Mapping | None = None, provenance: Mapping | None = None,
                      missing_ok: bool = False) -> dict | None:
    """Load a result file and check that it is the run the chapter describes.

    ``config`` and ``provenance`` map keys of the file's ``config`` / ``provenance`` to the
    values they must have. A missing file raises ``FileNotFoundError`` (or returns ``None``
    with ``missing_ok``); a mismatch raises ``ValueError`` naming the file and the keys.
    """
    path = Path(path)
    result = load_run_if_present(path)
    if result is None:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path} is missing; produce it with "
                                f"`{producing_command(path)}`")
    for section, expected in (("config", config), ("provenance", provenance)):
        wrong = {k: (result[section].get(k), v) for k, v in (expected or {}).items()
                 if result[section].get(k) != v}
        if wrong:
            raise ValueError(f"{path.name}: unexpected {section} (found, expected): {wrong}")
    return result


def status_table(runs: Mapping[str, Mapping], labels: Mapping[str, str]) -> str:
    """Markdown table: per run its label, file name, status, epochs done, median seconds per
    epoch and total wall time in hours."""
    rows = []
    for m, r in runs.items():
        s = summarize_run(r)
        rows.append((labels[m], f"`{r['run']}`", s["label"], s["epochs_done"],
                     f"{s['median_seconds']:.0f}", f"{r['provenance']['wall_seconds'] / 3600:.1f}"))
    return markdown_table(["model", "run", "status", "epochs done", "median s/epoch",
                           "wall time (h)"], rows, align="lllrrr")


_PROVENANCE_FIELDS = (("dataset", "data variant"), ("dataset_sha256", "data SHA-256"),
                      ("device", "device"), ("precision", "precision"), ("torch", "torch"),
                      ("git_commit", "git commit"), ("command", "command"),
                      ("started", "started"), ("finished", "finished"))


def provenance_table(runs: Mapping[str, Mapping]) -> str:
    """Markdown table of the provenance of the baseline and BN runs side by side."""
    prov_rows = [(label, *("not yet" if runs[m]["provenance"].get(key) is None
                           else f"`{runs[m]['provenance'][key]}`" for m in MODELS))
                 for key, label in _PROVENANCE_FIELDS]
    prov_rows.append(("memory format, threads, compile",
                      *(f"channels_last={runs[m]['config']['channels_last']}, "
                        f"threads={runs[m]['config']['threads']}, "
                        f"compile={runs[m]['config']['compile']}" for m in MODELS)))
    return markdown_table(["provenance", "baseline", "BN"], prov_rows)


def curve_statistics(runs: Mapping[str, Mapping], jitter_epochs: int = 10) -> dict:
    """The facts the chapter reads off the two learning curves (points = percent).

    Returns ``common_epochs`` (epochs both runs have), ``gap_best_common`` (BN's best minus
    the baseline's best over those epochs), ``bn_match_epoch`` (first epoch in which BN
    reaches the baseline's best accuracy over all its epochs, or ``None``), ``ahead_from``
    (first epoch from which BN is strictly ahead in every common epoch; ``None`` if it is not
    ahead at the last one), and per model ``m``: ``train_val_gap[m]`` (final training minus
    final validation accuracy), ``jitter[m]`` (standard deviation of the change in validation
    accuracy between consecutive epochs over the last ``jitter_epochs`` changes), ``jitter_n``,
    ``min_val_loss_epoch[m]`` and ``final_val_loss[m]``.
    """
    cols = {m: history_columns(runs[m]["history"]) for m in MODELS}
    common = min(len(runs[m]["history"]) for m in MODELS)
    v_base, v_bn = cols["baseline"]["val_acc"][:common], cols["bn"]["val_acc"][:common]
    behind = np.flatnonzero(v_bn <= v_base)
    ahead_from = 1 if len(behind) == 0 else int(behind[-1]) + 2
    base_best = float(cols["baseline"]["val_acc"].max())
    match = np.flatnonzero(cols["bn"]["val_acc"] >= base_best)
    out = {"common_epochs": common,
           "gap_best_common": float(in_percent(v_bn.max() - v_base.max())),
           "bn_match_epoch": int(cols["bn"]["epoch"][match[0]]) if len(match) else None,
           "ahead_from": ahead_from if ahead_from <= common else None,
           "train_val_gap": {}, "jitter": {}, "min_val_loss_epoch": {}, "final_val_loss": {}}
    for m in MODELS:
        c = cols[m]
        out["train_val_gap"][m] = float(in_percent(c["train_acc"][-1] - c["val_acc"][-1]))
        v = c["val_acc"][-(jitter_epochs + 1):]
        out["jitter"][m] = (float(in_percent(np.std(np.diff(v), ddof=1))) if len(v) >= 3
                            else math.nan)
        out["jitter_n"] = len(v) - 1
        out["min_val_loss_epoch"][m] = int(c["epoch"][np.argmin(c["val_loss"])])
        out["final_val_loss"][m] = float(c["val_loss"][-1])
    return out


# --- the second seed ------------------------------------------------------------------------

def seed_comparison(first: Mapping[str, Mapping], second: Mapping[str, Mapping]) -> dict:
    """Compare two seeds of both networks over the epochs both seeds have (points).

    ``first`` and ``second`` map each model to a result. Returns per model ``m`` in
    ``diff[m]``: ``epoch`` (last common epoch), ``final`` (second minus first seed's validation
    accuracy at that epoch) and ``best`` (difference of the best accuracies up to it); and
    ``lead_first`` / ``lead_second`` (BN minus baseline at the last epoch all four runs share,
    ``epoch``), and ``spread`` (the largest ``|final|`` of the two models).
    """
    diff = {}
    for m in MODELS:
        h1, h2 = first[m]["history"], second[m]["history"]
        n = min(len(h1), len(h2))
        diff[m] = {"epoch": n,
                   "final": in_percent(h2[n - 1]["val_acc"] - h1[n - 1]["val_acc"]),
                   "best": in_percent(max(h["val_acc"] for h in h2[:n])
                               - max(h["val_acc"] for h in h1[:n]))}
    n = min(len(r["history"]) for r in (*first.values(), *second.values()))

    def lead(runs):
        return in_percent(runs["bn"]["history"][n - 1]["val_acc"]
                   - runs["baseline"]["history"][n - 1]["val_acc"])

    return {"diff": diff, "epoch": n, "lead_first": lead(first), "lead_second": lead(second),
            "spread": max(abs(d["final"]) for d in diff.values())}


def seed_table(runs_by_seed: Mapping[int, Mapping[str, Mapping | None]],
               labels: Mapping[str, str]) -> str:
    """Markdown table: per model and seed the status, epochs done, last and best validation
    accuracy (%). ``runs_by_seed`` maps a seed to ``{model: result or None}``."""
    rows = []
    for m in MODELS:
        for seed, runs in runs_by_seed.items():
            r = runs[m]
            if r is None:
                rows.append((labels[m], seed, "not run yet", "—", "—", "—"))
                continue
            s = summarize_run(r)
            rows.append((labels[m], seed, s["label"], s["epochs_done"],
                         f"{in_percent(s['final_val_acc']):.1f}",
                         f"{in_percent(s['best_val_acc']):.1f}"))
    return markdown_table(["model", "seed", "status", "epochs done", "val. acc., last epoch (%)",
                           "best val. acc. (%)"], rows, align="lrlrrr")


def plot_seed_curves(ax, runs_by_seed: Mapping[int, Mapping[str, Mapping | None]],
                     colours: Mapping[str, str]) -> None:
    """Validation accuracy (%) per epoch, one line per model and seed (solid for the first
    seed, dashed for the others), coloured by model."""
    for m in MODELS:
        for k, (seed, runs) in enumerate(runs_by_seed.items()):
            if runs[m] is not None:
                cols = history_columns(runs[m]["history"])
                ax.plot(cols["epoch"], in_percent(cols["val_acc"]), "-" if k == 0 else "--",
                        color=colours[m], lw=1.2,
                        label=f"{'baseline' if m == 'baseline' else 'BN'}, seed {seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xlim(0, 51)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)


# --- the published numbers ------------------------------------------------------------------

def anchor_table(quoted: Sequence[Mapping], ours: Mapping[str, Mapping[str, Mapping]],
                 device: str) -> str:
    """Markdown table of the quoted accuracies and ours, final and best.

    ``quoted``: dicts with ``source, kind, epochs, baseline, bn (or None), hardware,
    s_per_epoch``. ``ours`` maps a row label (e.g. ``"this book (measured)"``) to
    ``{model: summarize_run(...)}``.
    """
    rows = []
    for q in quoted:
        gap = "—" if q["bn"] is None else f"{q['bn'] - q['baseline']:+.1f}"
        rows.append((f"{q['source']} (quoted)", q["kind"], q["epochs"], f"{q['baseline']:.1f}",
                     "—" if q["bn"] is None else f"{q['bn']:.1f}", gap, q["hardware"],
                     q["s_per_epoch"]))
    for label, s in ours.items():
        sb, sn = s["baseline"], s["bn"]
        epochs = (f"{sb['epochs_done']}" if sb["epochs_done"] == sn["epochs_done"]
                  else f"{sb['epochs_done']} / {sn['epochs_done']}")
        for kind, key in (("final", "final_val_acc"), ("best", "best_val_acc")):
            b, n = in_percent(sb[key]), in_percent(sn[key])
            rows.append((label, kind, epochs, f"{b:.1f}", f"{n:.1f}", f"{n - b:+.1f}", device,
                         f"{sb['median_seconds']:.0f} / {sn['median_seconds']:.0f}"))
    return markdown_table(["source", "accuracy", "epochs", "baseline (%)", "BN (%)",
                           "BN − baseline (points)", "hardware", "s/epoch"], rows,
                          align="llrrrrll")


# --- the learning-rate sweep ----------------------------------------------------------------

def load_lr_sweep(results_dir, lrs: Sequence[float], epochs: int, seed: int = 7,
               precision: str = "bf16") -> dict:
    """``{(model, lr): result or None}`` for the sweep files
    ``{model}-lr{lr:g}-e{epochs}-seed{seed}-{precision}.json``; each file present is checked
    to hold that model, learning rate and epoch count."""
    sweep = {}
    for m in MODELS:
        for lr in lrs:
            sweep[m, lr] = load_expected_run(
                Path(results_dir) / f"{m}-lr{lr:g}-e{epochs}-seed{seed}-{precision}.json",
                config={"model": m, "lr": lr, "epochs": epochs}, missing_ok=True)
    return sweep


def lr_sweep_table(sweep: Mapping[tuple, Mapping | None], lrs: Sequence[float], epochs: int) -> str:
    """Markdown table: per learning rate, each model's validation accuracy (%) per epoch,
    flagged when partial or when the loss was not finite."""
    def cell(r):
        if r is None or not r["history"]:
            return "not run yet"
        h = r["history"]
        acc = " → ".join(f"{in_percent(e['val_acc']):.1f}" for e in h)
        flag = "" if len(h) == epochs else f" (partial: {len(h)} of {epochs})"
        finite = all(math.isfinite(e["train_loss"]) for e in h)
        return acc + flag + ("" if finite else " (loss not finite)")

    rows = [(f"{lr:g}", *(cell(sweep[m, lr]) for m in MODELS)) for lr in lrs]
    return markdown_table(["learning rate", "baseline: val. acc. (%) per epoch",
                           "BN: val. acc. (%) per epoch"], rows)


def sweep_statistics(sweep: Mapping[tuple, Mapping | None], epochs: int) -> dict:
    """Numbers of the sweep, from the runs that finished all ``epochs`` (accuracies in %).

    Returns ``acc[(model, lr)]`` (validation accuracy after the last epoch), ``lead[lr]`` (BN
    minus baseline at equal rate), ``best_lr[m]`` / ``worst_lr[m]``, ``stuck``: the
    ``(model, lr)`` runs that did not train (validation accuracy at most 12 % and training
    loss within 0.01 of ln 10), ``final_train_loss[(model, lr)]`` and ``complete`` (how many
    runs finished).
    """
    done = {k: r for k, r in sweep.items() if r is not None and len(r["history"]) >= epochs}
    acc = {k: in_percent(r["history"][-1]["val_acc"]) for k, r in done.items()}
    lrs = sorted({lr for _, lr in sweep})
    out = {"acc": acc, "complete": len(done),
           "lead": {lr: acc["bn", lr] - acc["baseline", lr] for lr in lrs
                    if ("bn", lr) in acc and ("baseline", lr) in acc},
           "best_lr": {}, "worst_lr": {},
           "final_train_loss": {k: r["history"][-1]["train_loss"] for k, r in done.items()},
           "stuck": [k for k, r in done.items() if r["history"][-1]["val_acc"] <= 0.12
                     and abs(r["history"][-1]["train_loss"] - math.log(10)) < 0.01]}
    for m in MODELS:
        accs = {lr: a for (m_, lr), a in acc.items() if m_ == m}
        if len(accs) >= 2:
            out["best_lr"][m] = max(accs, key=accs.get)
            out["worst_lr"][m] = min(accs, key=accs.get)
    return out


def plot_lr_sweep(ax, sweep: Mapping[tuple, Mapping | None], long_runs: Mapping[str, Mapping],
               lrs: Sequence[float], epochs: int, own_lr: Mapping[str, float],
               colours: Mapping[str, str]) -> None:
    """Validation accuracy after the last sweep epoch against the learning rate (log axis),
    per model; a star marks the same epoch of each long run at its own rate ``own_lr[m]``."""
    for m in MODELS:
        pts = [(lr, in_percent(sweep[m, lr]["history"][-1]["val_acc"]),
                len(sweep[m, lr]["history"]))
               for lr in lrs if sweep[m, lr] is not None and sweep[m, lr]["history"]]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colours[m],
                    label="baseline (dropout)" if m == "baseline" else "BN (no dropout)")
            for lr, acc, ep in pts:
                if ep < epochs:
                    ax.annotate(f"{ep} ep.", (lr, acc), fontsize=7, textcoords="offset points",
                                xytext=(4, -10))
        h = long_runs[m]["history"]
        ax.plot([own_lr[m]], [in_percent(h[min(epochs, len(h)) - 1]["val_acc"])], "*",
                color=colours[m], ms=11, mfc="none")
    ax.axhline(10, color="0.5", lw=0.8, ls=":")
    ax.text(1.1e-4, 11, "chance", fontsize=7, color="0.4")
    ax.set_xscale("log")
    ax.set_xlim(6e-5, 1.6e-2)
    ax.set_ylim(0, 100)
    ax.set_xlabel("initial learning rate (RMSprop)")
    ax.set_ylabel(f"val. accuracy after epoch {epochs} (%)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)


# --- float32 against bfloat16 ---------------------------------------------------------------

def load_precision_pairs(results_dir, epochs: int = 2, subset: int = 10000) -> dict:
    """``{model: {seed: {"fp32": result, "bf16": result}}}`` for the short runs
    ``*-e{epochs}-sub{subset}-seed*-*.json`` that finished all ``epochs``, keeping only seeds
    with both precisions."""
    found = {}
    for path in sorted(Path(results_dir).glob(f"*-e{epochs}-sub{subset}-seed*-*.json")):
        r = load_run_if_present(path)
        cfg = r["config"]
        if cfg["epochs"] == epochs and cfg["subset"] == subset and len(r["history"]) == epochs:
            found.setdefault(r["model"], {}).setdefault(cfg["seed"], {})[
                r["provenance"]["precision"]] = r
    return {m: {s: p for s, p in sorted(found.get(m, {}).items())
                if set(p) >= {"fp32", "bf16"}} for m in MODELS}


def precision_pair_table(pairs: Mapping[str, Mapping[int, Mapping]]) -> str:
    """Markdown table: per model and seed the final validation accuracy (%) and training loss
    in float32 and bfloat16 and their differences."""
    rows = []
    for m in MODELS:
        for seed, p in pairs[m].items():
            h32, h16 = p["fp32"]["history"][-1], p["bf16"]["history"][-1]
            rows.append((m, seed, f"{in_percent(h32['val_acc']):.2f}",
                         f"{in_percent(h16['val_acc']):.2f}",
                         f"{in_percent(h16['val_acc'] - h32['val_acc']):+.2f}",
                         f"{h32['train_loss']:.4f}", f"{h16['train_loss']:.4f}",
                         f"{h16['train_loss'] - h32['train_loss']:+.4f}"))
    return markdown_table(["model", "seed", "val. acc. fp32 (%)", "bf16 (%)", "bf16 − fp32",
                           "train loss fp32", "bf16", "bf16 − fp32"], rows, align="lrrrrrrr")


_METRIC_SCALE = {"val_acc": 100.0, "train_loss": 1.0}


def precision_statistics(pairs: Mapping[str, Mapping[int, Mapping]], min_seeds: int = 3) -> dict:
    """Paired bf16 − fp32 differences after the last epoch, per model with at least
    ``min_seeds`` seeds and per metric (``val_acc`` in points, ``train_loss`` in nats).

    Returns ``{(model, metric): {"n", "mean", "se", "sd_fp32", "sd_bf16", "sd_seed",
    "shift"}}``: the mean difference, its standard error (sample s.d. / sqrt(n)), the
    across-seed standard deviations of each precision and their mean, and ``shift`` =
    ``|mean| > 2 se``.
    """
    out = {}
    for m in MODELS:
        seeds = list(pairs[m])
        if len(seeds) < min_seeds:
            continue
        for key, scale in _METRIC_SCALE.items():
            v32 = np.array([scale * pairs[m][s]["fp32"]["history"][-1][key] for s in seeds])
            v16 = np.array([scale * pairs[m][s]["bf16"]["history"][-1][key] for s in seeds])
            d = v16 - v32
            mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
            sd32, sd16 = float(v32.std(ddof=1)), float(v16.std(ddof=1))
            out[m, key] = {"n": len(seeds), "mean": mean, "se": se, "sd_fp32": sd32,
                           "sd_bf16": sd16, "sd_seed": (sd32 + sd16) / 2,
                           "shift": abs(mean) > 2 * se}
    return out


def precision_summary_table(stats: Mapping[tuple, Mapping]) -> str:
    """Markdown table of :func:`precision_statistics`: mean ± s.e., s.d. across seeds and the
    verdict, per model and metric."""
    names = {"val_acc": ("validation accuracy", ".2f"), "train_loss": ("training loss", ".4f")}
    rows = []
    for (m, key), s in stats.items():
        name, fmt = names[key]
        rows.append((m, name, s["n"], f"{s['mean']:+{fmt}} ± {s['se']:{fmt}}",
                     f"{s['sd_fp32']:{fmt}} / {s['sd_bf16']:{fmt}}",
                     "shift" if s["shift"] else "no detectable shift"))
    return markdown_table(["model", "after 2 epochs", "seeds", "mean bf16 − fp32 ± s.e.",
                           "s.d. across seeds (fp32 / bf16)", "verdict (|mean| > 2 s.e.?)"],
                          rows, align="llrrrl")


# --- the data -------------------------------------------------------------------------------

#: Canonical CIFAR-10 training-set statistics, quoted (shared/data/README.md, common usage).
CANONICAL_MEAN = np.array([0.4914, 0.4822, 0.4465])
CANONICAL_STD = np.array([0.2470, 0.2435, 0.2616])


def channel_statistics(x_u8: np.ndarray) -> dict:
    """Per-channel mean and standard deviation of uint8 images ``(N, H, W, 3)`` on the
    ``[0, 1]`` scale (population s.d., float64), and their largest deviations from the quoted
    canonical values: ``mean_shift`` (absolute) and ``std_shift_pct`` (relative, %), plus
    ``lower_contrast`` (every channel's s.d. below the canonical one)."""
    mean = np.array([x_u8[..., c].mean(dtype=np.float64) for c in range(3)]) / 255.0
    std = np.array([x_u8[..., c].std(dtype=np.float64) for c in range(3)]) / 255.0
    return {"mean": mean, "std": std,
            "mean_shift": float(np.max(np.abs(mean - CANONICAL_MEAN))),
            "std_shift_pct": float(100 * np.max(np.abs(std / CANONICAL_STD - 1))),
            "lower_contrast": bool(np.all(std < CANONICAL_STD))}


def channel_table(stats: Mapping, variant: str) -> str:
    """Markdown table of :func:`channel_statistics` beside the canonical values."""
    rows = [(name, f"{stats['mean'][c]:.4f}", f"{CANONICAL_MEAN[c]:.4f}",
             f"{stats['std'][c]:.4f}", f"{CANONICAL_STD[c]:.4f}")
            for c, name in enumerate(("red", "green", "blue"))]
    return markdown_table(["channel", f"mean ({variant})", "mean (canonical, quoted)",
                           f"std ({variant})", "std (canonical, quoted)"], rows, align="lrrrr")

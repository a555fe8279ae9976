"""Reading the batch-size sweep (:mod:`bnbook.experiments.norms.sweep`): load it, summarise it
over seeds, tabulate it and draw it.

* :func:`load_norm_sweep` - the one reader: :func:`bnbook.results.read_result` plus a check that the
  file holds every cell of the profile asked for (the chapter asks for ``"full"``, so a
  ``--quick`` file can never be rendered as the sweep by accident);
* :func:`sweep_summary` - test accuracy per method and batch size: mean, sample standard
  deviation and range over seeds, in percent;
* :func:`norm_sweep_table` - that summary as a Markdown table (methods by batch sizes);
* :func:`plot_norm_sweep` - test error against batch size, one line per method (Wu & He's figure);
* :func:`sweep_numbers` - the headline numbers the chapter glues.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping

from bnbook.experiments.norms.sweep import (SWEEP_RESULT, cell_key, cells_of, check_cells,
                                            same_as_batch_norm)
from bnbook.results import markdown_table, read_result

__all__ = ["METHOD_LABELS", "check_sweep", "load_norm_sweep", "sweep_summary", "norm_sweep_table",
           "plot_norm_sweep", "sweep_numbers", "sweep_shape"]

#: How the chapter names each method.
METHOD_LABELS = {"batch": "BN", "renorm": "batch renorm", "ghost": "ghost BN", "group": "GN",
                 "group_ws": "GN + WS", "layer": "LN", "instance": "IN", "none": "none"}

_STYLES = {"batch": ("C0", "o", "-"), "renorm": ("C1", "s", "-"), "ghost": ("C2", "^", "-"),
           "group": ("C3", "D", "-"), "group_ws": ("C4", "v", "--"), "layer": ("C5", "P", "-"),
           "instance": ("C6", "X", "-"), "none": ("0.4", ".", ":")}


def check_sweep(result: Mapping, profile: str | None = "full") -> Mapping:
    """Raise ``ValueError`` unless ``result`` is a complete sweep (every cell of its settings
    present, with a test accuracy or ``diverged``) made with ``profile`` (``None``: any).
    Returns ``result``."""
    for key in ("profile", "settings", "runs"):
        if key not in result:
            raise ValueError(f"not a norm sweep result: no {key!r}")
    if profile is not None and result["profile"] != profile:
        raise ValueError(f"this is the {result['profile']!r} profile of the sweep, not "
                         f"{profile!r}; run `python -m bnbook.experiments.norms.sweep` "
                         f"{'--quick ' if profile == 'quick' else ''}to make it")
    if profile is not None:
        from bnbook.experiments.norms.sweep import PROFILES

        if result["settings"] != PROFILES[profile]:
            diff = sorted(k for k in set(result["settings"]) | set(PROFILES[profile])
                          if result["settings"].get(k) != PROFILES[profile].get(k))
            raise ValueError(f"its settings differ from the {profile!r} profile's in "
                             f"{', '.join(diff)}; rerun `python -m bnbook.experiments."
                             f"norms.sweep{' --quick' if profile == 'quick' else ''}`")
    check_cells(result["runs"], result["settings"])
    return result


def load_norm_sweep(path: os.PathLike | str = SWEEP_RESULT, profile: str | None = "full") -> dict:
    """Read a sweep result (:func:`bnbook.results.read_result`) and :func:`check_sweep` it."""
    result = read_result(path)
    try:
        return dict(check_sweep(result, profile))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def sweep_summary(result: Mapping, key: str = "test_acc") -> dict:
    """``{method: {batch size: {"mean", "sd", "min", "max", "n", "diverged"}}}`` of ``key``
    over seeds, in percent (``sd`` is the sample standard deviation, ``None`` for one seed;
    diverged seeds are left out of the statistics and counted in ``diverged``). A cell that is
    batch norm by definition (ghost batch norm with one chunk) was not run: its statistics
    are ``None`` and it has ``"same_as_batch_norm": True``."""
    s = result["settings"]
    out: dict = {}
    for method in s["methods"]:
        out[method] = {}
        for m in s["batch_sizes"]:
            if same_as_batch_norm(method, m, s):
                out[method][m] = {"mean": None, "sd": None, "min": None, "max": None, "n": 0,
                                  "diverged": 0, "same_as_batch_norm": True}
                continue
            runs = [result["runs"][cell_key(method, m, seed)] for seed in s["seeds"]]
            vals = [100.0 * r[key] for r in runs if not r["diverged"] and r.get(key) is not None]
            out[method][m] = {
                "mean": statistics.mean(vals) if vals else None,
                "sd": statistics.stdev(vals) if len(vals) > 1 else None,
                "min": min(vals) if vals else None, "max": max(vals) if vals else None,
                "n": len(vals), "diverged": sum(r["diverged"] for r in runs)}
    return out


def norm_sweep_table(result: Mapping, key: str = "test_acc", digits: int = 1) -> str:
    """A Markdown table of :func:`sweep_summary`: one row per method, one column per batch
    size, each cell ``mean ± sd`` in percent (``diverged`` where every seed diverged, ``= BN``
    where the method is batch norm by definition)."""
    summary = sweep_summary(result, key)
    sizes = result["settings"]["batch_sizes"]

    def cell(c):
        if c.get("same_as_batch_norm"):
            return "= BN"
        if c["mean"] is None:
            return "diverged"
        text = f"{c['mean']:.{digits}f}"
        if c["sd"] is not None:
            text += f" ± {c['sd']:.{digits}f}"
        return text + (f" ({c['diverged']} diverged)" if c["diverged"] else "")

    rows = [[METHOD_LABELS.get(meth, meth)] + [cell(summary[meth][m]) for m in sizes]
            for meth in summary]
    return markdown_table(["method"] + [f"m = {m}" for m in sizes], rows,
                          "l" + "r" * len(sizes))


def plot_norm_sweep(result: Mapping, ax=None, methods=None, error: bool = True):
    """Test error (``error=True``, as Wu & He plot it) or accuracy in percent against the
    batch size (log scale), one line per method (mean over seeds, bars from the lowest to the
    highest seed). Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    summary = sweep_summary(result)
    sizes = result["settings"]["batch_sizes"]
    for method in methods or summary:
        rows = [(m, summary[method][m]) for m in sizes if summary[method][m]["mean"] is not None]
        xs = [m for m, _ in rows]
        ys = [100.0 - c["mean"] if error else c["mean"] for _, c in rows]
        below = [c["max"] - c["mean"] if error else c["mean"] - c["min"] for _, c in rows]
        above = [c["mean"] - c["min"] if error else c["max"] - c["mean"] for _, c in rows]
        colour, marker, style = _STYLES.get(method, (None, "o", "-"))
        ax.errorbar(xs, ys, yerr=[below, above], color=colour, marker=marker,
                    ls=style, lw=1.4, ms=5, capsize=2, label=METHOD_LABELS.get(method, method))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(m) for m in sizes])
    ax.set_xlabel("batch size (images per batch, log scale)")
    ax.set_ylabel("test error (%)" if error else "test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return ax


def sweep_numbers(result: Mapping) -> dict:
    """The numbers the chapter glues, in percent unless named otherwise.

    ``acc_<method>_m<m>`` (mean test accuracy), ``sd_<method>_m<m>``, ``drop_<method>``
    (accuracy at the largest batch minus at the smallest batch the method ran at),
    ``recal_batch_m<m>`` (BN with re-estimated statistics), and the sweep's size: ``cells``,
    ``seeds``, ``wall_hours``, ``images_seen``, ``n_train``, ``n_test``, ``width``,
    ``lr_at_32``.
    """
    s = result["settings"]
    summary = sweep_summary(result)
    recal = sweep_summary(result, "test_acc_recalibrated") if "batch" in summary else {}
    out: dict = {}
    for method, by_m in summary.items():
        for m, c in by_m.items():
            out[f"acc_{method}_m{m}"] = c["mean"]
            out[f"sd_{method}_m{m}"] = c["sd"]
        ran = [m for m in by_m if by_m[m]["mean"] is not None]
        lo, hi = (by_m[min(ran)]["mean"], by_m[max(ran)]["mean"]) if ran else (None, None)
        out[f"drop_{method}"] = None if lo is None or hi is None else hi - lo
    for m, c in recal.get("batch", {}).items():
        out[f"recal_batch_m{m}"] = c["mean"]
    prov = result["provenance"]
    out.update(cells=len(result["runs"]), seeds=len(s["seeds"]),
               wall_hours=None if prov.get("wall_seconds") is None
               else prov["wall_seconds"] / 3600.0,
               images_seen=s["images_seen"], n_train=s["n_train"], n_test=s["n_test"],
               width=s["width"], lr_at_32=s["lr_at_32"])
    return out


def _spread(values):
    return max(values) - min(values) if values else None


def sweep_shape(result: Mapping, small: int | None = None, large_from: int = 8,
                range_upto: int | None = None) -> dict:
    """The shape of each method's curve, in points of mean test accuracy over seeds.

    ``small`` is the smallest batch size of the sweep unless given. Per method: ``small``
    (the mean at that batch size, ``None`` where the method did not run there), ``large`` (the
    best mean over batch sizes ``>= large_from``), ``loss_small`` (``large - small``: what the
    smallest batch costs against the method's own best at large batches), ``range`` (largest
    minus smallest mean over the batch sizes the method ran at, up to ``range_upto`` if given)
    and ``best_m``. Plus
    ``noise``: the root mean square of the cells' seed-to-seed standard deviations, the
    yardstick for calling a difference real, over the batch sizes up to ``range_upto`` if given
    (a method failing at a batch size outside that window would otherwise inflate it).
    """
    summary = sweep_summary(result)
    sizes = result["settings"]["batch_sizes"]
    small = min(sizes) if small is None else small
    if small not in sizes:
        raise ValueError(f"batch size {small} is not in the sweep's {sizes}")
    if not any(m >= large_from for m in sizes):
        raise ValueError(f"the sweep has no batch size >= {large_from}: {sizes}")
    out: dict = {}
    sds = []
    for method, by_m in summary.items():
        means = {m: c["mean"] for m, c in by_m.items() if c["mean"] is not None}
        sds += [c["sd"] for m, c in by_m.items()
                if c["sd"] is not None and (range_upto is None or m <= range_upto)]
        large = [means[m] for m in means if m >= large_from]
        at_small = means.get(small)
        best = max(large) if large else None
        out[method] = {"small": at_small, "large": best,
                       "loss_small": None if at_small is None or best is None
                       else best - at_small,
                       "range": _spread([v for m, v in means.items()
                                         if range_upto is None or m <= range_upto]),
                       "best_m": max(means, key=means.get) if means else None}
    out["noise"] = (sum(v * v for v in sds) / len(sds)) ** 0.5 if sds else None
    return out

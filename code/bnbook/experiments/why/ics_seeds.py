"""Santurkar et al.'s internal-covariate-shift measure on several seeds, and its spread.

The stored landscape run (``python -m bnbook.experiments.why.run_landscape``, one seed) measures
the ICS of every layer (:func:`bnbook.experiments.why.ics.gradient_change`) beside the landscape probe.
One seed cannot say whether BN lowers it. :func:`run_ics` trains the same network the same way
(plain SGD, the same batches for one seed, a measurement every ``measure_every`` updates and
at the first) and measures only the ICS, which costs about half as much;
:func:`ics_seed_summary` aggregates a result over seeds.

* :func:`run_ics` - one network, one learning rate, one seed;
* :func:`ics_seed_summary` - per network and learning rate, per layer: the median over the
  measured updates of each seed, then the median, minimum and maximum of those over seeds;
  and per seed, in how many layers BN's median relative change is below the unnormalised
  network's.
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["run_ics", "ics_seed_summary"]


def run_ics(data, norm: str, *, lr: float, width: int = 16, epochs: int = 8,
            batch_size: int = 128, measure_every: int = 24, seed: int = 0,
            progress: bool = False) -> dict:
    """Train the narrow CNN (``norm`` ``"none"`` or ``"batch"``) with plain SGD at ``lr`` and,
    every ``measure_every`` updates and at the first, measure the ICS of every layer on the
    update's batch from the parameters before and after it.

    Returns the history of :func:`bnbook.experiments.why.cnn.train_small_cnn`, ``layers`` (each layer
    named by its weight), ``measurements`` (per measured update: ``step``, updates done
    before it, and ``ics``, one ``{"l2", "rel", "cos"}`` per layer; undefined ratios are
    ``None``) and ``seconds``.
    """
    from bnbook.models.small_cnn import small_cifar_cnn
    from bnbook.training import cross_entropy_loss
    from bnbook.experiments.why.cnn import train_small_cnn
    from bnbook.experiments.why.ics import gradient_change, layer_groups
    from bnbook.experiments.why.landscape import trainable

    model = small_cifar_cnn(width, norm, seed=seed)
    groups = layer_groups(model)
    start_point: dict = {}
    measured: list[dict] = []

    def before(step):
        start_point.clear()
        if step % measure_every == 0:
            start_point.update({n: p.detach().clone() for n, p in trainable(model).items()})

    def after(step, loss, logits, batch):
        if not start_point:
            return
        now = {n: p.detach().clone() for n, p in trainable(model).items()}
        rows = gradient_change(model, cross_entropy_loss, batch, start_point, now, groups)
        measured.append({"step": step - 1, "ics": [
            {k: (v if math.isfinite(v) else None) for k, v in row.items()} for row in rows]})

    t0 = time.perf_counter()
    hist = train_small_cnn(model, data, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                           before_step=before, on_step=after, progress=progress,
                           desc=f"ics {norm} lr {lr} seed {seed}")
    return {**hist, "layers": [g[0] for g in groups], "measurements": measured,
            "seconds": round(time.perf_counter() - t0, 2)}


def _median(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def ics_seed_summary(result: dict) -> dict:
    """Aggregate a result of ``python -m bnbook.experiments.why.run_ics_seeds`` (runs keyed
    ``"<norm>/lr<lr>/seed<s>"``).

    Returns ``{"<norm>/lr<lr>": {"seeds": [...], "layers": [...], "rel": per layer
    {"per_seed", "median", "min", "max"}, "cos": the same}}`` (each seed's value is the median
    over its measured updates; the first layer, with nothing before it, is left out) and,
    under ``"bn_lower"``, per learning rate and seed the number of layers in which the BN
    network's median ``rel`` is below the unnormalised one's, out of ``"n_layers"``.
    """
    groups: dict = {}
    for key, run in result["runs"].items():
        arm, seed = key.rsplit("/seed", 1)
        groups.setdefault(arm, {})[int(seed)] = run
    out: dict = {}
    for arm, runs in groups.items():
        seeds = sorted(runs)
        layers = runs[seeds[0]]["layers"][1:]
        entry = {"seeds": seeds, "layers": layers}
        for metric in ("rel", "cos"):
            rows = []
            for k in range(1, len(layers) + 1):
                per_seed = [_median(m["ics"][k][metric] for m in runs[s]["measurements"])
                            for s in seeds]
                kept = [v for v in per_seed if v is not None]
                rows.append({"per_seed": per_seed,
                             "median": float(np.median(kept)) if kept else None,
                             "min": min(kept) if kept else None,
                             "max": max(kept) if kept else None})
            entry[metric] = rows
        out[arm] = entry
    lower = {}
    for arm, entry in out.items():
        norm, lr = arm.split("/", 1)
        other = out.get(f"none/{lr}")
        if norm != "batch" or other is None:
            continue
        common = [s for s in entry["seeds"] if s in other["seeds"]]
        lower[lr] = {s: sum(1 for a, b in zip(entry["rel"], other["rel"])
                            if a["per_seed"][entry["seeds"].index(s)] is not None
                            and b["per_seed"][other["seeds"].index(s)] is not None
                            and a["per_seed"][entry["seeds"].index(s)]
                            < b["per_seed"][other["seeds"].index(s)])
                     for s in common}
    return {"arms": out, "bn_lower": lower,
            "n_layers": len(next(iter(out.values()))["layers"]) if out else 0}

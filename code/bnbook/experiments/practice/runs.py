"""The runners of chapter 6, *Batch norm in practice*: small seeded Fashion-MNIST experiments.

Each ``run_*`` function trains the MLP of :func:`bnbook.models.make_mlp` with
:func:`bnbook.training.train_classifier` in several variants and returns a plain dict
``{"settings": ..., "runs": {key: run dict}}``; the command line
(:mod:`bnbook.experiments.practice.cli`, ``python -m bnbook.experiments.practice``) writes it with
provenance under ``data/results/practice/``.

* :func:`run_placement` - BN before vs after the ReLU vs no BN;
* :func:`run_batch_size` - batch norm, group norm and no norm across batch sizes;
* :func:`run_lr_tolerance` - with and without BN across learning rates;
* :func:`run_dropout` - dropout before BN and the variance shift;
* :func:`run_finetune` - adapting a BN net to shifted images (recalibrate, freeze, fine-tune);
* :func:`run_depth_init` - depth, saturating activations and initial weight scale.

Every runner takes ``done`` (runs already finished, keyed as in its result: they are not run
again) and ``on_result`` (called with all finished runs after each new one), which the
command line uses to save and resume partial results.
"""

from __future__ import annotations

import copy
from torch import nn

from bnbook.data.subsets import FashionMNISTSubset, brightness_shift
from bnbook.diagnostics import batchnorm_input_shift, freeze_batchnorm, recalibrate_batchnorm
from bnbook.experiments.runner import run_units
from bnbook.models import make_mlp
from bnbook.training import evaluate_accuracy, train_classifier

__all__ = [
    "run_placement",
    "run_batch_size",
    "run_lr_tolerance",
    "run_dropout",
    "run_finetune",
    "run_depth_init",
    "FINETUNE_VARIANTS",
    "EXPERIMENTS",
]


def _mlp_for(data: FashionMNISTSubset, **kwargs) -> nn.Sequential:
    return make_mlp(pixel_mean=data.pixel_mean, pixel_std=data.pixel_std, **kwargs)


def _run_one(data: FashionMNISTSubset, model_kw: dict, train_kw: dict, seed: int) -> dict:
    model = _mlp_for(data, seed=seed, **model_kw)
    res = train_classifier(model, data.x_train, data.y_train, seed=seed, **train_kw)
    acc = evaluate_accuracy(model, data.x_test, data.y_test) if not res.diverged else None
    return {"test_acc": acc, "diverged": res.diverged,
            "final_train_loss": res.epoch_loss[-1] if res.epoch_loss else None,
            "steps": res.steps, "seconds": round(res.seconds, 3)}


def run_placement(data: FashionMNISTSubset, seeds=(0, 1, 2), epochs: int = 3,
                  batch_size: int = 64, lr: float = 0.05, hidden=(256, 256),
                  progress: bool = False, done: dict | None = None, on_result=None) -> dict:
    """BN before vs after the ReLU vs no BN: test accuracy per seed (same seed, same data
    order and same initial weights of the linear layers for the three variants).

    Returns ``{"settings": ..., "runs": {"<variant>/seed<s>": run dict}}`` with variants
    ``bn-before``, ``bn-after``, ``no-bn``.
    """
    variants = {"bn-before": dict(norm="batch", placement="before"),
                "bn-after": dict(norm="batch", placement="after"),
                "no-bn": dict(norm="none")}
    train_kw = dict(epochs=epochs, batch_size=batch_size, lr=lr)
    runs = [(f"{v}/seed{s}", (lambda kw=kw, s=s: _run_one(data, dict(hidden=hidden, **kw),
                                                            train_kw, s)))
            for s in seeds for v, kw in variants.items()]
    out = run_units(runs, {} if done is None else done, on_result, progress=progress,
                    desc="placement")
    return {"settings": dict(seeds=list(seeds), hidden=list(hidden), **train_kw),
            "runs": out}


def run_batch_size(data: FashionMNISTSubset, batch_sizes=(2, 4, 8, 32, 128), seeds=(0, 1),
                   norms=("batch", "none", "group"), epochs: int = 2, lr_at_128: float = 0.1,
                   hidden=(256, 256), progress: bool = False, done: dict | None = None,
                   on_result=None) -> dict:
    """Test accuracy of the MLP with each ``norm`` trained with each batch size ``m``.

    Every run sees the same number of examples (``epochs`` passes). The learning rate follows
    the linear scaling rule, ``lr = lr_at_128 * m / 128`` (Goyal et al., 2017), which keeps
    the distance SGD travels per epoch roughly independent of ``m``; the ``"none"`` column is
    the control that shows what the batch size alone does under this rule, the ``"group"``
    column a batch-independent normalisation. For BN runs we also record the accuracy with
    statistics re-estimated on the training set (:func:`recalibrate_batchnorm`), separating
    bad running averages from a badly trained network.
    """
    train_kw = dict(epochs=epochs)

    def train_at_batch_size(norm, m, s):
        model = _mlp_for(data, hidden=hidden, norm=norm, seed=s)
        res = train_classifier(model, data.x_train, data.y_train, batch_size=m, seed=s,
                               lr=lr_at_128 * m / 128, **train_kw)
        row = {"test_acc": None, "diverged": res.diverged, "steps": res.steps,
               "seconds": round(res.seconds, 3)}
        if not res.diverged:
            row["test_acc"] = evaluate_accuracy(model, data.x_test, data.y_test)
            if norm == "batch":
                recalibrate_batchnorm(model, data.x_train)
                row["test_acc_recalibrated"] = evaluate_accuracy(model, data.x_test, data.y_test)
        return row

    runs = [(f"{norm}/m{m}/seed{s}", (lambda norm=norm, m=m, s=s: train_at_batch_size(norm, m, s)))
            for s in seeds for m in batch_sizes for norm in norms]
    out = run_units(runs, {} if done is None else done, on_result, progress=progress,
                    desc="batch size")
    return {"settings": dict(batch_sizes=list(batch_sizes), seeds=list(seeds), norms=list(norms),
                             hidden=list(hidden), lr_at_128=lr_at_128, **train_kw),
            "runs": out}


def run_lr_tolerance(data: FashionMNISTSubset, lrs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
                     seeds=(0, 1), epochs: int = 2, batch_size: int = 64,
                     hidden=(256, 256, 256), progress: bool = False, done: dict | None = None,
                     on_result=None) -> dict:
    """The same MLP with and without BN trained with SGD (momentum 0.9) at each learning rate.

    Returns runs keyed ``"<bn|no-bn>/lr<lr>/seed<s>"``; a run that produced a non-finite
    loss is marked ``diverged`` (accuracy ``None``).
    """
    train_kw = dict(epochs=epochs, batch_size=batch_size)
    variants = {"bn": dict(norm="batch"), "no-bn": dict(norm="none")}
    runs = [(f"{v}/lr{lr:g}/seed{s}",
             (lambda kw=kw, lr=lr, s=s: _run_one(data, dict(hidden=hidden, **kw),
                                                 dict(lr=lr, **train_kw), s)))
            for s in seeds for lr in lrs for v, kw in variants.items()]
    out = run_units(runs, {} if done is None else done, on_result, progress=progress,
                    desc="learning rate")
    return {"settings": dict(lrs=list(lrs), seeds=list(seeds), hidden=list(hidden), **train_kw),
            "runs": out}


def run_dropout(data: FashionMNISTSubset, rates=(0.0, 0.5), seeds=(0, 1), epochs: int = 3,
                batch_size: int = 64, lr: float = 0.05, hidden=(256, 256),
                progress: bool = False, done: dict | None = None, on_result=None) -> dict:
    """BN nets trained with dropout ``p`` in ``rates`` (dropout after each ReLU, so it feeds
    the next BN): test accuracy as trained, the variance ratio of the second BN layer's test
    input to its running variance (:func:`batchnorm_input_shift`), and accuracy after
    re-estimating the statistics with dropout off (:func:`recalibrate_batchnorm`)."""
    train_kw = dict(epochs=epochs, batch_size=batch_size, lr=lr)

    def train_with_dropout(p, s):
        model = _mlp_for(data, hidden=hidden, norm="batch", dropout=p, seed=s)
        res = train_classifier(model, data.x_train, data.y_train, seed=s, **train_kw)
        if res.diverged:
            return {"diverged": True}
        shift = batchnorm_input_shift(model, data.x_train)
        acc = evaluate_accuracy(model, data.x_test, data.y_test)
        recalibrate_batchnorm(model, data.x_train)
        shift_after = batchnorm_input_shift(model, data.x_train)
        return {"diverged": False, "test_acc": acc,
                "test_acc_recalibrated": evaluate_accuracy(model, data.x_test, data.y_test),
                "shift": shift, "shift_recalibrated": shift_after,
                "seconds": round(res.seconds, 3)}

    runs = [(f"p{p:g}/seed{s}", (lambda p=p, s=s: train_with_dropout(p, s)))
            for s in seeds for p in rates]
    out = run_units(runs, {} if done is None else done, on_result, progress=progress,
                    desc="dropout")
    return {"settings": dict(rates=list(rates), seeds=list(seeds), hidden=list(hidden),
                             **train_kw), "runs": out}


def run_depth_init(data: FashionMNISTSubset, depths=(2, 8), activations=("relu", "sigmoid"),
                   init_scales=(0.25, 1.0, 4.0), seeds=(0, 1), epochs: int = 2,
                   batch_size: int = 64, lr: float = 0.05, width: int = 128,
                   progress: bool = False, done: dict | None = None, on_result=None) -> dict:
    """Claims about depth, saturating activations and initialisation, with and without BN.

    For each number of hidden layers in ``depths`` (all of width ``width``), each
    ``activation`` and each ``init_scale`` (a multiplier on PyTorch's default initial
    weights), train the MLP with and without BN (before the activation) with the same SGD
    settings. Runs are keyed ``"<bn|no-bn>/<activation>/depth<d>/scale<s>/seed<k>"``.
    """
    train_kw = dict(epochs=epochs, batch_size=batch_size, lr=lr)
    variants = {"bn": "batch", "no-bn": "none"}
    runs = [(f"{v}/{act}/depth{d}/scale{sc:g}/seed{s}",
             (lambda norm=norm, act=act, d=d, sc=sc, s=s: _run_one(
                 data, dict(hidden=(width,) * d, norm=norm, activation=act, init_scale=sc),
                 train_kw, s)))
            for s in seeds for d in depths for act in activations for sc in init_scales
            for v, norm in variants.items()]
    out = run_units(runs, {} if done is None else done, on_result, progress=progress,
                    desc="depth/init")
    return {"settings": dict(depths=list(depths), activations=list(activations),
                             init_scales=list(init_scales), seeds=list(seeds), width=width,
                             **train_kw), "runs": out}


FINETUNE_VARIANTS = ("pretrained", "recalibrate-only", "finetune-update-stats",
                     "finetune-frozen-stats", "finetune-frozen-bn")


def run_finetune(data: FashionMNISTSubset, delta: float = 0.4, n_new: int = 500,
                 seeds=(0, 1), epochs: int = 3, finetune_epochs: int = 5,
                 batch_size: int = 64, lr: float = 0.05, finetune_lr: float = 0.01,
                 hidden=(256, 256), progress: bool = False, done: dict | None = None,
                 on_result=None) -> dict:
    """Pre-train a BN MLP on ``data``, then adapt it to brightness-shifted images.

    The new domain is ``brightness_shift(x, delta)``; the fine-tuning set is ``n_new``
    shifted training images (taken from the end of the training subset). Variants:

    * ``pretrained``: no adaptation;
    * ``recalibrate-only``: no gradient step, BN statistics re-estimated on the new images;
    * ``finetune-update-stats``: SGD on the new images, BN in training mode (statistics move);
    * ``finetune-frozen-stats``: SGD with BN in evaluation mode (stored statistics kept),
      ``gamma``/``beta`` still trained;
    * ``finetune-frozen-bn``: as above, and ``gamma``/``beta`` frozen too.

    Each run reports accuracy on the old (original) and new (shifted) test images.
    """
    if not 0 < n_new < data.x_train.shape[0]:
        raise ValueError(f"n_new must be in 1..{data.x_train.shape[0] - 1}, got {n_new}")
    x_new = brightness_shift(data.x_train[-n_new:], delta)
    y_new = data.y_train[-n_new:]
    x_test_new = brightness_shift(data.x_test, delta)
    fb = min(batch_size, n_new)

    def pretrain_and_finetune(s):
        base = _mlp_for(data, hidden=hidden, norm="batch", seed=s)
        train_classifier(base, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                         lr=lr, seed=s)
        out = {}
        for variant in FINETUNE_VARIANTS:
            model = copy.deepcopy(base)
            if variant == "recalibrate-only":
                recalibrate_batchnorm(model, x_new)
            elif variant != "pretrained":
                if variant == "finetune-frozen-bn":
                    freeze_batchnorm(model)
                train_classifier(model, x_new, y_new, epochs=finetune_epochs, batch_size=fb,
                                 lr=finetune_lr, seed=s + 1000,
                                 freeze_bn_stats=variant != "finetune-update-stats")
            out[variant] = {"old_acc": evaluate_accuracy(model, data.x_test, data.y_test),
                            "new_acc": evaluate_accuracy(model, x_test_new, data.y_test)}
        return out

    runs = [(f"seed{s}", (lambda s=s: pretrain_and_finetune(s))) for s in seeds]
    out = run_units(runs, {} if done is None else done, on_result, progress=progress,
                    desc="fine-tuning")
    return {"settings": dict(delta=delta, n_new=n_new, seeds=list(seeds), epochs=epochs,
                             finetune_epochs=finetune_epochs, batch_size=batch_size, lr=lr,
                             finetune_lr=finetune_lr, hidden=list(hidden)), "runs": out}


EXPERIMENTS = {
    "placement": (run_placement, dict(seeds=(0, 1, 2, 3, 4), epochs=5),
                  dict(seeds=(0,), epochs=1)),
    "batch-size": (run_batch_size, dict(seeds=(0, 1, 2)),
                   dict(seeds=(0,), batch_sizes=(4, 128), epochs=1)),
    "lr-tolerance": (run_lr_tolerance, dict(seeds=(0, 1, 2)),
                     dict(seeds=(0,), lrs=(0.1, 3.0), epochs=1)),
    "dropout": (run_dropout, dict(seeds=(0, 1, 2)), dict(seeds=(0,), epochs=1)),
    "finetune": (run_finetune, dict(seeds=(0, 1, 2)),
                 dict(seeds=(0,), epochs=1, finetune_epochs=1)),
    "depth-init": (run_depth_init, dict(seeds=(0, 1)),
                   dict(seeds=(0,), depths=(2,), init_scales=(1.0,), epochs=1)),
}
"""name -> (function, full settings, ``--quick`` settings)."""

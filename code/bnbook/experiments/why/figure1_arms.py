"""The Figure-1 sigmoid network with each kind of noise after its BN layers, and the loss the
noise-free network has on the training set.

:func:`bnbook.experiments.why.figure1.run_figure1` trains the plain, BN and jittered-BN networks. This
module trains the same networks (same weights, batches and trainer for one seed:
:func:`bnbook.experiments.motivation.covariate_shift.train_sigmoid_mlp`) with any noise of
:func:`bnbook.experiments.why.noise_kinds.make_noise` - the per-channel jitter, the drift, Santurkar et
al.'s per-activation noise - and records, at every logged step, beside the test accuracy:

* ``clean_train_loss`` and ``clean_train_acc`` - cross-entropy and accuracy on the first
  ``clean_train_size`` training images in evaluation mode (running statistics, no noise),
  so that "it fits the training set less" is measured, not inferred from a loss taken with
  the noise on;
* the movement summaries of :func:`bnbook.experiments.why.figure1.run_figure1` (how far the last hidden
  layer's sigmoid inputs moved between logs and over one update).

* :func:`run_figure1_arm` - one network, one seed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.nn import functional as F

from bnbook.experiments.motivation import covariate_shift as cs
from bnbook.diagnostics import eval_mode
from bnbook.experiments.why.figure1 import (Figure1Data, _summary, make_figure1_network,
                                sigmoid_input_percentiles)
from bnbook.experiments.why.noise_kinds import make_noise

__all__ = ["clean_loss_accuracy", "run_figure1_arm"]


@torch.no_grad()
def clean_loss_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                        batch_size: int = 5000) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``net`` on ``x`` ``(n, d)``, ``y`` ``(n,)`` in
    evaluation mode (noise off, BN with running statistics), modes restored."""
    total, correct = 0.0, 0
    with eval_mode(net):
        for i in range(0, x.shape[0], batch_size):
            logits = net(x[i:i + batch_size])
            total += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
            correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    loss = total / x.shape[0]
    return (loss if math.isfinite(loss) else None), correct / x.shape[0]


def run_figure1_arm(data: Figure1Data, batch_norm: bool, noise_kind: str | None = None,
                    noise_params: dict | None = None, *, n_steps: int = 50_000,
                    lr: float = 0.5, seed: int = 0, init_std: float = 0.1,
                    record_every: int = 500, monitor_size: int = 500,
                    clean_train_size: int = 10_000, progress: bool = False) -> dict:
    """Train one Figure-1 network (plain SGD, batch 60) and return a JSON-ready record.

    ``batch_norm`` chooses the BN network; ``noise_kind``/``noise_params`` (only with BN) the
    noise after every BN layer (:func:`bnbook.experiments.why.noise_kinds.make_noise`, noise seed
    ``seed + 1000``, redrawn before every step, as :func:`bnbook.experiments.why.figure1.run_figure1`
    does). Returns ``steps`` (0 first, every ``record_every``), ``test_acc``,
    ``clean_train_loss``, ``clean_train_acc`` (module docstring; one per logged step),
    ``saturated``, the movement summaries (``movement``, ``movement_per_update``,
    ``median_drift``, ``spread_start_median``, ``spread_end_median``) and ``seconds``.
    """
    if noise_kind is not None and not batch_norm:
        raise ValueError("noise goes after BN layers: it needs batch_norm=True")
    if not 1 <= clean_train_size <= data.x_train.shape[0]:
        raise ValueError(f"clean_train_size must be in 1..{data.x_train.shape[0]}, got "
                         f"{clean_train_size}")
    net, _ = make_figure1_network("bn" if batch_norm else "plain", data.x_train.shape[1],
                                  init_std, seed)
    noise = make_noise(net, noise_kind, noise_params, n_steps, seed + 1000)
    monitor = torch.as_tensor(data.x_test[:monitor_size])
    x_clean = torch.as_tensor(data.x_train[:clean_train_size])
    y_clean = torch.as_tensor(data.y_train[:clean_train_size])
    clean: list[tuple[float | None, float]] = []
    after_next: list[np.ndarray] = []
    calls = [0]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=f"figure 1 {noise_kind or batch_norm} seed {seed}",
                   leave=False)

    def before_step():                           # before update c: the model is after c - 1
        calls[0] += 1
        done = calls[0] - 1
        if done % record_every == 0:
            clean.append(clean_loss_accuracy(net, x_clean, y_clean))
        if done % record_every == 1:
            after_next.append(sigmoid_input_percentiles(net, monitor)[-1])
        if noise is not None:
            noise.resample()
        if bar is not None:
            bar.update(1)

    start = time.perf_counter()
    run = cs.train_sigmoid_mlp(data.arrays(), batch_norm, lr=lr, n_steps=n_steps,
                               record_every=record_every, monitor_size=monitor_size, seed=seed,
                               model=net, before_step=before_step)
    clean.append(clean_loss_accuracy(net, x_clean, y_clean))   # the trainer logs the end too
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    pct_last = run.percentiles[:, -1]
    pairs = np.stack([pct_last[:len(after_next)], np.asarray(after_next)], axis=1) \
        if after_next else np.zeros((0, 2) + pct_last.shape[1:])
    return {"steps": run.steps.tolist(), "test_acc": run.test_accuracy.round(5).tolist(),
            "clean_train_loss": [None if c[0] is None else round(c[0], 5) for c in clean],
            "clean_train_acc": [round(c[1], 5) for c in clean],
            "saturated": run.saturated.round(5).tolist(),
            **_summary(pct_last, pairs), "seconds": round(seconds, 2)}

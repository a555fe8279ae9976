"""The paper's Figure 1 on real images: a sigmoid network with and without batch norm.

Ioffe and Szegedy (2015, section 4.1) trained a network with three fully connected hidden
layers of 100 sigmoid units on MNIST (weights initialised to small random Gaussian values,
softmax cross-entropy, mini-batches of 60, 50,000 steps), with and without BN, and plotted
(a) the test accuracy over training and (b, c) the 15th, 50th and 85th percentiles of the
input of one sigmoid in the last hidden layer. Chapter 1 repeats it on synthetic data with
:func:`bnbook.experiments.motivation.covariate_shift.train_sigmoid_mlp`; this module runs the same trainer on real
images and adds a third network, BN with injected noise (:mod:`bnbook.experiments.why.noise`):

* :func:`figure1_data` - Fashion-MNIST (the book's stored results) or, as an option, MNIST
  from IDX files a reader has (:func:`load_mnist_idx`), as flattened ``(n, 784)`` pixels in
  ``[0, 1]``;
* :func:`make_figure1_network` - the network of one variant: ``"plain"`` (sigmoid(Wx + b)),
  ``"bn"`` (sigmoid(BN(Wx))) or ``"noisy-bn"`` (BN followed by per-step random shifts and
  scales);
* :func:`run_figure1` - train one variant and return a JSON-ready record: test accuracy,
  saturation and the percentiles of the last hidden layer's sigmoid inputs at every logged
  step (key ``"percentiles"``), and how far those distributions moved.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from bnbook.experiments.motivation import covariate_shift as cs
from bnbook.experiments.why.noise import (BatchNormNoise, buffers_restored, distribution_movement,
                                          percentile_location_spread)

__all__ = ["VARIANTS", "MNIST_FILES", "QUANTILES", "Figure1Data", "load_mnist_idx",
           "figure1_data", "make_figure1_network", "sigmoid_input_percentiles", "run_figure1"]

#: The three networks: without BN, with BN, with BN and injected noise after every BN layer.
VARIANTS = ("plain", "bn", "noisy-bn")

#: The percentiles of the paper's Figure 1(b, c), as fractions.
QUANTILES = (0.15, 0.50, 0.85)

#: The four IDX files of MNIST (``.gz`` or not), named as LeCun's site publishes them.
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class Figure1Data(NamedTuple):
    """Flattened images for the Figure-1 network.

    ``x_train`` ``(n_train, 784)`` and ``x_test`` ``(n_test, 784)``: float32 pixels in
    ``[0, 1]``; ``y_*`` int64 labels in ``0..9``; ``name`` says which data set this is
    (``"Fashion-MNIST"`` or ``"MNIST"``), for every figure's caption; ``sha256`` the IDX
    checksums (for provenance).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    sha256: dict

    def arrays(self):
        """``(x_train, y_train, x_test, y_test)``, what the trainer takes."""
        return self.x_train, self.y_train, self.x_test, self.y_test


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist_idx(folder: os.PathLike | str):
    """MNIST from the four IDX files in ``folder`` (each raw or ``.gz``, names as in
    :data:`MNIST_FILES`): ``(x_train, y_train, x_test, y_test, sha256)`` with ``uint8`` images
    ``(n, 28, 28)``, ``int64`` labels and the SHA-256 of each file's IDX bytes.

    The book does not download MNIST; a missing file raises ``FileNotFoundError`` that says
    where to get the files.
    """
    from bnbook.data.idx import idx_sha256, read_idx

    folder = Path(folder)
    paths = {stem: _find_idx(folder, stem) for stem in MNIST_FILES}
    missing = [stem for stem, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST not found in {folder}: missing {', '.join(missing)} (.gz or not). Put the "
            f"four IDX files of MNIST there (e.g. from https://yann.lecun.com/exdb/mnist/ or "
            f"torchvision's MNIST folder), or use the default data set, Fashion-MNIST.")
    arrays = [read_idx(paths[stem]) for stem in MNIST_FILES]
    x_train, y_train, x_test, y_test = arrays
    if x_train.shape[1:] != (28, 28) or x_test.shape[1:] != (28, 28) \
            or y_train.shape != x_train.shape[:1] or y_test.shape != x_test.shape[:1]:
        raise ValueError(f"{folder}: not MNIST-shaped: images {x_train.shape}, {x_test.shape}, "
                         f"labels {y_train.shape}, {y_test.shape}")
    sums = {paths[s].name: idx_sha256(paths[s]) for s in MNIST_FILES}
    return (x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), sums)


def figure1_data(dataset: str = "fashion-mnist", n_train: int = 60000, n_test: int = 10000,
                 seed: int = 0, mnist_dir=None) -> Figure1Data:
    """The images for the Figure-1 experiment, flattened to ``(n, 784)`` in ``[0, 1]``.

    ``dataset`` is ``"fashion-mnist"`` (loaded with :func:`bnbook.data.load_fashion_mnist`,
    the stored results' data) or ``"mnist"`` (read from ``mnist_dir`` by
    :func:`load_mnist_idx`). ``n_train`` / ``n_test`` examples are drawn without replacement
    with a NumPy generator seeded by ``seed`` and kept in their original order (all of them:
    the whole data set).
    """
    if dataset == "fashion-mnist":
        from bnbook.data import fashion_mnist_info, load_fashion_mnist

        x_train, y_train, x_test, y_test = load_fashion_mnist()
        sums, name = dict(fashion_mnist_info()["idx_sha256"]), "Fashion-MNIST"
    elif dataset == "mnist":
        if mnist_dir is None:
            raise ValueError("dataset='mnist' needs mnist_dir, the folder of MNIST's IDX files")
        x_train, y_train, x_test, y_test, sums = load_mnist_idx(mnist_dir)
        name = "MNIST"
    else:
        raise ValueError(f"dataset must be 'fashion-mnist' or 'mnist', got {dataset!r}")
    if not (2 <= n_train <= len(x_train)) or not (1 <= n_test <= len(x_test)):
        raise ValueError(f"need 2 <= n_train <= {len(x_train)} and 1 <= n_test <= "
                         f"{len(x_test)}, got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    i_train = np.sort(rng.choice(len(x_train), size=n_train, replace=False))
    i_test = np.sort(rng.choice(len(x_test), size=n_test, replace=False))

    def flat(x):
        return (x.reshape(len(x), -1).astype(np.float32) / 255.0)

    return Figure1Data(flat(x_train[i_train]), np.asarray(y_train[i_train], np.int64),
                       flat(x_test[i_test]), np.asarray(y_test[i_test], np.int64), name, sums)


def make_figure1_network(variant: str, n_in: int = 784, init_std: float = 0.1, seed: int = 0,
                         shift_max: float = 0.0, scale_max: float = 1.0, hidden: int = 100,
                         n_layers: int = 3):
    """``(network, noise)`` for one of :data:`VARIANTS`.

    The network is a :class:`bnbook.experiments.motivation.covariate_shift.SigmoidMLP` (``batch_norm`` for ``"bn"``
    and ``"noisy-bn"``); for ``"noisy-bn"`` every BN layer is wrapped by
    :class:`bnbook.experiments.why.noise.BatchNormNoise` with ``shift_max`` and ``scale_max`` (noise seed
    ``seed + 1000``, so it differs from the weights' and batches' seeds), else ``noise`` is
    ``None``. For one seed all three variants start from the same weights.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    net = cs.SigmoidMLP(n_in, hidden, n_layers, 10, variant != "plain", init_std, seed)
    noise = BatchNormNoise(net, shift_max, scale_max, seed + 1000) \
        if variant == "noisy-bn" else None
    return net, noise


@torch.no_grad()
def sigmoid_input_percentiles(net: cs.SigmoidMLP, monitor: torch.Tensor) -> np.ndarray:
    """The 15th, 50th and 85th percentiles (linear interpolation, as ``numpy.percentile``)
    of every sigmoid's input over the monitoring batch, in training mode (BN with the batch's
    statistics, noise as it stands), running statistics untouched: ``(n_layers, 3, hidden)``.
    The same numbers :func:`bnbook.experiments.motivation.covariate_shift.train_sigmoid_mlp` records."""
    q = torch.tensor(QUANTILES)
    with buffers_restored(net):
        zs = net.sigmoid_inputs(monitor)
    return torch.stack([torch.quantile(z, q, dim=0) for z in zs]).numpy()


def _summary(pct_last: np.ndarray, pairs: np.ndarray) -> dict:
    """Movement and spread of the last hidden layer's sigmoid inputs, over all its units:
    between logged steps (``pct_last``, ``(T, 3, units)``) and over one update (``pairs``,
    ``(P, 2, 3, units)``: the distribution after update ``s`` and after update ``s + 1``)."""
    location, spread = percentile_location_spread(pct_last)
    width = pct_last[:, 2, :] - pct_last[:, 0, :]
    per_update = [distribution_movement(*percentile_location_spread(pair)) for pair in pairs]
    return {"movement": distribution_movement(location, spread),
            "movement_per_update": {k: float(np.mean([m[k] for m in per_update]))
                                    for k in per_update[0]} if per_update else None,
            "median_drift": float(np.median(cs.percentile_drift(pct_last))),
            "spread_start_median": float(np.median(width[0])),
            "spread_end_median": float(np.median(width[-1]))}


def run_figure1(data: Figure1Data, variant: str, *, n_steps: int = 50_000, lr: float = 0.5,
                seed: int = 0, init_std: float = 0.1, shift_max: float = 0.0,
                scale_max: float = 1.0, record_every: int = 500, monitor_size: int = 500,
                stored_units: int = 10, progress: bool = False) -> dict:
    """Train one variant (plain SGD, batch 60) and return what the chapter plots.

    Returns a JSON-ready dict: ``steps`` (the logged steps, 0 first), ``test_acc`` (the whole
    test set, BN in evaluation mode, no noise), ``saturated`` (per logged step, the
    fraction of saturated sigmoids in each hidden layer), ``percentiles`` (per logged step,
    ``[15th, 50th, 85th][unit]`` of the sigmoid inputs of the first ``stored_units`` units
    of the last hidden layer on the monitoring batch, rounded to 1e-4), the summaries over all
    units of that layer (``movement`` between logged steps, ``movement_per_update`` from
    each logged step ``s`` to ``s + 1``, averaged over the logged steps; ``median_drift``,
    ``spread_start_median``, ``spread_end_median``) and ``seconds`` (wall time). With noise,
    the monitoring batch sees the noise of the step just taken, as that step's batch did.
    """
    net, noise = make_figure1_network(variant, data.x_train.shape[1], init_std, seed,
                                      shift_max, scale_max)
    monitor = torch.as_tensor(data.x_test[:monitor_size])
    after_next: list[np.ndarray] = []            # percentiles one update after each log
    calls = [0]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=f"figure 1 {variant} seed {seed}", leave=False)

    def before_step():                           # before update c: the model is after c - 1
        calls[0] += 1
        done = calls[0] - 1
        if done % record_every == 1 and done < n_steps:
            after_next.append(sigmoid_input_percentiles(net, monitor)[-1])
        if noise is not None:
            noise.resample()
        if bar is not None:
            bar.update(1)

    start = time.perf_counter()
    run = cs.train_sigmoid_mlp(data.arrays(), variant != "plain", lr=lr, n_steps=n_steps,
                               record_every=record_every, monitor_size=monitor_size, seed=seed,
                               model=net, before_step=before_step)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    pct_last = run.percentiles[:, -1]                       # (T, 3, hidden)
    pairs = np.stack([pct_last[:len(after_next)], np.asarray(after_next)], axis=1) \
        if after_next else np.zeros((0, 2) + pct_last.shape[1:])
    return {"steps": run.steps.tolist(), "test_acc": run.test_accuracy.round(5).tolist(),
            "saturated": run.saturated.round(5).tolist(),
            "percentiles": pct_last[:, :, :stored_units].round(4).tolist(),
            **_summary(pct_last, pairs), "seconds": round(seconds, 2)}

"""Seeded Fashion-MNIST subsets as torch tensors, for the small MLP experiments (chapters 4, 6).

* :func:`prepare_fashion_mnist` - draw ``n_train`` / ``n_test`` examples with a seeded NumPy
  generator and return them as a :class:`FashionMNISTSubset` (pixels in ``[0, 1]``);
* :func:`brightness_shift` - a simple covariate shift of the images (chapter 6's new domain).

Images are ``(N, 28, 28)`` float32 pixels in ``[0, 1]``; labels are int64 in ``0..9``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

import bnbook.data

__all__ = ["FashionMNISTSubset", "prepare_fashion_mnist", "brightness_shift"]


class FashionMNISTSubset(NamedTuple):
    """A seeded subset of Fashion-MNIST as float32 tensors.

    ``x_train`` ``(n_train, 28, 28)`` and ``x_test`` ``(n_test, 28, 28)`` hold pixels in
    ``[0, 1]``; ``y_*`` are int64 labels in ``0..9``; ``pixel_mean`` and ``pixel_std`` are the
    training subset's pixel statistics (scalars), which :func:`make_mlp` uses to standardise.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    pixel_mean: float
    pixel_std: float


def prepare_fashion_mnist(n_train: int = 10000, n_test: int = 2000, seed: int = 0,
                          root=None) -> FashionMNISTSubset:
    """Load Fashion-MNIST (:func:`bnbook.data.load_fashion_mnist`) and draw a seeded subset.

    The ``n_train`` training and ``n_test`` test examples are drawn without replacement from
    the official training and test splits with a NumPy generator seeded by ``seed``.
    """
    if not (1 <= n_train <= 60000) or not (1 <= n_test <= 10000):
        raise ValueError(f"n_train must be in 1..60000 and n_test in 1..10000, "
                         f"got n_train={n_train}, n_test={n_test}")
    x_train, y_train, x_test, y_test = bnbook.data.load_fashion_mnist(root)
    rng = np.random.default_rng(seed)
    i_train = np.sort(rng.choice(len(x_train), size=n_train, replace=False))
    i_test = np.sort(rng.choice(len(x_test), size=n_test, replace=False))
    xtr = torch.from_numpy(x_train[i_train].astype(np.float32) / 255.0)
    xte = torch.from_numpy(x_test[i_test].astype(np.float32) / 255.0)
    return FashionMNISTSubset(xtr, torch.from_numpy(y_train[i_train]),
                              xte, torch.from_numpy(y_test[i_test]),
                              float(xtr.mean()), float(xtr.std()))


def brightness_shift(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Pixels ``x`` in ``[0, 1]`` made brighter by ``delta`` (clipped to ``[0, 1]``).

    A simple covariate shift: the labels mean the same, the input distribution moves (the
    black background of Fashion-MNIST becomes grey).
    """
    if not -1.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [-1, 1] (a change of pixel value), got {delta}")
    return (x + delta).clamp(0.0, 1.0)


"""Seeded subsets as torch tensors, for the small experiments: Fashion-MNIST for the MLPs
(chapters 4, 6), CIFAR-10 for the narrow CNNs (the norms and why-BN chapters).

* :func:`prepare_fashion_mnist` - draw ``n_train`` / ``n_test`` examples with a seeded NumPy
  generator and return them as a :class:`FashionMNISTSubset` (pixels in ``[0, 1]``);
* :func:`prepare_cifar10` - the same for CIFAR-10, as a :class:`Cifar10Subset` of
  ``(N, 3, 32, 32)`` images standardised per channel with the training subset's statistics;
* :func:`brightness_shift` - a simple covariate shift of the images (chapter 6's new domain).

Images are ``(N, 28, 28)`` float32 pixels in ``[0, 1]``; labels are int64 in ``0..9``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

import bnbook.data

__all__ = ["FashionMNISTSubset", "prepare_fashion_mnist", "Cifar10Subset", "prepare_cifar10",
           "brightness_shift"]


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


class Cifar10Subset(NamedTuple):
    """A seeded subset of CIFAR-10 as float32 tensors.

    ``x_train`` ``(n_train, 3, 32, 32)`` and ``x_test`` ``(n_test, 3, 32, 32)`` are pixels in
    ``[0, 1]`` standardised per channel with ``channel_mean`` and ``channel_std`` (each
    ``(3,)``, the training subset's statistics); ``y_*`` are int64 labels in ``0..9``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    channel_mean: torch.Tensor
    channel_std: torch.Tensor


def prepare_cifar10(n_train: int = 10000, n_test: int = 2000, seed: int = 0,
                    data_dir=None, progress: bool = False) -> Cifar10Subset:
    """Load CIFAR-10 (:func:`bnbook.data.load_cifar10`) and draw a seeded subset.

    The ``n_train`` training and ``n_test`` test images are drawn without replacement from
    the official splits with a NumPy generator seeded by ``seed`` (class-balanced in
    expectation, whatever order the copy stores the images in).
    """
    if not (1 <= n_train <= 50000) or not (1 <= n_test <= 10000):
        raise ValueError(f"n_train must be in 1..50000 and n_test in 1..10000, "
                         f"got n_train={n_train}, n_test={n_test}")
    x_train, y_train, x_test, y_test = bnbook.data.load_cifar10(data_dir, progress=progress)
    if n_train > len(x_train) or n_test > len(x_test):
        raise ValueError(f"the CIFAR-10 copy in use has {len(x_train)} training and "
                         f"{len(x_test)} test images, too few for a subset of n_train={n_train}"
                         f", n_test={n_test}; provide the full data set (`make data`)")
    rng = np.random.default_rng(seed)
    i_train = np.sort(rng.choice(len(x_train), size=n_train, replace=False))
    i_test = np.sort(rng.choice(len(x_test), size=n_test, replace=False))

    def as_nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).float() / 255.0

    xtr, xte = as_nchw(x_train[i_train]), as_nchw(x_test[i_test])
    mean, std = xtr.mean(dim=(0, 2, 3)), xtr.std(dim=(0, 2, 3))

    def standardise(x):
        return (x - mean[:, None, None]) / std[:, None, None]

    return Cifar10Subset(standardise(xtr), torch.from_numpy(y_train[i_train]),
                         standardise(xte), torch.from_numpy(y_test[i_test]), mean, std)


def brightness_shift(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Pixels ``x`` in ``[0, 1]`` made brighter by ``delta`` (clipped to ``[0, 1]``).

    A simple covariate shift: the labels mean the same, the input distribution moves (the
    black background of Fashion-MNIST becomes grey).
    """
    if not -1.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [-1, 1] (a change of pixel value), got {delta}")
    return (x + delta).clamp(0.0, 1.0)


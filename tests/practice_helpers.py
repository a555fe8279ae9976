"""Synthetic stand-ins for Fashion-MNIST, shared by the tests of the MLP experiments.

A test module uses these by importing them: ``from practice_helpers import synthetic_subset``.
"""

import torch

from bnbook.data.subsets import FashionMNISTSubset
from bnbook.models import make_mlp


def synthetic_subset(n_train=600, n_test=200, seed=0) -> FashionMNISTSubset:
    """Ten classes of 28x28 'images' in [0, 1]: a class-specific mean pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, 28, 28, generator=g)

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=g)
        x = (0.7 * prototypes[y] + 0.3 * torch.rand(n, 28, 28, generator=g)).clamp(0, 1)
        return x, y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return FashionMNISTSubset(xtr, ytr, xte, yte, float(xtr.mean()), float(xtr.std()))


def small_mlp(data, **kw):
    """The MLP with two hidden layers of 32 (unless ``hidden`` is given), standardised for
    ``data``."""
    kw.setdefault("hidden", (32, 32))
    return make_mlp(pixel_mean=data.pixel_mean, pixel_std=data.pixel_std, **kw)

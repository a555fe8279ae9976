"""Shared fixture of chapter 9's tests: a tiny random CIFAR-shaped subset."""

import pytest
import torch

from bnbook.data.subsets import Cifar10Subset


@pytest.fixture(scope="module")
def tiny():
    """64 training and 32 test images of shape (3, 32, 32), random, with labels in 0..9."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return Cifar10Subset(x[:64], y[:64], x[64:], y[64:], torch.zeros(3), torch.ones(3))

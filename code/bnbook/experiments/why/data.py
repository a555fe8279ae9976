"""The data of the why-BN experiments, and what their provenance records about it.

* :func:`fashion_info` / :func:`load_fashion` - Fashion-MNIST flattened for the Figure-1
  network (:func:`bnbook.experiments.why.figure1.figure1_data`);
* :func:`cifar_info` / :func:`load_cifar` - a seeded CIFAR-10 subset for the narrow CNN
  (:func:`bnbook.data.subsets.prepare_cifar10`).

Each ``*_info(settings)`` returns a :class:`bnbook.experiments.why.cli.DataInfo` without
loading the images, so that a partial result is checked before any work; ``settings`` holds
``n_train``, ``n_test`` and ``data_seed``.
"""

from __future__ import annotations

from bnbook.experiments.why.cli import DataInfo

__all__ = ["fashion_info", "load_fashion", "cifar_info", "load_cifar"]


def _subset(settings: dict) -> dict:
    return {"n_train": settings["n_train"], "n_test": settings["n_test"],
            "seed": settings["data_seed"]}


def fashion_info(settings: dict) -> DataInfo:
    from bnbook.data import fashion_mnist_info

    info = fashion_mnist_info()
    return DataInfo(f"fashion-mnist/{info['variant']}", dict(info["idx_sha256"]),
                    _subset(settings))


def load_fashion(settings: dict):
    from bnbook.experiments.why.figure1 import figure1_data

    return figure1_data("fashion-mnist", settings["n_train"], settings["n_test"],
                        settings["data_seed"])


def cifar_info(settings: dict) -> DataInfo:
    from bnbook.data import cifar10_info

    info = cifar10_info()
    return DataInfo(f"cifar10/{info['variant']}", info["sha256"], _subset(settings))


def load_cifar(settings: dict):
    from bnbook.data.subsets import prepare_cifar10

    return prepare_cifar10(settings["n_train"], settings["n_test"], settings["data_seed"])

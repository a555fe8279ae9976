"""Every network the book trains, one module per network, and what the book measures of them.

* :mod:`~bnbook.models.mlp` - the Fashion-MNIST MLP of chapters 4 and 6 (:func:`make_mlp`);
* :mod:`~bnbook.models.keras_cifar_cnn` - the Keras ``cifar10_cnn`` example network, with and
  without batch normalization, of chapter 7 (:func:`keras_cnn`);
* :mod:`~bnbook.models.small_cnn` - the narrow CNN of chapters 8 and 9 (import it from there);
* :mod:`~bnbook.models.summaries` - parameter counts, MACs and training FLOPs of a network.

The names the chapters use are importable from here: ``from bnbook.models import keras_cnn,
make_mlp``.
"""

from bnbook.models.keras_cifar_cnn import (BASELINE_PARAMS, KERAS_BN_EPS, KERAS_BN_MOMENTUM,
                                           FlattenNHWC, KerasCifarCNN, glorot_init_, keras_cnn)
from bnbook.models.mlp import ACTIVATIONS, NORMS, PLACEMENTS, Standardise, make_mlp
from bnbook.models.summaries import count_parameters, forward_macs, training_flops_per_image

__all__ = [
    "NORMS",
    "PLACEMENTS",
    "ACTIVATIONS",
    "Standardise",
    "make_mlp",
    "KERAS_BN_MOMENTUM",
    "KERAS_BN_EPS",
    "BASELINE_PARAMS",
    "FlattenNHWC",
    "KerasCifarCNN",
    "keras_cnn",
    "glorot_init_",
    "count_parameters",
    "forward_macs",
    "training_flops_per_image",
]

"""The Keras ``cifar10_cnn`` example network, and the same network with batch normalization
(chapter 7).

:func:`keras_cnn` builds the baseline of Keras' ``examples/cifar10_cnn.py``
(keras2017cifar10cnn) in PyTorch, layer for layer, and with ``batch_norm=True`` the variant of
the learnopencv article (nayak2018batchnorm): a ``BatchNormalization`` after every ``Conv2D``
and ``Dense`` and before the activation that follows it, the three ``Dropout`` layers removed.

Architecture (input ``(N, 3, 32, 32)`` scaled to ``[0, 1]``; shapes per image, channels first)::

    Conv 3->32, 3x3, same   (32, 32, 32)   [BN]  ReLU
    Conv 32->32, 3x3, valid (32, 30, 30)   [BN]  ReLU
    MaxPool 2               (32, 15, 15)         Dropout 0.25 (baseline only)
    Conv 32->64, 3x3, same  (64, 15, 15)   [BN]  ReLU
    Conv 64->64, 3x3, valid (64, 13, 13)   [BN]  ReLU
    MaxPool 2               (64, 6, 6)           Dropout 0.25 (baseline only)
    Flatten (H, W, C order) (2304,)
    Dense 2304->512         (512,)         [BN]  ReLU  Dropout 0.5 (baseline only)
    Dense 512->10           (10,)          [BN]  (softmax lives in the loss)

Where the BN layers go. The article's prose puts ``BatchNormalization`` "after the Conv2D or
Dense" calls and before the following activation; its published script applies that to all six
of them, the last ``Dense(10)`` included (``Dense(num_classes)``, ``BatchNormalization()``,
``Activation('softmax')``). We follow the script, so the BN model normalises its logits too
(``bn_on_logits=True``); ``bn_on_logits=False`` gives the more common variant whose logits
layer is left alone. Every Conv/Dense keeps its bias, as Keras' ``use_bias=True`` default does,
although the following BN's ``beta`` makes it redundant.

The baseline has 1,250,858 trainable parameters, the count Keras' ``model.summary()`` prints
for the example. The BN variant adds ``2 * (32 + 32 + 64 + 64 + 512 + 10) = 1,428``
trainable parameters (``gamma``, ``beta``) and as many running statistics (buffers).

Keras-to-PyTorch translation (every place where the two libraries differ):

=========================== =================================== ===================================
Keras 2.x                   PyTorch here                        why / effect
=========================== =================================== ===================================
input NHWC, ``/255``        NCHW (or channels_last memory),     same numbers, different layout
                            ``/255``
``Conv2D(padding='same')``  ``Conv2d(padding=1)``               3x3 kernel, stride 1: identical
``Conv2D()`` (valid)        ``Conv2d(padding=0)``               identical
``glorot_uniform`` kernel   ``nn.init.xavier_uniform_``         both use fan_in = k*k*C_in,
                                                                fan_out = k*k*C_out: identical
bias ``zeros``              ``nn.init.zeros_``                  identical (Keras keeps the bias
                                                                even before BN; so do we)
``MaxPooling2D(2)``         ``MaxPool2d(2)``                    floor mode, identical
``Flatten`` of NHWC         ``permute(0, 2, 3, 1).flatten(1)``  we flatten in Keras' (H, W, C)
                                                                order, so Dense weights map 1:1;
                                                                any fixed order gives the same
                                                                function class (a permutation of
                                                                the Dense rows)
``Dropout(p)``              ``nn.Dropout(p)``                   both inverted dropout, identical
``BatchNormalization()``    ``BatchNorm2d/1d(eps=1e-3,          Keras' momentum 0.99 weights the
                            momentum=0.01)``                    old average; PyTorch's momentum
                                                                weights the new batch:
                                                                ``0.01 = 1 - 0.99``. Keras' eps is
                                                                1e-3 (PyTorch default 1e-5)
BN moving variance          running_var (unbiased, ``m/(m-1)``) Keras 2.2 rescales by
                                                                ``m/(m - 1 - eps)``: relative
                                                                difference 3e-5 for m = 32
``Activation('softmax')``,   ``F.cross_entropy`` on logits       Keras clips probabilities to
categorical cross-entropy                                       ``[1e-7, 1 - 1e-7]`` (loss capped
                                                                at 16.1); we do not clip. Only
                                                                matters for absurdly wrong
                                                                predictions
=========================== =================================== ===================================

The optimizer (Keras' RMSprop with inverse-time decay) and the augmentation are translated in
:mod:`bnbook.experiments.cifar.train`, with the same kind of table.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "KERAS_BN_MOMENTUM",
    "KERAS_BN_EPS",
    "BASELINE_PARAMS",
    "FlattenNHWC",
    "KerasCifarCNN",
    "keras_cnn",
    "glorot_init_",
]

#: Keras' ``BatchNormalization(momentum=0.99)`` as a PyTorch momentum (weight of the new batch).
KERAS_BN_MOMENTUM = 1.0 - 0.99
#: Keras' ``BatchNormalization(epsilon=1e-3)``.
KERAS_BN_EPS = 1e-3
#: Trainable parameters of Keras' cifar10_cnn, as ``model.summary()`` reports them.
BASELINE_PARAMS = 1_250_858


class FlattenNHWC(nn.Module):
    """Flatten ``(N, C, H, W)`` in Keras' channels-last order ``(N, H*W*C)``.

    With a channels_last memory format the permute is free (no copy).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class KerasCifarCNN(nn.Sequential):
    """The cifar10_cnn network as an ``nn.Sequential`` (see the module docstring).

    Parameters
    ----------
    batch_norm : bool
        ``False``: the Keras baseline (ReLU, dropout 0.25/0.25/0.5).
        ``True``: BN after every Conv/Dense, before the activation; dropout removed.
    bn_on_logits : bool
        Only with ``batch_norm=True``: also normalise the 10 logits (a ``BatchNorm1d(10)``
        between the last Dense and the softmax), as the article's published code does
        (``Dense(num_classes)``, ``BatchNormalization()``, ``Activation('softmax')``).
    lrn : bool
        Only with ``batch_norm=False``: the baseline with AlexNet's cross-channel local
        response normalisation (:class:`bnbook.torch_norms.CrossChannelLRN`, AlexNet's
        constants) where AlexNet has it: after the ReLU that precedes each max-pool, i.e.
        ``ReLU -> LRN -> MaxPool`` after the second and the fourth convolution (AlexNet's first
        and second stage). Dropout and learning rate stay the baseline's.
    num_classes : int
        Width of the last Dense layer (10 for CIFAR-10).

    ``forward(x)`` takes ``x`` of shape ``(N, 3, 32, 32)`` and returns logits ``(N, num_classes)``.
    """

    def __init__(self, batch_norm: bool = False, bn_on_logits: bool = True,
                 num_classes: int = 10, keep_dropout: bool = False, lrn: bool = False):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if lrn and batch_norm:
            raise ValueError("lrn=True is the baseline with local response normalisation; it "
                             "does not combine with batch_norm=True")
        self.batch_norm, self.lrn = bool(batch_norm), bool(lrn)
        self.bn_on_logits = bool(batch_norm and bn_on_logits)
        self.keep_dropout = bool(keep_dropout or not batch_norm)

        def bn2d(c):
            return [nn.BatchNorm2d(c, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)] if batch_norm else []

        def bn1d(c):
            return [nn.BatchNorm1d(c, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)] if batch_norm else []

        def dropout(p):
            return [nn.Dropout(p)] if self.keep_dropout else []

        def response_norm():
            from bnbook.torch_norms import CrossChannelLRN

            return [CrossChannelLRN()] if lrn else []

        layers = [
            nn.Conv2d(3, 32, 3, padding=1), *bn2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3), *bn2d(32), nn.ReLU(), *response_norm(),
            nn.MaxPool2d(2), *dropout(0.25),
            nn.Conv2d(32, 64, 3, padding=1), *bn2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3), *bn2d(64), nn.ReLU(), *response_norm(),
            nn.MaxPool2d(2), *dropout(0.25),
            FlattenNHWC(),
            nn.Linear(64 * 6 * 6, 512), *bn1d(512), nn.ReLU(), *dropout(0.5),
            nn.Linear(512, num_classes), *(bn1d(num_classes) if self.bn_on_logits else []),
        ]
        super().__init__(*layers)
        glorot_init_(self)

    def extra_repr(self) -> str:
        return (f"batch_norm={self.batch_norm}, bn_on_logits={self.bn_on_logits}, "
                f"dropout={self.keep_dropout}" + (", lrn=True" if self.lrn else ""))


def glorot_init_(module: nn.Module) -> nn.Module:
    """Keras' defaults in place: Glorot-uniform weights and zero biases for every Conv/Linear.

    Glorot uniform draws from ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``, where
    for a ``k x k`` convolution ``fan_in = k*k*C_in`` and ``fan_out = k*k*C_out`` (Keras and
    PyTorch agree on these fans). BN layers keep ``gamma = 1``, ``beta = 0`` (both libraries'
    default). Draws from the global torch RNG: seed it first. Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def keras_cnn(batch_norm: bool = False, bn_on_logits: bool = True,
              num_classes: int = 10, keep_dropout: bool = False,
              lrn: bool = False) -> KerasCifarCNN:
    """Build the Keras cifar10_cnn baseline (``batch_norm=False``), its BN variant or the
    baseline with local response normalisation (``lrn=True``).

    Weights are drawn from the global torch RNG (call ``torch.manual_seed`` first for
    reproducibility). See :class:`KerasCifarCNN` for the arguments.
    """
    return KerasCifarCNN(batch_norm=batch_norm, bn_on_logits=bn_on_logits,
                         num_classes=num_classes, keep_dropout=keep_dropout, lrn=lrn)

"""Every network the book trains: the Fashion-MNIST MLP (chapters 4 and 6) and the Keras
``cifar10_cnn`` example network with and without batch normalization (chapter 7).

The MLP
-------

:func:`make_mlp` builds ``Standardise -> [Linear, Norm, activation, Dropout] x depth -> Linear``
with an optional normalisation layer (batch, group, layer norm) placed before or after each
activation (ReLU, sigmoid, tanh), optional dropout, optional bias before the norm and a scale
on the initial weights; :class:`Standardise` flattens the images and standardises them with
fixed constants (so a shift of the input distribution reaches the network unchanged).

The CIFAR-10 CNN
----------------

The Keras ``cifar10_cnn`` example network, and the same network with batch normalization.

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

import contextlib
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "NORMS",
    "PLACEMENTS",
    "ACTIVATIONS",
    "Standardise",
    "make_mlp",
    "KERAS_BN_MOMENTUM",
    "KERAS_BN_EPS",
    "BASELINE_PARAMS",
    "KerasCifarCNN",
    "keras_cnn",
    "glorot_init_",
    "count_parameters",
    "forward_macs",
    "training_flops_per_image",
]

#: The normalisations :func:`make_mlp` can put in each hidden block.
NORMS = ("none", "batch", "group", "layer")
#: Where the normalisation goes relative to the activation.
PLACEMENTS = ("before", "after")
#: The activations :func:`make_mlp` knows, by name.
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
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


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, as Keras' summary counts "Trainable params"."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def forward_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> dict:
    """Multiply-accumulates of one forward pass of ``model`` per image, by layer kind.

    Counts the dense work only: ``Conv2d`` (``H_out * W_out * C_out * C_in/groups * k_h * k_w``)
    and ``Linear`` (``in * out``), measured with forward hooks on a zero input of
    ``input_shape`` (``(N, ...)``; the counts are per image). Normalisation, activations, pooling and the
    loss are memory-bound and not counted. Returns ``{"conv": int, "linear": int, "total": int,
    "first_layer": int}``, ``first_layer`` being the MACs of the first Conv/Linear run (whose
    input gradient a training step does not need).
    """
    counts = {"conv": 0, "linear": 0, "first_layer": None}

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):  # output[0]: one image's output
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs, kind = output[0].numel() * k, "conv"
        else:
            macs, kind = output[0].numel() * module.in_features, "linear"
        counts[kind] += macs
        if counts["first_layer"] is None:
            counts["first_layer"] = macs

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(tuple(input_shape), dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if counts["first_layer"] is None:
        raise ValueError("the model has no Conv2d or Linear layer to count")
    return {"conv": counts["conv"], "linear": counts["linear"],
            "total": counts["conv"] + counts["linear"], "first_layer": counts["first_layer"]}


def training_flops_per_image(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> int:
    """Floating-point operations of one training step per image, dense layers only.

    A step runs the forward (``F`` MACs), the weight gradients (``F`` again) and the input
    gradients (``F`` less the first layer's, whose input is the data): ``2 * (3F - F_first)``
    FLOPs, one MAC being two operations (:func:`forward_macs`).
    """
    m = forward_macs(model, input_shape)
    return 2 * (3 * m["total"] - m["first_layer"])


# --------------------------------------------------------------------------------------
# The Fashion-MNIST MLP
# --------------------------------------------------------------------------------------

class Standardise(nn.Module):
    """Flatten ``(N, 28, 28)`` (or any ``(N, ...)``) to ``(N, D)`` and apply ``(x - mean) / std``
    with fixed scalar constants (not learned, not re-estimated)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean:.4f}, std={self.std:.4f}"


def _norm_layer(norm: str, width: int, groups: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(width)
    if norm == "group":
        if width % groups:
            raise ValueError(f"group norm needs the width ({width}) divisible by groups ({groups})")
        return nn.GroupNorm(groups, width)
    if norm == "layer":
        return nn.LayerNorm(width)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def make_mlp(hidden: Sequence[int] = (256, 256), norm: str = "batch",
             placement: str = "before", dropout: float = 0.0, bias: bool | None = None,
             activation: str = "relu", init_scale: float = 1.0,
             in_features: int = 784, num_classes: int = 10, groups: int = 16,
             pixel_mean: float = 0.2860, pixel_std: float = 0.3530,
             seed: int | None = 0) -> nn.Sequential:
    """A multilayer perceptron ``Standardise -> [hidden block] x len(hidden) -> Linear``.

    Each hidden block of width ``w`` is, for ``placement="before"`` (the paper's choice)::

        Linear(w_in, w, bias) -> Norm(w) -> ReLU -> Dropout(dropout)

    and for ``placement="after"``::

        Linear(w_in, w, bias) -> ReLU -> Norm(w) -> Dropout(dropout)

    ``norm`` is ``"batch"`` (``nn.BatchNorm1d``), ``"group"`` (``nn.GroupNorm`` with
    ``groups`` groups), ``"layer"`` (``nn.LayerNorm``) or ``"none"``. ``bias=None`` gives the
    linear layers a bias exactly when it is not cancelled by a following normalisation (no
    bias for ``placement="before"`` with a norm). Dropout after the activation means that in
    a BN net dropout feeds the next block's linear layer and then its BN: the order whose
    train/test "variance shift" Li et al. (2019) analyse. The output layer is a plain
    ``Linear(w_last, num_classes)`` producing logits (the softmax lives in the loss).

    ``seed`` seeds the weight initialisation (PyTorch's defaults); ``None`` uses the global
    generator as it is. For one seed, every linear layer's weight is the same whatever
    ``norm``, ``placement``, ``dropout``, ``bias`` and ``activation`` are, so variants differ
    only in those. ``activation`` is ``"relu"``, ``"sigmoid"`` or ``"tanh"`` (the diagrams
    above show ReLU); ``init_scale`` multiplies every hidden linear layer's initial weights
    (``1`` is PyTorch's default initialisation). Input: pixels ``(N, 28, 28)`` or
    ``(N, 784)``; output ``(N, 10)``.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    hidden = tuple(int(w) for w in hidden)
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         f"{tuple(ACTIVATIONS)}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be positive, got {init_scale}")
    if bias is None:
        bias = norm == "none" or placement == "after"
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = [Standardise(pixel_mean, pixel_std)]
        width_in = in_features
        for width in hidden:
            linear = nn.Linear(width_in, width)
            if init_scale != 1.0:
                with torch.no_grad():
                    linear.weight.mul_(init_scale)
            if not bias:
                # Drawn, then dropped: every variant consumes the same random numbers, so the
                # weights are identical across norms and placements for one seed.
                linear.bias = None
            layers.append(linear)
            block = [ACTIVATIONS[activation]()]
            if norm != "none":
                block.insert(0 if placement == "before" else 1, _norm_layer(norm, width, groups))
            layers.extend(block)
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        return nn.Sequential(*layers)

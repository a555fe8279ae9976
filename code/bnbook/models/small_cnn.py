"""A narrow version of the chapter-7 CIFAR-10 network with a choice of normalisation.

The experiments that compare normalisation layers on images (the "other norms" chapter) and
that test why batch norm works (the "why does it work" chapter) train many small networks, so
they use the chapter-7 architecture at a fraction of its width::

    Conv 3->w, 3x3, same        (w, 32, 32)    Norm  ReLU
    Conv w->w, 3x3, valid       (w, 30, 30)    Norm  ReLU
    MaxPool 2                   (w, 15, 15)
    Conv w->2w, 3x3, same       (2w, 15, 15)   Norm  ReLU
    Conv 2w->2w, 3x3, valid     (2w, 13, 13)   Norm  ReLU
    MaxPool 2                   (2w, 6, 6)
    Flatten                     (72w,)
    Dense 72w->8w               (8w,)                ReLU
    Dense 8w->10                (10,)

``w = 32`` is chapter 7's network without dropout and without normalisation on the dense
layers. The normalisation under test sits on the four convolutions only; the dense head stays
unnormalised in every variant, because instance norm on a dense layer would see one value per
channel (and layer/group norm on it would be a different experiment). Every Conv/Dense is
initialised like Keras (Glorot uniform, zero bias), as chapter 7's network is.

``norm`` is one of :data:`CONV_NORMS`:

=============  ==============================================================================
``none``       no normalisation
``batch``      ``nn.BatchNorm2d``
``renorm``     :class:`bnbook.torch_norms.BatchRenorm2d` (Ioffe 2017)
``ghost``      :class:`bnbook.torch_norms.GhostBatchNorm2d` with ``ghost_batch_size``
``group``      ``nn.GroupNorm(groups, C)``
``group_ws``   ``nn.GroupNorm`` after a weight-standardised conv
               (:class:`bnbook.torch_norms.WSConv2d`)
``layer``      ``nn.GroupNorm(1, C)``: each sample over all its channels and positions, with
               a per-channel ``gamma``, ``beta`` (layer norm as Wu and He use it on conv nets)
``instance``   ``nn.GroupNorm(C, C)``: each (sample, channel) over its positions, affine
=============  ==============================================================================
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from bnbook.models.keras_cifar_cnn import glorot_init_

__all__ = ["CONV_NORMS", "conv_norm_layer", "SmallCifarCNN", "small_cifar_cnn"]

#: The normalisations :func:`small_cifar_cnn` can put after each convolution.
CONV_NORMS = ("none", "batch", "renorm", "ghost", "group", "group_ws", "layer", "instance")


def conv_norm_layer(norm: str, channels: int, groups: int = 4,
                    ghost_batch_size: int = 8) -> nn.Module:
    """The normalisation layer ``norm`` (see the module docstring) for ``channels`` channels.

    Input and output ``(N, channels, H, W)``. ``groups`` is used by ``group`` and
    ``group_ws`` and must divide ``channels``; ``ghost_batch_size`` by ``ghost``.
    """
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm in ("renorm", "ghost"):
        from bnbook import torch_norms

        if norm == "renorm":
            return torch_norms.BatchRenorm2d(channels)
        return torch_norms.GhostBatchNorm2d(channels, ghost_batch_size)
    if norm in ("group", "group_ws"):
        if groups < 1 or channels % groups:
            raise ValueError(f"group norm needs groups ({groups}) to divide the channels "
                             f"({channels})")
        return nn.GroupNorm(groups, channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    if norm == "instance":
        return nn.GroupNorm(channels, channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {CONV_NORMS}")


class SmallCifarCNN(nn.Sequential):
    """The narrow chapter-7 network (module docstring) as an ``nn.Sequential``.

    ``forward(x)``: ``x`` of shape ``(N, 3, 32, 32)`` -> logits ``(N, num_classes)``.
    """

    def __init__(self, width: int = 16, norm: str = "none", num_classes: int = 10,
                 groups: int = 4, ghost_batch_size: int = 8):
        if norm not in CONV_NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {CONV_NORMS}")
        if width < 1 or num_classes < 1:
            raise ValueError(f"width and num_classes must be positive, got {width}, "
                             f"{num_classes}")
        self.width, self.norm = int(width), norm

        def conv(c_in, c_out, padding):
            if norm == "group_ws":
                from bnbook.torch_norms import WSConv2d

                return WSConv2d(c_in, c_out, 3, padding=padding)
            return nn.Conv2d(c_in, c_out, 3, padding=padding)

        def block(c_in, c_out, padding):
            return [conv(c_in, c_out, padding),
                    conv_norm_layer(norm, c_out, groups, ghost_batch_size), nn.ReLU()]

        w = self.width
        super().__init__(
            *block(3, w, 1), *block(w, w, 0), nn.MaxPool2d(2),
            *block(w, 2 * w, 1), *block(2 * w, 2 * w, 0), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * w * 6 * 6, 8 * w), nn.ReLU(),
            nn.Linear(8 * w, num_classes))
        glorot_init_(self)

    def extra_repr(self) -> str:
        return f"width={self.width}, norm={self.norm!r}"


def small_cifar_cnn(width: int = 16, norm: str = "none", num_classes: int = 10,
                    groups: int = 4, ghost_batch_size: int = 8,
                    seed: int | None = 0) -> SmallCifarCNN:
    """Build :class:`SmallCifarCNN`; ``seed`` seeds its initialisation without touching the
    global generator (``None``: draw from the global generator as it is).

    For one seed and width, every convolution and dense layer starts from the same weights
    whatever ``norm`` is (the norm layers draw no random numbers), so variants differ only in
    their normalisation.
    """
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        return SmallCifarCNN(width, norm, num_classes, groups, ghost_batch_size)

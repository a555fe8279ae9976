"""How big a network is: its trainable parameters (as Keras' ``model.summary()`` counts them),
the multiply-accumulates of one forward pass and the floating-point operations of one training
step per image (chapter 7's speed comparison).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["count_parameters", "forward_macs", "training_flops_per_image"]


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

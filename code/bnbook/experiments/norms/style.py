"""Instance norm and "style": what it removes from each image, and what that costs a classifier.

Ulyanov et al. (2016) replaced batch norm by instance norm in a style-transfer generator, and
Huang and Belongie (2017) made the point explicit: the per-image, per-channel mean and standard
deviation of a feature map carry much of an image's *style* (colour, contrast, texture
energy), and adaptive instance norm, :func:`adain`, transfers style by replacing one image's
statistics with another's. CycleGAN's generators use instance norm for the same reason. This
module shows the two sides of that coin:

* :func:`channel_statistics` / :func:`statistics_spread` - the per-image channel means and
  standard deviations of a batch, and how much they vary *across images*;
  :func:`compare_normalisations` applies batch norm (batch statistics) and instance norm
  (each image's own) to the same batch and measures that spread before and after: instance
  norm sets every image's channel means to 0 and standard deviations to 1 (spread 0), batch
  norm only centres and scales the whole batch, so the images still differ as much as before
  relative to the batch's spread;
* :func:`colour_cast` - a task that needs exactly what instance norm removes: which channel
  received a uniform colour cast (the label is independent of the content);
  :func:`dominant_colour_labels` - a natural colour task: which colour channel of the image
  is, on average, the strongest (relative to the data set), which the content also betrays;
  :func:`run_colour_task` trains chapter 8's narrow CNN (:func:`bnbook.models.small_cnn.small_cifar_cnn`)
  with batch norm, instance norm or none on them, and on CIFAR-10's own labels as a control.

Images are ``(N, C, H, W)`` float tensors; statistics are biased (divide by ``H * W``).
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from bnbook.models.small_cnn import small_cifar_cnn
from bnbook.training import evaluate_accuracy, train_classifier

__all__ = ["channel_statistics", "statistics_spread", "instance_normalise", "batch_normalise",
           "adain", "compare_normalisations", "dominant_colour_labels", "colour_cast",
           "COLOUR_NORMS", "COLOUR_TASKS", "PADDING_MODES", "set_padding_mode_",
           "run_colour_task"]

#: The normalisations the colour task compares (names of :data:`bnbook.models.small_cnn.CONV_NORMS`).
COLOUR_NORMS = ("batch", "instance", "none")
#: The padding modes :func:`set_padding_mode_` accepts.
PADDING_MODES = ("zeros", "reflect")
#: The tasks of :func:`run_colour_task`.
COLOUR_TASKS = ("cast", "colour", "cifar")


def channel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel ``(mu, sigma)`` of ``x`` ``(N, C, H, W)``: each ``(N, C)``,
    the mean and the biased standard deviation over the ``H * W`` positions."""
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W); got shape {tuple(x.shape)}")
    return x.mean(dim=(2, 3)), x.var(dim=(2, 3), unbiased=False).sqrt()


def statistics_spread(x: torch.Tensor) -> dict:
    """How much the per-image channel statistics of ``x`` vary across its ``N`` images.

    ``mean_spread``: the standard deviation over images (``N - 1`` in the denominator) of
    ``mu[n, c]``, averaged over the channels; ``std_spread``: the same for ``sigma[n, c]``;
    ``mean_of_means`` and ``mean_of_stds``: their averages over images and channels;
    ``pooled_std``: each channel's (biased) standard deviation over all images and positions,
    averaged over channels (the scale batch norm divides by). ``relative_mean_spread`` and
    ``relative_std_spread`` divide each channel's spread by its pooled standard deviation
    before averaging: they do not change under a per-channel affine map such as batch norm.
    Floats.
    """
    mu, sigma = channel_statistics(x)
    pooled = x.transpose(0, 1).flatten(1).std(dim=1, unbiased=False)      # (C,)
    return {"mean_spread": float(mu.std(dim=0).mean()),
            "std_spread": float(sigma.std(dim=0).mean()),
            "mean_of_means": float(mu.mean()), "mean_of_stds": float(sigma.mean()),
            "pooled_std": float(pooled.mean()),
            "relative_mean_spread": float((mu.std(dim=0) / pooled).mean()),
            "relative_std_spread": float((sigma.std(dim=0) / pooled).mean())}


def instance_normalise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(x - mu[n, c]) / sqrt(sigma[n, c]**2 + eps)``: instance norm without ``gamma``/``beta``."""
    mu, sigma = channel_statistics(x)
    return (x - mu[:, :, None, None]) / (sigma[:, :, None, None] ** 2 + eps).sqrt()


def batch_normalise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch norm in training mode without ``gamma``/``beta``: each channel over all images
    and positions of the batch."""
    return F.batch_norm(x, None, None, training=True, eps=eps)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance norm (Huang and Belongie, 2017): ``content`` ``(N, C, H, W)`` with
    each image's channel statistics replaced by those of ``style`` (``(N, C, H', W')`` or
    ``(1, C, H', W')``): ``sigma_s * (x - mu_x) / sigma_x + mu_s``."""
    mu_s, sigma_s = channel_statistics(style)
    return (instance_normalise(content, eps) * sigma_s[:, :, None, None]
            + mu_s[:, :, None, None])


def compare_normalisations(images: torch.Tensor, conv_channels: int = 16,
                           seed: int = 0) -> dict:
    """:func:`statistics_spread` of ``images`` and of a random 3x3 convolution's feature
    maps of them (``conv_channels`` channels, PyTorch's default initialisation from
    ``seed``), each as they are (``"input"``), batch-normalised (``"batch"``) and
    instance-normalised (``"instance"``). Returns ``{"pixels": {...}, "features": {...}}``.

    Batch norm maps every image's channel through the same affine function, so the spreads
    relative to the channel's scale (``relative_mean_spread``, ``relative_std_spread``) stay
    the input's; instance norm sets every image's channel means to 0 and standard deviations
    to 1 (all spreads about 0).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv = torch.nn.Conv2d(images.shape[1], conv_channels, 3, padding=1)
    with torch.no_grad():
        maps = {"pixels": images, "features": conv(images)}
    return {level: {"input": statistics_spread(x), "batch": statistics_spread(batch_normalise(x)),
                    "instance": statistics_spread(instance_normalise(x))}
            for level, x in maps.items()}


def dominant_colour_labels(images: torch.Tensor) -> torch.Tensor:
    """The label of the colour task: ``argmax_c mu[n, c]`` of images ``(N, 3, H, W)`` that are
    standardised per channel over the data set (as :func:`bnbook.data.subsets.prepare_cifar10`
    returns them), i.e. which of red, green, blue is most above its data-set average in
    image ``n``. ``(N,)`` int64 in ``0..2``."""
    mu, _ = channel_statistics(images)
    return mu.argmax(dim=1)


def colour_cast(images: torch.Tensor, seed: int, strength: float = 1.0):
    """The colour-cast task: every image ``(N, 3, H, W)`` gets a uniform cast of ``strength``
    (in the standardised units of :func:`bnbook.data.subsets.prepare_cifar10`) added to one
    channel drawn at random (seeded); returns ``(cast images, that channel (N,) int64)``.

    The label is independent of the image's content and lives only in the per-image channel
    means: a convolution maps the cast to a constant shift of each feature map (up to the
    zero-padded border), which instance norm subtracts and batch norm keeps.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (images.shape[0],), generator=g)
    cast = images.clone()
    cast[torch.arange(images.shape[0]), labels] += strength
    return cast, labels


def set_padding_mode_(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Every padded ``nn.Conv2d`` of ``model`` pads with ``mode`` (``"zeros"`` or
    ``"reflect"``), in place; returns ``model``.

    With zero padding a uniform shift of a channel reaches the border outputs of a
    convolution only in part, so instance norm after it leaves a trace of the shift along the
    border; with reflection padding (the style-transfer networks' choice) every output moves by
    the same amount and instance norm removes the shift exactly.
    """
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {mode!r}; expected one of {PADDING_MODES}")
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and any(p > 0 for p in m.padding):
            m.padding_mode = mode
    return model


def run_colour_task(data, norm: str, task: str, *, seed: int = 0, width: int = 8,
                    epochs: int = 2, batch_size: int = 64, lr: float = 0.02,
                    padding: str = "zeros", progress: bool = False) -> dict:
    """Train the narrow chapter-8 CNN with ``norm`` (:data:`COLOUR_NORMS`) on ``task``:
    ``"cast"`` (:func:`colour_cast` with strength 1: which channel was cast, 3 classes, the
    label in the per-image means only), ``"colour"`` (:func:`dominant_colour_labels`, 3
    classes: colour, but also in the images' content) or ``"cifar"`` (CIFAR-10's own labels,
    the control). ``padding``: the convolutions' padding mode (:func:`set_padding_mode_`).
    ``data`` is a :class:`bnbook.data.subsets.Cifar10Subset`. SGD with
    momentum 0.9 (:func:`bnbook.training.train_classifier`). Returns ``{"test_acc",
    "train_acc", "chance", "final_train_loss", "diverged", "seconds"}``."""
    if norm not in COLOUR_NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {COLOUR_NORMS}")
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {padding!r}; expected one of {PADDING_MODES}")
    if task == "colour":
        y_train, y_test, classes = (dominant_colour_labels(data.x_train),
                                    dominant_colour_labels(data.x_test), 3)
    elif task == "cast":
        (x_train, y_train), (x_test, y_test) = (colour_cast(data.x_train, seed=1),
                                                colour_cast(data.x_test, seed=2))
        data, classes = data._replace(x_train=x_train, x_test=x_test), 3
    elif task == "cifar":
        y_train, y_test, classes = data.y_train, data.y_test, 10
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {COLOUR_TASKS}")
    start = time.perf_counter()
    model = set_padding_mode_(small_cifar_cnn(width, norm, num_classes=classes, seed=seed),
                              padding)
    res = train_classifier(model, data.x_train, y_train, epochs=epochs, batch_size=batch_size,
                           lr=lr, seed=seed, progress=progress, desc=f"{task} {norm}")
    chance = float(torch.bincount(y_test, minlength=classes).max()) / y_test.shape[0]
    ok = not res.diverged
    return {"test_acc": evaluate_accuracy(model, data.x_test, y_test) if ok else None,
            "train_acc": evaluate_accuracy(model, data.x_train, y_train) if ok else None,
            "chance": chance, "diverged": res.diverged,
            "final_train_loss": res.epoch_loss[-1] if res.epoch_loss else None,
            "seconds": round(time.perf_counter() - start, 3)}

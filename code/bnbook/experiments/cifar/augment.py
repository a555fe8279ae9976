"""Everything random in a CIFAR-10 epoch, as a function of ``(seed, epoch, rank)`` only.

Data order (:func:`epoch_order`, sharded by :func:`shard_positions`), the Keras
``ImageDataGenerator`` shifts and flips (:func:`augmentation_params`, :func:`shift_flip`) and
the dropout stream (:func:`stream_seed`): because none of them depends on what ran before,
a resumed run repeats an uninterrupted one exactly. Also the fixed ``--subset`` of images
(:func:`subset_indices`), the uint8-to-float conversion, and one rank's batches of an epoch
(:func:`epoch_batches`, :func:`steps_per_epoch`) put together from all of these.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["stream_seed", "epoch_order", "shard_positions", "augmentation_params", "shift_flip",
           "to_float_images", "subset_indices", "steps_per_epoch", "epoch_batches"]


def stream_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A 63-bit seed for one random stream of one epoch (NumPy ``SeedSequence`` mixing).

    Streams: 0 data order, 1 augmentation, 2 dropout (torch global RNG).
    """
    ss = np.random.SeedSequence([int(seed), int(epoch), int(stream), int(rank)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(n)`` used in ``epoch`` (int64, shape ``(n,)``)."""
    return np.random.default_rng(stream_seed(seed, epoch, 0)).permutation(n).astype(np.int64)


def shard_positions(n: int, world_size: int = 1, rank: int = 0) -> np.ndarray:
    """Positions in an epoch's order that process ``rank`` trains on.

    Like ``DistributedSampler``: the order is padded by wrapping around to a multiple of
    ``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...``. With one process
    it is ``arange(n)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    total = math.ceil(n / world_size) * world_size
    return np.arange(rank, total, world_size, dtype=np.int64) % n


def augmentation_params(n: int, seed: int, epoch: int, height: int = 32, width: int = 32,
                        height_shift: float = 0.1, width_shift: float = 0.1,
                        flip_probability: float = 0.5):
    """Per-position shifts and flips for one epoch, as ImageDataGenerator draws them.

    Returns ``shifts`` (float32, ``(n, 2)``: ``(dy, dx)`` in pixels, each uniform in
    ``[-height_shift * height, height_shift * height]`` resp. width) and ``flips`` (bool,
    ``(n,)``, true with probability ``flip_probability``).
    """
    rng = np.random.default_rng(stream_seed(seed, epoch, 1))
    dy = rng.uniform(-height_shift * height, height_shift * height, size=n)
    dx = rng.uniform(-width_shift * width, width_shift * width, size=n)
    flips = rng.random(n) < flip_probability
    return np.stack([dy, dx], axis=1).astype(np.float32), flips


def shift_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor,
               order: int = 1) -> torch.Tensor:
    """Shift each image by a fractional number of pixels, then flip it left-right.

    ``x``: ``(N, C, H, W)`` float; ``shifts``: ``(N, 2)`` = ``(dy, dx)`` in pixels; ``flips``:
    ``(N,)`` bool. Output pixel ``(i, j)`` is the input sampled bilinearly at
    ``(i + dy, j' + dx)`` with ``j' = W - 1 - j`` for a flipped image and ``j`` otherwise;
    samples outside the image take the nearest border pixel (Keras' ``fill_mode='nearest'``,
    SciPy's ``affine_transform(order=1, mode='nearest')``, which Keras calls). ``order=0``
    samples the nearest pixel instead (``affine_transform(order=0)``, Keras before 2.1.4): a
    shift by ``round(dy), round(dx)`` whole pixels, which keeps the image sharp. Returns a
    tensor like ``x``.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), got {order!r}")
    if x.ndim != 4 or shifts.shape != (x.shape[0], 2) or flips.shape != (x.shape[0],):
        raise ValueError(f"need x (N, C, H, W), shifts (N, 2), flips (N,); got {tuple(x.shape)}, "
                         f"{tuple(shifts.shape)}, {tuple(flips.shape)}")
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    rows = torch.arange(h, device=dev, dtype=dt)
    cols = torch.arange(w, device=dev, dtype=dt)
    src_cols = torch.where(flips.to(dev)[:, None], (w - 1) - cols[None, :], cols[None, :])
    src_rows = rows[None, :] + shifts[:, 0:1].to(dev, dt)
    src_cols = src_cols + shifts[:, 1:2].to(dev, dt)
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gy = (src_rows * (2.0 / (h - 1)) - 1.0)[:, :, None].expand(n, h, w)
    gx = (src_cols * (2.0 / (w - 1)) - 1.0)[:, None, :].expand(n, h, w)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear" if order == 1 else "nearest",
                         padding_mode="border", align_corners=True)


def to_float_images(x_uint8: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 -> ``(N, C, H, W)`` float32 in ``[0, 1]`` (Keras' ``x / 255``)."""
    return x_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def subset_indices(n: int, size: int) -> np.ndarray:
    """Indices of the ``--subset`` images: the first ``size`` of a fixed permutation of
    ``range(n)`` (NumPy ``default_rng(0)``, independent of the run's seed).

    A fixed shuffle rather than the first ``size`` images, because an image-folder copy of
    CIFAR-10 is sorted by class; every run with the same ``size`` sees the same images.
    """
    if not 0 <= size <= n:
        raise ValueError(f"subset size must be in [0, {n}], got {size}")
    return np.random.default_rng(0).permutation(n)[:size].astype(np.int64)


def steps_per_epoch(n_positions: int, batch_size: int) -> int:
    """Batches per epoch: ``ceil(n / batch_size)``, less a last batch of exactly one image.

    Batch norm in training mode cannot normalise a single sample (its variance is 0 and
    PyTorch raises "Expected more than 1 value per channel"), so a final batch of size 1 is
    dropped, as ``DataLoader(drop_last=True)`` would drop it (only that case: a last batch of
    2 or more is kept, as Keras keeps it). That image is still seen in other epochs, since the
    order changes every epoch.
    """
    steps = math.ceil(n_positions / batch_size)
    if steps and n_positions % batch_size == 1:
        steps -= 1
    return steps


def epoch_batches(x: torch.Tensor, y: torch.Tensor, positions: np.ndarray, config, epoch: int):
    """This rank's batches ``(x_uint8, y, augmentation)`` of ``epoch``, ``augmentation`` being
    ``None`` or the arguments ``(shifts, flips, order)`` of :func:`shift_flip`; ``x``, ``y`` on the
    device; ``config`` a :class:`bnbook.experiments.cifar.config.TrainConfig`. Order and augmentation are
    drawn now, from ``(seed, epoch)`` alone; a last batch of one image is dropped
    (:func:`steps_per_epoch`)."""
    order = epoch_order(len(x), config.seed, epoch)
    if config.augment:
        shifts, flips = (torch.from_numpy(a) for a in augmentation_params(
            len(x), config.seed, epoch, x.shape[1], x.shape[2]))
    for b in range(steps_per_epoch(len(positions), config.batch_size)):
        pos = positions[b * config.batch_size:(b + 1) * config.batch_size]
        idx = torch.from_numpy(order[pos]).to(x.device)
        pos_t = torch.from_numpy(pos)
        yield x[idx], y[idx], ((shifts[pos_t], flips[pos_t], config.shift_order)
                               if config.augment else None)

"""A small DCGAN for Fashion-MNIST, with batch norm where Radford et al. put it, or without.

The claim under test (the Keras and norms glossaries): batch norm "makes more sophisticated
deep learning architectures work in practice (like DCGANs)" and, applied to generator and
discriminator, helps "stabilize training and prevent mode collapse". Radford, Metz and
Chintala (2016) put batch norm in every layer of both networks except the generator's output
layer and the discriminator's input layer; so do we. ``norm`` (:data:`GAN_NORMS`) picks
what sits in those places: ``batch`` (``nn.BatchNorm2d``), ``layer``
(``nn.GroupNorm(1, C)``: each image over all its channels and positions, per-channel
``gamma``, ``beta``) or ``none``.

Networks (shapes per image; ``w`` = ``width``, 64 in DCGAN's smallest layer)::

    Generator      z (nz,)  -> Dense nz->2w*7*7 -> (2w, 7, 7)   [Norm] ReLU
                             -> ConvT 2w->w, 4x4, stride 2     (w, 14, 14)   [Norm] ReLU
                             -> ConvT w->1, 4x4, stride 2      (1, 28, 28)   tanh
    Discriminator  x (1, 28, 28) -> Conv 1->w, 4x4, stride 2   (w, 14, 14)   LeakyReLU 0.2
                             -> Conv w->2w, 4x4, stride 2      (2w, 7, 7)    [Norm] LeakyReLU 0.2
                             -> Dense 2w*7*7->1                (1,)  logit "real"

DCGAN's other rules are kept: strided convolutions instead of pooling, ReLU in the generator
and LeakyReLU(0.2) in the discriminator, weights from ``N(0, 0.02)`` (norm ``gamma`` from
``N(1, 0.02)``), Adam with ``lr = 2e-4``, ``beta1 = 0.5``, batch 64.

:func:`train_gan_epoch` runs one epoch of the usual non-saturating GAN game; everything random
in an epoch (data order, noise) is drawn from a generator seeded by ``(seed, epoch)``, so a run
resumed from the checkpoint of an epoch continues exactly as if uninterrupted.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GAN_NORMS", "Generator", "Discriminator", "make_gan", "gan_optimizers",
           "epoch_generator", "train_gan_epoch", "generate", "sample_grid"]

#: What sits where Radford et al. put batch norm.
GAN_NORMS = ("batch", "layer", "none")


def _norm(norm: str, channels: int) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm2d(channels)]
    if norm == "layer":
        return [nn.GroupNorm(1, channels)]
    if norm == "none":
        return []
    raise ValueError(f"unknown norm {norm!r}; expected one of {GAN_NORMS}")


class Generator(nn.Module):
    """``z (N, nz)`` -> images ``(N, 1, 28, 28)`` in ``[-1, 1]`` (module docstring)."""

    def __init__(self, norm: str = "batch", width: int = 64, nz: int = 100):
        super().__init__()
        self.nz, self.width = nz, width
        self.project = nn.Linear(nz, 2 * width * 7 * 7)
        self.body = nn.Sequential(
            *_norm(norm, 2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            *_norm(norm, width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).reshape(z.shape[0], 2 * self.width, 7, 7))


class Discriminator(nn.Sequential):
    """Images ``(N, 1, 28, 28)`` -> logits ``(N,)`` that the image is real (module docstring)."""

    def __init__(self, norm: str = "batch", width: int = 64):
        super().__init__(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), *_norm(norm, 2 * width),
            nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(1)


def _dcgan_init_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def make_gan(norm: str, width: int = 64, nz: int = 100, seed: int = 0):
    """``(Generator, Discriminator)`` with ``norm`` in Radford et al.'s places, DCGAN's
    initialisation drawn from ``seed`` (the global generator is left alone). For one seed the
    convolution and dense weights are the same whatever ``norm`` is: the norm layers' draws
    come after them."""
    if norm not in GAN_NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {GAN_NORMS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g, d = Generator("none", width, nz), Discriminator("none", width)
        _dcgan_init_(g)
        _dcgan_init_(d)                 # every weight drawn before any norm's gamma
        g_norm, d_norm = Generator(norm, width, nz), Discriminator(norm, width)
        layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
        for plain, normed in ((g, g_norm), (d, d_norm)):
            _dcgan_init_(normed)
            targets = [m for m in normed.modules() if isinstance(m, layers)]
            for src, dst in zip([m for m in plain.modules() if isinstance(m, layers)], targets):
                dst.load_state_dict(src.state_dict())
    return g_norm, d_norm


def gan_optimizers(g: nn.Module, d: nn.Module, lr: float = 2e-4, beta1: float = 0.5):
    """DCGAN's Adam for each network: ``(opt_g, opt_d)``."""
    return (torch.optim.Adam(g.parameters(), lr=lr, betas=(beta1, 0.999)),
            torch.optim.Adam(d.parameters(), lr=lr, betas=(beta1, 0.999)))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of epoch ``epoch`` (counted from 1) of run ``seed``."""
    return torch.Generator().manual_seed(1_000_003 * seed + epoch)


def train_gan_epoch(g: nn.Module, d: nn.Module, opt_g, opt_d, x: torch.Tensor, *, seed: int,
                    epoch: int, batch_size: int = 64, on_step=None) -> dict:
    """One epoch of the non-saturating GAN game on real images ``x`` ``(N, 1, 28, 28)``.

    For each batch of ``batch_size`` real images (a fresh order per epoch; the last
    incomplete batch dropped) and as many noise vectors ``z ~ N(0, I)``:

    1. discriminator step: ``BCE(D(x), 1) + BCE(D(G(z)), 0)``, real and fake images in
       separate forward passes (so a batch-normalised ``D`` normalises each kind with its own
       statistics, as the DCGAN reference code does), ``G(z)`` detached;
    2. generator step: ``BCE(D(G(z)), 1)`` on the same fakes ("non-saturating" loss);
    3. ``on_step()`` when given (a progress bar).

    Returns the epoch's means: ``d_loss``, ``g_loss``, ``d_real`` and ``d_fake`` (the mean
    probability ``D`` gives real and fake images before its step), and ``nonfinite``
    (whether a loss was not finite; the epoch stops there).
    """
    gen = epoch_generator(seed, epoch)
    g.train()
    d.train()
    order = torch.randperm(x.shape[0], generator=gen)
    sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
    steps = x.shape[0] // batch_size
    done, nonfinite = 0, False
    for b in range(steps):
        real = x[order[b * batch_size:(b + 1) * batch_size]]
        z = torch.randn(batch_size, g.nz, generator=gen)
        fake = g(z)
        logit_real, logit_fake = d(real), d(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
                  + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        logit_g = d(fake)
        g_loss = F.binary_cross_entropy_with_logits(logit_g, torch.ones_like(logit_g))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
            nonfinite = True
            break
        done += 1
        sums["d_loss"] += d_loss.item()
        sums["g_loss"] += g_loss.item()
        sums["d_real"] += float(logit_real.detach().sigmoid().mean())
        sums["d_fake"] += float(logit_fake.detach().sigmoid().mean())
        if on_step is not None:
            on_step()
    means = {k: (v / done if done else None) for k, v in sums.items()}
    return {**means, "steps": done, "nonfinite": nonfinite}


@torch.no_grad()
def generate(g: nn.Module, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``G(z)`` ``(N, 1, 28, 28)`` as the generator was trained: in training mode, ``z`` in
    chunks of ``batch_size`` (a batch-normalised ``G`` normalises each chunk with its own
    statistics, as in every training step; its running statistics are left as they were).

    Training mode, not eval mode: the running averages of a generator's batch norm trail a
    network that changes every step, and DCGAN's reference code samples in training mode too.
    """
    saved = {k: v.clone() for k, v in g.state_dict().items()}
    was_training = g.training
    g.train()
    try:
        return torch.cat([g(z[i:i + batch_size]) for i in range(0, z.shape[0], batch_size)])
    finally:
        g.load_state_dict(saved)
        g.train(was_training)


def sample_grid(images: torch.Tensor, rows: int = 8):
    """Images ``(N, 1, 28, 28)`` in ``[-1, 1]`` tiled in a ``rows x ceil(N / rows)`` grid with
    2-pixel grey borders: a ``uint8`` NumPy array ``(30 * rows + 2, 30 * cols + 2)``, 0 black,
    255 white."""
    import numpy as np

    pixels = ((images.detach().squeeze(1) + 1.0) * 127.5).clamp(0, 255).round()
    pixels = pixels.to(torch.uint8).numpy()
    n = pixels.shape[0]
    cols = -(-n // rows)
    grid = np.full((30 * rows + 2, 30 * cols + 2), 128, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[2 + 30 * r:30 * r + 30, 2 + 30 * c:30 * c + 30] = pixels[i]
    return grid

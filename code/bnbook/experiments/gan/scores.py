"""How the book scores a generator of Fashion-MNIST images: a classifier's view of its samples.

A GAN has no test accuracy. We score its images with a small Fashion-MNIST classifier
(:class:`FashionScorer`, trained once by :func:`train_scorer`) in two ways:

* **Class histogram** (:func:`class_scores`): the classifier's predicted class of every
  generated image. A generator that covers the data makes all ten classes about equally often
  (Fashion-MNIST's classes are balanced); one that has *collapsed* onto a few modes makes a
  few classes. We report the histogram's entropy in nats (:func:`histogram_entropy`; at most
  ``ln 10 = 2.30``), the number of classes covered (at least :data:`COVERED_SHARE` of the
  images) and the mean confidence (the mean of the largest softmax probability: high when the
  images look like *some* class, low for mush).
* **Fréchet distance** (:func:`frechet_distance`) between Gaussians fitted to the
  classifier's penultimate features of generated and of real test images: the FID of Heusel
  et al. (2017) with our classifier in place of Inception. 0 for identical statistics; it grows
  with differences of the means and of the covariances (blur, missing modes, artefacts).

All images are ``(N, 1, 28, 28)`` float tensors in ``[-1, 1]`` (the generator's ``tanh``
range); :func:`to_gan_range` maps pixels in ``[0, 1]`` there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bnbook.training import evaluate_accuracy, train_classifier

__all__ = ["COVERED_SHARE", "to_gan_range", "FashionScorer", "train_scorer", "sqrtm_psd",
           "gaussian_statistics", "frechet_distance", "histogram_entropy", "class_scores",
           "score_images"]

#: A class is *covered* when at least this share of the generated images is predicted as it
#: (a fifth of the 10 % a balanced generator gives each class).
COVERED_SHARE = 0.02


def to_gan_range(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in ``[0, 1]`` of shape ``(N, 28, 28)`` -> ``(N, 1, 28, 28)`` in ``[-1, 1]``."""
    return (2.0 * pixels - 1.0).reshape(pixels.shape[0], 1, 28, 28)


class FashionScorer(nn.Sequential):
    """The scoring classifier: ``(N, 1, 28, 28)`` in ``[-1, 1]`` -> logits ``(N, 10)``::

        Conv 1->32, 3x3, same  ReLU  MaxPool 2   (32, 14, 14)
        Conv 32->64, 3x3, same ReLU  MaxPool 2   (64, 7, 7)
        Flatten -> Dense 3136->128  ReLU         (128,)   <- features()
        Dense 128->10                            (10,)

    No normalisation layer, so that the scores of a batch-normalised generator are not
    computed by a batch-normalised judge; :meth:`features` is the 128-d representation the
    Fréchet distance compares.
    """

    def __init__(self):
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations, ``(N, 128)``."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x


def train_scorer(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, *, epochs: int = 3, seed: int = 0,
                 progress: bool = False) -> tuple[FashionScorer, float]:
    """Train :class:`FashionScorer` on images in ``[-1, 1]`` (``(N, 1, 28, 28)``) with the
    book's loop (:func:`bnbook.training.train_classifier`: SGD, momentum 0.9, lr 0.05, batch
    64); return ``(model in eval mode, test accuracy)``."""
    torch.manual_seed(seed)
    model = FashionScorer()
    result = train_classifier(model, x_train, y_train, epochs=epochs, batch_size=64, lr=0.05,
                              seed=seed, progress=progress, desc="scorer")
    if result.diverged:
        raise FloatingPointError("the scoring classifier diverged; lower its learning rate")
    return model.eval(), evaluate_accuracy(model, x_test, y_test)


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix ``(d, d)``.

    Through the eigendecomposition ``a = V diag(w) V^T`` (``numpy.linalg.eigh``, float64):
    ``V diag(sqrt(max(w, 0))) V^T``. Rounding can make the smallest eigenvalues of a PSD
    matrix slightly negative; they are set to 0 rather than producing complex numbers.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {a.shape}")
    sym = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(sym)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """``(mu (d,), sigma (d, d))`` of features ``(n, d)``, float64, unbiased covariance."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (n >= 2, d), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The squared Fréchet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and
    ``N(mu2, sigma2)``::

        d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1^1/2 sigma2 sigma1^1/2)^1/2)

    The last trace is computed from the symmetric PSD matrix ``sigma1^1/2 sigma2 sigma1^1/2``
    (whose square root has the same trace as the usual ``(sigma1 sigma2)^1/2``, but with real
    eigenvalues; :func:`sqrtm_psd`), so no complex parts appear. Returns a float >= 0 (tiny
    negative rounding clipped).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape \
            or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: means {mu1.shape}, {mu2.shape}, covariances "
                         f"{sigma1.shape}, {sigma2.shape}")
    root1 = sqrtm_psd(sigma1)
    cross = sqrtm_psd(root1 @ sigma2 @ root1)
    d2 = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * np.trace(cross))
    return max(d2, 0.0)


def histogram_entropy(counts) -> float:
    """Entropy in nats of the distribution ``counts / sum(counts)`` (``0 ln 0 = 0``):
    0 when every image is one class, ``ln K`` when ``K`` classes are equally frequent."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or (c < 0).any() or c.sum() <= 0:
        raise ValueError(f"counts must be non-negative with a positive sum, got {counts!r}")
    p = c[c > 0] / c.sum()
    return max(0.0, float(-(p * np.log(p)).sum()))    # no -0.0 for a single class


@torch.no_grad()
def class_scores(logits: torch.Tensor) -> dict:
    """The class-histogram scores of logits ``(N, 10)``: ``histogram`` (counts per class),
    ``entropy`` (nats), ``covered`` (classes with >= :data:`COVERED_SHARE` of the images) and
    ``confidence`` (mean largest softmax probability)."""
    counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]).tolist()
    n = logits.shape[0]
    return {"histogram": counts, "entropy": histogram_entropy(counts),
            "covered": sum(c >= COVERED_SHARE * n for c in counts),
            "confidence": float(logits.softmax(dim=1).max(dim=1).values.mean())}


@torch.no_grad()
def score_images(scorer: FashionScorer, images: torch.Tensor, reference: tuple,
                 batch_size: int = 500) -> dict:
    """:func:`class_scores` of ``images`` ``(N, 1, 28, 28)`` plus ``fd``, their Fréchet
    distance to ``reference = (mu, sigma)`` (:func:`gaussian_statistics` of real images'
    :meth:`FashionScorer.features`)."""
    feats, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        f = scorer.features(images[i:i + batch_size])
        feats.append(f)
        logits.append(scorer[-1](f))
    scores = class_scores(torch.cat(logits))
    mu, sigma = gaussian_statistics(torch.cat(feats).numpy())
    fd = frechet_distance(mu, sigma, *reference)
    if not math.isfinite(fd):
        raise FloatingPointError("the Fréchet distance is not finite (non-finite images?)")
    return {**scores, "fd": fd}

"""Tests of bnbook.experiments.norms.style (instance norm and style) and its command line.

References: synthetic images whose per-image channel statistics are known in closed form (a
fixed zero-mean pattern times a per-image contrast plus a per-image offset), NumPy for the
spreads, ``F.instance_norm`` and the batch-norm closed form ``(mu_n - mu_B) / sigma_B`` for the
normalised statistics.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from bnbook.data.subsets import Cifar10Subset
from bnbook.experiments.norms import style_runs as style_cli
from bnbook.experiments.norms.style import (adain, batch_normalise, channel_statistics, colour_cast,
                                      compare_normalisations, dominant_colour_labels,
                                      set_padding_mode_,
                                      instance_normalise, run_colour_task, statistics_spread)

torch.set_num_threads(1)


def styled_images(n=12, c=3, size=8, seed=0):
    """``x[n, c] = offset[n, c] + contrast[n, c] * pattern[c]`` with ``pattern`` of mean 0 and
    biased std 1: per-image channel mean ``offset``, std ``contrast`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randn(c, size, size, generator=g, dtype=torch.float64)
    pattern = (pattern - pattern.mean((1, 2), keepdim=True)) / pattern.std((1, 2), unbiased=False, keepdim=True)
    offset = 3 * torch.randn(n, c, generator=g, dtype=torch.float64) + 1
    contrast = 0.5 + 2 * torch.rand(n, c, generator=g, dtype=torch.float64)
    return offset[:, :, None, None] + contrast[:, :, None, None] * pattern, offset, contrast


def test_channel_statistics_closed_form():
    x, offset, contrast = styled_images()
    mu, sigma = channel_statistics(x)
    assert torch.allclose(mu, offset, atol=1e-12) and torch.allclose(sigma, contrast, atol=1e-12)
    with pytest.raises(ValueError, match="N, C, H, W"):
        channel_statistics(x[0])


def test_instance_norm_gives_every_image_mean_0_std_1():
    x, _, contrast = styled_images()
    eps = 1e-5
    mu, sigma = channel_statistics(instance_normalise(x, eps))
    assert mu.abs().max() < 1e-12
    assert torch.allclose(sigma, contrast / (contrast ** 2 + eps).sqrt(), atol=1e-12)
    assert torch.allclose(instance_normalise(x, eps), F.instance_norm(x, eps=eps), atol=1e-12)
    _, sigma0 = channel_statistics(instance_normalise(x, 0.0))
    assert torch.allclose(sigma0, torch.ones_like(sigma0), atol=1e-12)


def test_batch_norm_keeps_the_differences_between_images():
    x, offset, contrast = styled_images()
    y = batch_normalise(x, eps=1e-12)
    mu, sigma = channel_statistics(y)
    xc = x.transpose(0, 1).flatten(1)
    mu_b, sigma_b = xc.mean(1), xc.std(1, unbiased=False)
    assert torch.allclose(mu, (offset - mu_b) / sigma_b, atol=1e-10)
    assert torch.allclose(sigma, contrast / sigma_b, atol=1e-10)
    assert mu.abs().max() > 0.5 and (sigma - 1).abs().max() > 0.2      # not instance norm


def test_statistics_spread_against_numpy():
    x, offset, contrast = styled_images(n=20)
    s = statistics_spread(x)
    assert math.isclose(s["mean_spread"], offset.numpy().std(axis=0, ddof=1).mean(), rel_tol=1e-6)
    assert math.isclose(s["std_spread"], contrast.numpy().std(axis=0, ddof=1).mean(), rel_tol=1e-6)
    assert math.isclose(s["mean_of_stds"], float(contrast.mean()), rel_tol=1e-6)
    pooled = x.numpy().transpose(1, 0, 2, 3).reshape(3, -1).std(axis=1)
    assert math.isclose(s["pooled_std"], pooled.mean(), rel_tol=1e-6)
    assert math.isclose(s["relative_mean_spread"],
                        (offset.numpy().std(axis=0, ddof=1) / pooled).mean(), rel_tol=1e-6)


def test_compare_normalisations():
    x, _, _ = styled_images(n=16, size=10)
    out = compare_normalisations(x.float(), conv_channels=4, seed=1)
    for level in ("pixels", "features"):
        given, bn, inst = (out[level][k] for k in ("input", "batch", "instance"))
        assert inst["mean_spread"] < 1e-5 and inst["std_spread"] < 1e-2
        assert given["mean_spread"] > 0.1 and bn["mean_spread"] > 0.1
        for key in ("relative_mean_spread", "relative_std_spread"):   # BN: affine
            assert math.isclose(bn[key], given[key], rel_tol=1e-3)
            assert inst[key] < 1e-2 < given[key]


def test_adain_transfers_channel_statistics():
    x, offset, contrast = styled_images(n=4)
    mixed = adain(x[:2], x[2:3], eps=0.0)
    mu, sigma = channel_statistics(mixed)
    assert torch.allclose(mu, offset[2:3].expand(2, -1), atol=1e-10)
    assert torch.allclose(sigma, contrast[2:3].expand(2, -1), atol=1e-10)
    # the content (the normalised pattern) is the first images'
    assert torch.allclose(instance_normalise(mixed, 0.0), instance_normalise(x[:2], 0.0), atol=1e-9)


def colour_subset(n_train=300, n_test=120, seed=0):
    """Random 32x32 textures tinted by one channel: label = the tinted channel."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, 3, (n,), generator=g)
        x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
        x[torch.arange(n), y] += 1.0
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return Cifar10Subset(xtr, ytr, xte, yte, torch.zeros(3), torch.ones(3))


def test_dominant_colour_labels_and_the_colour_task():
    data = colour_subset()
    assert torch.equal(dominant_colour_labels(data.x_train), data.y_train)
    out = run_colour_task(data, "batch", "colour", width=4, epochs=3, batch_size=32, lr=0.05)
    assert set(out) == {"test_acc", "train_acc", "chance", "diverged", "final_train_loss",
                        "seconds"}
    assert out["test_acc"] > 0.9 and 0.3 < out["chance"] < 0.5
    with pytest.raises(ValueError, match="unknown norm"):
        run_colour_task(data, "group", "colour")
    with pytest.raises(ValueError, match="unknown task"):
        run_colour_task(data, "batch", "shape")


def test_quick_command_line_on_cifar10(tmp_path):
    assert style_cli.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = json.loads((tmp_path / "style-quick.json").read_text())
    stats = result["runs"]["statistics"]
    assert stats["pixels"]["instance"]["mean_spread"] < 1e-5
    assert stats["pixels"]["input"]["mean_spread"] > 0.05 and stats["adain_max_error"] < 1e-4
    keys = {f"{t}/{n}/{p}/seed0" for t in ("cast", "colour", "cifar")
            for n in ("batch", "instance", "none") for p in ("zeros", "reflect")}
    assert keys <= set(result["runs"]) and result["provenance"]["dataset"].startswith("cifar10/")
    assert style_cli.build_parser().parse_args([]).out.endswith("data/results/norms")


def test_colour_cast_lives_in_the_per_image_means_only():
    x, offset, contrast = styled_images(n=30)
    cast, labels = colour_cast(x, seed=0, strength=1.5)
    mu, sigma = channel_statistics(cast)
    expected = offset.clone()
    expected[torch.arange(30), labels] += 1.5
    assert torch.allclose(mu, expected, atol=1e-12) and torch.allclose(sigma, contrast, atol=1e-12)
    assert torch.allclose(instance_normalise(cast), instance_normalise(x), atol=1e-12)  # IN: unseen
    assert set(labels.tolist()) == {0, 1, 2} and torch.equal(colour_cast(x, seed=0)[1], labels)
    assert torch.equal(x, styled_images(n=30)[0])                          # input untouched


def test_instance_norm_with_reflection_padding_cannot_see_a_cast():
    """The closed form behind the cast task: with reflection padding a cast moves every output
    of the first convolution by the same amount, instance norm removes it, and the network's
    output is the same with and without the cast; with zero padding the border betrays it.
    Batch norm (training mode, cast on one image only) keeps it either way."""
    from bnbook.models.small_cnn import small_cifar_cnn

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cast = x.clone()
    cast[0, 0] += 1.0                     # one image of the batch, one channel
    for norm, padding, invariant in [("instance", "reflect", True), ("instance", "zeros", False),
                                     ("batch", "reflect", False)]:
        model = set_padding_mode_(small_cifar_cnn(4, norm, seed=0), padding)
        with torch.no_grad():
            diff = (model(x) - model(cast)).abs().max().item()
        assert (diff < 1e-4) == invariant, (norm, padding, diff)
    with pytest.raises(ValueError, match="padding mode"):
        set_padding_mode_(small_cifar_cnn(4, "none"), "circular-ish")

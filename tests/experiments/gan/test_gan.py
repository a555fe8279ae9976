"""Tests of the DCGAN experiment: its scores (bnbook.experiments.gan.scores), its networks and
training epoch (bnbook.experiments.gan.networks) and its resumable command line (gan_cli).

References: closed forms of the Fréchet distance (diagonal covariances; 2 x 2 covariances,
where ``tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))``), of the entropy and of the class scores of
hand-made logits; for the command line, an uninterrupted run that an interrupted and resumed
one must reproduce exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnbook.experiments.gan import cli as gan_cli
from bnbook.experiments.gan.networks import (Discriminator, Generator, gan_optimizers, generate,
                                    make_gan, sample_grid, train_gan_epoch)
from bnbook.experiments.gan.scores import (COVERED_SHARE, class_scores, frechet_distance,
                                           gaussian_statistics, histogram_entropy, sqrtm_psd)

torch.set_num_threads(1)


def random_spd(d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d + 3)) * scale
    return a @ a.T / (d + 3)


# ----------------------------------------------------------------------------- scores

def test_sqrtm_psd_squares_back_and_stays_real():
    a = random_spd(6, 0)
    r = sqrtm_psd(a)
    assert np.allclose(r, r.T) and np.allclose(r @ r, a, rtol=1e-12, atol=1e-12)
    v = np.random.default_rng(1).standard_normal((5, 2))
    rank2 = v @ v.T - 1e-14 * np.eye(5)            # PSD up to rounding: tiny negative eigenvalues
    r2 = sqrtm_psd(rank2)
    assert np.isrealobj(r2) and np.allclose(r2 @ r2, v @ v.T, atol=1e-7)


def test_frechet_identical_is_zero_and_symmetric():
    mu, sigma = np.arange(6.0), random_spd(6, 2)
    assert frechet_distance(mu, sigma, mu, sigma) < 1e-10
    other_mu, other_sigma = mu + 0.3, random_spd(6, 3)
    ab = frechet_distance(mu, sigma, other_mu, other_sigma)
    assert ab > 0.1 and math.isclose(ab, frechet_distance(other_mu, other_sigma, mu, sigma),
                                     rel_tol=1e-10)


def test_frechet_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 4.0]), np.array([1.0, 1.0, 0.5, 3.0])
    v1, v2 = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 0.01])
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert math.isclose(frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)), closed,
                        rel_tol=1e-12)


def test_frechet_two_by_two_non_commuting_closed_form():
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    m = s1 @ s2                         # tr sqrt(M) for a 2x2 M with positive eigenvalues
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    closed = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert math.isclose(frechet_distance([0.0, 0.0], s1, [1.0, 0.0], s2), closed, rel_tol=1e-12)


def test_gaussian_statistics_and_sample_frechet():
    rng = np.random.default_rng(4)
    f = rng.standard_normal((20000, 3)) * [1.0, 2.0, 0.5] + [1.0, 0.0, -1.0]
    mu, sigma = gaussian_statistics(f)
    assert np.allclose(mu, [1.0, 0.0, -1.0], atol=0.05)
    assert np.allclose(np.diag(sigma), [1.0, 4.0, 0.25], rtol=0.05)
    shifted = gaussian_statistics(f + [0.0, 3.0, 0.0])
    assert math.isclose(frechet_distance(mu, sigma, *shifted), 9.0, rel_tol=1e-9)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(mu, sigma, mu[:2], sigma[:2, :2])


def test_histogram_entropy_closed_forms():
    assert math.isclose(histogram_entropy([5] * 10), math.log(10), rel_tol=1e-12)
    assert histogram_entropy([0, 7, 0]) == 0.0
    assert math.isclose(histogram_entropy([1, 1, 2, 0]),
                        -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)), rel_tol=1e-12)
    for bad in ([], [0, 0], [1, -1]):
        with pytest.raises(ValueError, match="counts"):
            histogram_entropy(bad)


def test_class_scores_of_hand_made_logits():
    # 100 images: 50 of class 3 (confident), 49 of class 7, 1 of class 0 (< 2 %: not covered)
    logits = torch.zeros(100, 10)
    logits[:50, 3] = 10.0
    logits[50:99, 7] = math.log(9.0)             # softmax max = 9 / (9 + 9) = 0.5
    logits[99, 0] = 1.0
    s = class_scores(logits)
    assert s["histogram"] == [1, 0, 0, 50, 0, 0, 0, 49, 0, 0]
    assert s["covered"] == 2 and COVERED_SHARE * 100 > 1
    p10 = math.exp(10) / (math.exp(10) + 9)
    p1 = math.e / (math.e + 9)
    assert math.isclose(s["confidence"], (50 * p10 + 49 * 0.5 + p1) / 100, rel_tol=1e-6)
    assert math.isclose(s["entropy"], histogram_entropy([1, 50, 49]), rel_tol=1e-12)


# ----------------------------------------------------------------------------- networks

def count(module, kind):
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("norm,kind,n_g,n_d", [("batch", nn.BatchNorm2d, 2, 1),
                                              ("layer", nn.GroupNorm, 2, 1),
                                              ("none", nn.BatchNorm2d, 0, 0)])
def test_norms_sit_where_radford_put_them(norm, kind, n_g, n_d):
    g, d = make_gan(norm, width=8, nz=10, seed=0)
    assert count(g, kind) == n_g and count(d, kind) == n_d
    assert isinstance(d[1], nn.LeakyReLU)                 # input layer: no norm
    assert isinstance(g.body[-1], nn.Tanh) and isinstance(g.body[-2], nn.ConvTranspose2d)
    z = torch.randn(4, 10)
    images = g(z)
    assert images.shape == (4, 1, 28, 28) and images.abs().max() <= 1
    assert d(images).shape == (4,)


def test_same_seed_same_weights_across_norms():
    weights = {}
    for norm in ("batch", "layer", "none"):
        g, d = make_gan(norm, width=8, nz=10, seed=3)
        weights[norm] = [p for m in (*g.modules(), *d.modules())
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
                         for p in m.parameters()]
        assert all(float(p.detach().std()) < 0.03 for p in weights[norm] if p.dim() > 1)
    for a, b, c in zip(weights["batch"], weights["layer"], weights["none"]):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_generate_in_training_mode_keeps_running_statistics():
    g, _ = make_gan("batch", width=8, nz=10, seed=0)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    z = torch.randn(10, 10)
    out = generate(g, z, batch_size=5)
    assert torch.allclose(out[:5], torch.cat([g.train()(z[:5])]), atol=1e-6)
    g.load_state_dict(before)
    generate(g, z, batch_size=5)
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    grid = sample_grid(out, rows=2)
    assert grid.shape == (62, 152) and grid.dtype == np.uint8


def test_train_gan_epoch_is_a_function_of_seed_and_epoch():
    x = torch.rand(96, 1, 28, 28) * 2 - 1
    results = []
    for _ in range(2):
        g, d = make_gan("batch", width=4, nz=8, seed=1)
        opt_g, opt_d = gan_optimizers(g, d)
        out = train_gan_epoch(g, d, opt_g, opt_d, x, seed=1, epoch=1, batch_size=32)
        results.append((out, [p.clone() for p in g.parameters()]))
    assert results[0][0] == results[1][0] and results[0][0]["steps"] == 3
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    assert 0 < results[0][0]["d_real"] < 1 and results[0][0]["d_loss"] > 0
    with pytest.raises(ValueError, match="unknown norm"):
        Generator("instance")
    with pytest.raises(ValueError, match="unknown norm"):
        Discriminator("group")


# ----------------------------------------------------------------------------- command line

TINY = dict(gan_cli.QUICK, n_train=128, n_test=64, width=4, nz=8, epochs=2, batch_size=32,
            arms=["batch", "none"], seeds=[0], n_score=32, grid=4, scorer_epochs=1)


@pytest.fixture
def tiny(monkeypatch):
    """``--quick`` at TINY settings on random images (no data loading)."""
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(128, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (128,), generator=g),
            torch.rand(64, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g))
    monkeypatch.setattr(gan_cli, "QUICK", TINY)
    monkeypatch.setattr(gan_cli, "_load_data", lambda settings: data)


def read(path):
    return json.loads(path.read_text())


def histories(result):
    """Everything but the timings."""
    return {k: [{f: v for f, v in h.items() if f != "seconds"} for h in run["history"]]
            for k, run in result["runs"].items()}


def test_resume_after_an_interruption_reproduces_the_run(tiny, tmp_path, monkeypatch):
    assert gan_cli.main(["--quick", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    whole = read(tmp_path / "a" / "dcgan-quick.json")
    real = gan_cli.train_gan_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:               # during the second arm's first epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gan_cli, "train_gan_epoch", interrupted)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        gan_cli.main(["--quick", "--out", str(out), "--no-progress"])
    assert list(read(out / "dcgan-quick.partial.json")["runs"]) == ["batch/seed0"]
    assert (out / "dcgan-quick-checkpoints" / "batch-seed0.pt").exists()
    scorer_sha = gan_cli.file_sha256(out / "dcgan-quick-scorer.pt")
    monkeypatch.setattr(gan_cli, "train_gan_epoch", real)
    assert gan_cli.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    resumed = read(out / "dcgan-quick.json")
    assert histories(resumed) == histories(whole)
    assert resumed["scorer"]["sha256"] == scorer_sha == whole["scorer"]["sha256"]
    assert not (out / "dcgan-quick.partial.json").exists()
    assert not (out / "dcgan-quick-checkpoints").exists()
    assert sorted(p.name for p in (out / "dcgan-quick-samples").iterdir())[:3] == [
        "batch-seed0-epoch00.png", "batch-seed0-epoch01.png", "batch-seed0-epoch02.png"]
    run = resumed["runs"]["none/seed0"]
    assert [h["epoch"] for h in run["history"]] == [0, 1, 2] and not run["diverged"]
    assert resumed["provenance"]["dataset"].startswith("fashion-mnist/")


def test_resume_mid_run_from_the_epoch_checkpoint(tiny, tmp_path, monkeypatch):
    whole_dir, out = tmp_path / "a", tmp_path / "b"
    assert gan_cli.main(["--quick", "--out", str(whole_dir), "--no-progress"]) == 0
    real, calls = gan_cli.train_gan_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:               # the first arm's second epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gan_cli, "train_gan_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gan_cli.main(["--quick", "--out", str(out), "--no-progress"])
    saved = torch.load(out / "dcgan-quick-checkpoints" / "batch-seed0.pt", weights_only=True)
    assert [h["epoch"] for h in json.loads(saved["history"])] == [0, 1]
    monkeypatch.setattr(gan_cli, "train_gan_epoch", real)
    assert gan_cli.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert histories(read(out / "dcgan-quick.json")) == histories(
        read(whole_dir / "dcgan-quick.json"))


def test_other_settings_are_refused_and_restart_starts_over(tiny, tmp_path, monkeypatch,
                                                            capsys):
    out = tmp_path / "c"
    real, calls = gan_cli.train_gan_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gan_cli, "train_gan_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gan_cli.main(["--quick", "--out", str(out), "--no-progress"])
    monkeypatch.setattr(gan_cli, "train_gan_epoch", real)
    monkeypatch.setattr(gan_cli, "QUICK", dict(TINY, lr=1e-3))
    assert gan_cli.main(["--quick", "--out", str(out), "--no-progress"]) == 2
    assert "settings differ" in capsys.readouterr().err
    assert gan_cli.main(["--quick", "--out", str(out), "--no-progress", "--restart"]) == 0
    assert read(out / "dcgan-quick.json")["settings"]["lr"] == 1e-3


def test_quick_run_on_fashion_mnist(tmp_path):
    """The real ``--quick`` (Fashion-MNIST from the data directory): the scorer beats chance,
    every arm has three scored epochs, and real images score better than a fresh generator."""
    assert gan_cli.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = read(tmp_path / "dcgan-quick.json")
    assert result["scorer"]["test_acc"] > 0.2
    real = result["scorer"]["real_vs_real"]
    assert set(result["runs"]) == {"batch/seed0", "none/seed0", "layer/seed0"}
    for run in result["runs"].values():
        assert [h["epoch"] for h in run["history"]] == [0, 1, 2]
        assert run["history"][0]["fd"] > 3 * real["fd"]
        assert sum(run["history"][-1]["histogram"]) == result["settings"]["n_score"]
    assert gan_cli.build_parser().parse_args(["--quick"]).threads == 1

"""The Figure-1 experiment (bnbook.experiments.why.figure1): percentiles against numpy, the stored record's
layout, the noisy variant, the MNIST option and the real Fashion-MNIST data."""

import gzip
import struct

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bnbook.experiments.motivation import covariate_shift as cs
from bnbook.experiments.why.figure1 import (MNIST_FILES, Figure1Data, figure1_data, load_mnist_idx,
                                            make_figure1_network, run_figure1, sigmoid_input_percentiles)
from bnbook.experiments.why.noise import NoisyBatchNorm

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def proto():
    x, y, xt, yt = cs.make_prototype_data(n_train=600, n_test=200, n_features=30, seed=0)
    return Figure1Data(x, y, xt, yt, "synthetic", {})


def manual_sigmoid_inputs(net, x):
    """The sigmoid inputs of a SigmoidMLP (BN in training mode), computed by hand."""
    zs = []
    for linear, norm in zip(net.linears, net.norms):
        z = x @ linear.weight.T + (linear.bias if linear.bias is not None else 0)
        if isinstance(norm, NoisyBatchNorm):
            bn = norm.bn
            z = F.batch_norm(z, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
            z = norm.scale * z + norm.shift
        elif isinstance(norm, torch.nn.BatchNorm1d):
            z = F.batch_norm(z, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
        zs.append(z.detach().double().numpy())
        x = torch.sigmoid(z)
    return zs


@pytest.mark.parametrize("variant", ["plain", "bn", "noisy-bn"])
def test_percentiles_match_numpy(proto, variant):
    net, noise = make_figure1_network(variant, 30, 0.5, seed=1, shift_max=1.0, scale_max=2.0,
                                      hidden=12)
    monitor = torch.as_tensor(proto.x_test[:100])
    got = sigmoid_input_percentiles(net, monitor)
    assert got.shape == (3, 3, 12)
    for layer, z in enumerate(manual_sigmoid_inputs(net, monitor)):
        want = np.percentile(z, [15, 50, 85], axis=0)       # numpy's default: linear
        assert np.allclose(got[layer], want, atol=1e-5)
    assert (noise is None) == (variant != "noisy-bn")


def test_run_figure1_records_percentiles_per_logged_step(proto):
    out = run_figure1(proto, "noisy-bn", n_steps=120, lr=0.5, init_std=0.1, shift_max=1.0,
                      scale_max=2.0, record_every=40, monitor_size=100, stored_units=4)
    assert out["steps"] == [0, 40, 80, 120]
    pct = np.array(out["percentiles"])
    assert pct.shape == (4, 3, 4)                           # (logged step, percentile, unit)
    assert np.all(pct[:, 0] <= pct[:, 1]) and np.all(pct[:, 1] <= pct[:, 2])
    assert len(out["test_acc"]) == 4 and np.array(out["saturated"]).shape == (4, 3)
    for key in ("movement", "movement_per_update"):
        assert set(out[key]) == {"location_shift", "location_shift_rel", "spread_change",
                                 "location_range"}
    assert out["spread_end_median"] > 0 and out["seconds"] > 0


def test_the_last_percentiles_are_those_of_the_trained_network(proto):
    # Rerun the trainer by hand and compare the last record with numpy on the final model.
    net, noise = make_figure1_network("noisy-bn", 30, 0.1, seed=0, shift_max=1.0,
                                      scale_max=2.0)
    run = cs.train_sigmoid_mlp(proto.arrays(), True, n_steps=50, record_every=25,
                               monitor_size=100, model=net, before_step=noise.resample)
    z_last = manual_sigmoid_inputs(net, torch.as_tensor(proto.x_test[:100]))[-1]
    assert np.allclose(run.percentiles[-1, -1], np.percentile(z_last, [15, 50, 85], axis=0),
                       atol=1e-5)


def test_noise_makes_the_distributions_move_more_per_update(proto):
    kw = dict(n_steps=80, lr=0.5, record_every=20, monitor_size=100)
    bn = run_figure1(proto, "bn", **kw)
    noisy = run_figure1(proto, "noisy-bn", shift_max=1.0, scale_max=2.0, **kw)
    assert noisy["movement_per_update"]["location_shift"] > \
        5 * bn["movement_per_update"]["location_shift"]


def write_idx(path, array):
    dims = array.shape
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d)
                                                                    for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_option_reads_idx_files_and_says_what_is_missing(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20),
              rng.integers(0, 256, (8, 28, 28)), rng.integers(0, 10, 8)]
    for stem, a in zip(MNIST_FILES[:3], arrays[:3]):
        write_idx(tmp_path / f"{stem}.gz", a)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist_idx(tmp_path)
    write_idx(tmp_path / f"{MNIST_FILES[3]}.gz", arrays[3])
    x, y, xt, yt, sums = load_mnist_idx(tmp_path)
    assert np.array_equal(x, arrays[0]) and np.array_equal(yt, arrays[3])
    assert y.dtype == np.int64 and len(sums) == 4
    data = figure1_data("mnist", n_train=10, n_test=5, mnist_dir=tmp_path)
    assert data.name == "MNIST" and data.x_train.shape == (10, 784)
    assert data.x_train.max() <= 1.0 and data.x_train.dtype == np.float32
    with pytest.raises(ValueError, match="mnist_dir"):
        figure1_data("mnist")
    with pytest.raises(ValueError, match="fashion-mnist"):
        figure1_data("cifar")


def test_fashion_mnist_is_the_default():
    # Reads the copy `make data` provides (or the mirror); fails, saying how, without it.
    data = figure1_data(n_train=100, n_test=50, seed=0)
    assert data.name == "Fashion-MNIST" and data.x_test.shape == (50, 784)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert len(data.sha256) == 4

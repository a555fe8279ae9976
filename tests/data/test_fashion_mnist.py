"""Tests of bnbook.data's IDX reader and Fashion-MNIST loader, on small files the tests make.

IDX headers are packed by hand with ``struct`` (data_helpers.idx_bytes). The fake
Fashion-MNIST has the real shapes, so the loader's checks run on it; the module's published
checksums are set to the fake's own for those tests. The last test reads the real data from
the data directory that `make data` fills, and fails, saying how to get it, when it is absent.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from data_helpers import (HOW_TO_GET_REAL_DATA, REAL_DATA_DIR, clean_env, copy_tree,
                          fake_fashion, fashion_source, idx_bytes, write_fashion)

from bnbook import data
from bnbook.data import fashion_mnist

__all__ = ["clean_env", "fake_fashion", "fashion_source"]  # fixtures, found by pytest


# --------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float64, 0x0E)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, code, compress):
    rng = np.random.default_rng(1)
    array = (rng.normal(50, 40, size=(3, 5, 7))).astype(dtype)
    raw = idx_bytes(array, code)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    got = data.read_idx(path)
    assert got.shape == (3, 5, 7)
    assert got.dtype == np.dtype(dtype)  # native byte order
    np.testing.assert_array_equal(got, array)


def test_read_idx_labels_one_dimensional(tmp_path):
    labels = np.array([9, 0, 3, 3, 7], dtype=np.uint8)
    path = tmp_path / "labels.idx"
    path.write_bytes(idx_bytes(labels, 0x08))
    np.testing.assert_array_equal(data.read_idx(path), labels)


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:2] + b"\x0f" + b[3:], "type code"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:2], "too short"),
    (lambda b: b[:10], "header truncated"),
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
])
def test_read_idx_rejects_bad_files(tmp_path, mutate, message):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)
    path = tmp_path / "bad.idx"
    path.write_bytes(mutate(good))
    with pytest.raises(ValueError, match=message):
        data.read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(4000, dtype=np.uint8).reshape(40, 100), 0x08))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.read_idx(path)


def test_read_idx_corrupt_deflate_stream_names_the_file(tmp_path):
    """Damage inside the compressed stream raises zlib.error deep in gzip: it must come
    out as a ValueError naming the file, from both the reader and the checksum."""
    raw = idx_bytes(np.arange(4000, dtype=np.uint8).reshape(40, 100), 0x08)
    packed = bytearray(gzip.compress(raw))
    packed[10] = 0b111  # first deflate block header, after the 10-byte gzip header:
    # last block, block type 3, which does not exist ("invalid block type")
    path = tmp_path / "bad-stream.idx.gz"
    path.write_bytes(bytes(packed))
    for fn in (data.read_idx, data.idx_sha256):
        with pytest.raises(ValueError, match=r"bad-stream\.idx\.gz.*corrupt or truncated"):
            fn(path)


@pytest.mark.parametrize("dims", [(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),  # overflows int64
                                  (1 << 16, 1 << 16, 2)])                # 8 GiB: absurd
def test_read_idx_refuses_absurd_shapes(tmp_path, dims):
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(">3I", *dims)
    path = tmp_path / "huge.idx"
    path.write_bytes(header + b"\x00" * 64)
    with pytest.raises(ValueError, match=r"huge\.idx: IDX header shape .* more than"):
        data.read_idx(path)


def test_idx_sha256_is_the_checksum_of_the_decompressed_bytes(tmp_path):
    raw = idx_bytes(np.arange(300, dtype=np.uint8).reshape(3, 100))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw, mtime=0))
    (tmp_path / "b.idx.gz").write_bytes(gzip.compress(raw, mtime=12345, compresslevel=1))
    (tmp_path / "c.idx").write_bytes(raw)
    import hashlib

    want = hashlib.sha256(raw).hexdigest()
    assert {data.idx_sha256(tmp_path / n) for n in ("a.idx.gz", "b.idx.gz", "c.idx")} == {want}
    assert (tmp_path / "a.idx.gz").read_bytes() != (tmp_path / "b.idx.gz").read_bytes()


# --------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------

def test_fashion_mnist_missing_files_says_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist(tmp_path)
    text = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in text
    assert "train-images-idx3-ubyte.gz" in text and str(tmp_path) in text
    assert data.FASHION_MNIST_MD5["train-images-idx3-ubyte.gz"] in text
    assert data.FASHION_MNIST_IDX_SHA256["train-images-idx3-ubyte.gz"] in text


def test_fashion_mnist_wrong_shapes_rejected(tmp_path, monkeypatch):
    images = np.zeros((5, 28, 28), np.uint8)
    labels = np.zeros(5, np.uint8)
    for key, name in data.FASHION_MNIST_FILES.items():
        arr = images if key.startswith("x") else labels
        (tmp_path / name).write_bytes(gzip.compress(idx_bytes(arr, 0x08)))
    monkeypatch.setenv("BNBOOK_FASHION_MNIST", str(tmp_path))
    with pytest.raises(ValueError, match=r"expected \(60000, 28, 28\)"):
        data.load_fashion_mnist()


def test_fashion_mnist_loads_fake_copy_in_data_dir(fake_fashion, tmp_path):
    folder, arrays = fake_fashion
    data_dir = tmp_path / "d"
    copy_tree(folder, data_dir / "fashion-mnist")
    x_train, y_train, x_test, y_test = data.load_fashion_mnist(data_dir=data_dir,
                                                                download=False)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(x_test, arrays["x_test"])
    assert y_train.dtype == y_test.dtype == np.int64
    np.testing.assert_array_equal(y_test, arrays["y_test"])


def test_variant_canonical_repacked_unknown(fake_fashion, tmp_path, monkeypatch):
    """The published .gz files are "canonical-gz"; the same IDX bytes in other gzip wrappers
    (another header mtime, as Debian's re-made files have) are "repacked-gz"; other IDX
    bytes are "unknown" when read in place and refused in the data directory."""
    folder, arrays = fake_fashion
    info = data.fashion_mnist_info(folder)
    assert info["variant"] == "canonical-gz"
    assert info["idx_sha256"] == fashion_mnist.FASHION_MNIST_IDX_SHA256
    assert info["gz_md5"] == fashion_mnist.FASHION_MNIST_MD5
    assert info["dataset"] == "fashion-mnist" and info["path"] == str(folder.resolve())

    data_dir = tmp_path / "d"
    repacked = write_fashion(data_dir / "fashion-mnist", arrays, mtime=1234567)
    got = data.provide_fashion_mnist(data_dir, download=False)
    assert got["variant"] == "repacked-gz" and got["status"] == "already present"
    assert got["gz_md5"] != fashion_mnist.FASHION_MNIST_MD5
    assert got["idx_sha256"] == fashion_mnist.FASHION_MNIST_IDX_SHA256
    assert data.fashion_mnist_info(data_dir=data_dir)["variant"] == "repacked-gz"

    other = dict(arrays, y_test=(arrays["y_test"] + 1) % 10)
    tampered = write_fashion(tmp_path / "tampered", other)
    monkeypatch.setenv("BNBOOK_FASHION_MNIST", str(tampered))
    assert data.fashion_mnist_info()["variant"] == "unknown"
    assert data.provide_fashion_mnist(data_dir)["variant"] == "unknown"  # read as it is
    monkeypatch.delenv("BNBOOK_FASHION_MNIST")
    write_fashion(repacked, other)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz.*make data"):
        data.provide_fashion_mnist(data_dir, download=False)


def test_fashion_mnist_info_is_hashed_on_every_call(fake_fashion, tmp_path, monkeypatch):
    """The checksums are computed on every call (size and mtime do not prove the content);
    a re-made file is seen at once."""
    folder, arrays = fake_fashion
    data_dir = tmp_path / "d"
    copy_tree(folder, data_dir / "fashion-mnist")
    calls = []
    real = fashion_mnist.idx_sha256
    monkeypatch.setattr(fashion_mnist, "idx_sha256", lambda p: calls.append(p) or real(p))
    first = data.fashion_mnist_info(data_dir=data_dir)
    assert len(calls) == 4
    assert data.fashion_mnist_info(data_dir=data_dir) == first and len(calls) == 8
    write_fashion(data_dir / "fashion-mnist", arrays, mtime=99)
    assert data.fashion_mnist_info(data_dir=data_dir)["variant"] == "repacked-gz"
    assert len(calls) == 12


# --------------------------------------------------------------------------------------
# the real data
# --------------------------------------------------------------------------------------

def test_fashion_mnist_real_files():
    """The copy `make data` put in the data directory (canonical or Debian's re-made .gz)."""
    try:
        x_train, y_train, x_test, y_test = data.load_fashion_mnist(data_dir=REAL_DATA_DIR,
                                                                    download=False)
    except FileNotFoundError as exc:
        pytest.fail(HOW_TO_GET_REAL_DATA.format(where=REAL_DATA_DIR, error=exc))
    assert (x_train.shape, x_train.dtype) == ((60000, 28, 28), np.uint8)
    assert (x_test.shape, x_test.dtype) == ((10000, 28, 28), np.uint8)
    assert y_train.dtype == y_test.dtype == np.int64
    # Fashion-MNIST is balanced: 6000 train and 1000 test images per class.
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    info = data.fashion_mnist_info(data_dir=REAL_DATA_DIR)
    assert info["variant"] in ("canonical-gz", "repacked-gz")
    assert info["idx_sha256"] == data.FASHION_MNIST_IDX_SHA256
    # Independent parse of the last test image: skip the 16-byte header, read raw bytes.
    with gzip.open(REAL_DATA_DIR / "fashion-mnist" / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    np.testing.assert_array_equal(
        x_test[-1], np.frombuffer(raw[-784:], np.uint8).reshape(28, 28))
    # The published training-set mean intensity, 0.2860 of full scale.
    assert abs(x_train.mean() / 255 - 0.2860) < 5e-4

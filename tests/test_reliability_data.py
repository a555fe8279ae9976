"""Reliability of the data loaders (issue 23): IDX headers are checked against the data
set's shape before anything is hashed or read, and a tampered CIFAR .npy cache is refused."""

import gzip
import struct

import numpy as np
import pytest

from bnbook.data import idx


def test_idx_header_with_a_huge_label_count_is_refused_before_reading(tmp_path):  # item 19
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 2**32 - 16) + b"\x00" * 100)
    with pytest.raises(ValueError, match="expected \\(60000,\\)"):
        idx.read_idx_header(path, (60000,))
    with pytest.raises(ValueError, match="expected"):
        idx.read_idx(path, (60000,))


def test_a_tampered_npy_cache_is_not_loaded(tmp_path):  # item 8
    from bnbook.data import cifar10

    arrays = (np.zeros((4, 32, 32, 3), np.uint8), np.arange(4, dtype=np.int64),
              np.zeros((2, 32, 32, 3), np.uint8), np.arange(2, dtype=np.int64))
    sha = "ab" * 32
    cifar10._write_cache(tmp_path, {"sha256": sha, "variant": "v"}, arrays)
    assert cifar10._read_cache(tmp_path, sha) is not None
    paths = cifar10._cache_paths(tmp_path, sha)
    np.save(paths["y_train"], np.array([1, 2, 3, 3], dtype=np.int64))
    with pytest.warns(UserWarning, match="checksum"):
        assert cifar10._read_cache(tmp_path, sha) is None

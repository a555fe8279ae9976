"""Tests of bnbook.data's CIFAR-10 readers and loader, on small files the tests make.

The canonical batches are assembled plane by plane (R, G, B) from known images, and image
folders hold flat-coloured JPEGs whose colour encodes the label (see data_helpers). The last
test reads the real data from the data directory that `make data` fills, and fails, saying
how to get it, when it is absent. Fashion-MNIST and IDX: data/test_fashion_mnist.py;
provisioning (mirror, Debian, downloads, the CLI): data/test_fetch.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from data_helpers import (HOW_TO_GET_REAL_DATA, REAL_DATA_DIR, assert_arrays, canonical,
                          canonical_row, clean_env, colour, leftovers, make_image_folder,
                          tar_gz)

from bnbook import data
from bnbook.data import cifar10, cifar10_formats

__all__ = ["canonical", "clean_env"]  # fixtures, imported so that pytest finds them


# --------------------------------------------------------------------------------------
# CIFAR-10: fake canonical archive
# --------------------------------------------------------------------------------------

def test_canonical_row_layout_is_planes_r_g_b(canonical, tmp_path):
    archive, md5, _, expected = canonical
    x_train, *_ = data.read_python_archive(archive, md5)
    rows = np.stack([canonical_row(im) for im in expected["x_train"]])
    # pixel (row r, column c, channel ch) sits at ch * 1024 + r * 32 + c
    for i, r, c, ch in [(0, 0, 0, 0), (1, 5, 17, 1), (7, 31, 30, 2), (14, 31, 31, 2)]:
        assert x_train[i, r, c, ch] == rows[i, ch * 1024 + r * 32 + c]
    assert x_train.flags.c_contiguous


def test_canonical_archive_in_data_dir(canonical, tmp_path):
    archive, md5, _, expected = canonical
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.replace(archive, data_dir / data.CIFAR10_ARCHIVE)
    got = data.load_cifar10(data_dir, download=False, progress=False, md5=md5)
    assert_arrays(got, expected)
    info = data.cifar10_info(data_dir, md5=md5)
    assert info["variant"] == "canonical" and info["layout"] == "python-archive"
    assert info["sha256"] == hashlib.sha256((data_dir / data.CIFAR10_ARCHIVE)
                                            .read_bytes()).hexdigest()


def test_canonical_archive_with_wrong_md5_is_not_unpickled(canonical, tmp_path, monkeypatch):
    archive, md5, _, _ = canonical
    calls = []
    monkeypatch.setattr(cifar10_formats, "_unpickle_batch", lambda *a: calls.append(a))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        data.read_python_archive(archive)  # the published md5, which the fake lacks
    with pytest.raises(ValueError, match="refusing to unpickle"):
        data.load_cifar10(tmp_path / "d", source=archive, progress=False)
    assert calls == []
    assert leftovers(tmp_path / "d") == []


def test_truncated_canonical_archive(canonical, tmp_path):
    archive, md5, _, _ = canonical
    cut = tmp_path / "cut" / data.CIFAR10_ARCHIVE
    cut.parent.mkdir()
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        data.load_cifar10(cut.parent, download=False, progress=False, md5=md5)
    assert leftovers(cut.parent) == []


def test_extracted_batches_dir(canonical, tmp_path):
    archive, md5, batch_md5, expected = canonical
    data_dir = tmp_path / "data"
    data.extract_archive(archive, data_dir)  # creates data_dir/cifar-10-batches-py/
    got = data.load_cifar10(data_dir, download=False, progress=False, batch_md5=batch_md5)
    assert_arrays(got, expected)
    assert data.cifar10_info(data_dir, batch_md5=batch_md5)["layout"] == "python-batches-dir"
    # the published per-file checksums do not match the fake files
    with pytest.raises(ValueError, match="refusing to unpickle"):
        data.read_python_batches_dir(data_dir / data.CIFAR10_BATCHES_DIR)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_code(canonical, tmp_path):
    """Even with a checksum that matches (an attacker who also controls the table), a
    batch that names any global other than NumPy's array machinery is refused."""
    archive, _, batch_md5, _ = canonical
    batches = data.extract_archive(archive, tmp_path / "x") / data.CIFAR10_BATCHES_DIR
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Exploit(str(marker)), b"labels": [0]}, protocol=2)
    (batches / "test_batch").write_bytes(evil)
    batch_md5 = {**batch_md5, "test_batch": hashlib.md5(evil).hexdigest()}
    with pytest.raises(ValueError, match=r"posix\.mkdir is not allowed|os\.mkdir is not allowed"):
        data.read_python_batches_dir(batches, batch_md5)
    assert not marker.exists()
    # sanity check that the exploit is real: an ordinary unpickler does create the marker
    pickle.loads(evil)
    assert marker.exists()


def test_search_order_prefers_canonical_and_explicit_source(canonical, tmp_path, monkeypatch):
    archive, md5, _, expected = canonical
    data_dir = tmp_path / "data"
    make_image_folder(data_dir / "images", n_per_class=1)
    tar_gz(data_dir / "images", data_dir / "images.tar.gz", "cifar10")
    assert data.find_cifar10_source(data_dir).layout == "image-folder-dir"
    (data_dir / data.CIFAR10_ARCHIVE).write_bytes(archive.read_bytes())
    assert data.find_cifar10_source(data_dir).layout == "python-archive"
    monkeypatch.setenv("BNBOOK_CIFAR10", str(data_dir / "images.tar.gz"))
    assert data.find_cifar10_source(data_dir).layout == "image-folder-archive"
    src = data.find_cifar10_source(data_dir, source=data_dir / data.CIFAR10_ARCHIVE)
    assert src.layout == "python-archive" and src.variant == "canonical"
    monkeypatch.setenv("BNBOOK_CIFAR10", str(tmp_path / "absent.tar.gz"))
    with pytest.raises(FileNotFoundError, match="BNBOOK_CIFAR10"):
        data.find_cifar10_source(data_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no CIFAR-10"):
        data.find_cifar10_source(data_dir, source=tmp_path / "empty")


# --------------------------------------------------------------------------------------
# CIFAR-10: image folders
# --------------------------------------------------------------------------------------

def _check_image_folder_arrays(got, n_per_class):
    x_train, y_train, x_test, y_test = got
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        assert x.shape == (10 * n_per_class, 32, 32, 3) and x.dtype == np.uint8
        assert y.dtype == np.int64
        assert y.tolist() == [c for c in range(10) for _ in range(n_per_class)]
        want = np.array([colour(split, c, k) for c in range(10) for k in range(n_per_class)])
        err = np.abs(x.astype(int) - want[:, None, None, :]).max()
        assert err <= 3, err  # JPEG of a flat colour is within a few levels


def test_image_folder_tree_and_archive_agree(tmp_path):
    tree = make_image_folder(tmp_path / "tree")
    from_tree = data.read_image_folder(tree)
    _check_image_folder_arrays(from_tree, 2)
    archive = tar_gz(tree, tmp_path / "img.tar.gz", "cifar10-jpeg")  # with a prefix folder
    from_tar = data.read_image_folder(archive, progress=False)
    for a, b in zip(from_tree, from_tar):
        np.testing.assert_array_equal(a, b)
    got = data.load_cifar10(tmp_path / "cache", source=archive, progress=False)
    for a, b in zip(from_tree, got):
        np.testing.assert_array_equal(a, b)
    # members in an arbitrary order (as in real archives) still give label-then-name order
    shuffled = tmp_path / "shuffled.tar"
    files = sorted(p for p in tree.rglob("*.jpg"))
    with tarfile.open(shuffled, "w") as tar:
        for k in np.random.default_rng(3).permutation(len(files)):
            tar.add(files[k], arcname=files[k].relative_to(tree).as_posix())
    for a, b in zip(from_tree, data.read_image_folder(shuffled)):
        np.testing.assert_array_equal(a, b)
    info = data.cifar10_info(tmp_path / "cache", source=archive)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    # not the known JPEG copy: its own variant name, with its checksum and image counts
    assert info == {"variant": f"unknown-{sha[:12]}-20train-20test",
                    "layout": "image-folder-archive", "sha256": sha,
                    "path": str(archive.resolve())}


def test_image_folder_rejects_unknown_class_and_wrong_size(tmp_path):
    from PIL import Image

    tree = make_image_folder(tmp_path / "a", n_per_class=1)
    (tree / "train" / "zebra").mkdir()
    Image.new("RGB", (32, 32)).save(tree / "train" / "zebra" / "0.jpg")
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        data.read_image_folder(tree)
    tree = make_image_folder(tmp_path / "b", n_per_class=1)
    Image.new("RGB", (31, 32)).save(tree / "test" / "cat" / "9.jpg")
    with pytest.raises(ValueError, match="31x32 pixels, expected 32x32"):
        data.read_image_folder(tree)


def test_truncated_image_folder_archive_leaves_nothing(tmp_path):
    tree = make_image_folder(tmp_path / "tree", n_per_class=3)
    archive = tar_gz(tree, tmp_path / "img.tar.gz", "x")
    raw = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.load_cifar10(cache, source=cut, progress=False)
    assert leftovers(cache) == []


def _evil_tar(path: Path, tree: Path) -> Path:
    """An image-folder archive plus a member ``../evil`` and a link pointing outside."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname="cifar")
        payload = b"escaped"
        member = tarfile.TarInfo("../evil")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    return path


def test_path_traversal_member_cannot_escape(tmp_path):
    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    work = tmp_path / "work"
    work.mkdir()
    archive = _evil_tar(work / "evil.tar.gz", tree)
    with pytest.raises(ValueError, match="path traversal"):
        data.read_image_folder(archive)
    with pytest.raises(ValueError, match="unsafe member"):
        data.extract_archive(archive, work / "out")
    assert not (tmp_path / "evil").exists() and not (work / "evil").exists()
    assert not (work / "out").exists()
    assert sorted(p.name for p in work.iterdir()) == ["evil.tar.gz"]


def test_link_pointing_outside_is_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("cifar/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match="unsafe member"):
        data.extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# the .npy cache
# --------------------------------------------------------------------------------------

def test_cache_round_trip(tmp_path, monkeypatch):
    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    cache = tmp_path / "cache"
    first = data.load_cifar10(cache, source=tree, progress=False)
    npy = sorted(cache.glob("*.npy"))
    assert len(npy) == 4
    for path in npy:  # plain arrays: loadable without pickle
        np.load(path, allow_pickle=False)

    calls = []
    real = data.read_image_folder
    monkeypatch.setattr(cifar10, "read_image_folder", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = data.load_cifar10(cache, source=tree, progress=False)
    assert calls == []
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype

    # a damaged cache file is not trusted: the source is decoded again
    x_train_npy = next(p for p in npy if p.name.endswith("-x_train.npy"))
    x_train_npy.write_bytes(x_train_npy.read_bytes()[:200])
    third = data.load_cifar10(cache, source=tree, progress=False)
    assert calls == [1]
    np.testing.assert_array_equal(third[0], first[0])

    # a valid .npy of the wrong dtype is not trusted either
    y_test_npy = next(p for p in npy if p.name.endswith("-y_test.npy"))
    np.save(y_test_npy, third[3].astype(np.float64))
    data.load_cifar10(cache, source=tree, progress=False)
    assert calls == [1, 1]
    assert np.load(y_test_npy).dtype == np.int64

    # a changed source gets a new checksum, hence a new cache entry
    from PIL import Image

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tree / "test" / "dog" / "0000.jpg")
    fourth = data.load_cifar10(cache, source=tree, progress=False)
    assert calls == [1, 1, 1]
    assert fourth[2][5].mean(axis=(0, 1))[0] > 250  # dog = label 5, one image per class
    assert len(list(cache.glob("*.npy"))) == 8


# --------------------------------------------------------------------------------------
# the real data
# --------------------------------------------------------------------------------------

def test_real_cifar10():
    """The copy `make data` put in the data directory: the canonical archive or the
    mirror's JPEG copy, each checked against its own published statistics."""
    try:
        x_train, y_train, x_test, y_test = data.load_cifar10(REAL_DATA_DIR, download=False,
                                                             progress=False)
    except FileNotFoundError as exc:
        pytest.fail(HOW_TO_GET_REAL_DATA.format(where=REAL_DATA_DIR, error=exc))
    assert (x_train.shape, x_train.dtype) == ((50000, 32, 32, 3), np.uint8)
    assert (x_test.shape, x_test.dtype) == ((10000, 32, 32, 3), np.uint8)
    assert y_train.dtype == y_test.dtype == np.int64
    assert np.bincount(y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10
    info = data.cifar10_info(REAL_DATA_DIR)
    # Per-channel train means: canonical CIFAR-10's, and the JPEG copy's (data/README).
    want = {"canonical": [0.4914, 0.4822, 0.4465], "jpeg-image-folder": [0.4913, 0.4821, 0.4465]}
    mean = x_train.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(mean, np.array(want[info["variant"]]) * 255, atol=5e-4 * 255)
    if info["layout"] == "image-folder-archive":
        assert info["sha256"] == data.CIFAR10_JPEG_SHA256


# --------------------------------------------------------------------------------------
# hostile and damaged copies (each of these loaded, or blew up memory, before)
# --------------------------------------------------------------------------------------

def test_flipped_bytes_in_a_gzip_archive_are_detected(tmp_path):
    # The damage sits in the last image's data; only the gzip CRC at the end of the stream
    # notices, so the loader must read the stream to its end.
    tree = make_image_folder(tmp_path / "tree", n_per_class=2)
    archive = tar_gz(tree, tmp_path / "img.tar.gz", "x")
    with tarfile.open(archive) as tar:
        last = [m for m in tar.getmembers() if m.name.endswith(".jpg")][-1]
    import gzip
    import zlib

    raw = bytearray(gzip.decompress(archive.read_bytes()))
    start = last.offset_data + last.size // 2
    raw[start:start + 8] = bytes(b ^ 0xFF for b in raw[start:start + 8])
    # recompress the damaged tar, but keep the CRC and length of the original bytes
    good = gzip.decompress(archive.read_bytes())
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = body.compress(bytes(raw)) + body.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = (zlib.crc32(good) & 0xFFFFFFFF).to_bytes(4, "little") + \
        (len(good) & 0xFFFFFFFF).to_bytes(4, "little")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(header + deflated + trailer)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="corrupt or truncated|cannot decode"):
        data.load_cifar10(cache, source=bad, progress=False)
    assert leftovers(cache) == []


def test_missing_class_is_refused(tmp_path):
    import shutil

    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    shutil.rmtree(tree / "train" / "truck")
    with pytest.raises(ValueError, match="no train images of class truck"):
        data.read_image_folder(tree)


def test_huge_member_is_refused_before_it_is_read(tmp_path, monkeypatch):
    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    big = tree / "train" / "cat" / "big.jpg"
    big.write_bytes(b"\0" * (cifar10_formats.MAX_IMAGE_FILE_BYTES + 1))
    archive = tar_gz(tree, tmp_path / "img.tar.gz", "x")
    reads = []
    real_read = tarfile.ExFileObject.read
    monkeypatch.setattr(tarfile.ExFileObject, "read",
                        lambda self, *a: reads.append(self.name) or real_read(self, *a))
    with pytest.raises(ValueError, match="is not a CIFAR-10 image"):
        data.read_image_folder(archive)
    assert not any(r.endswith("big.jpg") for r in reads)
    with pytest.raises(ValueError, match="is not a CIFAR-10 image"):
        data.read_image_folder(tree)


def test_huge_image_is_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import Image

    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    Image.new("RGB", (4000, 3000)).save(tree / "test" / "cat" / "big.png")
    (tree / "test" / "cat" / "big.png").rename(tree / "test" / "cat" / "big.jpg")
    decoded = []
    real_convert = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert",
                        lambda self, *a, **k: decoded.append(self.size) or real_convert(self, *a, **k))
    with pytest.raises(ValueError, match="4000x3000 pixels"):
        data.read_image_folder(tree)
    assert (4000, 3000) not in decoded


def test_changed_source_with_same_size_and_mtime_is_decoded_again(tmp_path, monkeypatch):
    tree = make_image_folder(tmp_path / "tree", n_per_class=1)
    archive = tmp_path / "img.tar"           # uncompressed: one byte can change in place
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="x")
    cache = tmp_path / "cache"
    data.load_cifar10(cache, source=archive, progress=False)
    before = data.cifar10_info(cache, source=archive)["sha256"]
    stat = archive.stat()
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"not an image")            # inside README.txt: same size, other content
    raw[at] = ord("N")
    archive.write_bytes(bytes(raw))
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert archive.stat().st_size == stat.st_size
    calls = []
    real = data.read_image_folder
    monkeypatch.setattr(cifar10, "read_image_folder",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    data.load_cifar10(cache, source=archive, progress=False)
    assert calls == [1]                       # decoded again, not served from the old cache
    after = data.cifar10_info(cache, source=archive)["sha256"]
    assert after == hashlib.sha256(archive.read_bytes()).hexdigest() != before


def test_plain_tar_cut_at_a_member_boundary_is_refused(tmp_path):
    tree = make_image_folder(tmp_path / "tree", n_per_class=2)
    archive = tmp_path / "img.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="x")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    half = members[len(members) // 2]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[:half.offset])   # ends exactly before a member header
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="incomplete|corrupt or truncated"):
        data.load_cifar10(cache, source=cut, progress=False)
    assert leftovers(cache) == []

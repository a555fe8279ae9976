"""Tests of bnbook.data on small files the tests make themselves.

The reference for every loader is built independently here: IDX headers are packed by
hand with ``struct``, canonical CIFAR-10 rows are assembled plane by plane (R, G, B) from
known images, and image folders hold flat-coloured JPEGs whose colour encodes the label.
The one test on the real data (the shared JPEG copy) is skipped when that file is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from bnbook import data
from bnbook.provenance import REPO_ROOT

# Captured before the fixture below clears them: the real-data test reads CI's settings.
_REAL_CIFAR10 = os.environ.get("BNBOOK_CIFAR10")
_REAL_DATA_DIR = os.environ.get("BNBOOK_DATA")
_ENV = ("BNBOOK_CIFAR10", "BNBOOK_DATA", "BNBOOK_FASHION_MNIST", "http_proxy", "HTTP_PROXY",
        "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The tests choose their own data locations; CI's settings must not leak in."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def _md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    """Temporary or cache files left in ``folder`` (recursively)."""
    return sorted(p.name for p in folder.rglob("*")
                  if p.suffix in {".npy", ".tmp", ".part"} or p.name.endswith(".part"))


# --------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------

def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file packed by hand: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    big = array.astype(array.dtype.newbyteorder(">"))
    return header + big.tobytes()


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float64, 0x0E)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, code, compress):
    rng = np.random.default_rng(1)
    array = (rng.normal(50, 40, size=(3, 5, 7))).astype(dtype)
    raw = _idx_bytes(array, code)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    got = data.read_idx(path)
    assert got.shape == (3, 5, 7)
    assert got.dtype == np.dtype(dtype)  # native byte order
    np.testing.assert_array_equal(got, array)


def test_read_idx_labels_one_dimensional(tmp_path):
    labels = np.array([9, 0, 3, 3, 7], dtype=np.uint8)
    path = tmp_path / "labels.idx"
    path.write_bytes(_idx_bytes(labels, 0x08))
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
    good = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)
    path = tmp_path / "bad.idx"
    path.write_bytes(mutate(good))
    with pytest.raises(ValueError, match=message):
        data.read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(_idx_bytes(np.arange(4000, dtype=np.uint8).reshape(40, 100), 0x08))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.read_idx(path)


def test_fashion_mnist_missing_files_says_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist(tmp_path)
    text = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in text
    assert "train-images-idx3-ubyte.gz" in text and str(tmp_path) in text
    assert data.FASHION_MNIST_MD5["train-images-idx3-ubyte.gz"] in text


def test_fashion_mnist_wrong_shapes_rejected(tmp_path, monkeypatch):
    images = np.zeros((5, 28, 28), np.uint8)
    labels = np.zeros(5, np.uint8)
    for key, name in data.FASHION_MNIST_FILES.items():
        arr, code = (images, 0x08) if key.startswith("x") else (labels, 0x08)
        (tmp_path / name).write_bytes(gzip.compress(_idx_bytes(arr, code)))
    monkeypatch.setenv("BNBOOK_FASHION_MNIST", str(tmp_path))
    with pytest.raises(ValueError, match=r"expected \(60000, 28, 28\)"):
        data.load_fashion_mnist()


_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (_FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real_files():
    x_train, y_train, x_test, y_test = data.load_fashion_mnist()
    assert (x_train.shape, x_train.dtype) == ((60000, 28, 28), np.uint8)
    assert (x_test.shape, x_test.dtype) == ((10000, 28, 28), np.uint8)
    assert y_train.dtype == y_test.dtype == np.int64
    # Fashion-MNIST is balanced: 6000 train and 1000 test images per class.
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    # Independent parse of the last test image: skip the 16-byte header, read raw bytes.
    with gzip.open(_FASHION / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    np.testing.assert_array_equal(
        x_test[-1], np.frombuffer(raw[-784:], np.uint8).reshape(28, 28))
    # The published training-set mean intensity, 0.2860 of full scale.
    assert abs(x_train.mean() / 255 - 0.2860) < 5e-4


# --------------------------------------------------------------------------------------
# CIFAR-10: fake canonical archive
# --------------------------------------------------------------------------------------

def _canonical_row(image: np.ndarray) -> np.ndarray:
    """A canonical CIFAR-10 row from an (H, W, C) image: the red plane row by row, then
    green, then blue (1024 bytes each)."""
    return np.concatenate([image[:, :, 0].ravel(), image[:, :, 1].ravel(),
                           image[:, :, 2].ravel()])


def _make_canonical(folder: Path, per_batch: int = 3, n_test: int = 4, seed: int = 0):
    """Write ``cifar-10-batches-py/`` with tiny batches; return (folder, expected arrays).

    The pickles use protocol 2, as the published ones do (they were written by Python 2).
    """
    rng = np.random.default_rng(seed)
    batches = folder / data.CIFAR10_BATCHES_DIR
    batches.mkdir(parents=True)
    expected = {"x_train": [], "y_train": []}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        n = per_batch if name != "test_batch" else n_test
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        rows = np.stack([_canonical_row(im) for im in images])
        batch = {b"batch_label": f"batch {i}".encode(), b"labels": labels, b"data": rows,
                 b"filenames": [f"img{i}_{j}.png".encode() for j in range(n)]}
        (batches / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name == "test_batch":
            expected["x_test"], expected["y_test"] = images, np.array(labels)
        else:
            expected["x_train"].append(images)
            expected["y_train"].extend(labels)
    meta = {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES],
            b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    expected["x_train"] = np.concatenate(expected["x_train"])
    expected["y_train"] = np.array(expected["y_train"])
    return batches, expected


def _tar_gz(source_dir: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_dir, arcname=arcname)
    return archive


@pytest.fixture
def canonical(tmp_path):
    """A fake canonical archive: (archive path, its md5, batch md5s, expected arrays)."""
    batches, expected = _make_canonical(tmp_path / "build")
    archive = _tar_gz(batches, tmp_path / "build" / data.CIFAR10_ARCHIVE,
                      data.CIFAR10_BATCHES_DIR)
    batch_md5 = {p.name: _md5(p) for p in batches.iterdir()}
    return archive, _md5(archive), batch_md5, expected


def _assert_arrays(got, expected):
    x_train, y_train, x_test, y_test = got
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train, expected["x_train"])
    np.testing.assert_array_equal(y_train, expected["y_train"])
    np.testing.assert_array_equal(x_test, expected["x_test"])
    np.testing.assert_array_equal(y_test, expected["y_test"])


def test_canonical_row_layout_is_planes_r_g_b(canonical, tmp_path):
    archive, md5, _, expected = canonical
    x_train, *_ = data.read_python_archive(archive, md5)
    rows = np.stack([_canonical_row(im) for im in expected["x_train"]])
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
    _assert_arrays(got, expected)
    info = data.cifar10_info(data_dir, md5=md5)
    assert info["variant"] == "canonical" and info["layout"] == "python-archive"
    assert info["sha256"] == hashlib.sha256((data_dir / data.CIFAR10_ARCHIVE)
                                            .read_bytes()).hexdigest()


def test_canonical_archive_with_wrong_md5_is_not_unpickled(canonical, tmp_path, monkeypatch):
    archive, md5, _, _ = canonical
    calls = []
    monkeypatch.setattr(data, "_unpickle_batch", lambda *a: calls.append(a))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        data.read_python_archive(archive)  # the published md5, which the fake lacks
    with pytest.raises(ValueError, match="refusing to unpickle"):
        data.load_cifar10(tmp_path / "d", source=archive, progress=False)
    assert calls == []
    assert _leftovers(tmp_path / "d") == []


def test_truncated_canonical_archive(canonical, tmp_path):
    archive, md5, _, _ = canonical
    cut = tmp_path / "cut" / data.CIFAR10_ARCHIVE
    cut.parent.mkdir()
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        data.load_cifar10(cut.parent, download=False, progress=False, md5=md5)
    assert _leftovers(cut.parent) == []


def test_extracted_batches_dir(canonical, tmp_path):
    archive, md5, batch_md5, expected = canonical
    data_dir = tmp_path / "data"
    data.extract_archive(archive, data_dir)  # creates data_dir/cifar-10-batches-py/
    got = data.load_cifar10(data_dir, download=False, progress=False, batch_md5=batch_md5)
    _assert_arrays(got, expected)
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
    _make_image_folder(data_dir / "images", n_per_class=1)
    _tar_gz(data_dir / "images", data_dir / "images.tar.gz", "cifar10")
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

def _colour(split: str, label: int, k: int) -> tuple[int, int, int]:
    """A flat colour that encodes (split, label, k) with steps JPEG cannot blur together."""
    return (20 + 20 * label, 40 + 40 * k, 60 if split == "train" else 200)


def _make_image_folder(root: Path, n_per_class: int = 2, classes=data.CIFAR10_CLASSES):
    from PIL import Image

    for split in ("train", "test"):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            # written in reverse so that the loader's ordering by name is what is tested
            for k in reversed(range(n_per_class)):
                image = Image.new("RGB", (32, 32), _colour(split, label, k))
                image.save(folder / f"{k:04d}.jpg", quality=95)
    (root / "README.txt").write_text("not an image; the loader must skip it\n")
    return root


def _check_image_folder_arrays(got, n_per_class):
    x_train, y_train, x_test, y_test = got
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        assert x.shape == (10 * n_per_class, 32, 32, 3) and x.dtype == np.uint8
        assert y.dtype == np.int64
        assert y.tolist() == [c for c in range(10) for _ in range(n_per_class)]
        want = np.array([_colour(split, c, k) for c in range(10) for k in range(n_per_class)])
        err = np.abs(x.astype(int) - want[:, None, None, :]).max()
        assert err <= 3, err  # JPEG of a flat colour is within a few levels


def test_image_folder_tree_and_archive_agree(tmp_path):
    tree = _make_image_folder(tmp_path / "tree")
    from_tree = data.read_image_folder(tree)
    _check_image_folder_arrays(from_tree, 2)
    archive = _tar_gz(tree, tmp_path / "img.tar.gz", "cifar10-jpeg")  # with a prefix folder
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
    assert info == {"variant": "jpeg-image-folder", "layout": "image-folder-archive",
                    "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                    "path": str(archive.resolve())}


def test_image_folder_rejects_unknown_class_and_wrong_size(tmp_path):
    from PIL import Image

    tree = _make_image_folder(tmp_path / "a", n_per_class=1)
    (tree / "train" / "zebra").mkdir()
    Image.new("RGB", (32, 32)).save(tree / "train" / "zebra" / "0.jpg")
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        data.read_image_folder(tree)
    tree = _make_image_folder(tmp_path / "b", n_per_class=1)
    Image.new("RGB", (31, 32)).save(tree / "test" / "cat" / "9.jpg")
    with pytest.raises(ValueError, match=r"shape \(32, 31, 3\)"):
        data.read_image_folder(tree)


def test_truncated_image_folder_archive_leaves_nothing(tmp_path):
    tree = _make_image_folder(tmp_path / "tree", n_per_class=3)
    archive = _tar_gz(tree, tmp_path / "img.tar.gz", "x")
    raw = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="corrupt or truncated"):
        data.load_cifar10(cache, source=cut, progress=False)
    assert _leftovers(cache) == []


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
    tree = _make_image_folder(tmp_path / "tree", n_per_class=1)
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
    tree = _make_image_folder(tmp_path / "tree", n_per_class=1)
    cache = tmp_path / "cache"
    first = data.load_cifar10(cache, source=tree, progress=False)
    npy = sorted(cache.glob("*.npy"))
    assert len(npy) == 4
    for path in npy:  # plain arrays: loadable without pickle
        np.load(path, allow_pickle=False)

    calls = []
    real = data.read_image_folder
    monkeypatch.setattr(data, "read_image_folder", lambda *a, **k: calls.append(1) or real(*a, **k))
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
# downloading
# --------------------------------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path[len("/short/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # then hang up
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: _Handler(*a, directory=str(www), **k))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def test_download_over_http_then_load(canonical, tmp_path, server):
    archive, md5, _, expected = canonical
    base, www = server
    (www / data.CIFAR10_ARCHIVE).write_bytes(archive.read_bytes())
    data_dir = tmp_path / "data"
    got = data.load_cifar10(data_dir, progress=False, url=f"{base}/{data.CIFAR10_ARCHIVE}",
                            md5=md5)
    _assert_arrays(got, expected)
    assert _md5(data_dir / data.CIFAR10_ARCHIVE) == md5
    assert data.cifar10_info(data_dir, md5=md5)["variant"] == "canonical"


def test_download_file_url(canonical, tmp_path):
    archive, md5, _, _ = canonical
    dest = tmp_path / "dl" / "a.tar.gz"
    assert data.download_file(archive.as_uri(), dest, md5, progress=False) == dest
    assert dest.read_bytes() == archive.read_bytes()


def test_download_wrong_md5_leaves_nothing(canonical, tmp_path, server):
    archive, md5, _, _ = canonical
    base, www = server
    (www / "a.tar.gz").write_bytes(archive.read_bytes())
    dest = tmp_path / "dl" / data.CIFAR10_ARCHIVE
    with pytest.raises(ValueError, match="MD5"):
        data.download_file(f"{base}/a.tar.gz", dest, "0" * 32, progress=False)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ValueError, match="MD5"):  # the same through the loader
        data.load_cifar10(dest.parent, progress=False, url=f"{base}/a.tar.gz")
    assert list(dest.parent.iterdir()) == []


def test_download_cut_short_leaves_nothing(canonical, tmp_path, server):
    archive, md5, _, _ = canonical
    base, www = server
    (www / "a.tar.gz").write_bytes(archive.read_bytes())
    dest = tmp_path / "dl" / "a.tar.gz"
    with pytest.raises((ValueError, ConnectionError)):
        data.download_file(f"{base}/short/a.tar.gz", dest, md5, progress=False)
    assert list(dest.parent.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_says_where_to_put_the_file(tmp_path):
    data_dir = tmp_path / "data"
    url = f"http://127.0.0.1:{_closed_port()}/{data.CIFAR10_ARCHIVE}"
    with pytest.raises(ConnectionError) as info:
        data.load_cifar10(data_dir, progress=False, url=url)
    assert str(data_dir / data.CIFAR10_ARCHIVE) in str(info.value)
    assert data.CIFAR10_MD5 in str(info.value)
    assert list(data_dir.iterdir()) == []
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(data_dir, download=False)
    assert str(data_dir / data.CIFAR10_ARCHIVE) in str(info.value)
    assert "BNBOOK_CIFAR10" in str(info.value)


# --------------------------------------------------------------------------------------
# the real data
# --------------------------------------------------------------------------------------

_SHARED_JPEG = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
_SHARED_SHA256 = "fbfaae64ea5d6302276abeb7b04f7ae58c1fde1e9c36237fd77787f59cd3c42a"


def test_real_cifar10_jpeg_copy(monkeypatch):
    """$BNBOOK_CIFAR10 if it names the JPEG copy, else the shared copy beside the repo."""
    path = Path(_REAL_CIFAR10) if _REAL_CIFAR10 else _SHARED_JPEG
    if not path.is_file() or data.find_cifar10_source(source=path).layout \
            != "image-folder-archive":
        pytest.skip(f"the CIFAR-10 JPEG copy is not at {path} (set BNBOOK_CIFAR10)")
    monkeypatch.setenv("BNBOOK_CIFAR10", str(path))
    if _REAL_DATA_DIR:  # the user's data directory, so the decoded cache is reused
        monkeypatch.setenv("BNBOOK_DATA", _REAL_DATA_DIR)
    x_train, y_train, x_test, y_test = data.load_cifar10(progress=False)
    assert (x_train.shape, x_train.dtype) == ((50000, 32, 32, 3), np.uint8)
    assert (x_test.shape, x_test.dtype) == ((10000, 32, 32, 3), np.uint8)
    assert y_train.dtype == y_test.dtype == np.int64
    assert np.bincount(y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10
    mean = x_train.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(mean, np.array([0.4913, 0.4821, 0.4465]) * 255, atol=5e-4 * 255)
    info = data.cifar10_info()
    assert info["variant"] == "jpeg-image-folder"
    if path == _SHARED_JPEG:
        assert info["sha256"] == _SHARED_SHA256

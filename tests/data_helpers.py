"""Small files and fixtures shared by the tests of bnbook.data (test_data*.py).

The reference for every loader is built independently here: IDX headers are packed by hand
with ``struct``, canonical CIFAR-10 rows are assembled plane by plane (R, G, B) from known
images, and image folders hold flat-coloured JPEGs whose colour encodes the label. A local
HTTP server on 127.0.0.1 stands in for the download sites; nothing else on the network is
touched (the autouse fixture points the canonical URLs at a closed local port).

A test module uses these by importing them: ``from data_helpers import clean_env, ...``
(pytest finds imported fixtures, autouse ones included).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import socket
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from bnbook.data import cifar10, fashion_mnist, fetch
from bnbook.data.cifar10_formats import CIFAR10_CLASSES

# Captured before clean_env clears them: the real-data tests read the user's data directory.
REAL_DATA_DIR = Path(os.environ.get("BNBOOK_DATA") or fetch.DEFAULT_DATA_DIR)
_ENV = ("BNBOOK_CIFAR10", "BNBOOK_DATA", "BNBOOK_FASHION_MNIST", "BNBOOK_MIRROR",
        "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
HOW_TO_GET_REAL_DATA = (
    "The real data sets are not in {where}. Run `make data` (it copies them from the mirror "
    "or downloads them), or `BNBOOK_MIRROR=../shared/data .venv/bin/python -m bnbook.data` "
    "with the project's mirror, then run the tests again. The loader said:\n{error}")


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """The tests choose their own data locations: CI's settings must not leak in, the
    default data directory is a fresh folder, Debian's folder is absent, and the
    canonical URLs point at a closed local port, so no test can reach the network."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BNBOOK_DATA", str(tmp_path / "default-data-dir"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    nowhere = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", f"{nowhere}/fashion/")
    monkeypatch.setattr(cifar10, "CIFAR10_URL", f"{nowhere}/{cifar10.CIFAR10_ARCHIVE}")
    monkeypatch.setattr(fetch, "DOWNLOAD_RETRIES", 0)
    monkeypatch.setattr(fetch, "DOWNLOAD_TIMEOUT", 10.0)


def md5_of(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Temporary or cache files left in ``folder`` (recursively)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob("*")
                  if p.suffix in {".npy", ".tmp", ".part"} or p.name.startswith("tmp"))


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative names), ``[]`` if it does not exist."""
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# --- IDX and Fashion-MNIST ------------------------------------------------------------

def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file packed by hand: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    big = array.astype(array.dtype.newbyteorder(">"))
    return header + big.tobytes()


def fake_fashion_arrays() -> dict:
    """Fashion-MNIST-shaped arrays (60000/10000 images, labels cycling 0..9) whose images
    carry their index in two pixels, so a mix-up would show."""
    out = {}
    for split, n in (("train", 60000), ("test", 10000)):
        x = np.zeros((n, 28, 28), np.uint8)
        x[:, 0, 0] = np.arange(n) % 256
        x[:, 27, 27] = np.arange(n) // 256 % 256
        out[f"x_{split}"], out[f"y_{split}"] = x, (np.arange(n) % 10).astype(np.uint8)
    return out


def write_fashion(folder: Path, arrays: dict, mtime: int = 0) -> Path:
    """The four .gz files in ``folder``; ``mtime`` goes into the gzip header, so two calls
    with different ``mtime`` give different .gz bytes around the same IDX bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in fashion_mnist.FASHION_MNIST_FILES.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(arrays[key]), compresslevel=1,
                                                  mtime=mtime))
    return folder


@pytest.fixture(scope="session")
def fashion_source(tmp_path_factory):
    """A fake 'published' Fashion-MNIST: ``(folder, arrays, gz md5s, IDX sha256s)``."""
    arrays = fake_fashion_arrays()
    folder = write_fashion(tmp_path_factory.mktemp("fashion") / "published", arrays)
    names = fashion_mnist.FASHION_MNIST_FILES
    md5s = {n: md5_of(folder / n) for n in names.values()}
    shas = {n: hashlib.sha256(idx_bytes(arrays[k])).hexdigest() for k, n in names.items()}
    return folder, arrays, md5s, shas


@pytest.fixture
def fake_fashion(fashion_source, monkeypatch):
    """The fake Fashion-MNIST, with the module's published checksums set to its own."""
    folder, arrays, md5s, shas = fashion_source
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_MD5", md5s)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_IDX_SHA256", shas)
    return folder, arrays


def copy_tree(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest)
    return dest


# --- CIFAR-10 -------------------------------------------------------------------------

def canonical_row(image: np.ndarray) -> np.ndarray:
    """A canonical CIFAR-10 row from an (H, W, C) image: the red plane row by row, then
    green, then blue (1024 bytes each)."""
    return np.concatenate([image[:, :, 0].ravel(), image[:, :, 1].ravel(),
                           image[:, :, 2].ravel()])


def make_canonical(folder: Path, per_batch: int = 3, n_test: int = 4, seed: int = 0):
    """Write ``cifar-10-batches-py/`` with tiny batches; return (folder, expected arrays).

    The pickles use protocol 2, as the published ones do (they were written by Python 2).
    """
    rng = np.random.default_rng(seed)
    batches = folder / cifar10.CIFAR10_BATCHES_DIR
    batches.mkdir(parents=True)
    expected = {"x_train": [], "y_train": []}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        n = per_batch if name != "test_batch" else n_test
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        rows = np.stack([canonical_row(im) for im in images])
        batch = {b"batch_label": f"batch {i}".encode(), b"labels": labels, b"data": rows,
                 b"filenames": [f"img{i}_{j}.png".encode() for j in range(n)]}
        (batches / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name == "test_batch":
            expected["x_test"], expected["y_test"] = images, np.array(labels)
        else:
            expected["x_train"].append(images)
            expected["y_train"].extend(labels)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    expected["x_train"] = np.concatenate(expected["x_train"])
    expected["y_train"] = np.array(expected["y_train"])
    return batches, expected


def tar_gz(source_dir: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_dir, arcname=arcname)
    return archive


@pytest.fixture
def canonical(tmp_path):
    """A fake canonical archive: (archive path, its md5, batch md5s, expected arrays)."""
    batches, expected = make_canonical(tmp_path / "build")
    archive = tar_gz(batches, tmp_path / "build" / cifar10.CIFAR10_ARCHIVE,
                     cifar10.CIFAR10_BATCHES_DIR)
    batch_md5 = {p.name: md5_of(p) for p in batches.iterdir()}
    return archive, md5_of(archive), batch_md5, expected


def assert_arrays(got, expected):
    x_train, y_train, x_test, y_test = got
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train, expected["x_train"])
    np.testing.assert_array_equal(y_train, expected["y_train"])
    np.testing.assert_array_equal(x_test, expected["x_test"])
    np.testing.assert_array_equal(y_test, expected["y_test"])


def colour(split: str, label: int, k: int) -> tuple[int, int, int]:
    """A flat colour that encodes (split, label, k) with steps JPEG cannot blur together."""
    return (20 + 20 * label, 40 + 40 * k, 60 if split == "train" else 200)


def make_image_folder(root: Path, n_per_class: int = 2, classes=CIFAR10_CLASSES):
    from PIL import Image

    for split in ("train", "test"):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            # written in reverse so that the loader's ordering by name is what is tested
            for k in reversed(range(n_per_class)):
                image = Image.new("RGB", (32, 32), colour(split, label, k))
                image.save(folder / f"{k:04d}.jpg", quality=95)
    (root / "README.txt").write_text("not an image; the loader must skip it\n")
    return root


@pytest.fixture
def jpeg_archive(tmp_path, monkeypatch):
    """A small image-folder archive standing in for the mirror's ``cifar10-jpeg.tar.gz``,
    with the module's known SHA-256 set to its own: ``(archive, sha256)``."""
    tree = make_image_folder(tmp_path / "jpeg-tree", n_per_class=1)
    (tmp_path / "jpeg-build").mkdir()
    archive = tar_gz(tree, tmp_path / "jpeg-build" / cifar10.CIFAR10_JPEG_ARCHIVE, "cifar10")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar10, "CIFAR10_JPEG_SHA256", sha)
    return archive, sha


def jpeg_archive_bytes_for(path: Path, monkeypatch) -> str:
    """A small image-folder archive at ``path``, set as the known JPEG copy; its SHA-256."""
    tree = make_image_folder(path.parent / f"{path.name}-tree", n_per_class=1)
    tar_gz(tree, path, "cifar10")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar10, "CIFAR10_JPEG_SHA256", sha)
    return sha


# --- a local HTTP server --------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/short/<f>`` hangs up half-way, ``/flaky/<f>`` answers 500 to the
    first request for each file, then serves it."""

    failed: set = set()

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
        if self.path.startswith("/flaky/"):
            if self.path not in self.failed:
                self.failed.add(self.path)
                self.send_error(500, "try again")
                return
            self.path = self.path[len("/flaky"):]
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields its base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = type("Handler", (_Handler,), {"failed": set()})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(www), **k))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def sample_provenance(**overrides) -> dict:
    """A complete provenance in the layout of ``bnbook.provenance`` (for result fixtures)."""
    prov = {"provenance_version": 1, "dataset": "synthetic-random-64", "dataset_sha256": None,
            "device": "cpu: test CPU, 2 logical cores", "cpu": "test CPU, 2 logical cores",
            "torch": "2.13.0", "precision": "fp32", "git_commit": "0" * 40,
            "command": "python -m bnbook.experiments.cifar --model bn --synthetic 64",
            "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T01:00:00+00:00",
            "wall_seconds": 3600.0}
    prov.update(overrides)
    return prov

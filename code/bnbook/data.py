"""Datasets for the book's experiments: Fashion-MNIST and CIFAR-10 as NumPy arrays.

Conventions
-----------
* Images are ``uint8`` in ``[0, 255]``: Fashion-MNIST ``(N, 28, 28)``, CIFAR-10
  ``(N, 32, 32, 3)`` (height, width, RGB channel last, as stored). Converting to float,
  scaling and moving channels first is the training code's job, not the loader's.
* Labels are ``int64`` class indices. CIFAR-10's order is :data:`CIFAR10_CLASSES`
  (``airplane`` = 0 ... ``truck`` = 9), the canonical archive's ``label_names``.
* Every loader returns ``(x_train, y_train, x_test, y_test)``.
* Results must say which data they came from: :func:`cifar10_info` gives the variant
  (``"canonical"`` or ``"jpeg-image-folder"``), the source's SHA-256 and its path, ready to
  pass to :func:`bnbook.provenance.collect_provenance`.

Where the files come from
-------------------------
* Fashion-MNIST: the four IDX ``.gz`` files, from ``root``, else ``$BNBOOK_FASHION_MNIST``,
  else ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
* CIFAR-10: ``source`` or ``$BNBOOK_CIFAR10``, else the data directory (``$BNBOOK_DATA``,
  default ``<repo>/data/cache``): the canonical ``cifar-10-python.tar.gz`` or its extracted
  ``cifar-10-batches-py/``, else an image-folder tree or ``.tar.gz``; else the canonical
  archive is downloaded there (MD5-checked, renamed into place only when complete). See
  :func:`find_cifar10_source`. Canonical batches are pickles: they are unpickled only after
  their MD5 matches, and then by an unpickler that resolves nothing but NumPy arrays.
  Decoded arrays are cached as ``.npy`` files (no pickle) in the data directory, named by
  the source's SHA-256, so only the first call decodes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import re
import tarfile
import time
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bnbook.provenance import REPO_ROOT, atomic_write_json

__all__ = [
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_URL",
    "read_idx",
    "fashion_mnist_dir",
    "load_fashion_mnist",
    "CIFAR10_CLASSES",
    "CIFAR10_URL",
    "CIFAR10_ARCHIVE",
    "CIFAR10_BATCHES_DIR",
    "CIFAR10_MD5",
    "CIFAR10_BATCH_MD5",
    "CIFAR10Source",
    "resolve_data_dir",
    "find_cifar10_source",
    "cifar10_info",
    "download_file",
    "extract_archive",
    "read_python_archive",
    "read_python_batches_dir",
    "read_image_folder",
    "load_cifar10",
]

# --------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------

# The IDX header is: two zero bytes, one byte naming the element type, one byte giving
# the number of dimensions, then each dimension as a big-endian uint32; then the data,
# big-endian, in C order.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed if its name ends in ``.gz``).

    Returns an array of the shape recorded in the header, in native byte order
    (``uint8`` images and labels for (Fashion-)MNIST).

    Raises ``ValueError`` naming the problem when the magic number is wrong, the type code
    is unknown, the header is cut short, or the data is shorter or longer than the header
    promises (a truncated download); ``FileNotFoundError`` if the file is missing.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot decompress IDX file ({exc}); "
                         f"the file is corrupt or truncated") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: IDX file too short for its 4-byte magic number "
                         f"({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number {raw[:4].hex()} "
                         f"(must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x} "
                         f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: IDX header truncated: {ndim} dimensions need "
                         f"{header_len} bytes, file has {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX data {kind}: header shape {shape} of {dtype} needs "
                         f"{expected} bytes, file has {actual}")
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
# MD5s of the files as published by Zalando Research (the values torchvision also checks).
# Debian's package re-compresses the files, so its .gz files have other checksums while
# their decompressed contents are the same; the loader therefore validates the IDX
# contents (shape, size, label range) rather than the .gz bytes.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist_dir(root: os.PathLike | str | None = None) -> Path:
    """The folder holding the Fashion-MNIST IDX files: ``root``, else
    ``$BNBOOK_FASHION_MNIST``, else ``/usr/share/datasets/fashion-mnist``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("BNBOOK_FASHION_MNIST")
    return Path(env) if env else _FASHION_MNIST_DEFAULT


def load_fashion_mnist(root: os.PathLike | str | None = None):
    """Fashion-MNIST as ``(x_train, y_train, x_test, y_test)``.

    ``x_*`` are ``uint8`` arrays of shape ``(60000, 28, 28)`` and ``(10000, 28, 28)``;
    ``y_*`` are ``int64`` labels in ``0..9`` of shape ``(60000,)`` and ``(10000,)``.
    ``root`` is the folder holding the four IDX ``.gz`` files (see :func:`fashion_mnist_dir`).
    """
    folder = fashion_mnist_dir(root)
    missing = [name for name in FASHION_MNIST_FILES.values() if not (folder / name).is_file()]
    if missing:
        sums = "\n".join(f"  {FASHION_MNIST_MD5[n]}  {n}" for n in FASHION_MNIST_FILES.values())
        raise FileNotFoundError(
            f"Fashion-MNIST files missing from {folder}: {', '.join(missing)}.\n"
            f"Get them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs "
            f"them in {_FASHION_MNIST_DEFAULT}), or download the four files from "
            f"{FASHION_MNIST_URL} (see https://github.com/zalandoresearch/fashion-mnist), "
            f"check their MD5 sums\n{sums}\nand point root= or $BNBOOK_FASHION_MNIST at "
            f"their folder.")
    arrays = {key: read_idx(folder / name) for key, name in FASHION_MNIST_FILES.items()}
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape != (n, 28, 28) or x.dtype != np.uint8:
            raise ValueError(f"{folder}: Fashion-MNIST {split} images have shape {x.shape} "
                             f"and dtype {x.dtype}, expected ({n}, 28, 28) uint8")
        if y.shape != (n,) or y.dtype != np.uint8 or y.max() > 9:
            raise ValueError(f"{folder}: Fashion-MNIST {split} labels have shape {y.shape}, "
                             f"dtype {y.dtype}, max {y.max()}; expected ({n},) uint8 in 0..9")
    return (arrays["x_train"], arrays["y_train"].astype(np.int64),
            arrays["x_test"], arrays["y_test"].astype(np.int64))


# --------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------
#
# Where CIFAR-10 comes from, in the order find_cifar10_source looks:
#
# 1. ``source=`` or ``$BNBOOK_CIFAR10``: an archive or a folder, any of the layouts below;
# 2. in the data directory, the canonical archive ``cifar-10-python.tar.gz`` or its
#    extracted ``cifar-10-batches-py/``;
# 3. in the data directory, an image-folder tree (the data directory itself or one of its
#    sub-folders holding ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``) or a
#    ``.tar.gz`` of one;
# 4. otherwise (``download=True``) the canonical archive is downloaded into the data
#    directory from CIFAR10_URL and its MD5 checked before it is renamed into place.
#
# The canonical batches are Python pickles, and unpickling runs code named by the file.
# Two guards keep a tampered or damaged file from doing that: the archive's MD5 (or, for
# an extracted folder, each batch file's MD5) is checked against the published value
# before anything is unpickled, and the unpickler itself only resolves the handful of
# globals a pickled NumPy array needs (see _ArrayUnpickler). Archives are read member by
# member in memory, never extracted by the loaders; extract_archive exists for readers who
# want the files on disk and uses tarfile's "data" filter.

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_BATCHES_DIR = "cifar-10-batches-py"
# Published MD5 of the archive and of its members (the values torchvision also checks).
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_SHAPE = (32, 32, 3)
_SPLITS = ("train", "test")
_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test")
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_MEMBER_RE = re.compile(r"^(?:.*/)?(train|test)/([^/]+)/([^/]+)$")
_CHECKSUM_MEMO = "cifar10-checksums.json"

# layout -> the variant name recorded in results
_VARIANTS = {
    "python-archive": "canonical",
    "python-batches-dir": "canonical",
    "image-folder-archive": "jpeg-image-folder",
    "image-folder-dir": "jpeg-image-folder",
}


def resolve_data_dir(path: os.PathLike | str | None = None) -> Path:
    """The data directory: ``path``, else ``$BNBOOK_DATA``, else ``<repo>/data/cache``.

    The canonical CIFAR-10 archive is looked for (and downloaded) here, and decoded
    arrays are cached here.
    """
    if path is not None:
        return Path(path)
    env = os.environ.get("BNBOOK_DATA")
    return Path(env) if env else REPO_ROOT / "data" / "cache"


class CIFAR10Source(NamedTuple):
    """A CIFAR-10 copy on disk: its ``path`` and ``layout``, one of ``"python-archive"``,
    ``"python-batches-dir"``, ``"image-folder-archive"``, ``"image-folder-dir"``."""

    path: Path
    layout: str

    @property
    def variant(self) -> str:
        """``"canonical"`` (the Toronto python batches) or ``"jpeg-image-folder"``."""
        return _VARIANTS[self.layout]


def _is_image_folder(path: Path) -> bool:
    return all((path / split).is_dir()
               and any((path / split / c).is_dir() for c in CIFAR10_CLASSES)
               for split in _SPLITS)


def _archive_layout(path: Path, max_members: int = 64) -> str | None:
    """Peek at an archive's first members: ``"python-archive"``, ``"image-folder-archive"``
    or ``None`` (neither). Only tar headers are read; nothing is unpickled."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for i, member in enumerate(tar):
                base = member.name.rstrip("/").rsplit("/", 1)[-1]
                if member.isfile() and base in CIFAR10_BATCH_MD5:
                    return "python-archive"
                if member.isfile() and _MEMBER_RE.match(member.name):
                    return "image-folder-archive"
                if i >= max_members:
                    break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated archive ({exc})") from exc
    return None


def _layout_of(path: Path) -> CIFAR10Source | None:
    """The layout of ``path`` (an archive or folder), or ``None`` if it holds no CIFAR-10."""
    if path.is_dir():
        if (path / "data_batch_1").is_file():
            return CIFAR10Source(path, "python-batches-dir")
        if (path / CIFAR10_BATCHES_DIR / "data_batch_1").is_file():
            return CIFAR10Source(path / CIFAR10_BATCHES_DIR, "python-batches-dir")
        if _is_image_folder(path):
            return CIFAR10Source(path, "image-folder-dir")
        return None
    if path.is_file():
        layout = _archive_layout(path)
        return CIFAR10Source(path, layout) if layout else None
    return None


def find_cifar10_source(data_dir: os.PathLike | str | None = None,
                        source: os.PathLike | str | None = None) -> CIFAR10Source | None:
    """Locate CIFAR-10 on disk without downloading; ``None`` if there is none.

    ``source`` (else ``$BNBOOK_CIFAR10``), when given, must exist and hold CIFAR-10 in one
    of the four layouts (see :class:`CIFAR10Source`); otherwise the data directory is
    searched: ``cifar-10-python.tar.gz``, then ``cifar-10-batches-py/``, then an image-folder
    tree (the directory itself, then its sub-folders in name order), then image-folder
    ``*.tar.gz`` archives in name order.
    """
    explicit = source if source is not None else (os.environ.get("BNBOOK_CIFAR10") or None)
    if explicit is not None:
        path = Path(explicit)
        who = "source" if source is not None else "$BNBOOK_CIFAR10"
        if not path.exists():
            raise FileNotFoundError(f"{who} names {path}, which does not exist")
        found = _layout_of(path)
        if found is None:
            raise ValueError(
                f"{who} names {path}, which holds no CIFAR-10: expected "
                f"{CIFAR10_ARCHIVE}, a {CIFAR10_BATCHES_DIR}/ folder, or an image folder "
                f"(train/<class>/*.jpg, test/<class>/*.jpg) or a .tar.gz of one")
        return found
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        return None
    archive = root / CIFAR10_ARCHIVE
    if archive.is_file():
        return CIFAR10Source(archive, "python-archive")
    if (root / CIFAR10_BATCHES_DIR / "data_batch_1").is_file():
        return CIFAR10Source(root / CIFAR10_BATCHES_DIR, "python-batches-dir")
    if _is_image_folder(root):
        return CIFAR10Source(root, "image-folder-dir")
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if _is_image_folder(sub):
            return CIFAR10Source(sub, "image-folder-dir")
    for tgz in sorted(root.glob("*.tar.gz")):
        if _archive_layout(tgz) == "image-folder-archive":
            return CIFAR10Source(tgz, "image-folder-archive")
    return None


# --- checksums ------------------------------------------------------------------------

def _file_digests(path: Path, chunk: int = 1 << 20) -> tuple[str, str]:
    """``(sha256, md5)`` of a file in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _dir_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def _stamp(path: Path) -> str:
    """A cheap fingerprint (sizes and modification times) that changes when contents do."""
    files = [path] if path.is_file() else _dir_files(path)
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path).as_posix() if f != path else ''}\0{st.st_size}\0"
                 f"{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _compute_checksums(src: CIFAR10Source) -> dict:
    """``sha256`` of the source (for a folder: of its sorted ``path<NUL>sha256`` lines), plus
    ``md5`` for an archive and per-file ``md5s`` for a canonical batches folder."""
    if src.path.is_file():
        sha, md5 = _file_digests(src.path)
        return {"sha256": sha, "md5": md5}
    h, md5s = hashlib.sha256(), {}
    for f in _dir_files(src.path):
        rel = f.relative_to(src.path).as_posix()
        sha, md5 = _file_digests(f)
        h.update(f"{rel}\0{sha}\n".encode())
        if src.layout == "python-batches-dir" and rel in CIFAR10_BATCH_MD5:
            md5s[rel] = md5
    out = {"sha256": h.hexdigest()}
    if md5s:
        out["md5s"] = md5s
    return out


def _checksums(src: CIFAR10Source, cache_dir: Path) -> dict:
    """:func:`_compute_checksums`, remembered in ``<cache_dir>/cifar10-checksums.json`` under
    the source's path and size/mtime fingerprint, so an unchanged source is hashed once."""
    memo_path = cache_dir / _CHECKSUM_MEMO
    key = f"{src.layout}:{src.path.resolve()}"
    stamp = _stamp(src.path)
    memo = {}
    try:
        with open(memo_path) as f:
            memo = json.load(f)
        entry = memo.get(key)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            return entry["checksums"]
    except (OSError, ValueError, AttributeError):
        memo = {}
    sums = _compute_checksums(src)
    if not isinstance(memo, dict):
        memo = {}
    memo[key] = {"stamp": stamp, "checksums": sums}
    try:
        atomic_write_json(memo_path, memo)
    except OSError:
        pass  # a read-only data directory only costs re-hashing next time
    return sums


def _verify(src: CIFAR10Source, sums: dict, md5: str, batch_md5: dict) -> None:
    """Refuse a canonical source whose checksums differ from the published ones."""
    if src.layout == "python-archive" and sums["md5"] != md5:
        raise ValueError(
            f"{src.path}: MD5 {sums['md5']} differs from the expected {md5}: the archive is "
            f"corrupt, truncated or not the canonical CIFAR-10; refusing to unpickle it. "
            f"Delete it and download {CIFAR10_URL} again.")
    if src.layout == "python-batches-dir":
        got = sums.get("md5s", {})
        for name, want in batch_md5.items():
            if name not in got:
                raise ValueError(f"{src.path}: missing {name}")
            if got[name] != want:
                raise ValueError(
                    f"{src.path / name}: MD5 {got[name]} differs from the expected {want}; "
                    f"refusing to unpickle it. Delete {src.path} and re-extract "
                    f"{CIFAR10_ARCHIVE}.")


def cifar10_info(data_dir: os.PathLike | str | None = None,
                 source: os.PathLike | str | None = None, *,
                 md5: str = CIFAR10_MD5, batch_md5: dict | None = None) -> dict:
    """Which CIFAR-10 :func:`load_cifar10` reads, for a result's provenance.

    Returns ``dict(variant=..., sha256=..., path=..., layout=...)``: ``variant`` is
    ``"canonical"`` (the Toronto python batches, MD5-checked) or ``"jpeg-image-folder"``
    (a re-encoded copy whose pixels differ slightly from the canonical ones); ``sha256``
    is the archive's SHA-256 or, for a folder, the SHA-256 of its sorted
    ``relative-path<NUL>file-sha256`` lines. Never downloads: raises ``FileNotFoundError``
    when no copy is on disk. ``md5``/``batch_md5`` are the expected checksums (defaults:
    the published ones).
    """
    cache_dir = resolve_data_dir(data_dir)
    src = find_cifar10_source(cache_dir, source)
    if src is None:
        raise FileNotFoundError(_missing_message(cache_dir))
    sums = _checksums(src, cache_dir)
    _verify(src, sums, md5, CIFAR10_BATCH_MD5 if batch_md5 is None else batch_md5)
    return {"variant": src.variant, "sha256": sums["sha256"],
            "path": str(src.path.resolve()), "layout": src.layout}


def _missing_message(cache_dir: Path) -> str:
    return (f"no CIFAR-10 found. Put the canonical archive at {cache_dir / CIFAR10_ARCHIVE} "
            f"(download {CIFAR10_URL} elsewhere; MD5 {CIFAR10_MD5}), or set $BNBOOK_CIFAR10 "
            f"to a copy (an archive, {CIFAR10_BATCHES_DIR}/, or an image-folder tree or "
            f".tar.gz of one), or set $BNBOOK_DATA to the folder that holds one.")


# --- downloading ----------------------------------------------------------------------

def download_file(url: str, dest: os.PathLike | str, md5: str, progress: bool = True,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, checking its MD5; return ``dest``.

    The bytes go to a temporary file beside ``dest`` (``.<name>.*.part``) which is renamed
    to ``dest`` only once the MD5 matches, so ``dest`` is either absent or complete; the
    temporary file is removed on any failure, including an interrupt. ``url`` may be
    ``http(s)://`` or ``file://``. Raises ``ValueError`` on a checksum or length mismatch
    and ``ConnectionError`` (naming ``dest``) when the URL cannot be fetched.
    """
    import http.client
    import tempfile
    import urllib.error
    import urllib.request

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as out, \
                    urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                bar = _byte_bar(total, progress, dest.name)
                size = 0
                try:
                    for block in iter(lambda: resp.read(1 << 20), b""):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
                        bar.update(len(block))
                finally:
                    bar.close()
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(
                f"could not download {url} ({reason}). If this machine is offline, download "
                f"it elsewhere, check that its MD5 is {md5}, and put it at {dest}") from exc
        if total is not None and size != total:
            raise ValueError(f"download of {url} stopped after {size} of {total} bytes")
        if digest.hexdigest() != md5:
            raise ValueError(f"download of {url} has MD5 {digest.hexdigest()}, expected "
                             f"{md5}; the file was discarded")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _byte_bar(total, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)


# --- safe extraction ------------------------------------------------------------------

def _check_member_name(archive: Path, name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"{archive}: refusing archive member {name!r}: "
                         f"absolute path or '..' (path traversal)")


def extract_archive(archive: os.PathLike | str, dest: os.PathLike | str) -> Path:
    """Extract a tar archive into the new folder ``dest``; return ``dest``.

    Uses tarfile's ``"data"`` filter, which refuses members that would land outside
    ``dest`` (``../x``, absolute paths, links pointing out) and special files. The archive
    is extracted into a temporary folder beside ``dest`` that is renamed into place at the
    end and deleted on failure, so ``dest`` never holds half an archive. Raises
    ``FileExistsError`` if ``dest`` exists and ``ValueError`` for an unsafe member or a
    corrupt archive. (The loaders read archives in memory and do not need this.)
    """
    import shutil
    import tempfile

    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists; extract into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.FilterError as exc:
            raise ValueError(f"{archive}: unsafe member refused ({exc})") from exc
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{archive}: corrupt or truncated archive ({exc})") from exc
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


# --- decoding -------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only what a pickled dict of NumPy arrays needs.

    A CIFAR-10 batch is a dict of bytes keys, lists of ints and one ``uint8`` array; its
    pickle names four globals: NumPy's array reconstructor, ``ndarray`` and ``dtype``, and
    ``_codecs.encode`` (which protocol-2 pickles written by Python 3 use for bytes). Any
    other global (``os.system``, ``builtins.eval``, ...) raises ``UnpicklingError``, so a
    crafted file cannot run code even if it got past the checksum.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a "
                                         f"CIFAR-10 batch")
        return super().find_class(*target)


def _unpickle_batch(data: bytes, name: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # a damaged pickle raises many types
        raise ValueError(f"{name}: cannot read CIFAR-10 batch ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: CIFAR-10 batch is a {type(obj).__name__}, expected a dict")
    return obj


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 32, 32, 3)`` and labels ``(N,)`` from one canonical batch, whose
    ``b'data'`` rows are 3072 bytes: the 1024 red values, then green, then blue, each plane
    in row-major order."""
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        desc = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise ValueError(f"{name}: b'data' is {desc}, expected a uint8 (N, 3072) array")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{name}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{name}: labels outside 0..9")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels


def _assemble_python_batches(blobs: dict, origin: str):
    """``blobs`` maps batch file names to their bytes (already checksum-verified)."""
    missing = [n for n in (*_TRAIN_BATCHES, "test_batch", "batches.meta") if n not in blobs]
    if missing:
        raise ValueError(f"{origin}: missing {', '.join(missing)}")
    meta = _unpickle_batch(blobs["batches.meta"], f"{origin}: batches.meta")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n)
                  for n in meta.get(b"label_names", ()))
    if names != CIFAR10_CLASSES:
        raise ValueError(f"{origin}: label_names {names} differ from {CIFAR10_CLASSES}")
    parts = {}
    for name in (*_TRAIN_BATCHES, "test_batch"):
        parts[name] = _batch_arrays(_unpickle_batch(blobs[name], f"{origin}: {name}"),
                                    f"{origin}: {name}")
    x_train = np.concatenate([parts[n][0] for n in _TRAIN_BATCHES])
    y_train = np.concatenate([parts[n][1] for n in _TRAIN_BATCHES])
    return x_train, y_train, parts["test_batch"][0], parts["test_batch"][1]


def read_python_archive(path: os.PathLike | str, md5: str = CIFAR10_MD5):
    """Read the canonical ``cifar-10-python.tar.gz`` into ``(x_train, y_train, x_test,
    y_test)`` (``uint8 (N, 32, 32, 3)``, ``int64 (N,)``, canonical order).

    The whole archive is read into memory and its MD5 compared with ``md5`` before any
    member is unpickled (so the bytes checked are the bytes used); members are read in
    memory with :class:`_ArrayUnpickler`, never extracted.
    """
    path = Path(path)
    raw = path.read_bytes()
    got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if got != md5:
        raise ValueError(f"{path}: MD5 {got} differs from the expected {md5}: the archive is "
                         f"corrupt, truncated or not the canonical CIFAR-10; refusing to "
                         f"unpickle it")
    blobs = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
            for member in tar:
                _check_member_name(path, member.name)
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in CIFAR10_BATCH_MD5:
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated archive ({exc})") from exc
    return _assemble_python_batches(blobs, str(path))


def read_python_batches_dir(path: os.PathLike | str, batch_md5: dict | None = None):
    """Read an extracted ``cifar-10-batches-py/`` folder (see :func:`read_python_archive`).

    Each file's MD5 is checked against ``batch_md5`` (default: the published values)
    before it is unpickled, and unpickling is restricted as for the archive.
    """
    path = Path(path)
    batch_md5 = CIFAR10_BATCH_MD5 if batch_md5 is None else batch_md5
    blobs = {}
    for name, want in batch_md5.items():
        f = path / name
        if not f.is_file():
            raise ValueError(f"{path}: missing {name}")
        raw = f.read_bytes()
        got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        if got != want:
            raise ValueError(f"{f}: MD5 {got} differs from the expected {want}; refusing to "
                             f"unpickle it")
        blobs[name] = raw
    return _assemble_python_batches(blobs, str(path))


def _decode_image(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types for bad files
        raise ValueError(f"{name}: cannot decode image ({exc})") from exc
    if arr.shape != _CIFAR10_SHAPE:
        raise ValueError(f"{name}: image has shape {arr.shape}, expected {_CIFAR10_SHAPE}")
    return arr


def _progress(iterable, enabled: bool, desc: str, total=None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="file", leave=False)


def read_image_folder(path: os.PathLike | str, progress: bool = False):
    """Decode an image-folder CIFAR-10 (a directory or a ``.tar``/``.tar.gz`` of one).

    Layout: ``[prefix/]train/<class>/<file>.jpg`` and ``[prefix/]test/<class>/<file>.jpg``
    with ``<class>`` one of :data:`CIFAR10_CLASSES`; the label is the class's index. Images
    are decoded with Pillow to RGB and must be 32x32. Within a split, images are ordered by
    label, then file name. Archive members are read in memory, never extracted, and a
    member whose name is absolute or contains ``..`` is refused (``ValueError``). Returns
    ``(x_train, y_train, x_test, y_test)`` as ``uint8 (N, 32, 32, 3)`` and ``int64 (N,)``.
    """
    path = Path(path)
    records = {split: [] for split in _SPLITS}
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}

    def add(name: str, read):
        m = _MEMBER_RE.match(name)
        if not m or not name.lower().endswith(_JPEG_SUFFIXES):
            return
        split, cls, fname = m.groups()
        if cls not in class_index:
            raise ValueError(f"{path}: {name}: unknown class {cls!r}; "
                             f"expected one of {CIFAR10_CLASSES}")
        records[split].append((class_index[cls], fname, _decode_image(read(), name)))

    if path.is_dir():
        files = _dir_files(path)
        for f in _progress(files, progress, f"decoding {path.name}"):
            add(f.relative_to(path).as_posix(), f.read_bytes)
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in _progress(tar, progress, f"decoding {path.name}"):
                    _check_member_name(path, member.name)
                    if member.isfile():
                        add(member.name, lambda m=member: tar.extractfile(m).read())
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated archive ({exc})") from exc
    out = []
    for split in _SPLITS:
        items = sorted(records[split], key=lambda r: (r[0], r[1]))
        if not items:
            raise ValueError(f"{path}: no {split} images found "
                             f"(expected {split}/<class>/*.jpg)")
        out.append(np.stack([r[2] for r in items]))
        out.append(np.array([r[0] for r in items], dtype=np.int64))
    return tuple(out)


# --- the .npy cache -------------------------------------------------------------------

def _cache_paths(cache_dir: Path, sha256: str) -> dict:
    stem = f"cifar10-{sha256[:16]}"
    paths = {k: cache_dir / f"{stem}-{k}.npy" for k in _CACHE_KEYS}
    paths["meta"] = cache_dir / f"{stem}.json"
    return paths


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_cache(cache_dir: Path, info: dict, arrays) -> None:
    """Write the four arrays, then the JSON that marks the cache complete (written last)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = _cache_paths(cache_dir, info["sha256"])
    for key, arr in zip(_CACHE_KEYS, arrays):
        _save_npy_atomic(paths[key], arr)
    atomic_write_json(paths["meta"], {**info, "shapes": {k: list(a.shape) for k, a in
                                                          zip(_CACHE_KEYS, arrays)}})


def _read_cache(cache_dir: Path, sha256: str):
    """The cached arrays for ``sha256``, or ``None`` if absent or inconsistent."""
    paths = _cache_paths(cache_dir, sha256)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        with open(paths["meta"]) as f:
            meta = json.load(f)
        if meta.get("sha256") != sha256:
            return None
        arrays = tuple(np.load(paths[k], allow_pickle=False) for k in _CACHE_KEYS)
        for key, arr in zip(_CACHE_KEYS, arrays):
            want = (tuple(meta["shapes"][key]), np.dtype(np.uint8 if key[0] == "x" else np.int64))
            if (arr.shape, arr.dtype) != want:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return arrays


def load_cifar10(data_dir: os.PathLike | str | None = None,
                 source: os.PathLike | str | None = None,
                 download: bool = True, progress: bool = True, *,
                 url: str = CIFAR10_URL, md5: str = CIFAR10_MD5,
                 batch_md5: dict | None = None):
    """CIFAR-10 as ``(x_train, y_train, x_test, y_test)``.

    ``x_*`` are ``uint8`` arrays of shape ``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)``
    (height, width, RGB); ``y_*`` are ``int64`` labels indexing :data:`CIFAR10_CLASSES`.
    The canonical batches keep their order; an image folder is ordered by label, then name.

    ``source`` (or ``$BNBOOK_CIFAR10``) names the copy to read; otherwise it is searched
    for in ``data_dir`` (``$BNBOOK_DATA``, default ``<repo>/data/cache``; see
    :func:`find_cifar10_source`) and, if none is there and ``download`` is true, ``url`` is
    downloaded into ``data_dir`` and checked against ``md5`` (see :func:`download_file`).
    ``md5``/``batch_md5`` are the checksums a canonical archive/folder must have (defaults:
    the published ones). The decoded arrays are cached in ``data_dir`` as ``.npy`` files
    named by the source's SHA-256 and loaded with ``allow_pickle=False``, so a later call
    only reads the cache. Call :func:`cifar10_info` for the variant and checksum to record
    with a result.
    """
    cache_dir = resolve_data_dir(data_dir)
    batch_md5 = CIFAR10_BATCH_MD5 if batch_md5 is None else batch_md5
    src = find_cifar10_source(cache_dir, source)
    if src is None:
        if not download:
            raise FileNotFoundError(_missing_message(cache_dir) + " (download=False)")
        dest = download_file(url, cache_dir / CIFAR10_ARCHIVE, md5, progress=progress)
        src = CIFAR10Source(dest, "python-archive")
    sums = _checksums(src, cache_dir)
    _verify(src, sums, md5, batch_md5)
    cached = _read_cache(cache_dir, sums["sha256"])
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    if src.layout == "python-archive":
        arrays = read_python_archive(src.path, md5)
    elif src.layout == "python-batches-dir":
        arrays = read_python_batches_dir(src.path, batch_md5)
    else:
        arrays = read_image_folder(src.path, progress=progress)
    info = {"variant": src.variant, "layout": src.layout, "sha256": sums["sha256"],
            "path": str(src.path.resolve()),
            "decode_seconds": round(time.perf_counter() - t0, 3)}
    try:
        _write_cache(cache_dir, info, arrays)
    except OSError as exc:
        warnings.warn(f"could not cache decoded CIFAR-10 in {cache_dir} ({exc}); the next "
                      f"call will decode again", stacklevel=2)
    return arrays

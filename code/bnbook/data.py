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
* CIFAR-10: see :func:`find_cifar10_source` for the search order. Decoded arrays are cached
  as ``.npy`` files in the data directory (``$BNBOOK_DATA``, default ``<repo>/data/cache``),
  named by the source's SHA-256, so only the first call decodes.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np

from bnbook.provenance import REPO_ROOT, atomic_write_json, file_sha256

__all__ = [
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_URL",
    "CIFAR10_CLASSES",
    "read_idx",
    "fashion_mnist_dir",
    "load_fashion_mnist",
    "resolve_data_dir",
    "find_cifar10_source",
    "cifar10_info",
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

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_CIFAR10_SHAPE = (32, 32, 3)
_SPLITS = ("train", "test")
_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


def resolve_data_dir(path: os.PathLike | str | None = None) -> Path:
    """The data directory: ``path``, else ``$BNBOOK_DATA``, else ``<repo>/data/cache``.

    The canonical CIFAR-10 archive is looked for (and downloaded) here, and decoded
    arrays are cached here.
    """
    if path is not None:
        return Path(path)
    env = os.environ.get("BNBOOK_DATA")
    return Path(env) if env else REPO_ROOT / "data" / "cache"


def find_cifar10_source(data_dir: os.PathLike | str | None = None,
                        source: os.PathLike | str | None = None) -> tuple[Path, str] | None:
    """Locate CIFAR-10 on disk; return ``(path, variant)`` or ``None`` if nothing is found.

    Search order: ``source``, else ``$BNBOOK_CIFAR10`` (an archive or a folder, which must
    exist); then, in the data directory, an image-folder tree ``cifar10-images/`` or an
    image-folder archive ``cifar10-*.tar.gz``.
    """
    explicit = source if source is not None else os.environ.get("BNBOOK_CIFAR10") or None
    if explicit is not None:
        path = Path(explicit)
        if not path.exists():
            who = "source" if source is not None else "$BNBOOK_CIFAR10"
            raise FileNotFoundError(f"{who} names {path}, which does not exist")
        return path, _classify(path)
    root = resolve_data_dir(data_dir)
    for candidate in [root / "cifar10-images", *sorted(root.glob("cifar10-*.tar.gz"))]:
        if candidate.exists():
            return candidate, _classify(candidate)
    return None


def _classify(path: Path) -> str:
    """The variant a CIFAR-10 source holds, judged from its layout."""
    if path.is_dir():
        if _is_image_folder(path):
            return "jpeg-image-folder"
        raise ValueError(f"{path}: not a CIFAR-10 image folder: expected sub-folders "
                         f"train/<class>/ and test/<class>/ with <class> in {CIFAR10_CLASSES}")
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return "jpeg-image-folder"
    raise ValueError(f"{path}: unrecognised CIFAR-10 source; expected an image-folder "
                     f"directory or a .tar.gz of one")


def _is_image_folder(path: Path) -> bool:
    return all((path / split).is_dir() and any((path / split / c).is_dir()
                                               for c in CIFAR10_CLASSES) for split in _SPLITS)


def _source_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder's sorted ``relative-path<NUL>file-sha256`` lines."""
    if path.is_file():
        return file_sha256(path)
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def cifar10_info(data_dir: os.PathLike | str | None = None,
                 source: os.PathLike | str | None = None) -> dict:
    """Which CIFAR-10 :func:`load_cifar10` would read: ``dict(variant, sha256, path)``.

    ``variant`` is ``"canonical"`` (the Toronto python archive) or ``"jpeg-image-folder"``
    (a re-encoded copy whose pixels differ slightly). Raises ``FileNotFoundError`` when no
    copy is on disk (this function never downloads).
    """
    found = find_cifar10_source(data_dir, source)
    if found is None:
        raise FileNotFoundError(f"no CIFAR-10 found in {resolve_data_dir(data_dir)} "
                                f"and $BNBOOK_CIFAR10 is not set")
    path, variant = found
    return {"variant": variant, "sha256": _source_sha256(path), "path": str(path.resolve())}


_MEMBER_RE = re.compile(r"^(?:.*/)?(train|test)/([^/]+)/([^/]+)$")


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


def _stack(records: dict, origin: str):
    """``records[split]`` is a list of ``(class_index, name, image)``; sort by class then
    name and stack into ``(x_train, y_train, x_test, y_test)``."""
    out = []
    for split in _SPLITS:
        items = sorted(records[split], key=lambda r: (r[0], r[1]))
        if not items:
            raise ValueError(f"{origin}: no {split} images found (expected {split}/<class>/*)")
        out.append(np.stack([r[2] for r in items]))
        out.append(np.array([r[0] for r in items], dtype=np.int64))
    return tuple(out)


def _progress(iterable, enabled: bool, desc: str, total=None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="img", leave=False)


def read_image_folder(path: os.PathLike | str, progress: bool = False):
    """Decode an image-folder CIFAR-10 (a directory or a ``.tar``/``.tar.gz`` of one).

    Layout: ``[prefix/]train/<class>/<file>`` and ``[prefix/]test/<class>/<file>`` with
    ``<class>`` one of :data:`CIFAR10_CLASSES`; the label is the class's index. Images
    are decoded with Pillow to RGB and must be 32x32. Within a split, images are ordered by
    label, then file name. Archive members are read in memory, never extracted, and a member
    whose name is absolute or contains ``..`` is refused. Returns
    ``(x_train, y_train, x_test, y_test)`` as ``uint8 (N, 32, 32, 3)`` and ``int64 (N,)``.
    """
    path = Path(path)
    records = {split: [] for split in _SPLITS}
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}

    def add(name: str, data_fn):
        m = _MEMBER_RE.match(name)
        if not m or not name.lower().endswith(_IMAGE_SUFFIXES):
            return
        split, cls, fname = m.groups()
        if cls not in class_index:
            raise ValueError(f"{path}: {name}: unknown class {cls!r}; "
                             f"expected one of {CIFAR10_CLASSES}")
        records[split].append((class_index[cls], fname, _decode_image(data_fn(), name)))

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
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
    return _stack(records, str(path))


def _check_member_name(archive: Path, name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"{archive}: refusing archive member {name!r}: "
                         f"absolute path or '..' (path traversal)")


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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    import json

    paths = _cache_paths(cache_dir, sha256)
    if not all(p.is_file() for p in paths.values()):
        return None
    try:
        with open(paths["meta"]) as f:
            meta = json.load(f)
        if meta.get("sha256") != sha256:
            return None
        arrays = tuple(np.load(paths[k], allow_pickle=False) for k in _CACHE_KEYS)
    except (OSError, ValueError):
        return None
    for key, arr in zip(_CACHE_KEYS, arrays):
        want = (tuple(meta["shapes"][key]), np.uint8 if key[0] == "x" else np.int64)
        if (arr.shape, arr.dtype) != want:
            return None
    return arrays


def load_cifar10(data_dir: os.PathLike | str | None = None,
                 source: os.PathLike | str | None = None,
                 download: bool = True, progress: bool = True):
    """CIFAR-10 as ``(x_train, y_train, x_test, y_test)``.

    ``x_*`` are ``uint8`` arrays of shape ``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)``
    (height, width, RGB); ``y_*`` are ``int64`` labels indexing :data:`CIFAR10_CLASSES`.

    ``source`` (or ``$BNBOOK_CIFAR10``) names the copy to read; otherwise it is searched
    for in ``data_dir`` (see :func:`find_cifar10_source`). The decoded arrays are cached in
    ``data_dir`` as ``.npy`` files named by the source's SHA-256 and loaded with
    ``allow_pickle=False``; a later call with the same source only reads the cache.
    Call :func:`cifar10_info` for the variant and checksum to record with a result.
    """
    cache_dir = resolve_data_dir(data_dir)
    found = find_cifar10_source(cache_dir, source)
    if found is None:
        raise FileNotFoundError(
            f"no CIFAR-10 found: set $BNBOOK_CIFAR10 to an image-folder archive, or put "
            f"one in {cache_dir}")
    path, variant = found
    sha = _source_sha256(path)
    cached = _read_cache(cache_dir, sha)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    arrays = read_image_folder(path, progress=progress)
    info = {"variant": variant, "sha256": sha, "path": str(path.resolve()),
            "decode_seconds": round(time.perf_counter() - t0, 3)}
    _write_cache(cache_dir, info, arrays)
    return arrays

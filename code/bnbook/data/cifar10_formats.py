"""CIFAR-10's file formats: reading the canonical python batches and image folders safely.

Two formats hold CIFAR-10 on disk:

* the canonical Toronto release: ``cifar-10-python.tar.gz`` holding
  ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, Python pickles whose
  ``b'data'`` rows are the 1024 red values, then green, then blue of each 32x32 image;
* an image folder (the JPEG re-encoding the book's CI uses): ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg``, as a tree or a ``.tar``/``.tar.gz`` of one.

Unpickling runs code named by the file, so two guards keep a tampered or damaged batch from
doing that: its MD5 (the archive's, or each batch file's) is checked against the published
value before anything is unpickled, and the unpickler itself only resolves the handful of
globals a pickled NumPy array needs (:class:`_ArrayUnpickler`). Archives are read member by
member in memory, never extracted by the readers, and members named with ``..`` or an
absolute path are refused; :func:`extract_archive` exists for readers who want the files on
disk and uses tarfile's ``"data"`` filter.

Every reader returns ``(x_train, y_train, x_test, y_test)``: ``uint8 (N, 32, 32, 3)``
(height, width, RGB) and ``int64 (N,)`` labels indexing :data:`CIFAR10_CLASSES`.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_BATCH_MD5",
    "dir_files",
    "is_image_folder",
    "archive_layout",
    "check_member_name",
    "extract_archive",
    "read_python_archive",
    "read_python_batches_dir",
    "read_image_folder",
    "count_images",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
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
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_MEMBER_RE = re.compile(r"^(?:.*/)?(train|test)/([^/]+)/([^/]+)$")
# What a damaged archive raises, depending on where the damage is.
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


def dir_files(path: Path) -> list[Path]:
    """Every file under ``path`` whose name does not start with a dot, sorted."""
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


# --- recognising a layout -------------------------------------------------------------

def is_image_folder(path: Path) -> bool:
    """Whether the folder ``path`` holds ``train/<class>/`` and ``test/<class>/`` folders."""
    return all((path / split).is_dir()
               and any((path / split / c).is_dir() for c in CIFAR10_CLASSES)
               for split in _SPLITS)


def archive_layout(path: Path, max_members: int = 64) -> str | None:
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
    except _TAR_ERRORS as exc:
        raise ValueError(f"{path}: corrupt or truncated archive ({exc})") from exc
    return None


# --- safe extraction ------------------------------------------------------------------

def check_member_name(archive: Path, name: str) -> None:
    """Refuse (``ValueError``) an archive member named with an absolute path or ``..``."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"{archive}: refusing archive member {name!r}: "
                         f"absolute path or '..' (path traversal)")


def extract_archive(archive: os.PathLike | str, dest: os.PathLike | str) -> Path:
    """Extract a tar archive into the new folder ``dest``; return ``dest``.

    Uses tarfile's ``"data"`` filter: it refuses members that would land outside ``dest``
    (``../x``, links pointing out) and special files, and strips the leading ``/`` of an
    absolute member name, so such a member lands inside ``dest``. The archive
    is extracted into a temporary folder beside ``dest`` that is renamed into place at the
    end and deleted on failure, so ``dest`` never holds half an archive. Raises
    ``FileExistsError`` if ``dest`` exists and ``ValueError`` for an unsafe member or a
    corrupt archive. (The loaders read archives in memory and do not need this.)
    """
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
        except _TAR_ERRORS as exc:
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
                check_member_name(path, member.name)
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in CIFAR10_BATCH_MD5:
                    blobs[base] = tar.extractfile(member).read()
    except _TAR_ERRORS as exc:
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


# A CIFAR-10 image file is about 1 KB (JPEG) to 3 KB (PNG); anything far larger is not one,
# and is refused before it is read into memory or decoded.
MAX_IMAGE_FILE_BYTES = 1 << 20


def _decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode one 32x32 image to ``uint8 (32, 32, 3)`` RGB; the size in the file's header is
    checked before any pixel is decoded, so a huge image costs no memory."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != _CIFAR10_SHAPE[1::-1]:
                raise ValueError(f"{name}: image is {img.size[0]}x{img.size[1]} pixels, "
                                 f"expected {_CIFAR10_SHAPE[1]}x{_CIFAR10_SHAPE[0]}")
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ValueError:
        raise
    except Exception as exc:  # Pillow raises many types for bad files
        raise ValueError(f"{name}: cannot decode image ({exc})") from exc
    return arr


def _check_image_size(name: str, size: int) -> None:
    if size > MAX_IMAGE_FILE_BYTES:
        raise ValueError(f"{name}: {size:,} bytes is not a CIFAR-10 image (at most "
                         f"{MAX_IMAGE_FILE_BYTES:,} bytes are read); refusing to read it")


def _progress(iterable, enabled: bool, desc: str, total=None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="file", leave=False)


def _image_names(path: Path) -> list[str]:
    """The image members of an image-folder copy (a folder or a tar), in stored order."""
    if path.is_dir():
        names = [f.relative_to(path).as_posix() for f in dir_files(path)]
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                names = [m.name for m in tar if m.isfile()]
        except _TAR_ERRORS as exc:
            raise ValueError(f"{path}: corrupt or truncated archive ({exc})") from exc
    return [n for n in names if _MEMBER_RE.match(n) and n.lower().endswith(_JPEG_SUFFIXES)]


def _refuse_duplicates(path: Path, names: list[str]) -> None:
    seen, dups = set(), []
    for name in names:
        key = _MEMBER_RE.match(name).groups()
        (dups.append(name) if key in seen else seen.add(key))
    if dups:
        raise ValueError(f"{path}: {len(dups)} duplicate image member(s), e.g. {dups[0]!r}: "
                         f"each image must appear once; the copy is not a CIFAR-10 copy")


def count_images(path: os.PathLike | str) -> dict:
    """``{"train": n, "test": n}``: the images of an image-folder copy (folder or tar);
    refuses (``ValueError``) a copy holding the same image twice."""
    path = Path(path)
    names = _image_names(path)
    _refuse_duplicates(path, names)
    return {split: sum(_MEMBER_RE.match(n).group(1) == split for n in names)
            for split in _SPLITS}


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
    seen = set()

    def add(name: str, read):
        m = _MEMBER_RE.match(name)
        if not m or not name.lower().endswith(_JPEG_SUFFIXES):
            return
        split, cls, fname = m.groups()
        if (split, cls, fname) in seen:
            _refuse_duplicates(path, [name, name])
        seen.add((split, cls, fname))
        if cls not in class_index:
            raise ValueError(f"{path}: {name}: unknown class {cls!r}; "
                             f"expected one of {CIFAR10_CLASSES}")
        records[split].append((class_index[cls], fname, _decode_image(read(), name)))

    if path.is_dir():
        files = dir_files(path)
        for f in _progress(files, progress, f"decoding {path.name}"):
            _check_image_size(str(f), f.stat().st_size)
            add(f.relative_to(path).as_posix(), f.read_bytes)
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in _progress(tar, progress, f"decoding {path.name}"):
                    check_member_name(path, member.name)
                    if member.isfile() and _MEMBER_RE.match(member.name):
                        _check_image_size(f"{path}: {member.name}", member.size)
                        add(member.name, lambda m=member: tar.extractfile(m).read())
                # Read the compressed stream to its end: gzip checks its CRC only there.
                while tar.fileobj.read(1 << 20):
                    pass
        except _TAR_ERRORS as exc:
            raise ValueError(f"{path}: corrupt or truncated archive ({exc})") from exc
    out = []
    for split in _SPLITS:
        items = sorted(records[split], key=lambda r: (r[0], r[1]))
        missing = sorted(set(range(len(CIFAR10_CLASSES))) - {r[0] for r in items})
        if missing:
            raise ValueError(f"{path}: no {split} images of class "
                             f"{', '.join(CIFAR10_CLASSES[i] for i in missing)} "
                             f"(expected {split}/<class>/*.jpg for all 10 classes); the copy "
                             f"is incomplete")
        out.append(np.stack([r[2] for r in items]))
        out.append(np.array([r[0] for r in items], dtype=np.int64))
    return tuple(out)


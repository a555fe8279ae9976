"""Fashion-MNIST: where the four IDX files come from, how they are checked, and loading them.

:func:`load_fashion_mnist` returns ``(x_train, y_train, x_test, y_test)``: ``uint8`` images
``(60000, 28, 28)`` and ``(10000, 28, 28)``, ``int64`` labels in ``0..9``.

Where the files come from (:func:`provide_fashion_mnist`, which the loader calls):

1. ``$BNBOOK_FASHION_MNIST``, a folder holding the four ``.gz`` files, used in place;
2. the data directory's ``fashion-mnist/`` (``$BNBOOK_DATA``, default ``<repo>/data/cache``);
3. the mirror's ``fashion-mnist/`` (``$BNBOOK_MIRROR``), copied into the data directory;
4. Debian's package ``dataset-fashion-mnist`` (:data:`DEBIAN_FASHION_MNIST`), copied likewise;
5. a download from :data:`FASHION_MNIST_URL` (MD5-checked), into the data directory.

Checksums: the ``.gz`` wrappers differ between the published files and Debian's (re-made)
ones, while the IDX bytes inside are the same, so copies are checked against the SHA-256 of
the decompressed bytes (:data:`FASHION_MNIST_IDX_SHA256`); a download is also checked
against the published ``.gz`` MD5s (:data:`FASHION_MNIST_MD5`). :func:`fashion_mnist_info`
says which kind of copy is in use, for a result's provenance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bnbook.data.fetch import (announce, copy_verified, describe_size, download_file,
                               file_checksum, fingerprint, mirror_dir, mirror_has, recall,
                               remember, resolve_data_dir)
from bnbook.data.idx import idx_sha256, read_idx, read_idx_header

__all__ = [
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_IDX_SHA256",
    "FASHION_MNIST_URL",
    "FASHION_MNIST_DIR",
    "DEBIAN_FASHION_MNIST",
    "fashion_mnist_dir",
    "fashion_mnist_info",
    "provide_fashion_mnist",
    "load_fashion_mnist",
]

FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
# MD5s of the .gz files as published by Zalando Research (the values torchvision checks).
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# SHA-256 of the decompressed IDX bytes: the data itself, the same in every honest copy.
FASHION_MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# Sizes of the published .gz files, for the download message.
_GZ_BYTES = {
    "train-images-idx3-ubyte.gz": 26421880,
    "train-labels-idx1-ubyte.gz": 29515,
    "t10k-images-idx3-ubyte.gz": 4422102,
    "t10k-labels-idx1-ubyte.gz": 5148,
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_DIR = "fashion-mnist"  # the folder's name in the data directory and the mirror
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_MEMO = "fashion-mnist-checksums.json"
_SPLITS = (("train", 60000), ("test", 10000))
#: The shape each file's IDX header must declare (checked before a file is hashed or read).
_SHAPES = {FASHION_MNIST_FILES[f"{kind}_{split}"]: (n, 28, 28) if kind == "x" else (n,)
           for split, n in _SPLITS for kind in ("x", "y")}


def fashion_mnist_dir(root: os.PathLike | str | None = None,
                      data_dir: os.PathLike | str | None = None) -> Path:
    """The folder the loader reads: ``root``, else ``$BNBOOK_FASHION_MNIST``, else the data
    directory's ``fashion-mnist/`` (where :func:`provide_fashion_mnist` puts the files)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("BNBOOK_FASHION_MNIST")
    return Path(env) if env else resolve_data_dir(data_dir) / FASHION_MNIST_DIR


def _missing(folder: Path) -> list[str]:
    return [n for n in FASHION_MNIST_FILES.values() if not (folder / n).is_file()]


def _how_to_get(folder: Path, missing: list[str], reason: str, data_dir=None) -> str:
    """The message for missing files: every way to provide them, and the checksums."""
    target = resolve_data_dir(data_dir) / FASHION_MNIST_DIR
    sums = "\n".join(f"    {n}: .gz MD5 {FASHION_MNIST_MD5[n]} (as published), "
                     f"IDX SHA-256 {FASHION_MNIST_IDX_SHA256[n]}"
                     for n in FASHION_MNIST_FILES.values())
    return (
        f"Fashion-MNIST files missing from {folder}: {', '.join(missing)} ({reason}).\n"
        f"Any one of these provides them:\n"
        f"  * `make data` (or `python -m bnbook.data --only fashion-mnist`), which puts them "
        f"in {target} from the sources below;\n"
        f"  * set BNBOOK_FASHION_MNIST to a folder holding the four files (read in place), "
        f"or BNBOOK_DATA to a data directory whose {FASHION_MNIST_DIR}/ holds them;\n"
        f"  * set BNBOOK_MIRROR to a mirror folder with the files in {FASHION_MNIST_DIR}/ "
        f"(copied and checked);\n"
        f"  * `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs them in "
        f"{DEBIAN_FASHION_MNIST}, copied and checked);\n"
        f"  * download them from {FASHION_MNIST_URL} (see "
        f"https://github.com/zalandoresearch/fashion-mnist) into {target}.\n"
        f"Checksums (every honest copy has these IDX SHA-256s; re-made .gz files have other "
        f"MD5s):\n{sums}")


# --- checksums and variant ------------------------------------------------------------

def _variant(files: dict) -> str:
    """``"canonical-gz"`` (the published .gz files), ``"repacked-gz"`` (other .gz files,
    the published IDX bytes) or ``"unknown"`` (IDX bytes that match no published ones)."""
    names = FASHION_MNIST_FILES.values()
    if all(files[n]["md5"] == FASHION_MNIST_MD5[n] for n in names):
        return "canonical-gz"
    if all(files[n]["idx_sha256"] == FASHION_MNIST_IDX_SHA256[n] for n in names):
        return "repacked-gz"
    return "unknown"


def _describe(folder: Path, data_dir=None, origin: str | None = None) -> dict:
    """Checksums and variant of the four files in ``folder``, after each file's IDX header
    is checked against the data set's shape (a crafted header is refused before it is
    hashed). The files are hashed on every call: a file can change without its size or
    modification time changing. ``origin``, when given, is remembered in the data
    directory (keyed by path and a size/mtime fingerprint) with the checksums."""
    files = [folder / n for n in FASHION_MNIST_FILES.values()]
    for f in files:
        read_idx_header(f, _SHAPES[f.name])
    stamp, key = fingerprint(folder, files), str(folder.resolve())
    memo_path = resolve_data_dir(data_dir) / _MEMO
    entry = recall(memo_path, key, stamp)
    update = {"origin": origin} if origin and origin != entry.get("origin") else {}
    sums = {f.name: {"md5": file_checksum(f, "md5"), "idx_sha256": idx_sha256(f)}
            for f in files}
    if sums != entry.get("files"):
        update["files"] = sums
    if update:
        remember(memo_path, key, stamp, **update)
        entry = {**entry, **update}
    sums = entry["files"]
    return {"dataset": "fashion-mnist", "variant": _variant(sums),
            "idx_sha256": {n: s["idx_sha256"] for n, s in sums.items()},
            "gz_md5": {n: s["md5"] for n, s in sums.items()},
            "path": str(folder.resolve()), "origin": entry.get("origin")}


def fashion_mnist_info(root: os.PathLike | str | None = None,
                       data_dir: os.PathLike | str | None = None) -> dict:
    """Which Fashion-MNIST the loader reads, for a result's provenance. Never fetches.

    Returns ``{"dataset": "fashion-mnist", "variant": ..., "idx_sha256": {file: sha256},
    "gz_md5": {file: md5}, "path": ...}`` for the folder :func:`fashion_mnist_dir` names.
    ``variant`` is ``"canonical-gz"`` (the published .gz files), ``"repacked-gz"`` (.gz
    files re-made, e.g. by Debian, holding the published IDX bytes) or ``"unknown"`` (IDX
    bytes matching no published checksum: not Fashion-MNIST as published). Raises
    ``FileNotFoundError`` (saying how to get them) when files are missing.
    """
    folder = fashion_mnist_dir(root, data_dir)
    missing = _missing(folder)
    if missing:
        raise FileNotFoundError(_how_to_get(folder, missing, "not provisioned", data_dir))
    info = _describe(folder, data_dir)
    del info["origin"]
    return info


# --- provisioning ---------------------------------------------------------------------

def _check_copy(copy: Path, original: Path) -> None:
    """Refuse a copy whose decompressed IDX bytes are not the published ones."""
    want = FASHION_MNIST_IDX_SHA256[original.name]
    try:
        got = idx_sha256(copy, gzipped=original.name.endswith(".gz"))
    except ValueError as exc:
        raise ValueError(f"{original}: corrupt or truncated gzip ({exc.__cause__}); "
                         f"not copied") from exc
    if got != want:
        raise ValueError(f"{original}: SHA-256 of the decompressed IDX bytes is {got}, not "
                         f"the published {want}: the file is corrupt or not Fashion-MNIST; "
                         f"not copied")


def _copy_local(folder: Path, missing: list[str]) -> tuple[list[str], list[str]]:
    """Copy what the mirror, then Debian's package, has of ``missing`` into ``folder``.
    Returns ``(still missing, where the copies came from)``."""
    mirror = mirror_dir()
    sources = [("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST)]
    if mirror is not None:
        sources.insert(0, ("mirror", mirror / FASHION_MNIST_DIR))
    origins = []
    for label, src_dir in sources:
        have = [n for n in missing if (mirror_has(src_dir / n) if label == "mirror"
                                       else (src_dir / n).is_file())]
        if not have:
            continue
        size = sum((src_dir / n).stat().st_size for n in have)
        announce(f"Fashion-MNIST not found in {folder}; copying {len(have)} file(s) "
                 f"({describe_size(size)}) from the {label} {src_dir}, checking each one's "
                 f"IDX SHA-256")
        copy_verified([(src_dir / n, folder / n) for n in have], _check_copy)
        missing = [n for n in missing if n not in have]
        origins.append(f"{label} {src_dir}")
    return missing, origins


def _download(folder: Path, missing: list[str], url: str, progress: bool, timeout, retries,
              data_dir) -> str:
    """Download ``missing`` from ``url`` (a folder URL) into ``folder``, MD5-checked."""
    url = url if url.endswith("/") else url + "/"
    announce(f"Fashion-MNIST not found in {folder}; downloading {len(missing)} file(s) "
             f"({describe_size(sum(_GZ_BYTES[n] for n in missing))}) from {url} into {folder}")
    for name in missing:
        try:
            download_file(url + name, folder / name, f"md5:{FASHION_MNIST_MD5[name]}",
                          progress=progress, timeout=timeout, retries=retries)
        except ConnectionError as exc:
            raise FileNotFoundError(
                _how_to_get(folder, missing, f"the download failed: {exc}", data_dir)) from exc
        try:
            _check_copy(folder / name, folder / name)
        except ValueError:
            (folder / name).unlink()
            raise
    return f"download {url}"


def provide_fashion_mnist(data_dir: os.PathLike | str | None = None, *, download: bool = True,
                          progress: bool = True, url: str | None = None,
                          timeout: float | None = None, retries: int | None = None) -> dict:
    """Make sure Fashion-MNIST is where the loader reads it; return where it is and what.

    Looks, in order, at ``$BNBOOK_FASHION_MNIST`` (read in place), the data directory's
    ``fashion-mnist/``, the mirror, Debian's package and finally ``url`` (default
    :data:`FASHION_MNIST_URL`, only if ``download``), and fills the data directory with
    the missing files from the first that has them (see the module docstring). Copies are
    all-or-nothing and checked against the IDX SHA-256s, downloads against the published
    MD5s; each fetch prints one line saying what it does. Files already in the data
    directory must hold the published IDX bytes. Returns :func:`fashion_mnist_info`'s dict
    plus ``origin`` (where the files came from, ``None`` if not recorded) and ``status``
    (``"read in place"``, ``"fetched now"`` or ``"already present"``).

    Raises ``FileNotFoundError`` naming every way to provide the data (and the download
    error) when no source has it, ``ValueError`` when a file fails its checksum.
    """
    env = os.environ.get("BNBOOK_FASHION_MNIST")
    if env:
        folder, missing = Path(env), _missing(Path(env))
        if missing:
            raise FileNotFoundError(_how_to_get(folder, missing, "$BNBOOK_FASHION_MNIST "
                                                "names this folder", data_dir))
        info = _describe(folder, data_dir, origin=f"$BNBOOK_FASHION_MNIST={folder}")
        return {**info, "status": "read in place"}
    folder = resolve_data_dir(data_dir) / FASHION_MNIST_DIR
    missing = _missing(folder)
    origin = None
    if missing:
        missing, origins = _copy_local(folder, missing)
        if missing and not download:
            raise FileNotFoundError(_how_to_get(folder, missing, "download=False", data_dir))
        if missing:
            origins.append(_download(folder, missing, url or FASHION_MNIST_URL, progress,
                                     timeout, retries, data_dir))
        origin = "; ".join(origins)
    info = _describe(folder, data_dir, origin=origin)
    bad = [n for n, sha in info["idx_sha256"].items() if sha != FASHION_MNIST_IDX_SHA256[n]]
    if bad:
        raise ValueError(f"{folder}: {', '.join(bad)} hold(s) IDX bytes whose SHA-256 is not "
                         f"the published one; delete the file(s) and run `make data`")
    return {**info, "status": "fetched now" if origin else "already present"}


# --- loading --------------------------------------------------------------------------

def load_fashion_mnist(root: os.PathLike | str | None = None, download: bool = True,
                       progress: bool = True, *, data_dir: os.PathLike | str | None = None):
    """Fashion-MNIST as ``(x_train, y_train, x_test, y_test)``.

    ``x_*`` are ``uint8`` arrays of shape ``(60000, 28, 28)`` and ``(10000, 28, 28)``;
    ``y_*`` are ``int64`` labels in ``0..9`` of shape ``(60000,)`` and ``(10000,)``.
    ``root``, when given, is the folder holding the four IDX ``.gz`` files, read as it is.
    Otherwise the files are provisioned by :func:`provide_fashion_mnist` (``data_dir``,
    ``download``, ``progress`` are passed on): with the data missing, a notebook run
    interactively downloads it and says so. Call :func:`fashion_mnist_info` for the
    variant and checksums to record with a result.
    """
    if root is not None:
        folder = Path(root)
        missing = _missing(folder)
        if missing:
            raise FileNotFoundError(_how_to_get(folder, missing, "root= names this folder",
                                                data_dir))
    else:
        folder = Path(provide_fashion_mnist(data_dir, download=download,
                                            progress=progress)["path"])
    arrays = {key: read_idx(folder / name, _SHAPES[name])
              for key, name in FASHION_MNIST_FILES.items()}
    for split, n in _SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape != (n, 28, 28) or x.dtype != np.uint8:
            raise ValueError(f"{folder}: Fashion-MNIST {split} images have shape {x.shape} "
                             f"and dtype {x.dtype}, expected ({n}, 28, 28) uint8")
        if y.shape != (n,) or y.dtype != np.uint8 or y.max() > 9:
            raise ValueError(f"{folder}: Fashion-MNIST {split} labels have shape {y.shape}, "
                             f"dtype {y.dtype}, max {y.max()}; expected ({n},) uint8 in 0..9")
    return (arrays["x_train"], arrays["y_train"].astype(np.int64),
            arrays["x_test"], arrays["y_test"].astype(np.int64))

"""Where the data sets live and how they get there: one place for every data set.

The loaders read from the *data directory* (:func:`resolve_data_dir`). Each data set's
module fills it from, in order: an explicit path (``$BNBOOK_CIFAR10``,
``$BNBOOK_FASHION_MNIST``, used in place), the data directory itself, the *mirror*
(``$BNBOOK_MIRROR``, :func:`mirror_dir`), Debian's packaged copy (Fashion-MNIST only), and
finally the canonical URL. This module holds the pieces they share:

* :func:`copy_verified` copies files into the data directory all-or-nothing: each goes to a
  temporary file beside its destination, is checked, and is renamed into place only when
  every file of the set passed; an error or Ctrl-C leaves no partial file behind.
* :func:`download_file` downloads through `pooch <https://www.fatiando.org/pooch>`_
  (progress bar, timeout, retries, checksum checked before the file is moved into place).
* :func:`recall` / :func:`record` keep a small JSON memo in the data directory of the
  checksums already verified, keyed by path and a size/mtime fingerprint, so that an
  unchanged 20-160 MB file is hashed once, not on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable


from bnbook.provenance import REPO_ROOT, atomic_write_json, file_sha256

__all__ = [
    "DEFAULT_DATA_DIR",
    "DOWNLOAD_TIMEOUT",
    "DOWNLOAD_RETRIES",
    "resolve_data_dir",
    "mirror_dir",
    "mirror_has",
    "remove_stale_temporaries",
    "file_checksum",
    "check_checksum",
    "copy_verified",
    "download_file",
    "fingerprint",
    "recall",
    "remember",
    "announce",
    "describe_size",
]

DEFAULT_DATA_DIR = REPO_ROOT / "data" / "cache"
# Seconds without a byte before a download is abandoned, and how many times a failed
# download (connection error, HTTP error or checksum mismatch) is tried again.
DOWNLOAD_TIMEOUT = 60.0
DOWNLOAD_RETRIES = 2


def resolve_data_dir(path: os.PathLike | str | None = None) -> Path:
    """The data directory: ``path``, else ``$BNBOOK_DATA``, else ``<repo>/data/cache``.

    Both data sets are provisioned here (Fashion-MNIST in ``fashion-mnist/``, the CIFAR-10
    archive at the top), and decoded CIFAR-10 arrays are cached here.
    """
    folder = Path(path) if path is not None else (
        Path(os.environ["BNBOOK_DATA"]) if os.environ.get("BNBOOK_DATA") else DEFAULT_DATA_DIR)
    if folder.exists() and not folder.is_dir():
        who = "the data directory" if path is not None else "$BNBOOK_DATA"
        raise NotADirectoryError(f"{who} names {folder}, which is a file, not a folder: point "
                                 f"it at a folder (it is created if missing)")
    return folder


# Temporary files are named ``.<name>.<random>.part`` / ``.tmp`` beside their destination;
# one older than this was left by a process that was killed before it could remove it.
STALE_TEMPORARY_SECONDS = 3600


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the hidden temporary files (``.*.part``, ``.*.tmp``, files or folders) that a
    killed process left in ``folder`` and its sub-folders more than an hour ago; return them.
    Younger ones may belong to a process still writing, and are kept."""
    if not folder.is_dir():
        return []
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    removed = []
    for pattern in (".*.part", ".*.tmp"):
        for p in sorted(folder.rglob(pattern)):
            if p.lstat().st_mtime < cutoff:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(p)
    return removed


def mirror_dir() -> Path | None:
    """The mirror folder named by ``$BNBOOK_MIRROR`` (a relative path is taken from the
    current directory), or ``None`` when the variable is unset or empty.

    A mirror holds ``cifar-10-python.tar.gz`` and/or ``cifar10-jpeg.tar.gz`` at its top and
    the four Fashion-MNIST ``.gz`` files in ``fashion-mnist/``; files are copied from it
    into the data directory, checked on the way.
    """
    env = os.environ.get("BNBOOK_MIRROR")
    if not env:
        return None
    path = Path(env).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"$BNBOOK_MIRROR names {path}, which is not a folder; set it to the "
                         f"mirror folder (holding fashion-mnist/ and the CIFAR-10 archives)")
    return path


def mirror_has(path: Path) -> bool:
    """Whether the mirror holds the regular file ``path``; an entry there that is something
    else (a folder, a link to a device such as ``/dev/zero``) is refused (``ValueError``),
    not reported missing."""
    if path.is_file():
        return True
    if path.exists() or path.is_symlink():
        kind = "a folder" if path.is_dir() else "not a regular file (a link to a device, "\
            "a dangling link or a special file)"
        raise ValueError(f"{path}: the mirror's entry is {kind}; replace it with the file")
    return False


# --- checksums ------------------------------------------------------------------------

def _split_hash(known_hash: str) -> tuple[str, str]:
    """``"md5:..."``/``"sha256:..."`` -> ``(alg, hex)``; a bare hex string is an MD5 (32
    digits) or a SHA-256 (64 digits)."""
    if ":" in known_hash:
        alg, value = known_hash.split(":", 1)
        return alg.lower(), value.lower()
    alg = {32: "md5", 64: "sha256"}.get(len(known_hash))
    if alg is None:
        raise ValueError(f"cannot tell the algorithm of checksum {known_hash!r}; "
                         f"write it as 'md5:<hex>' or 'sha256:<hex>'")
    return alg, known_hash.lower()


def file_checksum(path: os.PathLike | str, alg: str = "sha256") -> str:
    """Hex digest of a file: :func:`bnbook.provenance.file_sha256` for SHA-256, ``hashlib``
    for any other algorithm it knows (``"md5"``), read in chunks."""
    if alg == "sha256":
        return file_sha256(path)
    h = hashlib.new(alg)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_checksum(path: os.PathLike | str, known_hash: str, name: str | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` (default: ``path``) unless the file's checksum
    is ``known_hash`` (``"md5:<hex>"``, ``"sha256:<hex>"`` or bare hex)."""
    alg, want = _split_hash(known_hash)
    got = file_checksum(path, alg)
    if got != want:
        raise ValueError(f"{name or path}: {alg.upper()} {got} differs from the expected "
                         f"{want}: the file is corrupt, truncated or another file; "
                         f"it was not used")


# --- all-or-nothing copies ------------------------------------------------------------

def _publish(path: os.PathLike | str) -> None:
    """Give a temporary file (mode 0600) the permissions a plain ``open()`` would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def copy_verified(pairs: Iterable[tuple[Path, Path]],
                  verify: Callable[[Path, Path], None]) -> list[Path]:
    """Copy each ``(source, dest)`` pair, all or nothing; return the destinations.

    Every source is copied to a temporary file beside its destination
    (``.<name>.*.part``) and ``verify(copy, source)`` is called on it (it raises
    ``ValueError`` to refuse). Only when every copy has passed are they renamed into place,
    so on any failure, including Ctrl-C, the destinations are untouched and no temporary
    file is left. The bytes verified are the bytes kept.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for src, dest in pairs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            staged.append((tmp, dest))
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            verify(Path(tmp), Path(src))
            _publish(tmp)
        for tmp, dest in staged:
            os.replace(tmp, dest)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return [dest for _, dest in staged]


# --- downloads ------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_pooch():
    """Silence pooch's own "Downloading ..." log line: the caller announces the download."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def download_file(url: str, dest: os.PathLike | str, known_hash: str, progress: bool = True,
                  timeout: float | None = None, retries: int | None = None) -> Path:
    """Download ``url`` to ``dest`` and check it against ``known_hash``; return ``dest``.

    ``known_hash`` is ``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare MD5/SHA-256. An
    ``http(s)://`` URL is fetched with pooch (``HTTPDownloader`` with a tqdm progress bar
    when ``progress``, ``timeout`` seconds, default :data:`DOWNLOAD_TIMEOUT`, and
    ``retries`` further tries, default :data:`DOWNLOAD_RETRIES`); a ``file://`` URL is
    copied. Either way the bytes land in a temporary file beside ``dest`` that replaces
    ``dest`` only once its checksum matches, so ``dest`` is absent or complete and no
    partial file is left, even on Ctrl-C. Raises ``ValueError`` on a checksum mismatch
    and ``ConnectionError`` (naming ``dest`` and the checksum) when the URL cannot be
    fetched.
    """
    import pooch
    import requests

    dest = Path(dest).absolute()
    alg, want = _split_hash(known_hash)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        src = Path(unquote(urlparse(url).path))
        if not src.is_file():
            raise ConnectionError(f"could not copy {url}: no such file")
        copy_verified([(src, dest)], lambda tmp, _: check_checksum(tmp, f"{alg}:{want}", url))
        return dest
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    retries = DOWNLOAD_RETRIES if retries is None else retries
    fetcher = pooch.create(path=dest.parent, base_url="", registry={dest.name: f"{alg}:{want}"},
                           urls={dest.name: url}, retry_if_failed=retries)
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    try:
        with _quiet_pooch():
            fetcher.fetch(dest.name, downloader=downloader)
    except requests.RequestException as exc:
        raise ConnectionError(
            f"could not download {url} ({exc}). If this machine is offline, get the file "
            f"elsewhere, check that its {alg.upper()} is {want}, and put it at {dest}") from exc
    except ValueError as exc:
        raise ValueError(f"download of {url} failed its {alg.upper()} check, nothing was "
                         f"kept: {exc}") from exc
    _publish(dest)
    return dest


# --- the memo of verified checksums ---------------------------------------------------

def fingerprint(root: Path, files: Iterable[Path] | None = None) -> str:
    """A cheap fingerprint (names, sizes, modification times) that changes when contents
    do: of the file ``root``, or of ``files`` inside the folder ``root``."""
    h = hashlib.sha256()
    for f in [root] if files is None else files:
        st = f.stat()
        rel = "" if f == root else f.relative_to(root).as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def recall(memo_path: Path, key: str, stamp: str) -> dict:
    """The memo entry for ``key`` if it was recorded with this ``stamp``, else ``{}``."""
    try:
        with open(memo_path) as f:
            entry = json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return {}
    return entry if isinstance(entry, dict) and entry.get("stamp") == stamp else {}


def remember(memo_path: Path, key: str, stamp: str, **fields) -> None:
    """Merge ``fields`` into the memo entry for ``key`` (replacing it if ``stamp`` changed).

    A memo that cannot be written (read-only data directory) only costs re-hashing later.
    """
    try:
        with open(memo_path) as f:
            memo = json.load(f)
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    entry = memo.get(key)
    if not isinstance(entry, dict) or entry.get("stamp") != stamp:
        entry = {"stamp": stamp}
    entry.update(fields)
    memo[key] = entry
    try:
        atomic_write_json(memo_path, memo)
    except OSError:
        pass


# --- messages -------------------------------------------------------------------------

def announce(message: str) -> None:
    """Tell the reader what is being fetched (on stderr, so it shows in a notebook too)."""
    print(message, file=sys.stderr, flush=True)


def describe_size(n_bytes: int) -> str:
    """``"30 MB"``-style size for messages."""
    return f"{n_bytes / 1e6:.0f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.0f} kB"

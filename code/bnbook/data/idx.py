"""IDX files, the format of MNIST and Fashion-MNIST: reading and content checksums.

The IDX header is two zero bytes, one byte naming the element type, one byte giving the
number of dimensions, then each dimension as a big-endian uint32; then the data,
big-endian, in C order. The files are usually distributed gzip-compressed, and the gzip
wrapper is not part of the data: two honest copies can differ in their ``.gz`` bytes (a
header timestamp, a compression level) while holding the same IDX bytes, which is why
:func:`idx_sha256` checksums the decompressed bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "read_idx_header", "idx_sha256", "IDX_MAX_BYTES"]

_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# The largest data section read_idx accepts (4 GiB): a header promising more is refused
# before anything is allocated, whatever the file's real length.
IDX_MAX_BYTES = 1 << 32

# What a damaged gzip stream raises, depending on where the damage is.
_DECOMPRESS_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _open(path: Path, gzipped: bool | None = None):
    if gzipped is None:
        gzipped = path.name.endswith(".gz")
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _corrupt(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"{path}: cannot decompress IDX file ({type(exc).__name__}: {exc}); "
                      f"the file is corrupt or truncated")


def _read_header(f, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Read and check the header from the open file ``f``: ``(shape, big-endian dtype)``."""
    magic = f.read(4)
    if len(magic) < 4:
        raise ValueError(f"{path}: IDX file too short for its 4-byte magic number "
                         f"({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number {magic.hex()} "
                         f"(must start with two zero bytes)")
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x} "
                         f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: IDX header truncated: {ndim} dimensions need "
                         f"{4 + 4 * ndim} bytes, file has {4 + len(dims)}")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    return shape, _IDX_DTYPES[code]


def read_idx_header(path: os.PathLike | str,
                    shape: tuple[int, ...] | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """The header of an IDX file, ``(shape, big-endian dtype)``, read without the data; with
    ``shape``, a header declaring another shape is refused (``ValueError`` naming the file)
    before anything else is read or hashed."""
    path = Path(path)
    try:
        with _open(path) as f:
            found, dtype = _read_header(f, path)
    except _DECOMPRESS_ERRORS as exc:
        raise _corrupt(path, exc) from exc
    if shape is not None and found != tuple(shape):
        raise ValueError(f"{path}: IDX header declares shape {found}, expected {tuple(shape)}; "
                         f"this is not the data set's file: replace it with the published one")
    return found, dtype


def read_idx(path: os.PathLike | str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed if its name ends in ``.gz``).

    Returns an array of the shape recorded in the header, in native byte order
    (``uint8`` images ``(N, 28, 28)`` and labels ``(N,)`` for (Fashion-)MNIST).

    Raises ``ValueError`` naming the file when the magic number is wrong, the type code is
    unknown, the header is cut short, the header's shape asks for more than
    :data:`IDX_MAX_BYTES` (an absurd or overflowing product of dimensions), the data is
    shorter or longer than the header promises (a truncated download), or the gzip stream
    is damaged, or (given ``shape``) the header declares another shape, checked before the
    data is read; ``FileNotFoundError`` if the file is missing. At most the promised size
    plus one byte is read, so a damaged header cannot make it read without bound.
    """
    path = Path(path)
    want = shape
    try:
        with _open(path) as f:
            shape, dtype = _read_header(f, path)
            if want is not None and shape != tuple(want):
                raise ValueError(f"{path}: IDX header declares shape {shape}, expected "
                                 f"{tuple(want)}; replace it with the published file")
            # math.prod on Python ints cannot overflow, unlike np.prod in int64.
            expected = math.prod(shape) * dtype.itemsize
            if expected > IDX_MAX_BYTES:
                raise ValueError(
                    f"{path}: IDX header shape {shape} of {dtype} asks for {expected} bytes, "
                    f"more than the {IDX_MAX_BYTES} this reader accepts; the header is "
                    f"corrupt")
            raw = f.read(expected + 1)
    except _DECOMPRESS_ERRORS as exc:
        raise _corrupt(path, exc) from exc
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        actual = f"{len(raw)}" if len(raw) <= expected else "more"
        raise ValueError(f"{path}: IDX data {kind}: header shape {shape} of {dtype} needs "
                         f"{expected} bytes, file has {actual}")
    data = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def idx_sha256(path: os.PathLike | str, gzipped: bool | None = None,
               chunk: int = 1 << 20) -> str:
    """SHA-256 of an IDX file's bytes, decompressed first if ``gzipped`` (default: if the
    name ends in ``.gz``).

    This is the checksum of the data itself: it is the same for every honest copy,
    whatever tool made its gzip wrapper. Raises ``ValueError`` naming the file for a
    damaged gzip stream.
    """
    path = Path(path)
    h = hashlib.sha256()
    try:
        with _open(path, gzipped) as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
    except _DECOMPRESS_ERRORS as exc:
        raise _corrupt(path, exc) from exc
    return h.hexdigest()

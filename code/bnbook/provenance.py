"""Provenance: the one layout of "where these numbers came from", and atomic file writes.

Every number the book prints comes from a JSON file under ``data/results/`` written by
:func:`bnbook.results.write_result` (or from a ``glue`` value computed in the notebook
itself). Each file has a ``"provenance"`` mapping made by :func:`collect_provenance` and
checked by :func:`check_provenance`. Its fields (:data:`PROVENANCE_FIELDS`):

``dataset``
    the data variant the numbers were computed on (``"jpeg-image-folder"``,
    ``"fashion-mnist/canonical-gz"``); ``"synthetic..."`` for random tensors;
``dataset_sha256``
    its SHA-256 (one hex string, or ``{file: hex}``); ``None`` only for synthetic data;
``device`` / ``cpu``
    the torch device that computed (``"cuda: <GPU>"`` or ``"cpu: <model>, n logical cores"``)
    and the host's processor;
``torch`` / ``precision``
    torch version; the arithmetic (``fp32``, ``bf16``, ``float32,float64``, ...);
``git_commit`` / ``command``
    the checked-out commit (``+dirty`` if tracked files differed) and a command line that
    reruns the experiment from the repository root (``python -m bnbook.results rerun``);
``started`` / ``finished`` / ``wall_seconds``
    ISO-8601 UTC times and the wall time in seconds; ``finished`` and ``wall_seconds`` are
    ``None`` while a run is still going (a partial result).

Files written before this layout (``provenance_version`` absent) are still readable: they may
lack ``dataset``, ``dataset_sha256``, ``cpu`` and ``finished``, may give ``created`` instead of
``started`` and ``wall_time_s`` instead of ``wall_seconds`` (:data:`LEGACY_ALTERNATIVES`).
Every file written now records ``provenance_version`` and all of the fields.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_sha256",
    "git_commit",
    "device_description",
    "accelerator_description",
    "cpu_description",
    "collect_provenance",
    "check_provenance",
    "PROVENANCE_VERSION",
    "PROVENANCE_FIELDS",
    "LEGACY_OPTIONAL",
    "LEGACY_ALTERNATIVES",
    "now_iso",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "data" / "results"

#: The version of the layout below; files without it are legacy files.
PROVENANCE_VERSION = 1
#: Every result's provenance has these keys.
PROVENANCE_FIELDS = ("dataset", "dataset_sha256", "device", "cpu", "torch", "precision",
                     "git_commit", "command", "started", "finished", "wall_seconds")
#: Fields a legacy file (no ``provenance_version``) may lack outright.
LEGACY_OPTIONAL = ("dataset", "dataset_sha256", "cpu", "finished")
#: Fields a legacy file may give under an older name instead.
LEGACY_ALTERNATIVES = {"started": "created", "wall_seconds": "wall_time_s"}


def now_iso() -> str:
    """Current UTC time as an ISO-8601 string with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    A reader never sees a half-written file; an interrupted writer leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: os.PathLike | str, obj) -> Path:
    """Serialise ``obj`` as indented JSON and write it atomically (see :func:`atomic_write_bytes`)."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def git_commit(root: os.PathLike | str = REPO_ROOT) -> str:
    """The checked-out commit, with ``+dirty`` if tracked files differ; ``"unknown"`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_checked_out_commit = git_commit  # collect_provenance's argument of that name shadows it


def cpu_description() -> str:
    """The host's processor: ``"<model name>, <n> logical cores"``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores"


def device_description(device: str = "cpu") -> str:
    """Human-readable name of a torch device: the GPU's name for CUDA, the CPU model otherwise."""
    if str(device).startswith("cuda"):
        import torch

        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu: {cpu_description()}"


def _nvidia_driver_version() -> str:
    """The NVIDIA driver's version as ``nvidia-smi`` reports it; ``"unknown"`` without it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return out.strip().splitlines()[0].strip() or "unknown"
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def accelerator_description(device: str = "cpu") -> dict:
    """What a GPU result needs to say about the device beside :func:`device_description`.

    For CUDA: ``kind``, ``name``, ``compute_capability`` (``"9.0"``), ``memory_gib``,
    ``driver`` (the NVIDIA driver, from ``nvidia-smi``), ``cuda`` (the CUDA runtime torch
    was built with), ``cuda_driver_api`` (the driver's CUDA API version, e.g. ``13000``, or
    ``None``), ``cudnn`` (its version number, or ``None``) and ``cudnn_enabled``. For the CPU:
    ``kind`` and ``name`` (:func:`cpu_description`).
    """
    if not str(device).startswith("cuda"):
        return {"kind": "cpu", "name": cpu_description()}
    import torch

    dev = torch.device(device)
    props = torch.cuda.get_device_properties(dev)
    driver_api = getattr(torch._C, "_cuda_getDriverVersion", None)
    return {"kind": "cuda", "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "driver": _nvidia_driver_version(), "cuda": torch.version.cuda,
            "cuda_driver_api": int(driver_api()) if callable(driver_api) else None,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None,
            "cudnn_enabled": bool(torch.backends.cudnn.enabled)}


def _command_line() -> str:
    return " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else ""


_NOW = object()


def collect_provenance(device: str = "cpu", precision: str = "float32", *, dataset: str,
                       dataset_sha256, started: str, wall_seconds: float | None,
                       finished: str | None = _NOW, command: str | None = None,
                       git_commit: str | None = None, **extra) -> dict:
    """The provenance of a result, in the one layout (see the module docstring).

    ``device``: the torch device that computed (``"cpu"``, ``"cuda:0"``); ``precision``: the
    arithmetic used. ``dataset`` / ``dataset_sha256``: the data variant and its checksum
    (``"synthetic-..."`` and ``None`` for random tensors). ``started``: :func:`now_iso` taken
    when the work began; ``finished``: now by default, ``None`` for a run still going (then
    ``wall_seconds`` may be ``None`` too). ``command``: a command line that reruns the work
    from the repository root, e.g. ``"python -m bnbook.experiments all"`` (default: this
    process's ``sys.argv``, which names only the script). ``git_commit``: default the
    checked-out commit (a resumed run passes the first session's). ``extra`` adds fields
    (thread counts, seeds, ...). The result is checked with :func:`check_provenance`.
    """
    import numpy

    import torch

    prov = {
        "provenance_version": PROVENANCE_VERSION,
        "dataset": dataset,
        "dataset_sha256": dataset_sha256,
        "device": device_description(device),
        "cpu": cpu_description(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "precision": precision,
        "git_commit": _checked_out_commit() if git_commit is None else git_commit,
        "command": _command_line() if command is None else command,
        "started": started,
        "finished": now_iso() if finished is _NOW else finished,
        "wall_seconds": wall_seconds,
    }
    prov.update(extra)
    return check_provenance(prov)


def _is_sha256(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_iso_time(v) -> bool:
    try:
        _dt.datetime.fromisoformat(v)
        return True
    except (TypeError, ValueError):
        return False


def check_provenance(prov) -> dict:
    """Raise ``ValueError`` naming the first missing or malformed provenance field; return
    ``prov``.

    A file with ``provenance_version`` must have every field of :data:`PROVENANCE_FIELDS`;
    one without (written before the layout) may lack :data:`LEGACY_OPTIONAL` and use the
    older names of :data:`LEGACY_ALTERNATIVES`.
    """
    if not isinstance(prov, Mapping):
        raise ValueError(f"provenance must be a mapping, got {type(prov).__name__}")
    version = prov.get("provenance_version")
    legacy = version is None
    if not legacy and version != PROVENANCE_VERSION:
        raise ValueError(f"provenance.provenance_version = {version!r}; this code reads "
                         f"version {PROVENANCE_VERSION}")

    def value(field):
        if field in prov:
            return True, prov[field]
        if legacy and LEGACY_ALTERNATIVES.get(field) in prov:
            return True, prov[LEGACY_ALTERNATIVES[field]]
        return False, None

    for field in PROVENANCE_FIELDS:
        present, v = value(field)
        if not present:
            if legacy and field in LEGACY_OPTIONAL:
                continue
            alt = f" (or {LEGACY_ALTERNATIVES[field]!r} in a legacy file)" \
                if field in LEGACY_ALTERNATIVES else ""
            raise ValueError(f"provenance lacks the field {field!r}{alt}")
        bad = None
        if field in ("dataset", "device", "cpu", "torch", "precision", "git_commit", "command"):
            if not isinstance(v, str) or not v.strip():
                bad = "a non-empty string"
        elif field == "dataset_sha256":
            synthetic = str(prov.get("dataset", "")).startswith("synthetic")
            ok = (_is_sha256(v) or (v is None and synthetic)
                  or (isinstance(v, Mapping) and v and all(map(_is_sha256, v.values()))))
            if not ok:
                bad = ("a 64-digit hex SHA-256 or a {file: SHA-256} mapping (None only for "
                       "synthetic data)")
        elif field == "started":
            if not _is_iso_time(v):
                bad = "an ISO-8601 time"
        elif field == "finished":
            if v is not None and not _is_iso_time(v):
                bad = "an ISO-8601 time or None (still running)"
        elif field == "wall_seconds":
            finished = value("finished")[1]
            if v is None and finished is not None:
                bad = "a number of seconds (None only while the run is going)"
            elif v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                    or not math.isfinite(v) or v < 0):
                bad = "a non-negative number of seconds"
        if bad:
            raise ValueError(f"provenance field {field!r} must be {bad}, got {v!r}")
    return prov

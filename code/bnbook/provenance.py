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

Every file records ``provenance_version`` and all of the fields. The files stored before this
layout were rewritten into it once (:func:`migrate_provenance`, ``python -m bnbook.results
migrate``): values and recorded commit kept, older names renamed (``created``, when the file
was written, -> ``finished``; ``wall_time_s`` -> ``wall_seconds``), a field never recorded set
to ``None``. Their note ``"migrated"`` (:data:`MIGRATION_NOTE_FIELDS`) names those fields; only
they may be ``None`` where a new file must give a value. A ``+dirty`` commit is allowed in a
file the book reads only where that note kept it (:func:`refuse_draft`); a new result from a
dirty tree must be marked ``"draft": true``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import json
import os
import platform
import shlex
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
    "unchecked_provenance",
    "check_provenance",
    "PROVENANCE_VERSION",
    "PROVENANCE_FIELDS",
    "MIGRATABLE_NULL",
    "MIGRATED_NAMES",
    "migrate_provenance",
    "refuse_draft",
    "command_line",
    "is_book_result",
    "now_iso",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "data" / "results"

#: The version of the layout below.
PROVENANCE_VERSION = 1
#: Every result's provenance has these keys.
PROVENANCE_FIELDS = ("dataset", "dataset_sha256", "device", "cpu", "torch", "precision",
                     "git_commit", "command", "started", "finished", "wall_seconds")
#: Fields a file stored before the layout may never have recorded: its migration sets them to
#: ``None`` and names them in ``"migrated"["fields_set_null"]``.
MIGRATABLE_NULL = ("dataset", "dataset_sha256", "cpu", "started", "finished", "wall_seconds")
#: The older names of fields in files stored before the layout (old name -> field).
MIGRATED_NAMES = {"created": "finished", "wall_time_s": "wall_seconds"}
#: What the migration note says: ``from`` (the layout it read), ``by`` (the command),
#: ``fields_set_null``, ``fields_renamed`` and ``dirty_commit_kept``.
MIGRATION_NOTE_FIELDS = ("from", "by", "fields_set_null", "fields_renamed", "dirty_commit_kept")


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


def command_line(argv=None, prog: str | None = None) -> str:
    """A command line quoted for a shell: ``prog`` (as given, e.g. ``"python -m
    bnbook.experiments.norms.sequences"``) followed by ``argv``, each argument quoted; by default
    this process's (the script's name and its arguments)."""
    if prog is None:
        if not sys.argv:
            return ""
        prog, argv = shlex.quote(Path(sys.argv[0]).name), sys.argv[1:] if argv is None else argv
    return " ".join([prog, *map(shlex.quote, argv or ())])


def is_book_result(path: os.PathLike | str, results_dir: Path | None = None) -> bool:
    """Whether ``path`` lies under ``results_dir`` (default ``data/results/``, the results the
    book reads)."""
    return Path(os.path.abspath(path)).is_relative_to(results_dir or RESULTS_DIR)


_NOW = object()


def unchecked_provenance(device: str = "cpu", precision: str = "float32", *, dataset: str,
                         dataset_sha256, started: str, wall_seconds: float | None,
                         finished: str | None = _NOW, command: str | None = None,
                         commit: str | None = None, draft: bool = False, **extra) -> dict:
    """The provenance of a result, in the one layout (see the module docstring), unchecked
    (a run's in-memory result may not name its data; :func:`bnbook.results.write_result`
    checks what is written). :func:`collect_provenance` is this, checked.

    ``device``: the torch device that computed (``"cpu"``, ``"cuda:0"``); ``precision``: the
    arithmetic used. ``dataset`` / ``dataset_sha256``: the data variant and its checksum
    (``"synthetic-..."`` and ``None`` for random tensors). ``started``: :func:`now_iso` taken
    when the work began; ``finished``: now by default, ``None`` for a run still going (then
    ``wall_seconds`` may be ``None`` too). ``command``: a command line that reruns the work
    from the repository root, e.g. ``"python -m bnbook.experiments.practice all"`` (default: this
    process's ``sys.argv``, which names only the script). ``commit``: the ``git_commit`` to
    record, default the checked-out commit (a resumed run passes the first session's).
    ``draft``: record
    ``"draft": true`` (a result from uncommitted code, which the book does not read; see
    :func:`refuse_draft`). ``extra`` adds fields (thread counts, seeds, ...).
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
        "git_commit": git_commit() if commit is None else commit,
        "command": command_line() if command is None else command,
        "started": started,
        "finished": now_iso() if finished is _NOW else finished,
        "wall_seconds": wall_seconds,
    }
    if draft:
        prov["draft"] = True
    prov.update(extra)
    return prov


def collect_provenance(device: str = "cpu", precision: str = "float32", **fields) -> dict:
    """:func:`unchecked_provenance` (same arguments), checked with :func:`check_provenance`."""
    return check_provenance(unchecked_provenance(device, precision, **fields))


def _is_sha256(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_iso_time(v) -> bool:
    try:
        _dt.datetime.fromisoformat(v)
        return True
    except (TypeError, ValueError):
        return False


def _nullable_fields(prov: Mapping) -> set:
    """The fields the migration note of ``prov`` set to ``None`` (empty without a note)."""
    note = prov.get("migrated")
    if note is None:
        return set()
    if not isinstance(note, Mapping) or set(note) != set(MIGRATION_NOTE_FIELDS) \
            or not isinstance(note["fields_set_null"], list) \
            or not set(note["fields_set_null"]) <= set(MIGRATABLE_NULL):
        raise ValueError(f"provenance.migrated must be the note of python -m bnbook.results "
                         f"migrate, with the fields {list(MIGRATION_NOTE_FIELDS)} and "
                         f"fields_set_null among {list(MIGRATABLE_NULL)}; got {note!r}")
    return set(note["fields_set_null"])


def _field_problem(prov: Mapping, field: str, v) -> str | None:
    """What ``prov[field] = v`` must be instead, or ``None`` if it is well formed."""
    if field in ("dataset", "device", "cpu", "torch", "precision", "git_commit", "command"):
        return None if isinstance(v, str) and v.strip() else "a non-empty string"
    if field == "dataset_sha256":
        synthetic = str(prov.get("dataset", "")).startswith("synthetic")
        ok = (_is_sha256(v) or (v is None and synthetic)
              or (isinstance(v, Mapping) and v and all(map(_is_sha256, v.values()))))
        return None if ok else ("a 64-digit hex SHA-256 or a {file: SHA-256} mapping (None "
                                "only for synthetic data)")
    if field == "started":
        return None if _is_iso_time(v) else "an ISO-8601 time"
    if field == "finished":
        return None if v is None or _is_iso_time(v) else "an ISO-8601 time or None (still running)"
    if field == "wall_seconds":
        if v is None:
            return None if prov.get("finished") is None else \
                "a number of seconds (None only while the run is going)"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0:
            return "a non-negative number of seconds"
    return None


def check_provenance(prov) -> dict:
    """Raise ``ValueError`` naming the first missing or malformed provenance field; return
    ``prov``.

    Every field of :data:`PROVENANCE_FIELDS` must be present and well formed, and
    ``provenance_version`` must be :data:`PROVENANCE_VERSION`. ``None`` stands for "not
    recorded" only in a migrated file, for the fields its ``"migrated"`` note names.
    """
    if not isinstance(prov, Mapping):
        raise ValueError(f"provenance must be a mapping, got {type(prov).__name__}")
    version = prov.get("provenance_version")
    if version != PROVENANCE_VERSION:
        hint = ("; a file stored before the layout is rewritten into it by python -m "
                "bnbook.results migrate") if version is None else ""
        raise ValueError(f"provenance.provenance_version = {version!r}; this code reads "
                         f"version {PROVENANCE_VERSION}{hint}")
    nullable = _nullable_fields(prov)
    for field in PROVENANCE_FIELDS:
        if field not in prov:
            raise ValueError(f"provenance lacks the field {field!r}")
        v = prov[field]
        if v is None and field in nullable:
            continue
        bad = _field_problem(prov, field, v)
        if bad:
            raise ValueError(f"provenance field {field!r} must be {bad}, got {v!r}")
    if "draft" in prov and prov["draft"] is not True:
        raise ValueError(f"provenance field 'draft' is true or absent, got {prov['draft']!r}")
    return prov


def refuse_draft(prov: Mapping, where: str) -> None:
    """Raise ``ValueError`` if ``prov`` is a draft, or records a ``+dirty`` commit that its
    migration note did not keep: such a result cannot be one the book reads (``where``: the
    file, for the message)."""
    if prov.get("draft") is True:
        raise ValueError(f"{where} is a draft (provenance.draft); the book reads only results "
                         f"made from a committed tree: commit, then rerun its command")
    kept = (prov.get("migrated") or {}).get("dirty_commit_kept") is True
    if str(prov.get("git_commit", "")).endswith("+dirty") and not kept:
        raise ValueError(f"{where} was made from uncommitted code (git_commit "
                         f"{prov['git_commit']}); commit and rerun, or mark it a draft the "
                         f"book does not read (--draft)")


def migrate_provenance(prov: Mapping, by: str = "python -m bnbook.results migrate") -> dict | None:
    """``prov`` rewritten into the current layout, or ``None`` if it is in it already.

    Values and the recorded commit are kept; the older names of :data:`MIGRATED_NAMES` are
    renamed; a field of :data:`PROVENANCE_FIELDS` the file never recorded becomes ``None``
    (only those of :data:`MIGRATABLE_NULL`; another missing field raises ``ValueError``); a
    ``+dirty`` commit is kept and said so. The note ``"migrated"`` records all of this. A
    current file with a clean commit (or already migrated) needs nothing.
    """
    if not isinstance(prov, Mapping):
        raise ValueError(f"provenance must be a mapping, got {type(prov).__name__}")
    version = prov.get("provenance_version")
    dirty = str(prov.get("git_commit", "")).endswith("+dirty")
    if "migrated" in prov or (version == PROVENANCE_VERSION and not dirty):
        return None
    if version not in (None, PROVENANCE_VERSION):
        raise ValueError(f"provenance_version {version!r} is not one this code migrates")
    clash = [old for old, new in MIGRATED_NAMES.items() if old in prov and new in prov]
    if clash:
        raise ValueError(f"provenance gives both {clash} and their current names")
    new = {MIGRATED_NAMES.get(k, k): v for k, v in prov.items()}
    absent = [f for f in PROVENANCE_FIELDS if f not in new]
    unknown = [f for f in absent if f not in MIGRATABLE_NULL]
    if unknown:
        raise ValueError(f"provenance lacks {unknown}, which no stored file lacked")
    new = {"provenance_version": PROVENANCE_VERSION, **new, **dict.fromkeys(absent)}
    new["migrated"] = {"from": "unversioned" if version is None else f"version {version}",
                       "by": by, "fields_set_null": absent,
                       "fields_renamed": {o: n for o, n in MIGRATED_NAMES.items() if o in prov},
                       "dirty_commit_kept": dirty}
    return check_provenance(new)

"""Result files with provenance, written atomically.

Every number the book prints comes from a JSON file under ``data/results/`` written by
:func:`write_result` (or from a ``glue`` value computed in the notebook itself). Each file
records where its numbers came from: git commit, command, torch/numpy versions, device,
precision, dataset variant and checksum where a dataset was used, start/finish and wall time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_sha256",
    "git_commit",
    "device_description",
    "collect_provenance",
    "write_result",
    "read_result",
    "now_iso",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "data" / "results"


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


def device_description(device: str = "cpu") -> str:
    """Human-readable name of a torch device: the GPU's name for CUDA, the CPU model otherwise."""
    if str(device).startswith("cuda"):
        import torch

        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu: {cpu}, {os.cpu_count()} logical cores"


def collect_provenance(device: str = "cpu", precision: str = "float32", **extra) -> dict:
    """Provenance fields shared by every result file; ``extra`` adds or overrides fields."""
    import numpy

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard requirement of the book
        torch_version = None
    prov = {
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
        "device": device_description(device),
        "torch": torch_version,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "precision": precision,
        "created": now_iso(),
    }
    prov.update(extra)
    return prov


def write_result(name: str, payload: dict, provenance: dict, results_dir=None) -> Path:
    """Write ``{"provenance": ..., **payload}`` to ``<results_dir>/<name>.json`` atomically."""
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    return atomic_write_json(results_dir / f"{name}.json", {"provenance": provenance, **payload})


def read_result(name: str, results_dir=None) -> dict:
    """Load ``<results_dir>/<name>.json`` (``name`` may contain sub-folders)."""
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    path = results_dir / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no result file {path}; run the script that produces it "
                                f"(its name is in the chapter that reads it)")
    with open(path) as f:
        return json.load(f)

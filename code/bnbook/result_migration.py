"""The one migration of the stored result files into the current provenance layout.

``python -m bnbook.results migrate [files or folders ...]`` (default: every file under
``data/results/``) rewrites each file whose provenance predates the layout (no
``provenance_version``), or records a ``+dirty`` commit without saying so, with
:func:`bnbook.provenance.migrate_provenance`: the payload, every recorded value and the git
commit stay as they are; a field the file never recorded is ``None``, named in the note
``provenance["migrated"]``. It is idempotent (a migrated or current file is left alone), checks
every file before it writes any (a file it does not recognise - not a JSON object, no
provenance, an unknown version, a missing field no stored file lacked - stops it with a
one-line error and nothing written), and writes each file atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

from bnbook.provenance import RESULTS_DIR, atomic_write_bytes, migrate_provenance

__all__ = ["migrated_result", "migrate_results"]

#: The command the note names.
MIGRATION_COMMAND = "python -m bnbook.results migrate"


def migrated_result(result) -> dict | None:
    """``result`` with its provenance migrated, or ``None`` if it needs nothing. Raises
    ``ValueError`` for a result it does not recognise, or one that breaks the schema after."""
    from bnbook.results import validate_result

    if not isinstance(result, dict) or not isinstance(result.get("provenance"), dict):
        raise ValueError("not a result file (a JSON object with a 'provenance' mapping)")
    prov = migrate_provenance(result["provenance"], by=MIGRATION_COMMAND)
    if prov is None:
        validate_result(result)
        return None
    new = {k: (prov if k == "provenance" else v) for k, v in result.items()}
    return validate_result(new)


def _result_files(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no result file or folder {p}")
    return files


def migrate_results(paths=(RESULTS_DIR,)) -> tuple[list[Path], list[Path]]:
    """Migrate the result files in ``paths`` (files or folders, searched for ``*.json``).
    Returns ``(migrated, unchanged)``. Every file is read and checked before any is written."""
    import json

    from bnbook.results import read_json

    plan = []
    for file in _result_files(paths):
        try:
            plan.append((file, migrated_result(read_json(file))))
        except ValueError as exc:
            raise ValueError(f"{file}: {exc}; not migrating anything") from None
    for file, new in plan:
        if new is not None:
            text = json.dumps(new, indent=2, allow_nan=False) + "\n"
            atomic_write_bytes(file, text.encode("utf-8"))
    return [f for f, n in plan if n is not None], [f for f, n in plan if n is None]


def migrate_main(paths: list[str | os.PathLike]) -> int:
    """Run :func:`migrate_results` and say what it did; returns 0."""
    migrated, unchanged = migrate_results(paths or (RESULTS_DIR,))
    for file in migrated:
        print(f"migrated {file}")
    print(f"{len(migrated)} migrated, {len(unchanged)} already current")
    return 0

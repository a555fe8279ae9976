"""Every bnbook module imports on its own, in a fresh interpreter: no import cycles.

An import cycle shows up only when a module of the cycle is the first one imported (inside
one test session the modules are already loaded, so it hides), hence one fresh
``python -c 'import bnbook.X'`` per module. And no module may import at its bottom, the
usual way of papering over a cycle.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import bnbook

MODULES = sorted(m.name for m in pkgutil.walk_packages(bnbook.__path__, "bnbook.")
                 if not m.name.endswith(".__main__"))
PACKAGE_DIR = Path(bnbook.__file__).parent
SOURCES = sorted(PACKAGE_DIR.rglob("*.py"))


def _import_fresh(name: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.returncode, proc.stdout


@pytest.fixture(scope="module")
def imports():
    """One fresh interpreter per module (each import costs about a second of CPU), a few at a
    time: all at once would thrash a small machine and time out."""
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        return dict(zip(MODULES, pool.map(_import_fresh, MODULES)))


def test_the_list_of_modules_is_complete():
    assert {"bnbook.numpy_norms", "bnbook.numpy_fast", "bnbook.folding"} <= set(MODULES)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", MODULES)
def test_module_imports_first_in_a_fresh_interpreter(imports, name):
    returncode, output = imports[name]
    assert returncode == 0, f"python -c 'import {name}' failed:\n{output}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_no_import_after_the_first_definition(path):
    seen = None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            seen = seen or node.name
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and seen:
            pytest.fail(f"{path.relative_to(PACKAGE_DIR)}:{node.lineno} imports after {seen!r} is defined; "
                        f"a late import usually hides an import cycle")

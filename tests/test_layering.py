"""The package's architecture as a contract, read statically from its imports.

Three floors, and arrows point one way, down: the experiments and the website's tools import
the shared machinery, which imports the layer; nothing imports upwards. Arrows between units
of one floor are allowed if they form no cycle, and no two modules import each other at module
level (a cycle there breaks whichever of them is imported first). One interpreter that imports
every module keeps real import errors visible. The limits of the first restructure are checked
here too: at most 16 modules at the top of the package, 600 lines a module, 80 a function.

``import_graph`` reads ``import`` statements anywhere in a module, function bodies included
(an import inside a function is still an arrow); ``importlib.import_module(name)`` with a
computed name (``results.rerun`` loading a recorded command line) is not an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bnbook

PACKAGE_DIR = Path(bnbook.__file__).parent

#: The floors, bottom up; every top-level module or package of bnbook is on exactly one.
FLOORS = {
    "layer": ("bnbook.numpy_norms", "bnbook.numpy_fast", "bnbook.gradcheck", "bnbook.torch_bn",
              "bnbook.torch_norms", "bnbook.folding", "bnbook.distributed"),
    "shared": ("bnbook.cli", "bnbook.data", "bnbook.models", "bnbook.training",
               "bnbook.diagnostics", "bnbook.verify", "bnbook.checks", "bnbook.plots",
               "bnbook.widgets", "bnbook.notebook", "bnbook.provenance", "bnbook.results"),
    "experiments and site": ("bnbook.experiments", "bnbook.site"),
}
FLOOR_OF = {unit: level for level, units in enumerate(FLOORS.values()) for unit in units}
#: Packages whose folders are units of their own for the cycle check (one per chapter).
SPLIT_UNITS = ("bnbook.experiments",)

MAX_TOP_LEVEL_MODULES = 16
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The package's modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if node.level:  # relative: from . import x, from ..y import z
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    found = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
    if source in modules and len(found) < len(node.names):
        found.append(source)
    return found


def import_graph(package_dir: Path, module_level_only: bool = False) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` for every ``.py`` file under
    ``package_dir``; with ``module_level_only`` only the imports that run when the module is
    imported (not those inside functions or classes)."""
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        nodes = _module_level(tree.body) if module_level_only else ast.walk(tree)
        graph[name] = {t for node in nodes if isinstance(node, (ast.Import, ast.ImportFrom))
                       for t in _targets(node, name, path.name == "__init__.py", modules)
                       if t != name}
    return graph


def _module_level(body):
    """The statements that run at import: the body, and the bodies of its if/try blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            nested = node.body + node.orelse + getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                nested += handler.body
            yield from _module_level(nested)


def unit_of(module: str) -> str:
    """``bnbook.X`` for a module of the package; ``bnbook.experiments.<folder>`` inside the
    experiments, whose chapters are units of their own."""
    parts = module.split(".")
    unit = ".".join(parts[:2])
    return ".".join(parts[:3]) if unit in SPLIT_UNITS and len(parts) > 2 else unit


def floor_of(module: str, floors: dict[str, int] = FLOOR_OF) -> int | None:
    return floors.get(".".join(module.split(".")[:2]))


def upward_arrows(graph, floors: dict[str, int] = FLOOR_OF) -> list[str]:
    """Every import from a lower floor to a higher one, as ``"a -> b"``."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if floor_of(a, floors) is not None and floor_of(b, floors) is not None
                  and floor_of(a, floors) < floor_of(b, floors))


def find_cycle(graph) -> list[str] | None:
    """One cycle of ``graph`` (``[a, b, ..., a]``), or ``None`` if it has none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def unit_graph(graph) -> dict[str, set[str]]:
    units = {}
    for a, targets in graph.items():
        units.setdefault(unit_of(a), set()).update(unit_of(b) for b in targets)
    return {u: targets - {u} for u, targets in units.items()}


GRAPH = import_graph(PACKAGE_DIR)


# --- the contract ----------------------------------------------------------------------------

def test_every_module_is_on_a_floor():
    unplaced = sorted(m for m in GRAPH if m != "bnbook" and floor_of(m) is None)
    assert not unplaced, (f"{unplaced} are on no floor: add their top-level name to FLOORS in "
                          f"{Path(__file__).name} (layer, shared, or experiments and site)")


def test_no_arrow_points_up():
    upward = upward_arrows(GRAPH)
    assert not upward, ("imports from a lower floor to a higher one (layer < shared < "
                        "experiments and site):\n" + "\n".join(upward))


def test_the_units_form_no_cycle():
    cycle = find_cycle(unit_graph(GRAPH))
    assert cycle is None, "the package's units import each other in a circle: " + " -> ".join(cycle)


def test_no_two_modules_import_each_other_at_module_level():
    cycle = find_cycle(import_graph(PACKAGE_DIR, module_level_only=True))
    assert cycle is None, "a module-level import cycle: " + " -> ".join(cycle)


def test_experiments_and_site_do_not_import_each_other():
    crossing = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                      if {unit_of(a).split(".")[1], unit_of(b).split(".")[1]}
                      == {"experiments", "site"})
    assert not crossing, "\n".join(crossing)


# --- the checker, tested on graphs with a known answer -----------------------------------------

SYNTHETIC_FLOORS = {"bnbook.layer": 0, "bnbook.shared": 1, "bnbook.experiments": 2}


def test_an_upward_arrow_and_a_cycle_are_found_in_a_synthetic_graph():
    clean = {"bnbook.experiments.a": {"bnbook.shared"}, "bnbook.shared": {"bnbook.layer"},
             "bnbook.layer": set()}
    assert upward_arrows(clean, SYNTHETIC_FLOORS) == [] and find_cycle(clean) is None
    bad = {**clean, "bnbook.layer": {"bnbook.shared"}}
    assert upward_arrows(bad, SYNTHETIC_FLOORS) == ["bnbook.layer -> bnbook.shared"]
    assert find_cycle(bad) == ["bnbook.shared", "bnbook.layer", "bnbook.shared"]


def test_the_graph_is_read_from_imports_anywhere_in_a_module(tmp_path):
    package = tmp_path / "bnbook"
    (package / "experiments").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "layer.py": "def f():\n    from bnbook.experiments import run  # hidden in a function\n",
        "shared.py": "import bnbook.layer\n",
        "experiments/__init__.py": "",
        "experiments/run.py": "from bnbook import shared\nfrom . import helper\n",
        "experiments/helper.py": "from bnbook.shared import something\n",
    }.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph["bnbook.experiments.run"] == {"bnbook.shared", "bnbook.experiments.helper"}
    assert graph["bnbook.experiments.helper"] == {"bnbook.shared"}
    assert upward_arrows(graph, SYNTHETIC_FLOORS) == ["bnbook.layer -> bnbook.experiments.run"]
    assert import_graph(package, module_level_only=True)["bnbook.layer"] == set()
    assert find_cycle(unit_graph(graph)) is not None  # layer -> experiments.run -> shared -> layer


# --- import errors, and the limits -------------------------------------------------------------

@pytest.mark.timeout(300)
def test_every_module_imports():
    """One interpreter imports every module (``__main__`` modules run their command, so not
    those), and reports each failure with its error."""
    script = ("import importlib, pkgutil, sys, traceback, bnbook\n"
              "failed = 0\n"
              "for m in pkgutil.walk_packages(bnbook.__path__, 'bnbook.'):\n"
              "    if m.name.endswith('.__main__'): continue\n"
              "    try: importlib.import_module(m.name)\n"
              "    except Exception: failed += 1; print(m.name); traceback.print_exc()\n"
              "sys.exit(1 if failed else 0)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_top_of_the_package_has_at_most_16_modules():
    top = sorted(p.name for p in PACKAGE_DIR.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top: {top}"


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.rglob("*.py")),
                         ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_module_and_function_lengths(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.rglob("*.py")),
                         ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_no_import_after_the_first_definition(path):
    """No module imports at its bottom, the usual way of papering over a cycle."""
    seen = None
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            seen = seen or node.name
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and seen:
            pytest.fail(f"{path.relative_to(PACKAGE_DIR)}:{node.lineno} imports after {seen!r} "
                        f"is defined; a late import usually hides an import cycle")

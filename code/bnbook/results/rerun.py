"""Rerunning a stored result: the command its provenance records, parsed with today's parser.

``python -m bnbook.results rerun <file> [--dry-run]`` (``make results RESULT=<file>``) prints and
runs :func:`rerun_command` of the file's ``provenance["command"]``. Recorded commands keep
rerunning when a command line moves: an old script name (``cifar.py``) or module name
(``python -m bnbook.cifar``, before the package was arranged in folders) is mapped to today's
module by :data:`RENAMED_COMMANDS`, not by modules left behind under the old names.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import shlex
from pathlib import Path

from bnbook.provenance import REPO_ROOT, command_line


def _parser_module(module: str) -> str:
    """The module whose ``build_parser`` ``python -m module`` uses: ``module`` itself, or for
    a package (``bnbook.experiments.cifar``) its ``cli`` module, which its ``__main__`` runs."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return module
    is_package = spec is not None and spec.submodule_search_locations is not None
    return f"{module}.cli" if is_package else module


def _module_parser(module: str):
    def build():
        return importlib.import_module(_parser_module(module)).build_parser()
    return build


def _has_parser(module: str) -> bool:
    """Whether ``python -m module`` is one of the book's command lines (it has ``build_parser``)."""
    try:
        build = getattr(importlib.import_module(_parser_module(module)), "build_parser", None)
    except ImportError:
        return False
    if not callable(build):
        return False
    try:  # a helper's build_parser(exp) is not a command line of its own
        return inspect.signature(build).bind() is not None
    except (TypeError, ValueError):
        return False


def _benchmark_parser(script: str):
    def build():
        file = REPO_ROOT / "benchmarks" / script
        spec = importlib.util.spec_from_file_location(f"_bench_{file.stem}", file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.build_parser()
    return build


# Older files name the script (``cifar.py ...``, ``experiments.py ...``, ``bench_x.py``); newer
# ones the command to type (``python -m bnbook.experiments.cifar ...``,
# ``python benchmarks/bench_x.py``).
_SCRIPTS = {"cifar.py": "bnbook.experiments.cifar", "experiments.py": "bnbook.experiments.practice"}

#: The command lines stored results name by their module before the package was arranged in
#: folders (issue 22), and the module that is each one's command line today.
RENAMED_COMMANDS = {
    "bnbook.cifar": "bnbook.experiments.cifar",
    "bnbook.experiments": "bnbook.experiments.practice",
    "bnbook.experiments.practice_cli": "bnbook.experiments.practice",
    "bnbook.experiments.norm_sweep": "bnbook.experiments.norms.sweep",
    "bnbook.experiments.sequences": "bnbook.experiments.norms.sequences",
    "bnbook.experiments.norm_lr_sweep": "bnbook.experiments.norms.lr_sweep",
    "bnbook.experiments.why_figure1": "bnbook.experiments.why.run_figure1",
    "bnbook.experiments.why_landscape": "bnbook.experiments.why.run_landscape",
    "bnbook.experiments.why_noisy_cnn": "bnbook.experiments.why.run_noisy_cnn",
    "bnbook.experiments.why_scale": "bnbook.experiments.why.run_scale",
    "bnbook.gpu_results": "bnbook.experiments.gpu_results",
}


def parse_recorded_command(command: str) -> tuple[list[str], argparse.Namespace]:
    """Parse a command recorded in a result's provenance with today's parser of its program.

    Returns ``(program, args)``: ``program`` is how to start it today from the repository root
    (``["python", "-m", "bnbook.experiments.cifar"]`` or ``["python", "benchmarks/bench_x.py"]``;
    an old module name is mapped by :data:`RENAMED_COMMANDS`) and ``args`` the parsed
    ``argparse.Namespace``. Raises ``ValueError`` for an unknown program or arguments today's
    parser rejects.
    """
    words = shlex.split(command)
    if words and Path(words[0]).name.startswith("python"):
        words = words[1:]
    if words[:1] == ["-m"] and len(words) >= 2:
        module, rest = RENAMED_COMMANDS.get(words[1], words[1]), words[2:]
    elif words:
        name, rest = Path(words[0]).name, words[1:]
        module = _SCRIPTS.get(name)
        if module is None and name.startswith("bench_") and name.endswith(".py") \
                and (REPO_ROOT / "benchmarks" / name).is_file():
            module = f"benchmarks/{name}"
    else:
        module = None
    if module is not None and module.startswith("bnbook.") and _has_parser(module):
        program, build = ["python", "-m", module], _module_parser(module)
    elif module is not None and module.startswith("benchmarks/"):
        program, build = ["python", module], _benchmark_parser(Path(module).name)
    else:
        raise ValueError(f"not a command of the book's programs: {command!r}")
    parser = build()
    parser.exit_on_error = False
    try:
        args = parser.parse_args(rest)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ValueError(f"today's parser of {' '.join(program)} rejects {command!r}: "
                         f"{exc}") from None
    return program, args


def rerun_command(command: str) -> str:
    """The recorded ``command`` as one types it today, from the repository root
    (``cifar.py --model bn`` -> ``python -m bnbook.experiments.cifar --model bn``)."""
    program, _ = parse_recorded_command(command)
    rest = shlex.split(command)
    if rest and Path(rest[0]).name.startswith("python"):
        rest = rest[1:]
    rest = rest[2:] if rest[:1] == ["-m"] else rest[1:]
    return command_line(rest, prog=" ".join(program))

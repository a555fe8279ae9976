"""The browser edition: the NumPy chapters as a JupyterLite site that runs Python in the page.

``make book`` runs ``python -m bnbook.site.lite --out _build/html/lite`` after the website: a
JupyterLite build (lab, notebooks and REPL apps) whose Pyodide kernel runs the chapters listed
in :data:`CHAPTERS` and their student editions in the reader's browser, from the static site,
with no server and no request to another host. The input notebooks are a parameter
(``--notebooks`` folder, ``--student`` folder, chapter names), so the same build takes the
source chapters or the Jupyter edition.

Where each file comes from (every one checked before use, then cached under
``<data folder>/``):

- the Pyodide runtime and ``pyodide-lock.json``: the npm package ``pyodide``
  (:data:`bnbook.site.vendor.PYODIDE`, tarball SHA-256 pinned there);
- the Pyodide package files (numpy, matplotlib, the IPython kernel's dependencies): the Pyodide
  project's index for that version (:data:`PYODIDE_INDEX`), or ``$BNBOOK_MIRROR/pyodide-<v>/``;
  each is checked against the SHA-256 the lock from npm records, never a list in the mirror;
- ipywidgets and the other pure-Python wheels the kernel installs with ``piplite``: PyPI
  (``pip download``) or ``$BNBOOK_MIRROR/pypi/``, each checked against :data:`PYPI_WHEELS`;
- ``bnbook`` itself: a pure-Python wheel made from the working tree (:mod:`bnbook.site.lite_files`),
  installed with ``deps=False`` so that torch and pooch are not asked for.

The versions are in :data:`VERSIONS` only; moving up is one change there (and the pins).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bnbook.site import vendor
from bnbook.data.fetch import download_file, mirror_dir, resolve_data_dir
from bnbook.site.lite_files import build_bnbook_wheel, lite_notebook, write_landing_page
from bnbook.provenance import file_sha256

__all__ = ["VERSIONS", "CHAPTERS", "PYODIDE_INDEX", "BROWSER_PACKAGES", "PYPI_WHEELS",
           "PYODIDE_URL", "pyodide_files", "fetch_pyodide_files", "fetch_wheels", "check_config",
           "content_id", "lite_config",
           "build", "main"]

#: The one place the browser stack's versions live (they must move together: the kernel's
#: compatibility table pairs 0.6.x with Pyodide 0.27.x). requirements.txt pins the first two,
#: :data:`bnbook.site.vendor.PYODIDE` the third (with its tarball's SHA-256).
VERSIONS = {"jupyterlite-core": "0.6.4", "jupyterlite-pyodide-kernel": "0.6.1",
            "pyodide": vendor.PYODIDE.version}

#: The chapters of the browser edition (file names without ``.ipynb``).
CHAPTERS = ("02_forward", "03_backward", "04_inference", "08_other_norms")

#: Where real users' builds download the Pyodide package files (the lock's ``file_name``s).
PYODIDE_INDEX = f"https://cdn.jsdelivr.net/pyodide/v{VERSIONS['pyodide']}/full/"

#: The Pyodide packages the notebooks import (the kernel's own included); their dependencies
#: are read from the lock.
BROWSER_PACKAGES = ("numpy", "matplotlib", "matplotlib-pyodide", "micropip", "ipython", "jedi",
                    "sqlite3", "ssl", "packaging")

#: Pure-Python wheels from PyPI the kernel installs with piplite: name -> (file, SHA-256).
#: (tqdm is not among them: piplite would take Pyodide's own tqdm from the lock, and nothing the
#: browser chapters import needs it.)
PYPI_WHEELS = {
    "ipywidgets": ("ipywidgets-8.1.7-py3-none-any.whl",
                   "764f2602d25471c213919b8a1997df04bef869251db4ca8efba1b76b1bd9f7bb"),
    "comm": ("comm-0.2.3-py3-none-any.whl",
             "c615d91d75f7f04f095b30d1c1711babd43bdc6419c1be9886a85f2f4e489417"),
    "jupyterlab_widgets": ("jupyterlab_widgets-3.0.17-py3-none-any.whl",
                           "40ac1e9955acf116c4d995d9bfa082d86ad9ec6d91c4f134827cf5e0a5eb75e0"),
}

#: The file that marks a folder as this module's output (so it may be replaced).
MARKER = ".bnbook-lite"

#: The runtime the kernel loads, relative to the Lite site. The Pyodide kernel 0.6.x runs in a
#: classic web worker (the site is not cross-origin isolated) that loads ``pyodide.js`` with
#: ``importScripts``; given ``pyodide.mjs`` it calls an empty webpack context that always
#: rejects, and the kernel never starts, with the error only in the kernel's own log. The
#: Lite build sets ``pyodide.js`` by itself only on a first build in a folder (a doit task that
#: is up to date later), so the configuration names it, and :func:`check_config` checks it.
PYODIDE_URL = "./static/pyodide/pyodide.js"
#: doit's record of finished tasks in the Lite source folder: removed before every build, so
#: that a build does the same work (and writes the same configuration) as the first one.
DOIT_DB = ".jupyterlite.doit.db"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def pyodide_files(lock: dict, wanted=BROWSER_PACKAGES) -> dict[str, str]:
    """``file_name -> sha256`` of the lock's packages ``wanted`` and all they depend on."""
    packages = {_norm(k): v for k, v in lock["packages"].items()}
    seen, todo = set(), [_norm(n) for n in wanted]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in packages:
            raise ValueError(f"pyodide-lock.json has no package {name!r}")
        seen.add(name)
        todo += [_norm(d) for d in packages[name]["depends"]]
    return {packages[n]["file_name"]: packages[n]["sha256"] for n in sorted(seen)}


def _fetch_checked(name: str, sha256: str, cache: Path, mirror_sub: str, url: str) -> Path:
    """``cache/name`` with this SHA-256 (:func:`bnbook.site.vendor.fetch_checked`)."""
    return vendor.fetch_checked(cache / name, sha256, mirror_sub, url, name)


def fetch_pyodide_files(lock_path: Path, cache: Path, index: str = PYODIDE_INDEX,
                        wanted=BROWSER_PACKAGES) -> list[Path]:
    """The files of the packages ``wanted`` and their dependencies, each checked against
    ``lock_path``'s SHA-256."""
    lock = json.loads(Path(lock_path).read_text())
    sub = f"pyodide-{lock['info']['version']}"
    return [_fetch_checked(name, sha, cache / sub, sub, index + name)
            for name, sha in pyodide_files(lock, wanted).items()]


def _pip_download(name: str, file_name: str, dest: Path) -> str:
    version = file_name.split("-")[1]
    with_tmp = dest.parent / f".{dest.name}.pip"
    shutil.rmtree(with_tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary", ":all:", "-d", str(with_tmp), f"{name}=={version}"],
                   check=True)
    return (with_tmp / file_name).as_uri()


def fetch_wheels(cache: Path) -> list[Path]:
    """The :data:`PYPI_WHEELS`, checked; from the cache, ``$BNBOOK_MIRROR/pypi/`` or PyPI."""
    paths = []
    for name, (file_name, sha) in PYPI_WHEELS.items():
        path, mirror = cache / "pypi" / file_name, mirror_dir()
        in_mirror = mirror is not None and (mirror / "pypi" / file_name).is_file()
        if path.is_file() or in_mirror:
            paths.append(_fetch_checked(file_name, sha, cache / "pypi", "pypi", ""))
            continue
        url = _pip_download(name, file_name, path)
        paths.append(download_file(url, path, f"sha256:{sha}", progress=False))
        shutil.rmtree(path.parent / f".{path.name}.pip", ignore_errors=True)
    return paths


def _copy_if_changed(src: Path, dest: Path) -> None:
    if not (dest.is_file() and file_sha256(dest) == file_sha256(src)):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def _own_folder(path: Path, what: str) -> None:
    """Refuse to replace ``path`` unless it is absent, empty or this module's output."""
    if path.exists() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise ValueError(f"{path} exists and is not a {what} that bnbook.site.lite made; "
                         "choose another folder or remove it")


def _inputs(notebooks: Path, student: Path | None, chapters) -> list[tuple[Path, str]]:
    """(input notebook, name of its Lite copy) for every chapter and student edition."""
    pairs = []
    for chapter in chapters:
        source = notebooks / f"{chapter}.ipynb"
        if not source.is_file():
            raise ValueError(f"no notebook {source}: give --notebooks the folder of the chapters")
        pairs.append((source, f"{chapter}.ipynb"))
        if student is not None:
            found = [p for p in (student / f"{chapter}_student.ipynb", student / f"{chapter}.ipynb")
                     if p.is_file()]
            if not found:
                raise ValueError(f"no student edition of {chapter} in {student}: run make student")
            pairs.append((found[0], f"{chapter}_student.ipynb"))
    return pairs


def lite_config(build_id: str) -> dict:
    """The Lite source folder's ``jupyter-lite.json`` for the build ``build_id``."""
    kernel = "@jupyterlite/pyodide-kernel-extension:kernel"
    return {"jupyter-lite-schema-version": 0,
            "jupyter-config-data": {
                "appName": "Batch Normalization (in the browser)",
                # A new name per build: a rebuilt site never shows copies stored by an old one.
                "contentsStorageName": f"bnbook-{build_id}",
                "settingsStorageName": f"bnbook-settings-{build_id}",
                "litePluginSettings": {kernel: {"pyodideUrl": PYODIDE_URL,
                                                "disablePyPIFallback": True}}}}


def check_config(site: Path) -> dict:
    """The Lite build ``site``'s ``jupyter-lite.json``, checked: the kernel loads the site's
    own ``pyodide.js`` (:data:`PYODIDE_URL`), and no URL in it names another host. Raises
    ``ValueError`` saying what is wrong."""
    config = json.loads((Path(site) / "jupyter-lite.json").read_text(encoding="utf-8"))
    data = config["jupyter-config-data"]
    kernel = data["litePluginSettings"]["@jupyterlite/pyodide-kernel-extension:kernel"]
    url = kernel.get("pyodideUrl", "")
    if url != PYODIDE_URL or not (Path(site) / url).is_file():
        raise ValueError(f"{site}/jupyter-lite.json: pyodideUrl is {url!r}; the kernel needs the "
                         f"site's own {PYODIDE_URL} (a classic worker cannot load pyodide.mjs)")
    outside = sorted(set(re.findall(r"(?:https?:)?//[^\s\"']+", json.dumps(config))))
    if outside:
        raise ValueError(f"{site}/jupyter-lite.json names other hosts: {outside[:3]}")
    return config


def content_id(copies: dict[str, str], wheels) -> str:
    """12 hex digits naming what a build serves: the Lite copies (name -> JSON text) and the
    wheels' contents. The browser's storage for the site is named after it (:func:`lite_config`),
    so a build that changes a notebook or a wheel never shows a copy stored by an older one."""
    digest = hashlib.sha256()
    for name in sorted(copies):
        digest.update(f"{name}\0{copies[name]}\0".encode())
    for wheel in wheels:
        digest.update(f"{Path(wheel).name}\0{file_sha256(wheel)}\0".encode())
    return digest.hexdigest()[:12]


def _prepare_source(work: Path, pairs, cache: Path, root: Path) -> str:
    """Fill the Lite source folder ``work``; return the build's id (hash of what it serves)."""
    static = work / "static"
    vendor.install(static, cache / "npm", packages=(vendor.PYODIDE,))
    for path in fetch_pyodide_files(static / "pyodide" / "pyodide-lock.json", cache):
        _copy_if_changed(path, static / "pyodide" / path.name)
    for sub in ("files", "pypi"):
        shutil.rmtree(work / sub, ignore_errors=True)
        (work / sub).mkdir()
    for path in fetch_wheels(cache):
        shutil.copyfile(path, work / "pypi" / path.name)
    build_bnbook_wheel(root, work / "pypi")
    copies = {name: lite_notebook(source.read_text(encoding="utf-8")) for source, name in pairs}
    for name, text in copies.items():
        (work / "files" / name).write_text(text, encoding="utf-8")
    build_id = content_id(copies, sorted((work / "pypi").glob("*.whl")))
    (work / "jupyter-lite.json").write_text(json.dumps(lite_config(build_id), indent=2) + "\n")
    return build_id


def build(out: Path, notebooks: Path, chapters=CHAPTERS, student: Path | None = None,
          work: Path = Path("_build/lite-src"), cache: Path | None = None) -> Path:
    """Build the Lite edition into ``out`` (replaced only once the new build is complete)."""
    out, work = Path(out).absolute(), Path(work).absolute()
    root = Path(__file__).resolve().parents[3]          # the repository
    pairs = _inputs(Path(notebooks), None if student is None else Path(student), chapters)
    _own_folder(out, "Lite build")
    _own_folder(work, "Lite source folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).touch()
    cache = Path(cache) if cache is not None else resolve_data_dir()
    build_id = _prepare_source(work, pairs, cache, root)
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (work / DOIT_DB).unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "jupyterlite_core", "build", "--lite-dir", str(work),
                    "--contents", str(work / "files"), "--output-dir", str(staging),
                    "--no-sourcemaps", "--no-unused-shared-packages"],
                   cwd=work, check=True, stdout=subprocess.DEVNULL)
    check_config(staging)
    write_landing_page(staging, [name for _, name in pairs], build_id)
    (staging / MARKER).touch()
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.site.lite",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("_build/html/lite"))
    parser.add_argument("--notebooks", type=Path, default=Path("chapters"),
                        help="folder of the chapters' notebooks (default chapters/)")
    parser.add_argument("--student", type=Path, default=Path("_build/student"),
                        help="folder of the student editions (default _build/student)")
    parser.add_argument("--work", type=Path, default=Path("_build/lite-src"))
    parser.add_argument("chapters", nargs="*", default=list(CHAPTERS))
    args = parser.parse_args(argv)
    try:
        out = build(args.out, args.notebooks, args.chapters, args.student, args.work)
    except (ConnectionError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"Lite edition in {out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The browser-side files the website serves itself: MathJax and the Jupyter widget manager.

The site must work offline and from any static host, so it loads no script from a CDN.
``make book`` runs ``python -m bnbook.site.vendor _build/vendor`` first, which puts the files below
into ``_build/vendor/``; ``_config.yml`` lists that folder in ``html_static_path`` (so the
files are served from ``_static/``), points ``mathjax_path`` at MathJax there and myst-nb's
``nb_ipywidgets_js`` at RequireJS and the widget manager there.

Each package is an npm registry tarball of a pinned version whose SHA-256 is written below;
it is downloaded once into ``<data folder>/npm/`` (``bnbook.data.fetch.download_file``:
checksum checked before the file is kept, retries, a clear error offline) or copied from
``$BNBOOK_MIRROR/npm/`` when a mirror holds it, and only the files the site needs are
extracted, with each package's licence beside them and a ``VENDOR.json`` recording name,
version, checksum and licence. The tarballs are not kept in git: the repository stays small,
and CI, which reaches the package registries, fetches them like every other dependency.

====================================  =======  ============  ==========================================
package                               version  licence       what the site uses
====================================  =======  ============  ==========================================
``mathjax``                           3.2.2    Apache-2.0    ``es5/tex-mml-chtml.js``, its TeX
                                                             extensions, CHTML fonts, menu and
                                                             accessibility components
``@jupyter-widgets/html-manager``     1.0.14   BSD-3-Clause  ``dist/embed-amd.js`` and its fonts
``requirejs``                         2.3.7    MIT           ``require.js`` (the widget manager's loader)
``pyodide`` (:data:`PYODIDE`)         0.27.7   MPL-2.0       the browser edition's Python runtime and
                                                             ``pyodide-lock.json`` (:mod:`bnbook.lite`;
                                                             not in ``_static/``)
====================================  =======  ============  ==========================================

``VENDOR.json`` records each extracted file's SHA-256 too: a later run leaves a package alone
only when every one of those files is still there with those bytes (a deleted folder or an
extraction cut short is redone), and a cached tarball that fails its checksum is fetched again.

The widget manager renders widgets only on pages whose notebook stores widget state. The book's
pages carry none: their explorers show a pre-rendered figure on the website
(:mod:`bnbook.widgets`), and :mod:`bnbook.site.html` drops any state that executing a notebook
stored, with the manager's scripts (in this version the manager typesets widget labels through
MathJax 2's API, which the site's MathJax 3 lacks). So today no page loads it; it is served
locally all the same, so that myst-nb's ``nb_ipywidgets_js`` never names a CDN.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bnbook.data.fetch import check_checksum, download_file, mirror_dir, resolve_data_dir
from bnbook.provenance import file_sha256

__all__ = ["NpmPackage", "PACKAGES", "PYODIDE", "read_manifest", "tarball_name", "tarball_url", "select_members",
           "fetch_tarball", "fetch_checked", "install", "main"]

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package and the part of it the site serves.

    Attributes:
        name: the npm name (``"@scope/name"`` or ``"name"``).
        version: the pinned version.
        sha256: SHA-256 of the registry tarball.
        licence: its SPDX licence identifier.
        dest: folder under the output folder (and so under ``_static/``).
        keep: shell-style patterns (``fnmatch``, where ``*`` also crosses ``/``) of the paths
            inside the package, after the tarball's top folder, to extract.
    """

    name: str
    version: str
    sha256: str
    licence: str
    dest: str
    keep: tuple[str, ...]


PACKAGES = (
    NpmPackage("mathjax", "3.2.2",
               "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
               "Apache-2.0", "mathjax",
               ("LICENSE", "es5/tex-mml-chtml.js", "es5/input/*", "es5/output/chtml/*",
                "es5/ui/*", "es5/a11y/*", "es5/sre/*")),
    NpmPackage("@jupyter-widgets/html-manager", "1.0.14",
               "9d647396585ef74da93f87f645c5dcc14bebf5784192c577f72b199597614e81",
               "BSD-3-Clause", "jupyter-widgets",
               ("LICENSE", "dist/embed-amd.js", "dist/embed.js.LICENSE.txt", "dist/*.woff",
                "dist/*.woff2", "dist/*.ttf", "dist/*.eot", "dist/*.svg")),
    NpmPackage("requirejs", "2.3.7",
               "31f3330c978fb28684622fe71165dc946432cf0210b2ea8a1ca0233e70f2737d",
               "MIT", "requirejs", ("require.js",)),
)

#: The Pyodide runtime and its lock (every package file's name and SHA-256), for the browser
#: edition (:mod:`bnbook.lite` installs it into the Lite source folder, not into ``_static/``).
#: Its version is :data:`bnbook.lite.VERSIONS`' ``pyodide``.
PYODIDE = NpmPackage("pyodide", "0.27.7",
                     "89d5d952675eb08e11286e52c7238f1248ce71726e896db9703e73bef23dc343",
                     "MPL-2.0", "pyodide",
                     ("pyodide.asm.wasm", "pyodide.asm.js", "pyodide.js", "pyodide.mjs",
                      "python_stdlib.zip", "pyodide-lock.json", "package.json", "README.md"))


def tarball_name(package: NpmPackage) -> str:
    """The tarball's file name as ``npm pack`` writes it (and as the cache and a mirror keep
    it): ``jupyter-widgets-html-manager-1.0.14.tgz`` for ``@jupyter-widgets/html-manager``."""
    return f"{package.name.lstrip('@').replace('/', '-')}-{package.version}.tgz"


def tarball_url(package: NpmPackage) -> str:
    """Where the npm registry serves the package's tarball (the file name drops the scope)."""
    return f"{REGISTRY}/{package.name}/-/{package.name.rsplit('/', 1)[-1]}-{package.version}.tgz"


def _wanted(path: str, keep: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in keep)


def select_members(tar: tarfile.TarFile, keep: tuple[str, ...]) -> list[tuple[tarfile.TarInfo, str]]:
    """The regular files of an npm tarball to extract, with their path inside the package.

    npm tarballs hold the package under one top folder (``package/``, sometimes another
    name); that folder is dropped. Links, devices and paths that climb out (``..``, absolute)
    are refused with a ``ValueError``, whatever ``keep`` says.
    """
    chosen = []
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            raise ValueError(f"unsafe path {member.name!r} in the tarball")
        if member.isdir():
            continue
        if not member.isfile():
            raise ValueError(f"{member.name!r} in the tarball is not a regular file")
        inner = "/".join(parts[1:])
        if inner and _wanted(inner, keep):
            chosen.append((member, inner))
    return chosen


def fetch_tarball(package: NpmPackage, cache: Path) -> Path:
    """The package's tarball in ``cache``, checksum checked: kept from before, copied from
    ``$BNBOOK_MIRROR/npm/``, or downloaded from the registry. A cached tarball that fails its
    checksum is replaced (the download lands beside it and replaces it only once checked)."""
    return fetch_checked(cache / tarball_name(package), package.sha256, "npm",
                         tarball_url(package), f"{package.name}@{package.version}")


def fetch_checked(path: Path, sha256: str, mirror_sub: str, url: str, label: str) -> Path:
    """``path`` with this SHA-256: kept from before, copied from ``$BNBOOK_MIRROR/mirror_sub/``,
    or downloaded from ``url`` (``label`` names it in the message). A cached file that fails
    its checksum is replaced; the download lands beside it and replaces it only once checked."""
    known = f"sha256:{sha256}"
    if path.is_file():
        try:
            check_checksum(path, known, str(path))
            return path
        except ValueError as exc:
            print(f"{exc}; fetching it again", flush=True)
    mirror = mirror_dir()
    if mirror is not None and (mirror / mirror_sub / path.name).is_file():
        url = (mirror / mirror_sub / path.name).as_uri()
    print(f"fetching {label} ({url})", flush=True)
    return download_file(url, path, known, progress=False)


def _extract(package: NpmPackage, tarball: Path, dest: Path) -> dict[str, str]:
    """Extract the kept files into ``dest`` (replaced whole, only once complete); return each
    file's SHA-256 by its path inside the package."""
    staging = dest.with_name(f".{dest.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    hashes = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member, inner in select_members(tar, package.keep):
            target = staging / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            hashes[inner] = file_sha256(target)
    if not hashes:
        raise ValueError(f"{package.name}: no file of the tarball matched {package.keep}")
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return hashes


def read_manifest(path: Path) -> dict:
    """The ``VENDOR.json`` at ``path`` (``{}`` when absent); ``ValueError`` naming the file when
    it is not a JSON object of package records."""
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); delete it and run again") from None
    if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
        raise ValueError(f"{path} is not a JSON object of package records; delete it and run again")
    return manifest


def _intact(folder: Path, files) -> bool:
    """Whether every recorded file is in ``folder`` with its recorded SHA-256."""
    if not isinstance(files, dict) or not files:
        return False
    return all(isinstance(sha, str) and (folder / inner).is_file()
               and file_sha256(folder / inner) == sha for inner, sha in files.items())


def install(out: Path, cache: Path | None = None, packages=None) -> dict:
    """Put every package of ``packages`` (default :data:`PACKAGES`) under ``out``; return the
    manifest written to ``out/VENDOR.json``.

    A package whose record matches its pin and whose extracted files are all still there with
    the recorded SHA-256 is left alone, so a second ``make book`` neither downloads nor copies
    anything; any other is extracted again from its checked tarball.
    """
    out = Path(out)
    cache = Path(cache) if cache is not None else resolve_data_dir() / "npm"
    manifest_path = out / "VENDOR.json"
    old = read_manifest(manifest_path)
    manifest = {}
    for package in PACKAGES if packages is None else packages:
        record = {"version": package.version, "sha256": package.sha256,
                  "licence": package.licence, "source": tarball_url(package),
                  "folder": package.dest}
        previous = old.get(package.name, {})
        if ({k: previous.get(k) for k in record} == record
                and _intact(out / package.dest, previous.get("files"))):
            manifest[package.name] = previous
            continue
        tarball = fetch_tarball(package, cache)
        manifest[package.name] = {**record, "files": _extract(package, tarball, out / package.dest)}
    out.mkdir(parents=True, exist_ok=True)
    tmp = manifest_path.with_name(".VENDOR.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.site.vendor", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output folder (the book uses _build/vendor)")
    args = parser.parse_args(argv)
    try:
        manifest = install(args.out)
    except (ConnectionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, record in manifest.items():
        print(f"{name}@{record['version']} ({record['licence']}) -> {args.out / record['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests of bnbook.site.vendor on small tarballs made here: names and addresses, the files chosen,
unsafe members refused, the checksum enforced, a second install that touches nothing."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from bnbook.site import vendor


def make_tarball(path: Path, files: dict[str, bytes], links: dict[str, str] = ()) -> str:
    """An npm-style tarball (everything under package/); returns its SHA-256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in dict(links).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_names_and_addresses_follow_npm():
    scoped = vendor.NpmPackage("@jupyter-widgets/html-manager", "1.0.14", "0" * 64, "BSD-3-Clause",
                               "w", ("*",))
    assert vendor.tarball_name(scoped) == "jupyter-widgets-html-manager-1.0.14.tgz"
    assert vendor.tarball_url(scoped) == (
        "https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.14.tgz")
    plain = vendor.NpmPackage("mathjax", "3.2.2", "0" * 64, "Apache-2.0", "m", ("*",))
    assert vendor.tarball_url(plain) == "https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz"


def test_every_package_is_pinned_with_a_checksum_and_licence():
    for package in vendor.PACKAGES:
        assert package.version.count(".") == 2 and package.version[0].isdigit()
        assert len(package.sha256) == 64 and int(package.sha256, 16) >= 0
        assert package.licence and package.keep


def test_select_members_keeps_the_patterns_and_drops_the_top_folder(tmp_path):
    make_tarball(tmp_path / "p.tgz", {"package/LICENSE": b"L", "package/es5/a.js": b"a",
                                      "package/es5/input/tex/x.js": b"x",
                                      "package/es5/sre/big.json": b"s",
                                      "package/README.md": b"r"})
    with tarfile.open(tmp_path / "p.tgz") as tar:
        chosen = [inner for _, inner in vendor.select_members(tar, ("LICENSE", "es5/input/*"))]
    assert sorted(chosen) == ["LICENSE", "es5/input/tex/x.js"]


@pytest.mark.parametrize("files, links, message", [
    ({"package/../evil.js": b"x"}, {}, "unsafe"),
    ({}, {"package/link.js": "/etc/passwd"}, "not a regular file"),
])
def test_select_members_refuses_unsafe_tarballs(tmp_path, files, links, message):
    make_tarball(tmp_path / "bad.tgz", files, links)
    with tarfile.open(tmp_path / "bad.tgz") as tar, pytest.raises(ValueError, match=message):
        vendor.select_members(tar, ("*",))


@pytest.fixture
def one_package(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    package = vendor.NpmPackage("demo", "1.2.3", "", "MIT", "demo", ("LICENSE", "dist/*.js"))
    sha = make_tarball(cache / vendor.tarball_name(package),
                       {"package/LICENSE": b"MIT", "package/dist/a.js": b"a();",
                        "package/dist/a.js.map": b"{}", "package/src/a.ts": b"a"})
    package = vendor.NpmPackage("demo", "1.2.3", sha, "MIT", "demo", ("LICENSE", "dist/*.js"))
    monkeypatch.setattr(vendor, "PACKAGES", (package,))
    monkeypatch.delenv("BNBOOK_MIRROR", raising=False)
    return package, cache


def test_install_extracts_and_records(tmp_path, one_package):
    package, cache = one_package
    out = tmp_path / "out"
    manifest = vendor.install(out, cache)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "VENDOR.json", "demo/LICENSE", "demo/dist/a.js"]
    assert (out / "demo/dist/a.js").read_bytes() == b"a();"
    record = json.loads((out / "VENDOR.json").read_text())["demo"]
    assert record == manifest["demo"]
    assert record["sha256"] == package.sha256 and record["licence"] == "MIT"
    assert record["version"] == "1.2.3"


def test_second_install_touches_nothing(tmp_path, one_package, monkeypatch):
    _, cache = one_package
    out = tmp_path / "out"
    vendor.install(out, cache)

    def no_fetch(*args, **kwargs):
        raise AssertionError("an up-to-date folder was fetched again")

    monkeypatch.setattr(vendor, "fetch_tarball", no_fetch)
    vendor.install(out, cache)
    assert (out / "demo/dist/a.js").is_file()


def test_a_tarball_with_the_wrong_checksum_is_refused(tmp_path, one_package, monkeypatch):
    package, cache = one_package
    wrong = vendor.NpmPackage(package.name, package.version, "f" * 64, "MIT", "demo", package.keep)
    monkeypatch.setattr(vendor, "PACKAGES", (wrong,))
    mirror = tmp_path / "mirror"                   # the fetch again finds the same bytes there
    (mirror / "npm").mkdir(parents=True)
    name = vendor.tarball_name(package)
    (mirror / "npm" / name).write_bytes((cache / name).read_bytes())
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    with pytest.raises(ValueError, match="SHA256"):
        vendor.install(tmp_path / "out", cache)
    assert not (tmp_path / "out" / "demo").exists()


def test_a_mirror_copy_is_used_and_checked(tmp_path, one_package, monkeypatch):
    package, cache = one_package
    mirror = tmp_path / "mirror"
    (mirror / "npm").mkdir(parents=True)
    (cache / vendor.tarball_name(package)).rename(mirror / "npm" / vendor.tarball_name(package))
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    vendor.install(tmp_path / "out", cache)
    assert (cache / vendor.tarball_name(package)).is_file()       # copied into the cache
    assert (tmp_path / "out" / "demo" / "LICENSE").read_bytes() == b"MIT"


def test_a_deleted_or_cut_extraction_is_redone(tmp_path, one_package):
    """Issue 23 item 9: the extracted files are checked, not only the VENDOR.json marker."""
    _, cache = one_package
    out = tmp_path / "out"
    vendor.install(out, cache)
    (out / "demo/dist/a.js").unlink()                      # a folder emptied by hand
    vendor.install(out, cache)
    assert (out / "demo/dist/a.js").read_bytes() == b"a();"
    (out / "demo/dist/a.js").write_bytes(b"a")             # an extraction cut short
    vendor.install(out, cache)
    assert (out / "demo/dist/a.js").read_bytes() == b"a();"


@pytest.mark.parametrize("text", ["{not json", "[1]", '{"demo": 3}', "\udcff"])
def test_a_corrupt_manifest_is_named(tmp_path, one_package, text):
    """Issue 23 item 25: a corrupt VENDOR.json gives a ValueError naming the file."""
    _, cache = one_package
    out = tmp_path / "out"
    out.mkdir()
    (out / "VENDOR.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError, match="VENDOR.json"):
        vendor.install(out, cache)
    assert vendor.main([str(out)]) == 1


def test_a_bad_cached_tarball_is_replaced_from_the_mirror(tmp_path, one_package, monkeypatch):
    """Issue 23 item 25: a corrupt tarball in the cache is fetched again from a good mirror."""
    package, cache = one_package
    name = vendor.tarball_name(package)
    mirror = tmp_path / "mirror"
    (mirror / "npm").mkdir(parents=True)
    (mirror / "npm" / name).write_bytes((cache / name).read_bytes())
    (cache / name).write_bytes(b"truncated")
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    vendor.install(tmp_path / "out", cache)
    assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == package.sha256
    assert (tmp_path / "out" / "demo" / "LICENSE").read_bytes() == b"MIT"


def test_pyodide_is_pinned_apart_from_the_site_packages():
    assert vendor.PYODIDE not in vendor.PACKAGES                 # not copied into _static/
    assert "pyodide-lock.json" in vendor.PYODIDE.keep and "pyodide.asm.wasm" in vendor.PYODIDE.keep

"""Tests of provisioning: where each data set comes from, checked copies, downloads, the CLI.

Every source is a folder in tmp_path or a local HTTP server on 127.0.0.1 (data_helpers):
the explicit variables, the data directory, the mirror ($BNBOOK_MIRROR), Debian's folder
(a module constant, monkeypatched) and the download URLs. The fakes' checksums stand in for
the published ones. Nothing is left half-written: after each failure the data directory
holds no temporary file and no unchecked copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import (assert_arrays, canonical, clean_env, closed_port, copy_tree,
                          fake_fashion, fashion_source, files_in, jpeg_archive, leftovers,
                          md5_of, server, write_fashion)

from bnbook import data
from bnbook.data import __main__ as cli
from bnbook.data import cifar10, fashion_mnist, fetch

__all__ = ["canonical", "clean_env", "fake_fashion", "fashion_source", "jpeg_archive",
           "server"]  # fixtures, imported so that pytest finds them

NAMES = list(data.FASHION_MNIST_FILES.values())


def test_data_dir_and_mirror_locations(tmp_path, monkeypatch):
    monkeypatch.delenv("BNBOOK_DATA")
    assert data.resolve_data_dir() == fetch.DEFAULT_DATA_DIR
    assert data.resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("BNBOOK_DATA", str(tmp_path / "x"))
    assert data.resolve_data_dir() == tmp_path / "x"
    assert data.mirror_dir() is None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BNBOOK_MIRROR", "../shared/data")  # relative: from the cwd
    assert data.mirror_dir() == tmp_path / ".." / "shared" / "data"
    assert data.mirror_dir().is_absolute()


# --------------------------------------------------------------------------------------
# Fashion-MNIST: the order of the sources
# --------------------------------------------------------------------------------------

def test_fashion_mnist_source_order(fake_fashion, tmp_path, server, monkeypatch):
    """explicit > data directory > mirror > Debian > download, one step at a time."""
    folder, _ = fake_fashion
    base, www = server
    copy_tree(folder, www / "fashion")
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", f"{base}/fashion/")
    explicit = copy_tree(folder, tmp_path / "explicit")
    mirror = copy_tree(folder, tmp_path / "mirror" / "fashion-mnist").parent
    debian = copy_tree(folder, tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", debian)
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    data_dir = tmp_path / "d"
    target = data_dir / "fashion-mnist"

    monkeypatch.setenv("BNBOOK_FASHION_MNIST", str(explicit))
    got = data.provide_fashion_mnist(data_dir, progress=False)
    assert got["status"] == "read in place" and got["path"] == str(explicit.resolve())
    assert files_in(target) == []  # an explicit folder is not copied
    monkeypatch.delenv("BNBOOK_FASHION_MNIST")

    expected = [("mirror", str(mirror / "fashion-mnist")), ("Debian", str(debian)),
                ("download", f"{base}/fashion/")]
    for kind, where in expected:
        got = data.provide_fashion_mnist(data_dir, progress=False)
        assert got["status"] == "fetched now" and got["origin"].startswith(kind)
        assert where in got["origin"] and got["path"] == str(target.resolve())
        assert sorted(files_in(target)) == sorted(NAMES)
        again = data.provide_fashion_mnist(data_dir, progress=False)  # the data directory
        assert again["status"] == "already present" and again["origin"] == got["origin"]
        shutil.rmtree(target)
        shutil.rmtree(mirror if kind == "mirror" else debian if kind == "Debian" else www)


def test_fashion_mnist_mixed_sources_fill_only_missing_files(fake_fashion, tmp_path,
                                                            monkeypatch):
    folder, _ = fake_fashion
    data_dir = tmp_path / "d"
    target = data_dir / "fashion-mnist"
    target.mkdir(parents=True)
    shutil.copy(folder / NAMES[0], target / NAMES[0])
    mirror = tmp_path / "mirror"
    (mirror / "fashion-mnist").mkdir(parents=True)
    shutil.copy(folder / NAMES[1], mirror / "fashion-mnist" / NAMES[1])
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    debian = copy_tree(folder, tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", debian)
    got = data.provide_fashion_mnist(data_dir, download=False)
    assert got["origin"] == f"mirror {mirror / 'fashion-mnist'}; " \
                            f"Debian package dataset-fashion-mnist {debian}"
    assert sorted(files_in(target)) == sorted(NAMES)


def test_fashion_mnist_corrupt_mirror_file_refused(fake_fashion, tmp_path, monkeypatch):
    """A mirror file with other IDX bytes, or a damaged gzip, is refused; the four files
    are copied all or nothing, so the data directory is left empty, with no temporary."""
    folder, arrays = fake_fashion
    mirror = tmp_path / "mirror"
    copy_tree(folder, mirror / "fashion-mnist")
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    data_dir = tmp_path / "d"
    other = dict(arrays, y_test=(arrays["y_test"] + 1) % 10)
    write_fashion(tmp_path / "other", other)
    shutil.copy(tmp_path / "other" / "t10k-labels-idx1-ubyte.gz",
                mirror / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256 of the "
                                         r"decompressed IDX bytes .* not copied"):
        data.provide_fashion_mnist(data_dir, download=False)
    assert files_in(data_dir) == []
    # a truncated gzip: same answer, naming the mirror's file
    raw = (folder / NAMES[2]).read_bytes()
    shutil.copy(folder / NAMES[3], mirror / "fashion-mnist" / NAMES[3])
    (mirror / "fashion-mnist" / NAMES[2]).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=rf"{NAMES[2]}: corrupt or truncated gzip"):
        data.load_fashion_mnist(data_dir=data_dir)
    assert files_in(data_dir) == []


def test_fashion_mnist_debian_folder_used(fake_fashion, tmp_path, monkeypatch, capsys):
    folder, arrays = fake_fashion
    debian = write_fashion(tmp_path / "debian", arrays, mtime=777)  # re-made .gz files
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", debian)
    data_dir = tmp_path / "d"
    x_train, *_ = data.load_fashion_mnist(data_dir=data_dir, download=False)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    assert f"from the Debian package dataset-fashion-mnist {debian}" in capsys.readouterr().err
    info = data.fashion_mnist_info(data_dir=data_dir)
    assert info["variant"] == "repacked-gz"
    assert info["gz_md5"] == {n: md5_of(debian / n) for n in NAMES}


# --------------------------------------------------------------------------------------
# Fashion-MNIST: downloads
# --------------------------------------------------------------------------------------

def test_fashion_mnist_loader_downloads_and_says_so(fake_fashion, tmp_path, server,
                                                    monkeypatch, capsys):
    folder, arrays = fake_fashion
    base, www = server
    copy_tree(folder, www / "fm")
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", f"{base}/fm/")
    data_dir = tmp_path / "d"
    got = data.load_fashion_mnist(data_dir=data_dir, progress=False)
    np.testing.assert_array_equal(got[2], arrays["x_test"])
    err = capsys.readouterr().err
    assert f"Fashion-MNIST not found in {data_dir / 'fashion-mnist'}; downloading 4 file(s)" \
           in err and f"from {base}/fm/" in err
    info = data.fashion_mnist_info(data_dir=data_dir)
    assert info["variant"] == "canonical-gz"
    assert info["gz_md5"] == fashion_mnist.FASHION_MNIST_MD5
    for name in NAMES:
        assert (data_dir / "fashion-mnist" / name).read_bytes() == (folder / name).read_bytes()
        umask = os.umask(0)
        os.umask(umask)  # the file has the permissions a plain open() gives, not 0600
        assert (data_dir / "fashion-mnist" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    # the second call reads what is there, without a word
    data.load_fashion_mnist(data_dir=data_dir, progress=False)
    assert capsys.readouterr().err == ""


def test_fashion_mnist_download_wrong_md5(fake_fashion, tmp_path, server, monkeypatch):
    folder, _ = fake_fashion
    base, www = server
    copy_tree(folder, www / "fm")
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", f"{base}/fm/")
    monkeypatch.setitem(fashion_mnist.FASHION_MNIST_MD5, NAMES[0], "0" * 32)
    data_dir = tmp_path / "d"
    with pytest.raises(ValueError, match="MD5"):
        data.provide_fashion_mnist(data_dir, progress=False)
    assert files_in(data_dir) == []


@pytest.mark.parametrize("where", ["missing", "unreachable"])
def test_fashion_mnist_no_source_names_every_way(tmp_path, server, monkeypatch, where):
    base, _ = server
    url = f"{base}/nothing-here/" if where == "missing" else \
        f"http://127.0.0.1:{closed_port()}/fm/"
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URL", url)
    monkeypatch.setenv("BNBOOK_MIRROR", str(tmp_path / "empty-mirror"))
    data_dir = tmp_path / "d"
    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist(data_dir=data_dir, progress=False)
    text = str(info.value)
    for way in ("make data", "python -m bnbook.data", "BNBOOK_FASHION_MNIST", "BNBOOK_DATA",
                "BNBOOK_MIRROR", "dataset-fashion-mnist", url, *NAMES,
                *data.FASHION_MNIST_MD5.values(), *data.FASHION_MNIST_IDX_SHA256.values()):
        assert way in text, way
    assert ("404" if where == "missing" else "Connection refused") in text
    assert files_in(data_dir) == [] and leftovers(data_dir) == []
    with pytest.raises(FileNotFoundError, match=r"download=False"):
        data.provide_fashion_mnist(data_dir, download=False)


# --------------------------------------------------------------------------------------
# CIFAR-10: the order of the sources and the mirror
# --------------------------------------------------------------------------------------

def test_cifar10_source_order(canonical, jpeg_archive, tmp_path, server, monkeypatch):
    """explicit > data directory > mirror (canonical before JPEG) > download."""
    archive, md5, _, expected = canonical
    jpeg, jpeg_sha = jpeg_archive
    base, www = server
    shutil.copy(archive, www / data.CIFAR10_ARCHIVE)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(archive, mirror / data.CIFAR10_ARCHIVE)
    shutil.copy(jpeg, mirror / data.CIFAR10_JPEG_ARCHIVE)
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    url = f"{base}/{data.CIFAR10_ARCHIVE}"
    data_dir = tmp_path / "d"

    monkeypatch.setenv("BNBOOK_CIFAR10", str(jpeg))
    got = data.provide_cifar10(data_dir, md5=md5, url=url, progress=False)
    assert got["status"] == "read in place" and got["path"] == str(jpeg.resolve())
    assert got["origin"] == f"$BNBOOK_CIFAR10={jpeg}" and files_in(data_dir) == [
        "cifar10-checksums.json"]
    monkeypatch.delenv("BNBOOK_CIFAR10")

    steps = [(data.CIFAR10_ARCHIVE, f"mirror {mirror / data.CIFAR10_ARCHIVE}", md5),
             (data.CIFAR10_JPEG_ARCHIVE, f"mirror {mirror / data.CIFAR10_JPEG_ARCHIVE}",
              jpeg_sha),
             (data.CIFAR10_ARCHIVE, f"download {url}", md5)]
    for name, origin, _ in steps:
        got = data.provide_cifar10(data_dir, md5=md5, url=url, progress=False)
        assert (got["status"], got["origin"]) == ("fetched now", origin)
        assert got["path"] == str((data_dir / name).resolve())
        again = data.provide_cifar10(data_dir, md5=md5, url=url, progress=False)
        assert (again["status"], again["origin"]) == ("already present", origin)
        (data_dir / name).unlink()
        if (mirror / name).exists():
            (mirror / name).unlink()
    got = data.load_cifar10(data_dir, md5=md5, url=url, progress=False)  # downloads again
    assert_arrays(got, expected)
    assert md5_of(data_dir / data.CIFAR10_ARCHIVE) == md5


def test_cifar10_mirror_copy_checked(canonical, jpeg_archive, tmp_path, monkeypatch, capsys):
    archive, md5, _, expected = canonical
    jpeg, _ = jpeg_archive
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    data_dir = tmp_path / "d"
    # a corrupted canonical archive in the mirror is refused before anything is unpickled
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (mirror / data.CIFAR10_ARCHIVE).write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=rf"{data.CIFAR10_ARCHIVE}: MD5 .* not used"):
        data.load_cifar10(data_dir, md5=md5, progress=False)
    assert files_in(data_dir) == []
    # the same for the JPEG copy, checked against its known SHA-256
    (mirror / data.CIFAR10_ARCHIVE).unlink()
    (mirror / data.CIFAR10_JPEG_ARCHIVE).write_bytes(jpeg.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{data.CIFAR10_JPEG_ARCHIVE}: SHA256 .* not used"):
        data.load_cifar10(data_dir, progress=False)
    assert files_in(data_dir) == []
    # an intact canonical archive is copied and read
    (mirror / data.CIFAR10_ARCHIVE).write_bytes(archive.read_bytes())
    assert_arrays(data.load_cifar10(data_dir, md5=md5, progress=False), expected)
    assert "copying cifar-10-python.tar.gz" in capsys.readouterr().err


def test_cifar10_jpeg_copy_checked_by_name(jpeg_archive, tmp_path, monkeypatch):
    """A cifar10-jpeg.tar.gz anywhere must be the known JPEG copy: its name identifies it."""
    jpeg, sha = jpeg_archive
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    shutil.copy(jpeg, data_dir / data.CIFAR10_JPEG_ARCHIVE)
    info = data.cifar10_info(data_dir)
    assert (info["variant"], info["layout"], info["sha256"]) == (
        "jpeg-image-folder", "image-folder-archive", sha)
    other = tmp_path / "other" / data.CIFAR10_JPEG_ARCHIVE
    other.parent.mkdir()
    shutil.copy(jpeg, other)
    # the same files, now not the known copy: refused in the data directory and in place
    monkeypatch.setattr(cifar10, "CIFAR10_JPEG_SHA256", "0" * 64)
    for kwargs in ({"source": other}, {}):
        with pytest.raises(ValueError, match="differs from the known JPEG copy"):
            data.load_cifar10(data_dir, progress=False, **kwargs)
    assert leftovers(data_dir) == []


def test_cifar10_no_source_names_every_way(tmp_path, server):
    base, _ = server
    data_dir = tmp_path / "d"
    url = f"{base}/{data.CIFAR10_ARCHIVE}"  # not served: 404
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(data_dir, progress=False, url=url)
    text = str(info.value)
    for way in ("make data", "python -m bnbook.data", "BNBOOK_CIFAR10", "BNBOOK_DATA",
                "BNBOOK_MIRROR", data.CIFAR10_JPEG_ARCHIVE, data.CIFAR10_JPEG_SHA256,
                data.CIFAR10_MD5, str(data_dir / data.CIFAR10_ARCHIVE), "404"):
        assert way in text, way
    assert files_in(data_dir) == [] and leftovers(data_dir) == []


# --------------------------------------------------------------------------------------
# downloads and copies (bnbook.data.fetch)
# --------------------------------------------------------------------------------------

def test_download_over_http_then_load(canonical, tmp_path, server):
    archive, md5, _, expected = canonical
    base, www = server
    (www / data.CIFAR10_ARCHIVE).write_bytes(archive.read_bytes())
    data_dir = tmp_path / "data"
    got = data.load_cifar10(data_dir, progress=False, url=f"{base}/{data.CIFAR10_ARCHIVE}",
                            md5=md5)
    assert_arrays(got, expected)
    assert md5_of(data_dir / data.CIFAR10_ARCHIVE) == md5
    assert data.cifar10_info(data_dir, md5=md5)["variant"] == "canonical"


def test_download_file_url_and_sha256(canonical, tmp_path, server):
    archive, md5, _, _ = canonical
    dest = tmp_path / "dl" / "a.tar.gz"
    assert data.download_file(archive.as_uri(), dest, md5, progress=False) == dest
    assert dest.read_bytes() == archive.read_bytes()
    base, www = server
    shutil.copy(archive, www / "b.tar.gz")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    data.download_file(f"{base}/b.tar.gz", tmp_path / "dl" / "b.tar.gz", f"sha256:{sha}",
                       progress=False)
    assert (tmp_path / "dl" / "b.tar.gz").read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.tar.gz", "b.tar.gz"]


def test_download_wrong_md5_leaves_nothing(canonical, tmp_path, server):
    archive, md5, _, _ = canonical
    base, www = server
    (www / "a.tar.gz").write_bytes(archive.read_bytes())
    dest = tmp_path / "dl" / data.CIFAR10_ARCHIVE
    with pytest.raises(ValueError, match="MD5"):
        data.download_file(f"{base}/a.tar.gz", dest, "0" * 32, progress=False)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ValueError, match="MD5"):  # the same through the loader
        data.load_cifar10(dest.parent, progress=False, url=f"{base}/a.tar.gz")
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(ValueError, match="MD5"):  # and for a file:// URL
        data.download_file(archive.as_uri(), dest, "0" * 32, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_download_cut_short_leaves_nothing(canonical, tmp_path, server):
    archive, md5, _, _ = canonical
    base, www = server
    (www / "a.tar.gz").write_bytes(archive.read_bytes())
    dest = tmp_path / "dl" / "a.tar.gz"
    with pytest.raises((ValueError, ConnectionError)):
        data.download_file(f"{base}/short/a.tar.gz", dest, md5, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_download_retries_a_failed_request(canonical, tmp_path, server):
    archive, md5, _, _ = canonical
    base, www = server
    (www / "a.tar.gz").write_bytes(archive.read_bytes())
    dest = tmp_path / "dl" / "a.tar.gz"
    with pytest.raises(ConnectionError, match="500"):  # no retry: the 500 is final
        data.download_file(f"{base}/flaky/a.tar.gz", dest, md5, progress=False, retries=0)
    (www / "b.tar.gz").write_bytes(archive.read_bytes())
    data.download_file(f"{base}/flaky/b.tar.gz", dest, md5, progress=False, retries=1)
    assert dest.read_bytes() == archive.read_bytes()


def test_offline_error_says_where_to_put_the_file(tmp_path):
    data_dir = tmp_path / "data"
    url = f"http://127.0.0.1:{closed_port()}/{data.CIFAR10_ARCHIVE}"
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(data_dir, progress=False, url=url)
    assert str(data_dir / data.CIFAR10_ARCHIVE) in str(info.value)
    assert data.CIFAR10_MD5 in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert list(data_dir.iterdir()) == []
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(data_dir, download=False)
    assert str(data_dir / data.CIFAR10_ARCHIVE) in str(info.value)
    assert "BNBOOK_CIFAR10" in str(info.value)


def test_copy_verified_is_all_or_nothing(tmp_path):
    """An interrupt (or a refusal) while checking the second file leaves neither file."""
    (tmp_path / "a").write_bytes(b"a" * 1000)
    (tmp_path / "b").write_bytes(b"b" * 1000)
    out = tmp_path / "out"

    def interrupt_on_b(copy, original):
        if original.name == "b":
            raise KeyboardInterrupt

    pairs = [(tmp_path / "a", out / "a"), (tmp_path / "b", out / "b")]
    with pytest.raises(KeyboardInterrupt):
        fetch.copy_verified(pairs, interrupt_on_b)
    assert files_in(out) == []
    assert fetch.copy_verified(pairs, lambda copy, original: None) == [out / "a", out / "b"]
    assert (out / "b").read_bytes() == b"b" * 1000


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------

def test_cli_provisions_both_then_is_a_noop(fake_fashion, jpeg_archive, tmp_path,
                                            monkeypatch, capsys):
    folder, _ = fake_fashion
    jpeg, sha = jpeg_archive
    mirror = tmp_path / "mirror"
    copy_tree(folder, mirror / "fashion-mnist")
    shutil.copy(jpeg, mirror / data.CIFAR10_JPEG_ARCHIVE)
    monkeypatch.setenv("BNBOOK_MIRROR", str(mirror))
    data_dir = tmp_path / "d"
    assert cli.main(["fetch", "--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    fm, c10 = lines
    assert fm.startswith(f"fashion-mnist: {(data_dir / 'fashion-mnist').resolve()}  "
                         f"canonical-gz  IDX sha256 ")
    assert fm.endswith(f"fetched now (from mirror {mirror / 'fashion-mnist'})")
    assert c10 == (f"cifar10: {(data_dir / data.CIFAR10_JPEG_ARCHIVE).resolve()}  "
                   f"jpeg-image-folder  sha256 {sha}  fetched now "
                   f"(from mirror {mirror / data.CIFAR10_JPEG_ARCHIVE})")

    def boom(*args, **kwargs):
        raise AssertionError("the second run must not copy")

    hashed = []

    def counting(real):
        def wrapper(path, *args, **kwargs):
            hashed.append(Path(path).name)
            return real(path, *args, **kwargs)
        return wrapper

    for module in (fashion_mnist, cifar10):
        monkeypatch.setattr(module, "copy_verified", boom)
        monkeypatch.setattr(module, "file_checksum", counting(module.file_checksum))
    monkeypatch.setattr(fashion_mnist, "idx_sha256", counting(fashion_mnist.idx_sha256))
    assert cli.main(["--data-dir", str(data_dir)]) == 0
    # no copy, but every file is hashed again: its size and mtime do not prove its content
    assert set(hashed) == {*fashion_mnist.FASHION_MNIST_FILES.values(),
                           data.CIFAR10_JPEG_ARCHIVE}
    again = capsys.readouterr().out.splitlines()
    assert again == [fm.replace("fetched now", "already present"),
                     c10.replace("fetched now", "already present")]


def test_cli_reports_failure(tmp_path, capsys):
    assert cli.main(["--data-dir", str(tmp_path / "d"), "--only", "cifar10",
                     "--no-download"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cifar10: FAILED\nno CIFAR-10 found") and "BNBOOK_MIRROR" in err


def test_data_dir_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("x")
    monkeypatch.setenv("BNBOOK_DATA", str(not_a_folder))
    with pytest.raises(NotADirectoryError, match=r"\$BNBOOK_DATA names .* a file, not a folder"):
        data.load_fashion_mnist(download=False)
    from bnbook.data.__main__ import main

    assert main(["--no-download"]) == 2
    assert "a file, not a folder" in capsys.readouterr().err


def test_stale_temporaries_are_removed_fresh_ones_kept(tmp_path, capsys):
    import time

    from bnbook.data.__main__ import main

    data_dir = tmp_path / "d"
    (data_dir / "fashion-mnist").mkdir(parents=True)
    stale = [data_dir / ".cifar10-abc-x_train.npy.k2j3.tmp",
             data_dir / "fashion-mnist" / ".train-images-idx3-ubyte.gz.x1.part"]
    stale_dir = data_dir / ".cifar-10-batches-py.q9.part"
    stale_dir.mkdir()
    fresh = data_dir / ".cifar10-def-y_test.npy.z8.tmp"
    keep = data_dir / "notes.tmp"                     # not hidden: not ours, kept
    for p in (*stale, fresh, keep):
        p.write_bytes(b"half")
    old = time.time() - 2 * 3600
    for p in (*stale, stale_dir):
        os.utime(p, (old, old))
    os.utime(keep, (old, old))
    main(["--data-dir", str(data_dir), "--no-download", "--no-progress"])
    assert not any(p.exists() for p in (*stale, stale_dir))
    assert fresh.exists() and keep.exists()
    assert capsys.readouterr().err.count("left by an interrupted run") == 3

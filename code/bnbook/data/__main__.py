"""Provision the book's data sets: ``python -m bnbook.data [fetch] [--data-dir D]
[--only fashion-mnist|cifar10] [--no-download]`` (what ``make data`` runs).

Puts Fashion-MNIST and CIFAR-10 where the loaders look (the data directory, unless an
explicit ``$BNBOOK_FASHION_MNIST``/``$BNBOOK_CIFAR10`` is set), from the first source that
has them: the data directory itself, the mirror (``$BNBOOK_MIRROR``), Debian's
``dataset-fashion-mnist``, the canonical URLs. Prints one line per data set: where it is,
which variant, its checksum, and where it came from. When everything is already in place
it only reads the checksums it remembered, so a second run takes a fraction of a second.
Exits with 1 (after trying every data set) if one could not be provisioned.
"""

from __future__ import annotations

import argparse
import functools
import sys

from bnbook.data.cifar10 import provide_cifar10
from bnbook.data.fashion_mnist import provide_fashion_mnist
from bnbook.cli import one_line
from bnbook.data.fetch import remove_stale_temporaries, resolve_data_dir


def _fashion_mnist_summary(info: dict) -> str:
    sums = ", ".join(f"{name.split('-idx')[0]} {sha[:12]}"
                     for name, sha in info["idx_sha256"].items())
    return f"{info['path']}  {info['variant']}  IDX sha256 {sums}"


def _cifar10_summary(info: dict) -> str:
    return f"{info['path']}  {info['variant']}  sha256 {info['sha256']}"


DATASETS = {
    "fashion-mnist": (provide_fashion_mnist, _fashion_mnist_summary),
    # rehash: a copy can change without its size or modification time changing
    "cifar10": (functools.partial(provide_cifar10, rehash=True), _cifar10_summary),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnbook.data",
        description="Put Fashion-MNIST and CIFAR-10 where the book's loaders look (what "
                    "`make data` runs); a no-op when they are already there.")
    parser.add_argument("command", nargs="?", default="fetch", choices=["fetch"],
                        help="fetch (the default): provision the data sets")
    parser.add_argument("--data-dir", help="the data directory (default: $BNBOOK_DATA, "
                        "else <repo>/data/cache)")
    parser.add_argument("--only", choices=list(DATASETS), help="one data set only")
    parser.add_argument("--no-download", action="store_true",
                        help="use local sources only (data directory, mirror, Debian)")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    args = parser.parse_args(argv)
    try:
        data_dir = resolve_data_dir(args.data_dir)
    except (NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in remove_stale_temporaries(data_dir):
        print(f"removed {p}, a temporary file left by an interrupted run", file=sys.stderr)
    failed = []
    for name in [args.only] if args.only else list(DATASETS):
        provide, summary = DATASETS[name]
        try:
            info = provide(args.data_dir, download=not args.no_download,
                           progress=not args.no_progress)
        except (FileNotFoundError, ValueError) as exc:
            print(f"{name}: FAILED\n{exc}", file=sys.stderr)
            failed.append(name)
            continue
        except OSError as exc:  # a full disk, a read-only folder: one line naming the file
            print(f"{name}: FAILED: {one_line(exc)}; free space or choose a writable "
                  f"--data-dir", file=sys.stderr)
            failed.append(name)
            continue
        origin = f" (from {info['origin']})" if info["origin"] else ""
        print(f"{name}: {summary(info)}  {info['status']}{origin}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""How the book's command lines end on a refused input: one line ``error: ...`` on stderr and
exit status 2, the way ``argparse`` reports a bad argument, never a traceback.

:func:`report_errors` runs a command's body and turns the refusals the package raises - a
``ValueError`` (with :class:`bnbook.experiments.cifar.checkpoints.CheckpointError` and :class:`CommandError`), an
``OSError`` (a missing, unwritable or full file), a ``FloatingPointError`` (a run that
diverged) - into that line. Messages name the file or argument and say what to do.
"""

from __future__ import annotations

import sys

__all__ = ["CommandError", "REFUSALS", "one_line", "report_errors", "positive_int",
           "ALLOW_UNKNOWN_DATA", "OWN_DATA_SUFFIX", "add_allow_unknown_data", "is_unknown_data",
           "check_known_data", "refuse_unknown_result", "bounded_float"]


class CommandError(ValueError):
    """A refused command-line input; the message names the argument and what to do."""


#: The exceptions that are refusals of an input (not bugs): reported in one line, exit 2.
REFUSALS = (ValueError, OSError, FloatingPointError, RecursionError)


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (an ``OSError`` keeps its file name)."""
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report_errors(body, *args, prog: str | None = None, **kwargs) -> int:
    """``body(*args, **kwargs)``, its exit status; a refusal (:data:`REFUSALS`) is printed as
    ``[prog: ]error: <message>`` on stderr and gives 2."""
    try:
        return body(*args, **kwargs)
    except REFUSALS as err:
        prefix = f"{prog}: " if prog else ""
        print(f"{prefix}error: {one_line(err)}", file=sys.stderr)
        return 2


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1 (``--threads``, ``--jobs``, sizes), so
    that ``--threads 0`` is a usage error naming the argument, not a torch ``RuntimeError``."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


#: The one flag of every experiment command line that lets a user train on a data copy whose
#: checksums are not the published ones (their own data); such a result is marked (its
#: ``dataset`` names the unknown variant) and written to ``<stem>-own-data.json``, never over
#: a stored result.
ALLOW_UNKNOWN_DATA = "--allow-unknown-data"
OWN_DATA_SUFFIX = "-own-data"


def add_allow_unknown_data(parser) -> None:
    """Add :data:`ALLOW_UNKNOWN_DATA` to an ``argparse`` parser (``args.allow_unknown_data``)."""
    parser.add_argument(ALLOW_UNKNOWN_DATA, action="store_true",
                        help="train on a data copy whose checksums are not the published "
                             "ones; the result is marked so and written to "
                             f"<name>{OWN_DATA_SUFFIX}.json, never over a stored result")


def add_draft_argument(parser) -> None:
    """Add ``--draft`` to an ``argparse`` parser (``args.draft``): see :func:`refuse_dirty_tree`."""
    parser.add_argument("--draft", action="store_true",
                        help="allow a result from uncommitted code (a +dirty commit), marked "
                             "draft: true; the book does not read drafts")


def refuse_dirty_tree(parser, args) -> None:
    """Before any work: a result for ``data/results/`` (``args.out``) from a tree whose tracked
    files differ from the commit needs ``--draft`` (``parser.error`` otherwise)."""
    from bnbook import provenance

    if not args.draft and provenance.is_book_result(args.out) \
            and provenance.git_commit().endswith("+dirty"):
        parser.error(f"the tree has uncommitted changes and {args.out} holds results the book "
                     f"reads: commit first, pass --out elsewhere, or mark the result --draft")


def is_unknown_data(dataset: str) -> bool:
    """Whether a provenance ``dataset`` name (``"fashion-mnist/unknown"``,
    ``"cifar10/unknown-..."``) is a copy that matches no published checksum."""
    variant = str(dataset).rsplit("/", 1)[-1]
    return variant == "unknown" or variant.startswith("unknown-")


def check_known_data(dataset: str, allowed: bool) -> bool:
    """Refuse (:class:`CommandError`) an unknown data copy unless ``allowed``; returns whether
    the result is the user's own data (to be marked and written under another name)."""
    if not is_unknown_data(dataset):
        return False
    if not allowed:
        raise CommandError(
            f"the data in use ({dataset}) does not match the published checksums (see "
            f"`python -m bnbook.data`); fetch the published copy with `make data`, or pass "
            f"{ALLOW_UNKNOWN_DATA} to train on your own data (its run and result names then end "
            f"in {OWN_DATA_SUFFIX}, never a stored result's)")
    return True


def refuse_unknown_result(path, result) -> None:
    """Refuse (``ValueError``) a result computed on an unknown data copy unless its file is
    the user's own (``*-own-data.json``): the book's stored results need the published data."""
    from pathlib import Path

    dataset = (result.get("provenance") or {}).get("dataset") or ""
    if is_unknown_data(dataset) and not Path(path).stem.endswith(OWN_DATA_SUFFIX):
        raise ValueError(f"{path}: computed on data that matches no published checksum "
                         f"({dataset}); rerun its command on the published data (`make data`)")


def bounded_float(low: float, high: float, *, low_open: bool = False):
    """An ``argparse`` type: a finite number in ``[low, high]`` (``(low, high]`` with
    ``low_open``), so that ``--lr 1e308`` or ``--lr nan`` is a usage error up front, not an
    overflow in the optimiser after the data has loaded."""
    import argparse
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value > high or value < low or (
                low_open and value == low):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be a finite number in {bracket}{low:g}, "
                                             f"{high:g}], got {text}")
        return value

    return parse

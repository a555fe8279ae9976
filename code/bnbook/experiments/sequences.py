"""The stored, multi-seed version of the chapter's sequence experiment (Experiment 2).

::

    python -m bnbook.experiments.sequences            # 5 seeds, 3 learning rates, 2 cells
    python -m bnbook.experiments.sequences --quick    # 1 seed, short training (seconds)

Trains an Elman network (:class:`bnbook.sequence_norms.NormRNN`) and an LSTM
(:class:`bnbook.sequence_norms.NormLSTM`) without normalisation, with layer norm and with
per-step batch norm on lengths 4..16, at each of three learning rates, and tests each on
lengths 4..16, 17..32 and 33..64 (:func:`bnbook.sequence_norms.length_experiment`); then writes
``data/results/norms/sequences.json`` (``sequences-quick.json``) with provenance:
``{"provenance", "profile", "rnn": {"settings", "runs"}, "lstm": {"settings", "runs"}}``. The
data are generated from the seeds, so the result records them as synthetic. The stored result
the book reads is made from a committed tree: with uncommitted changes to tracked files the
command refuses to start unless ``--draft`` marks the result a draft.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bnbook.cli import add_draft_argument, positive_int, refuse_dirty_tree
from bnbook.provenance import RESULTS_DIR, collect_provenance, command_line, now_iso
from bnbook.results import write_result
from bnbook.sequence_norms import length_experiment

__all__ = ["PROG", "PROFILES", "SEQUENCES_RESULT", "build_parser", "main"]

PROG = "python -m bnbook.experiments.sequences"
#: The stored result the chapter reads.
SEQUENCES_RESULT = RESULTS_DIR / "norms" / "sequences.json"
#: ``full`` is the stored result; ``quick`` a tiny version for tests. Both cells run with the
#: same settings; 1,500 steps is several times what layer norm needs to reach the loss
#: threshold, so batch norm is not stopped early.
PROFILES = {"full": dict(seeds=(0, 1, 2, 3, 4), lrs=(1e-3, 3e-3, 1e-2), steps=1500),
            "quick": dict(seeds=(0,), lrs=(3e-3,), steps=60, n_train=256, n_test=100)}
CELLS = ("rnn", "lstm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short training")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--out", default=str(RESULTS_DIR / "norms"))
    parser.add_argument("--no-progress", action="store_true")
    add_draft_argument(parser)
    return parser


def main(argv=None) -> int:
    """Run the experiment and write ``<out>/sequences[-quick].json``; return 0 (2: refused)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_dirty_tree(parser, args)
    torch.set_num_threads(args.threads)
    profile = "quick" if args.quick else "full"
    started, wall0 = now_iso(), time.perf_counter()
    parts = {cell: length_experiment(cell=cell, progress=not args.no_progress, **PROFILES[profile])
             for cell in CELLS}
    prov = collect_provenance(
        device="cpu", precision="float32", draft=args.draft, started=started,
        wall_seconds=round(time.perf_counter() - wall0, 2),
        command=command_line(argv, prog=PROG),
        dataset="synthetic-majority-sequences (bnbook.sequence_norms.make_majority_task)",
        dataset_sha256=None, threads=args.threads)
    stem = "sequences-quick" if args.quick else "sequences"
    path = write_result(Path(args.out) / f"{stem}.json",
                        {"provenance": prov, "profile": profile, **parts})
    print(f"{PROG}: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

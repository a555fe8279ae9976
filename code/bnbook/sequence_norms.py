"""Why sequence models use layer norm: a small recurrent network on generated sequences.

The task (:func:`make_majority_task`): sequences of the symbols ``a, b, c, d`` of varying
length, padded to the longest in the batch; the label says whether ``a`` occurs more often
than ``b`` (ties are redrawn). Longer sequences are not harder: the counts separate more.

The model (:class:`NormRNN`) is an Elman network as Ba et al. (2016) and Cooijmans et al.
(2017) normalise it: at every time step ``t``,

    a_t = W x_t + U h_{t-1},    h_t = tanh(norm(a_t)),

and ``h`` stays put on padded steps, so the classifier (a linear layer) reads the hidden state
after each sequence's own last symbol. ``norm`` is one of :data:`SEQUENCE_NORMS`:

``none``
    nothing;
``layer``
    ``nn.LayerNorm(H)``: each (sequence, step) over its ``H`` hidden units, the same in
    training and inference, whatever else is in the batch;
``batch``
    :class:`StepBatchNorm`: batch norm as recurrent networks need it (Cooijmans et al., 2017):
    at step ``t`` the statistics are over the sequences still running at ``t`` (padding
    excluded), with running statistics kept per time step; a step beyond the longest one seen
    in training uses the last step's running statistics.

:func:`train_sequence_model` trains with :func:`bnbook.training.fit`;
:func:`sequence_accuracy` evaluates per length range; :func:`batch_dependence` measures how
much one sequence's output changes with the other sequences of its batch;
:func:`running_sequences_per_step` counts how many sequences a batch norm step averages over.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bnbook.diagnostics import eval_mode
from bnbook.training import fit

__all__ = ["SEQUENCE_NORMS", "SequenceBatch", "make_majority_task", "StepBatchNorm", "NormRNN",
           "train_sequence_model", "sequence_accuracy", "batch_dependence",
           "running_sequences_per_step", "length_experiment"]

#: The normalisations :class:`NormRNN` can apply to its recurrent pre-activation.
SEQUENCE_NORMS = ("none", "layer", "batch")
#: The symbols; the task compares the counts of the first two.
ALPHABET = "abcd"


class SequenceBatch(NamedTuple):
    """Padded sequences: ``tokens`` ``(N, T)`` int64 in ``0..3`` (``0`` on padded steps),
    ``lengths`` ``(N,)`` int64 in ``1..T``, ``labels`` ``(N,)`` int64 (1: more ``a`` than
    ``b``)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(N, T)`` bool: true on a sequence's own steps, false on padding."""
        steps = torch.arange(self.tokens.shape[1])
        return steps[None, :] < self.lengths[:, None]


def make_majority_task(n: int, min_len: int, max_len: int, seed: int,
                       p_major: float = 0.4, p_minor: float = 0.2) -> SequenceBatch:
    """``n`` sequences with lengths uniform in ``min_len..max_len``, padded to ``max_len``.

    Each sequence draws a favoured symbol (``a`` or ``b``, equally likely), then each step
    is the favoured symbol with probability ``p_major``, the other with ``p_minor`` and ``c``
    or ``d`` otherwise; the label is whether ``a`` occurs more often than ``b`` in the drawn
    sequence (a tie is drawn again). Seeded by ``seed`` (NumPy).
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if n < 1 or not (0 < p_minor and 0 < p_major and p_major + p_minor < 1):
        raise ValueError(f"need n >= 1 and positive probabilities summing below 1, got n={n}, "
                         f"p_major={p_major}, p_minor={p_minor}")
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, max_len), dtype=np.int64)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    labels = np.zeros(n, dtype=np.int64)
    rest = (1.0 - p_major - p_minor) / 2
    for i, length in enumerate(lengths):
        while True:
            favour_a = rng.random() < 0.5
            p = [p_major, p_minor] if favour_a else [p_minor, p_major]
            seq = rng.choice(4, size=length, p=p + [rest, rest])
            n_a, n_b = int((seq == 0).sum()), int((seq == 1).sum())
            if n_a != n_b:
                break
        tokens[i, :length] = seq
        labels[i] = int(n_a > n_b)
    return SequenceBatch(torch.from_numpy(tokens), torch.from_numpy(lengths),
                         torch.from_numpy(labels))


class StepBatchNorm(nn.Module):
    """Batch norm for a recurrent pre-activation, statistics per time step.

    ``forward(a, valid, t)``: ``a`` ``(N, H)`` at step ``t``; ``valid`` ``(N,)`` bool, the
    sequences still running. In training, the mean and biased variance are over the valid
    rows only (the running statistics of step ``t`` move by ``momentum`` toward the mean and
    the unbiased variance, as PyTorch's do); in evaluation, step ``t`` uses the running
    statistics of ``min(t, last step trained)``. ``gamma`` starts at 0.1, as Cooijmans et al.
    recommend for tanh units. Rows that are not valid are returned normalised with the same
    statistics and are ignored by :class:`NormRNN`.
    """

    def __init__(self, hidden: int, max_steps: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.full((hidden,), 0.1))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.register_buffer("running_mean", torch.zeros(max_steps, hidden))
        self.register_buffer("running_var", torch.ones(max_steps, hidden))
        self.register_buffer("steps_trained", torch.zeros((), dtype=torch.long))

    def forward(self, a: torch.Tensor, valid: torch.Tensor, t: int) -> torch.Tensor:
        if self.training:
            rows = a[valid]
            mu = rows.mean(dim=0)
            var = rows.var(dim=0, unbiased=False)
            if t >= self.running_mean.shape[0]:
                raise ValueError(f"step {t} is beyond the {self.running_mean.shape[0]} steps "
                                 f"this layer keeps statistics for")
            with torch.no_grad():
                k = rows.shape[0]
                unbiased = var * k / (k - 1) if k > 1 else var
                self.running_mean[t].lerp_(mu, self.momentum)
                self.running_var[t].lerp_(unbiased, self.momentum)
                self.steps_trained.fill_(max(int(self.steps_trained), t + 1))
        else:
            s = min(t, max(int(self.steps_trained), 1) - 1)
            mu, var = self.running_mean[s], self.running_var[s]
        return (a - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


class NormRNN(nn.Module):
    """The Elman network of the module docstring; ``forward(tokens, lengths)`` -> logits
    ``(N, 2)`` read from the hidden state after each sequence's last symbol."""

    def __init__(self, norm: str = "layer", hidden: int = 32, max_steps: int = 64,
                 seed: int = 0):
        super().__init__()
        if norm not in SEQUENCE_NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {SEQUENCE_NORMS}")
        self.norm_name = norm
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.inp = nn.Linear(len(ALPHABET), hidden)
            self.rec = nn.Linear(hidden, hidden, bias=False)
            nn.init.orthogonal_(self.rec.weight)
            self.out = nn.Linear(hidden, 2)
        if norm == "layer":
            self.norm = nn.LayerNorm(hidden)
        elif norm == "batch":
            self.norm = StepBatchNorm(hidden, max_steps)
        else:
            self.norm = None

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n, steps = tokens.shape
        x = self.inp.weight.t()[tokens] + self.inp.bias  # one-hot input, as a lookup
        h = x.new_zeros(n, self.rec.weight.shape[0])
        for t in range(steps):
            valid = lengths > t
            if not valid.any():
                break
            a = x[:, t] + self.rec(h)
            if isinstance(self.norm, StepBatchNorm):
                a = self.norm(a, valid, t)
            elif self.norm is not None:
                a = self.norm(a)
            h = torch.where(valid[:, None], torch.tanh(a), h)
        return self.out(h)


def _loss(model, batch):
    tokens, lengths, labels = batch
    logits = model(tokens, lengths)
    return F.cross_entropy(logits, labels), logits


def train_sequence_model(model: NormRNN, data: SequenceBatch, *, steps: int = 400,
                         batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> dict:
    """Train ``model`` in place with Adam on random batches of ``data`` (each batch cut to its
    longest sequence, as a padding collate does); return ``{"losses", "seconds"}``."""
    if not 1 <= batch_size <= data.tokens.shape[0]:
        raise ValueError(f"batch_size must be in 1..{data.tokens.shape[0]}, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)

    def batches():
        for _ in range(steps):
            idx = torch.randint(data.tokens.shape[0], (batch_size,), generator=gen)
            lengths = data.lengths[idx]
            yield data.tokens[idx, :int(lengths.max())], lengths, data.labels[idx]

    losses = []
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    model.train()
    fit(model, batches(), _loss, opt,
        on_step=lambda step, loss, out, batch: losses.append(float(loss.detach())))
    model.eval()
    return {"losses": losses, "seconds": time.perf_counter() - start}


@torch.no_grad()
def sequence_accuracy(model: NormRNN, data: SequenceBatch, batch_size: int = 500,
                      train_mode: bool = False) -> float:
    """Fraction of ``data`` classified right, in evaluation mode (``train_mode=True``: with the
    normalisation in training mode, batch statistics of ``batch_size`` sequences; running
    statistics are restored afterwards)."""
    correct = 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with eval_mode(model):
        if train_mode:
            model.train()
        for i in range(0, data.tokens.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            logits = model(data.tokens[sl], data.lengths[sl])
            correct += int((logits.argmax(dim=1) == data.labels[sl]).sum())
    model.load_state_dict(state)
    return correct / data.tokens.shape[0]


@torch.no_grad()
def batch_dependence(model: NormRNN, probe: SequenceBatch, companions: list[SequenceBatch],
                     train_mode: bool = True) -> float:
    """Largest change of the logits of the sequences ``probe`` when the rest of their batch
    is each of ``companions`` instead (model in training or evaluation mode; its state is
    restored). Zero means: a sequence's output does not depend on its batch."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    outs = []
    with eval_mode(model):
        if train_mode:
            model.train()
        for comp in companions:
            steps = max(probe.tokens.shape[1], comp.tokens.shape[1])
            tokens = torch.cat([F.pad(probe.tokens, (0, steps - probe.tokens.shape[1])),
                                F.pad(comp.tokens, (0, steps - comp.tokens.shape[1]))])
            lengths = torch.cat([probe.lengths, comp.lengths])
            outs.append(model(tokens, lengths)[:probe.tokens.shape[0]])
    model.load_state_dict(state)
    return max(float((o - outs[0]).abs().max()) for o in outs[1:])


def running_sequences_per_step(lengths: torch.Tensor) -> torch.Tensor:
    """For a batch with these ``lengths``: how many sequences are still running at each step
    ``t = 0 .. max(lengths) - 1`` (the rows a per-step batch norm averages over)."""
    steps = torch.arange(int(lengths.max()))
    return (lengths[None, :] > steps[:, None]).sum(dim=1)


def length_experiment(norms=SEQUENCE_NORMS, seeds=(0,), *, train_len=(4, 16),
                      test_lens=((4, 16), (17, 32), (33, 64)), n_train: int = 4000,
                      n_test: int = 1000, steps: int = 400, batch_size: int = 32,
                      hidden: int = 32, lr: float = 3e-3, progress: bool = False) -> dict:
    """Train one :class:`NormRNN` per norm and seed on lengths ``train_len`` and test it on
    each length range of ``test_lens`` (evaluation mode). Returns ``{"settings", "runs":
    {"<norm>/seed<s>": {"acc": {"lo-hi": accuracy}, "final_loss", "seconds"}}}``; batch norm
    runs also give ``acc_batch_stats``, the accuracy with each test batch of 500 sequences
    normalised with its own statistics (training mode) instead of the running ones."""
    max_steps = max(hi for _, hi in test_lens)
    runs = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds) * len(norms), desc="sequences")
    for seed in seeds:
        train = make_majority_task(n_train, *train_len, seed=1000 + seed)
        tests = {f"{lo}-{hi}": make_majority_task(n_test, lo, hi, seed=2000 + seed + 17 * lo)
                 for lo, hi in test_lens}
        for norm in norms:
            if bar is not None:
                bar.update(1)
            model = NormRNN(norm, hidden=hidden, max_steps=max_steps, seed=seed)
            res = train_sequence_model(model, train, steps=steps, batch_size=batch_size, lr=lr,
                                       seed=seed)
            run = {"acc": {k: sequence_accuracy(model, d) for k, d in tests.items()},
                   "final_loss": float(np.mean(res["losses"][-50:])),
                   "seconds": round(res["seconds"], 3)}
            if norm == "batch":  # the test batch's own statistics instead of running ones
                run["acc_batch_stats"] = {k: sequence_accuracy(model, d, train_mode=True)
                                          for k, d in tests.items()}
            runs[f"{norm}/seed{seed}"] = run
    if bar is not None:
        bar.close()
    settings = dict(norms=list(norms), seeds=list(seeds), train_len=list(train_len),
                    test_lens=[list(t) for t in test_lens], n_train=n_train, n_test=n_test,
                    steps=steps, batch_size=batch_size, hidden=hidden, lr=lr)
    return {"settings": settings, "runs": runs}

"""Batch norm against layer norm in small recurrent networks on generated sequences.

The task (:func:`make_majority_task`): sequences of the symbols ``a, b, c, d`` of varying
length, padded to the longest in the batch; the label says whether ``a`` occurs more often
than ``b`` (ties are redrawn). Longer sequences are not harder: the counts separate more.

The models: :class:`NormRNN` is an Elman network as Ba et al. (2016) and Cooijmans et al.
(2017) normalise it: at every time step ``t``,

    a_t = W x_t + U h_{t-1},    h_t = tanh(norm(a_t)),

and ``h`` stays put on padded steps, so the classifier (a linear layer) reads the hidden state
after each sequence's own last symbol; :class:`NormLSTM` is an LSTM normalised the same three
ways (gates and cell state, as Ba et al. normalise theirs). ``norm`` is one of
:data:`SEQUENCE_NORMS`:

``none``
    nothing;
``layer``
    ``nn.LayerNorm(H)``: each (sequence, step) over its ``H`` hidden units, the same in
    training and inference, whatever else is in the batch;
``batch``
    :class:`StepBatchNorm`: batch norm as recurrent networks need it (Cooijmans et al., 2017):
    at step ``t`` the statistics are over the sequences still running at ``t`` (padding
    excluded), with running statistics kept per time step; a step beyond the longest one seen
    in training (with two or more sequences) uses the last such step's running statistics, and a
    training step with a single running sequence is normalised with the running statistics.

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

__all__ = ["SEQUENCE_NORMS", "SEQUENCE_CELLS", "SequenceBatch", "make_majority_task",
           "StepBatchNorm", "NormRNN", "NormLSTM", "steps_to_loss", "train_sequence_model",
           "sequence_accuracy", "sequence_loss", "batch_dependence", "running_sequences_per_step",
           "length_experiment", "over_seeds"]

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
    sequences still running. In training, when at least two rows are valid, the mean and biased
    variance are over the valid rows only and the running statistics of step ``t`` move by
    ``momentum`` toward the mean and the unbiased variance (``k / (k - 1)`` times the biased
    one, as PyTorch's do); in evaluation, step ``t`` uses the running statistics of
    ``min(t, last step trained)``. ``gamma`` starts at 0.1, as Cooijmans et al. recommend for
    tanh units. Rows that are not valid are returned normalised with the same statistics and
    are ignored by :class:`NormRNN`.

    A training step with fewer than two valid rows is normalised as in evaluation, with the
    running statistics (of ``t``, or of the last step trained with two or more rows), and does
    not update them. The alternatives are worse: one row's batch variance is 0, so normalising
    it by its own statistics returns ``beta`` whatever the input (the sequence's hidden state is
    wiped), and its "unbiased" variance ``0 / 0`` is undefined (using the biased 0 instead pulls
    ``running_var`` toward 0). The running statistics are the estimate of that step's mean and
    variance that evaluation will use anyway, so the lone sequence is treated exactly as it
    will be at test time, and no gradient flows through statistics of one value.
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
        if t >= self.running_mean.shape[0]:
            raise ValueError(f"step {t} is beyond the {self.running_mean.shape[0]} steps "
                             f"this layer keeps statistics for")
        k = int(valid.sum())
        if self.training and k >= 2:
            rows = a[valid]
            mu = rows.mean(dim=0)
            var = rows.var(dim=0, unbiased=False)
            with torch.no_grad():
                self.running_mean[t].lerp_(mu, self.momentum)
                self.running_var[t].lerp_(var * k / (k - 1), self.momentum)
                self.steps_trained.fill_(max(int(self.steps_trained), t + 1))
        else:  # evaluation, or a training step with fewer than two rows (see the docstring)
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


class NormLSTM(nn.Module):
    """An LSTM normalised as Ba et al. (2016) normalise theirs, ``forward(tokens, lengths)`` ->
    logits ``(N, 2)`` like :class:`NormRNN`. At every step ``t``

        z_t = norm_1(W x_t + U h_{t-1})   (N, 4H: input, forget, cell and output gates),
        c_t = f * c_{t-1} + i * g,        h_t = o * tanh(norm_2(c_t)),

    with ``i, f, o`` the sigmoids of the gates' parts of ``z_t`` and ``g`` the tanh of its cell
    part (PyTorch's gate order, so ``norm="none"`` is :class:`torch.nn.LSTMCell` step by step);
    ``h`` and ``c`` stay put on padded steps. ``norm_1`` and ``norm_2`` are both layer norm, both
    :class:`StepBatchNorm` (Cooijmans et al.'s recurrent batch norm), or both absent. Ba et al.
    normalise ``W x`` and ``U h`` separately; here their sum is normalised, as in
    :class:`NormRNN`. The forget gate's bias starts at 1.
    """

    def __init__(self, norm: str = "layer", hidden: int = 32, max_steps: int = 64,
                 seed: int = 0):
        super().__init__()
        if norm not in SEQUENCE_NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {SEQUENCE_NORMS}")
        self.norm_name, self.hidden = norm, hidden
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.inp = nn.Linear(len(ALPHABET), 4 * hidden)
            self.rec = nn.Linear(hidden, 4 * hidden, bias=False)
            for gate in range(4):
                nn.init.orthogonal_(self.rec.weight[gate * hidden:(gate + 1) * hidden])
            self.out = nn.Linear(hidden, 2)
        with torch.no_grad():
            self.inp.bias[hidden:2 * hidden].fill_(1.0)
        if norm == "layer":
            self.norm_gates, self.norm_cell = nn.LayerNorm(4 * hidden), nn.LayerNorm(hidden)
        elif norm == "batch":
            self.norm_gates = StepBatchNorm(4 * hidden, max_steps)
            self.norm_cell = StepBatchNorm(hidden, max_steps)
        else:
            self.norm_gates = self.norm_cell = None

    def _norm(self, layer, a, valid, t):
        if layer is None:
            return a
        return layer(a, valid, t) if isinstance(layer, StepBatchNorm) else layer(a)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n, steps = tokens.shape
        x = self.inp.weight.t()[tokens] + self.inp.bias  # (N, T, 4H), one-hot input as lookup
        h = x.new_zeros(n, self.hidden)
        c = x.new_zeros(n, self.hidden)
        for t in range(steps):
            valid = lengths > t
            if not valid.any():
                break
            z = self._norm(self.norm_gates, x[:, t] + self.rec(h), valid, t)
            i, f, g, o = z.chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(self._norm(self.norm_cell, c_new, valid, t))
            keep = valid[:, None]
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        return self.out(h)


#: The recurrent cells :func:`length_experiment` can train.
SEQUENCE_CELLS = {"rnn": NormRNN, "lstm": NormLSTM}


def steps_to_loss(losses, threshold: float, window: int = 50) -> int | None:
    """The first training step (1-based) at which the mean of the last ``window`` losses is
    below ``threshold``; ``None`` if it never is."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.size < window:
        return None
    means = np.convolve(losses, np.ones(window) / window, mode="valid")
    below = np.flatnonzero(means < threshold)
    return int(below[0]) + window if below.size else None


def _loss(model, batch):
    tokens, lengths, labels = batch
    logits = model(tokens, lengths)
    return F.cross_entropy(logits, labels), logits


def train_sequence_model(model: nn.Module, data: SequenceBatch, *, steps: int = 400,
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
def sequence_accuracy(model: nn.Module, data: SequenceBatch, batch_size: int = 500,
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
def sequence_loss(model: nn.Module, data: SequenceBatch, batch_size: int = 500) -> float:
    """Mean cross-entropy of ``model`` on ``data`` in evaluation mode (running statistics)."""
    total = 0.0
    with eval_mode(model):
        for i in range(0, data.tokens.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            logits = model(data.tokens[sl], data.lengths[sl])
            total += float(F.cross_entropy(logits, data.labels[sl], reduction="sum"))
    return total / data.tokens.shape[0]


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


def length_experiment(norms=SEQUENCE_NORMS, seeds=(0,), *, cell: str = "rnn",
                      lrs=(3e-3,), train_len=(4, 16),
                      test_lens=((4, 16), (17, 32), (33, 64)), n_train: int = 4000,
                      n_test: int = 1000, steps: int = 400, batch_size: int = 32,
                      hidden: int = 32, loss_threshold: float = 0.05, curve_every: int = 50,
                      progress: bool = False) -> dict:
    """Train one ``cell`` (:data:`SEQUENCE_CELLS`) per norm, learning rate and seed on lengths
    ``train_len`` and test it on each length range of ``test_lens`` (evaluation mode). Returns
    ``{"settings", "runs": {"<norm>/lr<lr>/seed<s>": {"acc": {"lo-hi": accuracy},
    "final_loss", "train_loss_eval", "steps_to_loss", "loss_curve", "seconds"}}}``:
    ``final_loss`` is the mean training loss of the last 50 steps (training mode, so batch norm's
    with batch statistics), ``train_loss_eval`` the loss on the whole training set in evaluation
    mode, ``steps_to_loss`` the first step at which the mean of
    the last 50 is below ``loss_threshold`` (``None``: never), ``loss_curve`` the mean of each
    ``curve_every`` steps. Batch norm runs also give ``acc_batch_stats``, the accuracy with
    each test batch of 500 sequences normalised with its own statistics (training mode)."""
    if cell not in SEQUENCE_CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {tuple(SEQUENCE_CELLS)}")
    max_steps = max(hi for _, hi in test_lens)
    runs = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds) * len(norms) * len(lrs), desc=f"sequences ({cell})")
    for seed in seeds:
        train = make_majority_task(n_train, *train_len, seed=1000 + seed)
        tests = {f"{lo}-{hi}": make_majority_task(n_test, lo, hi, seed=2000 + seed + 17 * lo)
                 for lo, hi in test_lens}
        for lr in lrs:
            for norm in norms:
                model = SEQUENCE_CELLS[cell](norm, hidden=hidden, max_steps=max_steps, seed=seed)
                res = train_sequence_model(model, train, steps=steps, batch_size=batch_size,
                                           lr=lr, seed=seed)
                losses = np.asarray(res["losses"])
                n_curve = len(losses) // curve_every * curve_every
                run = {"acc": {k: sequence_accuracy(model, d) for k, d in tests.items()},
                       "final_loss": float(np.mean(losses[-50:])),
                       "train_loss_eval": sequence_loss(model, train),
                       "steps_to_loss": steps_to_loss(losses, loss_threshold),
                       "loss_curve": [round(float(v), 5) for v in
                                      losses[:n_curve].reshape(-1, curve_every).mean(axis=1)],
                       "seconds": round(res["seconds"], 3)}
                if norm == "batch":  # the test batch's own statistics instead of running ones
                    run["acc_batch_stats"] = {k: sequence_accuracy(model, d, train_mode=True)
                                              for k, d in tests.items()}
                runs[f"{norm}/lr{lr:g}/seed{seed}"] = run
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    settings = dict(cell=cell, norms=list(norms), seeds=list(seeds), lrs=list(lrs),
                    train_len=list(train_len), test_lens=[list(t) for t in test_lens],
                    n_train=n_train, n_test=n_test, steps=steps, batch_size=batch_size,
                    hidden=hidden, loss_threshold=loss_threshold, curve_every=curve_every)
    return {"settings": settings, "runs": runs}


def over_seeds(part: dict, norm: str, lr: float, field: str = "acc"):
    """One field of the runs of ``part`` (a :func:`length_experiment` result) for ``norm`` and
    ``lr``, over its seeds in order: an array ``(seeds,)`` (``float``; ``nan`` where
    ``steps_to_loss`` is ``None``), or for ``acc`` and ``acc_batch_stats`` a dict
    ``{"lo-hi": array}``."""
    runs = [part["runs"][f"{norm}/lr{lr:g}/seed{s}"] for s in part["settings"]["seeds"]]
    if isinstance(runs[0][field], dict):
        return {r: np.array([run[field][r] for run in runs]) for r in runs[0][field]}
    return np.array([np.nan if run[field] is None else run[field] for run in runs], dtype=float)

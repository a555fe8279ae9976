"""The sequence experiment of the norms chapter: the task, per-step batch norm against PyTorch,
padding invariance, batch dependence, and the stored-result command line."""

import json

import numpy as np

import pytest
import torch
from torch.nn import functional as F

from bnbook.experiments import sequences as seq_cli
from bnbook.results import read_result
from bnbook.sequence_norms import (NormLSTM, NormRNN, SequenceBatch, StepBatchNorm,
                                   batch_dependence, length_experiment, make_majority_task,
                                   over_seeds, running_sequences_per_step, sequence_accuracy,
                                   sequence_loss, steps_to_loss, train_sequence_model)


def test_task_labels_lengths_and_padding():
    data = make_majority_task(300, 3, 9, seed=5)
    assert data.tokens.shape == (300, 9)
    assert int(data.lengths.min()) >= 3 and int(data.lengths.max()) <= 9
    for tokens, length, label in zip(data.tokens, data.lengths, data.labels):
        seq = tokens[:length]
        n_a, n_b = int((seq == 0).sum()), int((seq == 1).sum())
        assert n_a != n_b and label == int(n_a > n_b)
        assert (tokens[length:] == 0).all()
    assert 0.3 < float(data.labels.float().mean()) < 0.7
    again = make_majority_task(300, 3, 9, seed=5)
    assert torch.equal(again.tokens, data.tokens)
    assert not torch.equal(make_majority_task(300, 3, 9, seed=6).tokens, data.tokens)


@pytest.mark.parametrize("kwargs", [dict(min_len=0, max_len=4), dict(min_len=5, max_len=4),
                                    dict(min_len=2, max_len=4, n=0),
                                    dict(min_len=2, max_len=4, p_major=0.7, p_minor=0.4),
                                    dict(min_len=2, max_len=4, p_minor=0.0)])
def test_task_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        make_majority_task(kwargs.pop("n", 10), seed=0, **kwargs)


def test_step_batch_norm_matches_torch_on_the_running_rows():
    torch.manual_seed(0)
    bn = StepBatchNorm(5, max_steps=4).double()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(5))
        bn.bias.copy_(torch.randn(5))
    ref = torch.nn.BatchNorm1d(5).double()
    ref.load_state_dict({"weight": bn.weight, "bias": bn.bias}, strict=False)
    a = 3 * torch.randn(7, 5, dtype=torch.float64) + 2
    valid = torch.tensor([True, False, True, True, False, True, True])
    y = bn(a, valid, t=2)
    y_ref = ref(a[valid])
    torch.testing.assert_close(y[valid], y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_mean[2], ref.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var[2], ref.running_var, rtol=1e-12, atol=1e-12)
    assert torch.equal(bn.running_mean[0], torch.zeros(5))  # other steps untouched
    assert int(bn.steps_trained) == 3
    # evaluation: step 2 uses its own statistics, a later step the last one trained (2)
    bn.eval()
    expect = F.batch_norm(a, ref.running_mean, ref.running_var, bn.weight, bn.bias,
                          training=False, eps=bn.eps)
    torch.testing.assert_close(bn(a, valid, t=2), expect)
    torch.testing.assert_close(bn(a, valid, t=3), expect)
    bn.train()
    with pytest.raises(ValueError, match="beyond"):
        bn(a, valid, t=4)


def _hand_batch_norm(rows, mu, var, gamma, beta, eps):
    """float64 NumPy reference: (rows - mu) / sqrt(var + eps) * gamma + beta."""
    return (rows - mu) / np.sqrt(var + eps) * gamma + beta


def test_step_batch_norm_refuses_one_value_and_keeps_running_statistics_unbiased():
    rng = np.random.default_rng(3)
    bn = StepBatchNorm(4, max_steps=6, momentum=0.25).double()
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    run_mean, run_var = np.zeros((6, 4)), np.ones((6, 4))
    # steps 0..2 with 5, 3 and 2 running rows: batch statistics, unbiased running variance
    for t, k in enumerate((5, 3, 2)):
        a = rng.normal(2.0, 3.0, size=(7, 4))
        valid = np.zeros(7, dtype=bool)
        valid[rng.choice(7, size=k, replace=False)] = True
        y = bn(torch.from_numpy(a), torch.from_numpy(valid), t).detach().numpy()
        rows = a[valid]
        mu, var = rows.mean(axis=0), ((rows - rows.mean(axis=0)) ** 2).sum(axis=0) / k
        np.testing.assert_allclose(y[valid], _hand_batch_norm(rows, mu, var, gamma, beta, bn.eps),
                                   rtol=1e-12, atol=1e-12)
        run_mean[t] = 0.75 * run_mean[t] + 0.25 * mu
        run_var[t] = 0.75 * run_var[t] + 0.25 * var * k / (k - 1)
    # step 3 with one running row: normalised with step 2's running statistics, nothing updated
    a = rng.normal(2.0, 3.0, size=(7, 4))
    valid = np.zeros(7, dtype=bool)
    valid[4] = True
    y = bn(torch.from_numpy(a), torch.from_numpy(valid), 3).detach().numpy()
    np.testing.assert_allclose(y, _hand_batch_norm(a, run_mean[2], run_var[2], gamma, beta,
                                                   bn.eps), rtol=1e-12, atol=1e-12)
    assert not np.allclose(y[4], beta)  # the lone sequence is not wiped to beta
    np.testing.assert_allclose(bn.running_mean.numpy(), run_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), run_var, rtol=1e-12, atol=1e-12)
    assert int(bn.steps_trained) == 3
    # evaluation: steps 0..2 their own statistics, steps 3..5 (beyond the last one trained with
    # two or more rows) step 2's
    bn.eval()
    for t in range(6):
        y = bn(torch.from_numpy(a), torch.from_numpy(valid), t).detach().numpy()
        s = min(t, 2)
        np.testing.assert_allclose(y, _hand_batch_norm(a, run_mean[s], run_var[s], gamma, beta,
                                                       bn.eps), rtol=1e-12, atol=1e-12)


def test_lstm_without_norm_is_torch_lstm_cell_step_by_step():
    torch.manual_seed(1)
    model = NormLSTM("none", hidden=6, max_steps=9, seed=2).double()
    cell = torch.nn.LSTMCell(4, 6).double()
    with torch.no_grad():
        cell.weight_ih.copy_(model.inp.weight)
        cell.bias_ih.copy_(model.inp.bias)
        cell.weight_hh.copy_(model.rec.weight)
        cell.bias_hh.zero_()
    data = make_majority_task(5, 3, 9, seed=4)
    x = F.one_hot(data.tokens, 4).double()
    h = c = torch.zeros(5, 6, dtype=torch.float64)
    for t in range(9):
        h_new, c_new = cell(x[:, t], (h, c))
        keep = (data.lengths > t)[:, None]
        h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
    torch.testing.assert_close(model(data.tokens, data.lengths), model.out(h),
                               rtol=1e-12, atol=1e-12)
    assert float(model.inp.bias.detach()[6:12].min()) == 1.0  # forget gate's bias starts at 1


def test_steps_to_loss_by_hand():
    losses = [1.0] * 4 + [0.0] * 4
    # means of windows of 4: 1, .75, .5, .25, 0 -> first below 0.3 is the window ending at step 7
    assert steps_to_loss(losses, 0.3, window=4) == 7
    assert steps_to_loss(losses, -1.0, window=4) is None
    assert steps_to_loss(losses[:3], 0.3, window=4) is None


@pytest.mark.parametrize("cell", [NormRNN, NormLSTM])
@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_padding_does_not_change_a_sequence_in_evaluation(norm, cell):
    model = cell(norm, hidden=8, max_steps=20, seed=1)
    data = make_majority_task(16, 2, 10, seed=3)
    train_sequence_model(model, data, steps=3, batch_size=8)
    padded = F.pad(data.tokens, (0, 7))
    torch.testing.assert_close(model(padded, data.lengths), model(data.tokens, data.lengths),
                               rtol=0, atol=1e-6)
    # and a sequence alone gives what it gives in a batch
    one = model(data.tokens[:1, :int(data.lengths[0])], data.lengths[:1])
    torch.testing.assert_close(one, model(data.tokens, data.lengths)[:1], rtol=0, atol=1e-5)


def test_only_batch_norm_in_training_mode_depends_on_the_batch():
    probe = make_majority_task(4, 5, 12, seed=10)
    companions = [make_majority_task(12, 2, 4, seed=11), make_majority_task(12, 10, 30, seed=12)]
    changes = {norm: batch_dependence(NormRNN(norm, hidden=16, max_steps=40, seed=0), probe,
                                      companions)
               for norm in ("none", "layer", "batch")}
    assert changes["none"] < 1e-5 and changes["layer"] < 1e-5
    assert changes["batch"] > 1e-2
    bn = NormRNN("batch", hidden=16, max_steps=40, seed=0)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    assert batch_dependence(bn, probe, companions, train_mode=False) < 1e-5
    batch_dependence(bn, probe, companions)  # training mode: state restored afterwards
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in before.items())


def test_running_sequences_per_step_counts_by_hand():
    lengths = torch.tensor([3, 1, 5, 3])
    assert running_sequences_per_step(lengths).tolist() == [4, 3, 3, 1, 1]


def test_training_learns_the_task_and_accuracy_is_a_fraction():
    data = make_majority_task(600, 3, 8, seed=0)
    model = NormRNN("layer", hidden=16, max_steps=8, seed=0)
    chance = sequence_accuracy(model, data)
    out = train_sequence_model(model, data, steps=150, batch_size=32, lr=1e-2)
    assert len(out["losses"]) == 150
    acc = sequence_accuracy(model, data)
    assert 0.0 <= chance <= 1.0 and acc > 0.85 > chance


def test_length_experiment_layout():
    out = length_experiment(norms=("layer", "batch"), seeds=(0,), cell="lstm", lrs=(3e-3, 1e-2),
                            steps=60, n_train=64, n_test=20, test_lens=((4, 16), (17, 20)),
                            curve_every=25)
    assert set(out["runs"]) == {f"{n}/lr{lr}/seed0" for n in ("layer", "batch")
                                for lr in ("0.003", "0.01")}
    run = out["runs"]["layer/lr0.003/seed0"]
    assert set(run["acc"]) == {"4-16", "17-20"} and len(run["loss_curve"]) == 2
    assert run["train_loss_eval"] > 0 and run["steps_to_loss"] is None  # 60 steps: not yet
    assert "acc_batch_stats" in out["runs"]["batch/lr0.01/seed0"]
    assert "acc_batch_stats" not in run
    assert out["settings"]["cell"] == "lstm"
    json.dumps(out)  # plain JSON
    acc = over_seeds(out, "batch", 0.01, "acc_batch_stats")
    assert acc["17-20"].tolist() == [out["runs"]["batch/lr0.01/seed0"]["acc_batch_stats"]["17-20"]]
    assert np.isnan(over_seeds(out, "layer", 3e-3, "steps_to_loss")).all()
    with pytest.raises(ValueError, match="unknown cell"):
        length_experiment(cell="gru")


def test_sequence_loss_is_the_mean_cross_entropy():
    data = make_majority_task(30, 2, 6, seed=8)
    model = NormRNN("layer", hidden=8, max_steps=6, seed=0)
    model.train()
    expect = float(F.cross_entropy(model(data.tokens, data.lengths), data.labels))
    assert abs(sequence_loss(model, data, batch_size=7) - expect) < 1e-6
    assert model.training  # mode restored


def test_command_line_writes_a_valid_result(tmp_path):
    assert seq_cli.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = read_result(tmp_path / "sequences-quick.json")
    assert result["profile"] == "quick"
    assert result["provenance"]["dataset_sha256"] is None
    for cell in ("rnn", "lstm"):
        assert set(result[cell]["runs"]) == {f"{n}/lr0.003/seed0"
                                             for n in ("none", "layer", "batch")}


def test_command_line_refuses_an_uncommitted_tree(tmp_path, monkeypatch, capsys):
    from bnbook import provenance
    monkeypatch.setattr(provenance, "git_commit", lambda: "0123abc+dirty")
    monkeypatch.setattr(provenance, "RESULTS_DIR", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        seq_cli.main(["--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert "uncommitted" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_model_rejects_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm"):
        NormRNN("weight")
    with pytest.raises(ValueError, match="batch_size"):
        train_sequence_model(NormRNN("none"), make_majority_task(4, 1, 3, seed=0), batch_size=5)
    assert isinstance(make_majority_task(2, 1, 2, seed=0), SequenceBatch)

"""The sequence experiment of the norms chapter: the task, per-step batch norm against PyTorch,
padding invariance, batch dependence, and the stored-result command line."""

import json

import pytest
import torch
from torch.nn import functional as F

from bnbook.experiments import sequences as seq_cli
from bnbook.results import read_result
from bnbook.sequence_norms import (NormRNN, SequenceBatch, StepBatchNorm, batch_dependence,
                                   length_experiment, make_majority_task,
                                   running_sequences_per_step, sequence_accuracy,
                                   train_sequence_model)


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


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_padding_does_not_change_a_sequence_in_evaluation(norm):
    model = NormRNN(norm, hidden=8, max_steps=20, seed=1)
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
    out = length_experiment(norms=("layer", "batch"), seeds=(0,), steps=5, n_train=64,
                            n_test=20, test_lens=((4, 16), (17, 20)))
    assert set(out["runs"]) == {"layer/seed0", "batch/seed0"}
    assert set(out["runs"]["layer/seed0"]["acc"]) == {"4-16", "17-20"}
    assert "acc_batch_stats" in out["runs"]["batch/seed0"]
    assert "acc_batch_stats" not in out["runs"]["layer/seed0"]
    json.dumps(out)  # plain JSON


def test_command_line_writes_a_valid_result(tmp_path):
    assert seq_cli.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = read_result(tmp_path / "sequences-quick.json")
    assert result["profile"] == "quick"
    assert result["provenance"]["dataset_sha256"] is None
    assert set(result["runs"]) == {"none/seed0", "layer/seed0", "batch/seed0"}


def test_model_rejects_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm"):
        NormRNN("weight")
    with pytest.raises(ValueError, match="batch_size"):
        train_sequence_model(NormRNN("none"), make_majority_task(4, 1, 3, seed=0), batch_size=5)
    assert isinstance(make_majority_task(2, 1, 2, seed=0), SequenceBatch)

"""Tests of bnbook.training: the SGD loop of the MLP experiments (learns, reproducible,
detects divergence) and evaluate_accuracy."""

import pytest
import torch

from bnbook.training import evaluate_accuracy, train_classifier

from practice_helpers import small_mlp, synthetic_subset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return synthetic_subset()


# ----------------------------------------------------------------------------- training

def test_training_learns_and_is_reproducible(data):
    accs, params = [], []
    for _ in range(2):
        model = small_mlp(data, seed=1)
        before = evaluate_accuracy(model, data.x_test, data.y_test)
        res = train_classifier(model, data.x_train, data.y_train, epochs=3, batch_size=32,
                                 lr=0.05, seed=3)
        accs.append(evaluate_accuracy(model, data.x_test, data.y_test))
        params.append(torch.cat([p.detach().flatten() for p in model.state_dict().values()
                                 if p.is_floating_point()]))
    assert not res.diverged and res.steps == 3 * (600 // 32) and len(res.epoch_loss) == 3
    assert res.epoch_loss[-1] < res.epoch_loss[0]
    assert before < 0.3 and accs[0] > 0.9
    assert torch.equal(params[0], params[1]) and accs[0] == accs[1]
    assert not model.training  # left in evaluation mode


def test_training_detects_divergence(data):
    model = small_mlp(data, norm="none", seed=0)
    res = train_classifier(model, data.x_train, data.y_train, epochs=2, batch_size=32,
                             lr=1e4, seed=0)
    assert res.diverged and res.steps < 2 * (600 // 32)


@pytest.mark.parametrize("kw, word", [(dict(batch_size=0), "batch_size"),
                                      (dict(batch_size=601), "batch_size"),
                                      (dict(epochs=0), "epochs"), (dict(lr=0.0), "lr")])
def test_training_rejects_bad_arguments(data, kw, word):
    with pytest.raises(ValueError, match=word):
        train_classifier(small_mlp(data), data.x_train, data.y_train, **kw)
    with pytest.raises(ValueError, match="labels"):
        train_classifier(small_mlp(data), data.x_train, data.y_train[:-1])


def test_evaluate_accuracy_matches_direct_count_and_restores_modes(data):
    model = small_mlp(data, seed=0, dropout=0.5)
    train_classifier(model, data.x_train, data.y_train, epochs=1, batch_size=50, seed=0)
    model.train()
    model[2].eval()  # a deliberately frozen BN layer must stay frozen
    acc = evaluate_accuracy(model, data.x_test, data.y_test, batch_size=64)
    with torch.no_grad():
        model.eval()
        direct = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        model.train()
        model[2].eval()
    assert acc == pytest.approx(direct, abs=1e-12)
    assert model.training and not model[2].training and model[4].training

"""Training procedure of the CIFAR-10 experiment (bnbook.train): optimizer, schedule,
augmentation, data order, result files and exact resume."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnbook.cifar import main as cifar_main
from bnbook.cifar import synthetic_cifar
from bnbook.models import keras_cnn
from bnbook.train import (InverseTimeLR, TrainConfig, augmentation_params, epoch_order, evaluate,
                          keras_inverse_time_lr, load_history, load_result, make_optimizer,
                          shard_positions, shift_flip, subset_indices, train)

# ------------------------------------------------------------------ optimizer and schedule


def test_inverse_time_decay_hand_values():
    assert keras_inverse_time_lr(1e-3, 1e-6, 0) == 1e-3
    assert keras_inverse_time_lr(1e-4, 1e-6, 1563) == pytest.approx(1e-4 / 1.001563, rel=1e-15)
    # after 50 epochs of 1563 updates the rate has fallen by 1 / (1 + 0.07815)
    assert keras_inverse_time_lr(1e-4, 1e-6, 50 * 1563) == pytest.approx(9.27515e-5, rel=1e-5)
    with pytest.raises(ValueError):
        keras_inverse_time_lr(1e-3, 1e-6, -1)


def test_scheduler_applies_the_keras_rate_at_every_update():
    holder = nn.Linear(3, 2)
    opt = make_optimizer(holder, 1e-3)
    scheduler = InverseTimeLR(opt, 1e-6)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    for t in range(400):
        assert opt.param_groups[0]["lr"] == keras_inverse_time_lr(1e-3, 1e-6, t), t
        holder(torch.ones(1, 3)).sum().backward()
        opt.step()
        scheduler.step()
    # restored as train() resumes (build both, then load their states), the sequence goes on
    opt2 = make_optimizer(holder, 1e-3)
    again = InverseTimeLR(opt2, 1e-6)
    opt2.load_state_dict(opt.state_dict())
    again.load_state_dict(scheduler.state_dict())
    assert again.last_epoch == 400 and opt2.param_groups[0]["lr"] == keras_inverse_time_lr(
        1e-3, 1e-6, 400)
    for t in range(400, 450):
        opt2.step()
        again.step()
        assert opt2.param_groups[0]["lr"] == keras_inverse_time_lr(1e-3, 1e-6, t + 1), t


def keras_rmsprop_reference(p0, grads, lr, decay, rho, eps):
    """Keras 2.x RMSprop.get_updates in float64 NumPy, written out from its source."""
    p, a = p0.copy(), np.zeros_like(p0)
    for t, g in enumerate(grads):
        lr_t = lr * (1.0 / (1.0 + decay * t))
        a = rho * a + (1.0 - rho) * g ** 2
        p = p - lr_t * g / (np.sqrt(a) + eps)
    return p


def test_rmsprop_with_decay_matches_keras_rule():
    rng = np.random.default_rng(0)
    # small gradients (scale 1e-3 on top of a 3e-3 offset) so that where eps sits matters
    p0 = rng.normal(0.5, 2.0, size=(7, 5))
    grads = [rng.normal(3e-3, 1e-3, size=p0.shape) for _ in range(6)]
    lr, decay, rho, eps = 0.05, 0.2, 0.9, 1e-3  # large decay and eps: visible differences
    param = nn.Parameter(torch.tensor(p0))
    holder = nn.Module()
    holder.w = param
    opt = make_optimizer(holder, lr, rho, eps)
    for t, g in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = keras_inverse_time_lr(lr, decay, t)
        param.grad = torch.tensor(g)
        opt.step()
    expected = keras_rmsprop_reference(p0, grads, lr, decay, rho, eps)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-12, atol=1e-14)
    # the test can fail: eps inside the square root (tf.keras 2.x) gives a different answer
    p_inside, a = p0.copy(), np.zeros_like(p0)
    for t, g in enumerate(grads):
        a = rho * a + (1 - rho) * g ** 2
        p_inside -= lr / (1 + decay * t) * g / np.sqrt(a + eps)
    assert np.abs(p_inside - expected).max() > 1e-3


# ------------------------------------------------------------------ augmentation


def bilinear_nearest_reference(img, dy, dx, flip):
    """NumPy reference of ImageDataGenerator's shift (+ flip): scipy affine_transform with
    order=1, mode='nearest' samples input at (i + dy, j + dx), clamping to the edge."""
    c, h, w = img.shape
    out = np.empty_like(img)
    for i in range(h):
        for j in range(w):
            jj = (w - 1 - j) if flip else j
            y = min(max(i + dy, 0.0), h - 1.0)
            x = min(max(jj + dx, 0.0), w - 1.0)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[:, i, j] = ((1 - fy) * (1 - fx) * img[:, y0, x0] + (1 - fy) * fx * img[:, y0, x1]
                            + fy * (1 - fx) * img[:, y1, x0] + fy * fx * img[:, y1, x1])
    return out


def test_shift_flip_matches_bilinear_nearest_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.9, size=(4, 3, 12, 10))
    shifts = np.array([[1.3, -2.7], [-3.2, 3.2], [0.0, 0.0], [2.5, 0.4]])
    flips = np.array([False, True, True, False])
    got = shift_flip(torch.tensor(x), torch.tensor(shifts), torch.tensor(flips)).numpy()
    for k in range(4):
        ref = bilinear_nearest_reference(x[k], shifts[k, 0], shifts[k, 1], flips[k])
        np.testing.assert_allclose(got[k], ref, rtol=0, atol=1e-12)


def nearest_reference(img, dy, dx, flip):
    """scipy affine_transform(order=0, mode='nearest'): the input pixel nearest to
    (i + dy, j' + dx), clamped to the edge (Keras before 2.1.4)."""
    c, h, w = img.shape
    out = np.empty_like(img)
    for i in range(h):
        for j in range(w):
            jj = (w - 1 - j) if flip else j
            y = int(np.clip(np.rint(i + dy), 0, h - 1))
            x = int(np.clip(np.rint(jj + dx), 0, w - 1))
            out[:, i, j] = img[:, y, x]
    return out


def test_whole_pixel_shifts_match_the_nearest_reference_and_keep_pixels():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 0.9, size=(4, 3, 12, 10))
    shifts = np.array([[1.3, -2.7], [-3.2, 3.1], [0.2, -0.4], [2.6, 0.4]])
    flips = np.array([False, True, True, False])
    got = shift_flip(torch.tensor(x), torch.tensor(shifts), torch.tensor(flips), order=0).numpy()
    for k in range(4):
        np.testing.assert_allclose(got[k], nearest_reference(x[k], *shifts[k], flips[k]),
                                   rtol=0, atol=1e-12)
        # every output value is one of the image's own pixel values: nothing is blurred
        assert np.isin(got[k], x[k]).all()
    # the bilinear default does blur: most of its values are not input pixels
    blurred = shift_flip(torch.tensor(x), torch.tensor(shifts), torch.tensor(flips)).numpy()
    assert not np.isin(blurred[0], x[0]).mean() > 0.5
    with pytest.raises(ValueError, match="order"):
        shift_flip(torch.tensor(x), torch.tensor(shifts), torch.tensor(flips), order=3)


def test_ablation_settings_reach_the_model_and_the_run_name():
    from bnbook.cifar import build_parser, default_run_name
    from bnbook.models import keras_cnn
    from bnbook.train import TrainConfig

    n_dropout = [sum(isinstance(m, torch.nn.Dropout) for m in keras_cnn(**kw))
                 for kw in ({}, {"batch_norm": True}, {"batch_norm": True, "keep_dropout": True})]
    assert n_dropout == [3, 0, 3]
    with pytest.raises(ValueError, match="keep_dropout"):
        TrainConfig(model="baseline", keep_dropout=True)
    with pytest.raises(ValueError, match="shift_order"):
        TrainConfig(shift_order=2)
    parse = build_parser().parse_args
    plain = default_run_name(parse(["--model", "bn", "--precision", "fp32"]), 1e-3)
    assert plain == "bn-lr0.001-e50-seed7-fp32"
    names = {default_run_name(parse(["--model", "bn", "--precision", "fp32", *extra]), 1e-3)
             for extra in ([], ["--keep-dropout"], ["--no-bn-on-logits"], ["--shift-order", "0"],
                           ["--no-augment"])}
    assert len(names) == 5  # no two ablations share a folder


def test_flip_alone_mirrors_and_nearest_fill_repeats_the_border():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) + 1.0
    zero = torch.zeros(2, 2, dtype=torch.float64)
    flipped = shift_flip(x, zero, torch.tensor([True, False]))
    torch.testing.assert_close(flipped[0], x[0].flip(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(flipped[1], x[1], rtol=0, atol=1e-12)
    # shift by +3 px to the right of the sampling grid: output column j shows input j + 3,
    # the last 3 columns repeat the input's last column (fill_mode='nearest')
    moved = shift_flip(x, torch.tensor([[0.0, 3.0], [-3.0, 0.0]], dtype=torch.float64),
                       torch.tensor([False, False]))
    torch.testing.assert_close(moved[0, :, :, :29], x[0, :, :, 3:], rtol=0, atol=1e-12)
    for j in range(29, 32):
        torch.testing.assert_close(moved[0, :, :, j], x[0, :, :, 31], rtol=0, atol=1e-12)
    torch.testing.assert_close(moved[1, :, 3:, :], x[1, :, :29, :], rtol=0, atol=1e-12)
    torch.testing.assert_close(moved[1, :, 0, :], x[1, :, 0, :], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shifts"):
        shift_flip(x, torch.zeros(3, 2), torch.zeros(2, dtype=torch.bool))


def test_augmentation_parameters_bounds_and_frequencies():
    shifts, flips = augmentation_params(50_000, seed=7, epoch=3)
    assert shifts.shape == (50_000, 2) and flips.shape == (50_000,)
    assert np.abs(shifts).max() <= 3.2 and np.abs(shifts).max() > 3.19  # 10 % of 32 px
    assert np.abs(shifts.mean(0)).max() < 0.05  # uniform on a symmetric interval
    assert shifts.std(0) == pytest.approx(3.2 / np.sqrt(3), rel=0.02)
    assert flips.mean() == pytest.approx(0.5, abs=0.01)
    again, _ = augmentation_params(50_000, seed=7, epoch=3)
    other, _ = augmentation_params(50_000, seed=7, epoch=4)
    assert np.array_equal(shifts, again) and not np.array_equal(shifts, other)


def test_epoch_order_shards_and_subset():
    order = epoch_order(1000, seed=7, epoch=0)
    assert sorted(order) == list(range(1000))
    assert np.array_equal(order, epoch_order(1000, 7, 0))
    assert not np.array_equal(order, epoch_order(1000, 7, 1))
    shards = [shard_positions(10, 3, r) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to 12 like DistributedSampler
    assert sorted(np.concatenate(shards)) == [0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert np.array_equal(shard_positions(10), np.arange(10))
    with pytest.raises(ValueError):
        shard_positions(10, 2, 2)
    sub = subset_indices(50_000, 1000)
    assert len(set(sub.tolist())) == 1000 and np.array_equal(sub, subset_indices(50_000, 1000))
    # a fixed shuffle: sorted-by-class data still gives a balanced subset
    labels = np.repeat(np.arange(10), 5000)
    assert np.bincount(labels[sub], minlength=10).min() > 60


# ------------------------------------------------------------------ evaluation and results


def test_evaluate_matches_manual_cross_entropy_in_eval_mode():
    torch.manual_seed(0)
    x, y, _, _ = synthetic_cifar(40, seed=2)
    model = keras_cnn(batch_norm=True)
    model.train()
    model(torch.rand(16, 3, 32, 32))  # move running statistics away from 0 / 1
    loss, acc = evaluate(model, torch.tensor(x), torch.tensor(y), batch_size=16)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(x).permute(0, 3, 1, 2).float() / 255)
    assert loss == pytest.approx(F.cross_entropy(logits, torch.tensor(y)).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == torch.tensor(y)).float().mean().item())


def strip_seconds(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


@pytest.mark.parametrize("model", ["baseline", "bn"])
def test_resume_gives_the_same_history_and_weights(tmp_path, model):
    data = synthetic_cifar(96, seed=1)
    kw = dict(model=model, batch_size=32, threads=1, eval_batch_size=32)
    synthetic = {"dataset": {"variant": "synthetic-random-96", "sha256": None}}
    straight = train(TrainConfig(epochs=2, **kw), data, progress=False,
                     out=tmp_path / "straight.json", checkpoint_path=tmp_path / "straight.pt",
                     **synthetic)
    ckpt = tmp_path / "ck.pt"
    train(TrainConfig(epochs=1, **kw), data, progress=False, checkpoint_path=ckpt,
          out=tmp_path / "resumed.json", **synthetic)
    resumed = train(TrainConfig(epochs=2, **kw), data, progress=False, checkpoint_path=ckpt,
                    resume=True, out=tmp_path / "resumed.json", **synthetic)
    assert strip_seconds(straight["history"]) == strip_seconds(resumed["history"])
    for k, v in straight["model_state"].items():
        assert torch.equal(v, resumed["model_state"][k]), k
    # the runs did learn something, so equality is not trivial
    assert straight["history"][1]["train_loss"] != straight["history"][0]["train_loss"]
    on_disk = load_result(tmp_path / "resumed.json")
    assert strip_seconds(load_history(tmp_path / "resumed.json")) == strip_seconds(straight["history"])
    assert on_disk["provenance"]["resumes"][0]["at_epoch"] == 1
    # the learning-rate schedule resumed where it stopped: same state, same next rate
    ends = [torch.load(p, map_location="cpu", weights_only=False)
            for p in (tmp_path / "straight.pt", ckpt)]
    assert ends[0]["scheduler"] == ends[1]["scheduler"]
    assert ends[1]["scheduler"]["last_epoch"] == ends[1]["step"] == 2 * 3
    lr = TrainConfig(**kw).lr
    for end in ends:
        assert end["optimizer"]["param_groups"][0]["lr"] == keras_inverse_time_lr(
            lr, 1e-6, end["step"])
    # a different trajectory setting is refused
    with pytest.raises(ValueError, match="different settings"):
        train(TrainConfig(epochs=2, **{**kw, "batch_size": 16}), data, progress=False,
              checkpoint_path=ckpt, resume=True)
    with pytest.raises(ValueError, match="names its data"):
        train(TrainConfig(epochs=1, **kw), data, progress=False, out=tmp_path / "x.json")


def test_checkpoint_without_scheduler_state_resumes_the_same(tmp_path):
    """Checkpoints written before the schedule was a LambdaLR hold no scheduler state and the
    optimizer's rate of the last update done; they resume on the same trajectory."""
    data = synthetic_cifar(64, seed=1)
    kw = dict(model="bn", batch_size=32, threads=1, eval_batch_size=32, decay=1e-2)
    straight = train(TrainConfig(epochs=2, **kw), data, progress=False)
    ckpt = tmp_path / "c.pt"
    train(TrainConfig(epochs=1, **kw), data, progress=False, checkpoint_path=ckpt)
    old = torch.load(ckpt, map_location="cpu", weights_only=False)
    del old["scheduler"]
    for group in old["optimizer"]["param_groups"]:
        del group["initial_lr"]
        group["lr"] = keras_inverse_time_lr(TrainConfig(**kw).lr, 1e-2, old["step"] - 1)
    torch.save(old, ckpt)
    resumed = train(TrainConfig(epochs=2, **kw), data, progress=False, checkpoint_path=ckpt,
                    resume=True)
    for k, v in straight["model_state"].items():
        assert torch.equal(v, resumed["model_state"][k]), k


def test_result_file_format(tmp_path):
    out = tmp_path / "r.json"
    rc = cifar_main(["--model", "bn", "--epochs", "1", "--synthetic", "64", "--threads", "1",
                     "--no-progress", "--out", str(out), "--checkpoint", str(tmp_path / "c.pt")])
    assert rc == 0
    result = json.loads(out.read_text())
    assert list(result) == ["run", "model", "config", "provenance", "history"]
    assert result["model"] == "bn" and result["config"]["lr"] == 1e-3
    assert {"provenance_version", "dataset", "dataset_sha256", "device", "cpu", "torch",
            "numpy", "python", "precision", "precision_requested", "cpu_native_bf16",
            "git_commit", "command", "started", "finished",
            "wall_seconds"} == set(result["provenance"])  # the one layout, through write_result
    assert result["provenance"]["provenance_version"] == 1 and result["provenance"]["cpu"]
    # the default precision is auto, recorded as asked for and as resolved
    assert result["provenance"]["precision_requested"] == "auto"
    assert result["provenance"]["precision"] in ("fp32", "bf16")
    assert result["config"]["precision"] == result["provenance"]["precision"]
    assert result["run"].endswith("-" + result["provenance"]["precision"])
    assert result["provenance"]["dataset"] == "synthetic-random-64"
    assert result["provenance"]["finished"] is not None
    # the values, not just the keys: what was asked for, and what the reader accepts
    prov = result["provenance"]
    assert prov["torch"] == torch.__version__
    assert "--synthetic 64" in prov["command"] and "--epochs 1" in prov["command"]
    assert prov["started"] <= prov["finished"]
    # wall_seconds is rounded to 0.1 s, an epoch's seconds to 0.01 s
    assert prov["wall_seconds"] + 0.05 >= result["history"][0]["seconds"] > 0
    assert result["config"]["epochs"] == 1 and result["config"]["batch_size"] == 32
    from bnbook.results import load_run_if_present
    assert load_run_if_present(out)["history"] == result["history"]
    (entry,) = result["history"]
    assert list(entry) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    assert entry["epoch"] == 1 and 0 <= entry["val_acc"] <= 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="model"):
        TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    assert TrainConfig(model="baseline").lr == 1e-4 and TrainConfig(model="bn").lr == 1e-3
    data = synthetic_cifar(32)
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        train(TrainConfig(model="bn", sync_bn=True, device="cpu", epochs=1), data, progress=False)
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train(TrainConfig(model="bn", precision="fp16", device="cpu", epochs=1), data,
              progress=False)
    with pytest.raises(ValueError, match="uint8"):
        train(TrainConfig(epochs=1), tuple(np.asarray(a, dtype=np.float32) for a in data),
              progress=False)

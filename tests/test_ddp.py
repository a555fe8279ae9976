"""Data-parallel training on CPU: the CLI in two gloo processes on a tiny random data set.

The processes are started the way ``torchrun --nproc_per_node=2 -m bnbook.experiments.cifar`` starts them
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` in the environment), each saves its
final weights, and the test compares them: DistributedDataParallel averages the gradients and
the trainer broadcasts rank 0's BN running statistics after every epoch, so the two replicas
must be identical.
"""

import os
import subprocess
import sys

import pytest
import torch

from bnbook.distributed import free_port
from bnbook.models import keras_cnn
from bnbook.results import read_result


def launch(argv, world_size=2, timeout=120):
    """Start ``argv`` as ``world_size`` ranks of one process group; return codes, outputs.

    The CLI initialises with ``env://`` (as under torchrun), which needs ``MASTER_PORT``."""
    port = free_port()
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [p.returncode for p in procs], outputs


def cli(*args):
    return [sys.executable, "-m", "bnbook.experiments.cifar", "--synthetic", "128", "--threads", "1",
            "--device", "cpu", "--no-progress", "--eval-batch-size", "64", *args]


@pytest.mark.timeout(240)
def test_two_gloo_ranks_train_and_agree_on_weights(tmp_path):
    out = tmp_path / "ddp.json"
    codes, outputs = launch(cli("--model", "bn", "--epochs", "2", "--out", str(out),
                                "--checkpoint", str(tmp_path / "ck.pt"),
                                "--save-final-weights", str(tmp_path / "rank{rank}.pt")))
    assert codes == [0, 0], outputs
    result = read_result(out)
    assert result["config"]["world_size"] == 2 and result["config"]["global_batch_size"] == 64
    assert result["config"]["steps_per_epoch"] == 2  # 128 images / 2 ranks / 32 per step
    assert [e["epoch"] for e in result["history"]] == [1, 2]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # training moved weights and statistics, so the comparison is not between untouched copies
    torch.manual_seed(7)
    init = keras_cnn(batch_norm=True).state_dict()
    assert not torch.equal(init["0.weight"], w0["0.weight"])
    assert not torch.equal(init["1.running_mean"], w0["1.running_mean"])


@pytest.mark.timeout(240)
def test_sync_bn_on_cpu_is_refused_with_a_message(tmp_path):
    codes, outputs = launch(cli("--model", "bn", "--epochs", "1", "--sync-bn",
                                "--out", str(tmp_path / "s.json")))
    assert codes == [2, 2], outputs
    assert "SyncBatchNorm" in outputs[0] and "CUDA" in outputs[0]
    assert not (tmp_path / "s.json").exists()

"""Precise batch-norm statistics after training (``--precise-bn``)."""

import json

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ttfs_plugin.checkpoint import load_checkpoint
from ttfs_plugin.cli import main
from ttfs_plugin.data import load_dataset
from ttfs_plugin.training import batches, precise_batchnorm

DIGITS = ["--dataset", "digits", "--epochs", "3", "--seed", "2", "--quiet"]


def test_running_statistics_become_the_whole_set_statistics():
    torch.manual_seed(0)
    x = torch.randn(240, 5) * 3 + 1
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, momentum=0.1), nn.ReLU())
    net.eval()
    precise_batchnorm(net, batches(TensorDataset(x, torch.zeros(240)), 40))
    with torch.no_grad():
        h = net[0](x)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, h.mean(0))
    # the average of the 6 batches' unbiased variances (equal batch sizes)
    batch_var = torch.stack([h[i:i + 40].var(0) for i in range(0, 240, 40)]).mean(0)
    torch.testing.assert_close(bn.running_var, batch_var)
    assert bn.momentum == 0.1 and not net.training  # put back as they were


def test_train_with_precise_bn_saves_and_reports_the_recalibrated_network(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--precise-bn", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    last = metrics["history"][-1]
    assert metrics["training"]["precise_bn"] is True
    assert last["precise_bn"]["val_accuracy"] == metrics["final"]["accuracy"]
    assert last["precise_bn"]["val_sparsity"] == metrics["final"]["sparsity"]

    # checkpoint.pt = the last epoch's weights (checkpoint.prev.pt) with recalibrated statistics
    after, _ = load_checkpoint(out / "checkpoint.pt")
    before, _ = load_checkpoint(out / "checkpoint.prev.pt")
    a, b = after.state_dict(), before.state_dict()
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert stats, "the digits MLP has batch norms"
    assert all(torch.equal(a[k], b[k]) for k in a if k not in stats and
               not k.endswith("num_batches_tracked"))
    assert any(not torch.equal(a[k], b[k]) for k in stats)
    precise_batchnorm(before, batches(load_dataset("digits").train, 128))
    for k in stats:
        torch.testing.assert_close(before.state_dict()[k], a[k])


def test_without_the_flag_nothing_is_recalibrated(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["precise_bn"] is False
    assert "precise_bn" not in metrics["history"][-1]

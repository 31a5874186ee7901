"""Training that users can leave running: checkpoints, --resume after SIGKILL, logs, configs,
torchrun."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ttfs_plugin.cli import main

ROOT = Path(__file__).resolve().parents[1]
# Small batches make each digits epoch last about a second: long enough to kill one midway.
SLOW_DIGITS = ["--dataset", "digits", "--batch-size", "8", "--seed", "5", "--quiet"]


# One thread everywhere in this module: with several, a busy machine can change the float
# reduction order between runs, and a last-bit difference can move a spike time.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def csv_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert main(["train", *SLOW_DIGITS, "--epochs", "4", "--out", str(out)]) == 0
    return out


def test_each_epoch_is_checkpointed_and_logged(uninterrupted):
    rows = csv_rows(uninterrupted)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "val_accuracy", "lr", "p_relax"} <= rows[0].keys()
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert len(metrics["history"]) == 4 and metrics["final"]["accuracy"] > 0.8
    ckpt = torch.load(uninterrupted / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 4 and "optimizer" in ckpt and "scheduler" in ckpt
    prev = torch.load(uninterrupted / "checkpoint.prev.pt", weights_only=True)
    assert prev["epoch"] == 3


def test_resume_continues_to_the_same_weights(uninterrupted, tmp_path):
    assert main(["train", *SLOW_DIGITS, "--epochs", "4", "--out", str(tmp_path)]) == 0
    # pretend the run stopped after epoch 2: restore that state, then resume
    ckpt = torch.load(tmp_path / "checkpoint.prev.pt", weights_only=True)  # epoch 3
    assert ckpt["epoch"] == 3
    (tmp_path / "checkpoint.pt").unlink()
    os.replace(tmp_path / "checkpoint.prev.pt", tmp_path / "checkpoint.pt")
    assert main(["train", "--resume", "--out", str(tmp_path), "--quiet"]) == 0
    assert_same_weights(weights(tmp_path), weights(uninterrupted))


def test_sigkill_mid_epoch_then_resume(uninterrupted, tmp_path):
    cmd = [sys.executable, "-m", "ttfs_plugin", "train", *SLOW_DIGITS, "--epochs", "4",
           "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ONE_THREAD, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for epoch 2's checkpoint, then kill during epoch 3
        if (tmp_path / "metrics.csv").exists() and len(csv_rows(tmp_path)) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"]
    assert 2 <= done < 4  # at most the running epoch is lost
    assert main(["train", "--resume", "--out", str(tmp_path), "--quiet"]) == 0
    assert [int(r["epoch"]) for r in csv_rows(tmp_path)] == [1, 2, 3, 4]
    assert_same_weights(weights(tmp_path), weights(uninterrupted))


def test_truncated_checkpoint_is_refused_and_the_previous_one_used(uninterrupted, tmp_path,
                                                                  capsys):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    assert main(["evaluate", str(run / "checkpoint.pt")]) == 2
    assert "is truncated or not a ttfs-plugin checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "truncated" in err and "from checkpoint.prev.pt: epoch 3 of 4 done" in err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 4
    assert_same_weights(weights(run), weights(uninterrupted))


def test_resume_needs_something_to_resume(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_step_schedule(tmp_path):
    assert main(["train", "--epochs", "3", "--lr-schedule", "step", "--lr-step", "2",
                 "--lr-gamma", "0.5", "--out", str(tmp_path), "--quiet"]) == 0
    lrs = [float(r["lr"]) for r in csv_rows(tmp_path)]
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4])  # the rate each epoch trained with


# --- configs ------------------------------------------------------------------------------------

def test_config_file_with_flags_overriding(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('dataset = "digits"\nepochs = 3\nbatch-size = 64\nlambda_tb = 2e-4\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1  # the flag won
    assert metrics["training"]["batch_size"] == 64 and metrics["training"]["lambda_tb"] == 2e-4


def test_bad_config_files(tmp_path, capsys):
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("epochz = 3\n")
    assert main(["train", "--config", str(bad_key), "--out", str(tmp_path)]) == 2
    assert "unknown key 'epochz'" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n")
    assert main(["train", "--config", str(broken), "--out", str(tmp_path)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("config", ["cifar10_vgg16.toml", "cifar100_vgg16.toml"])
def test_cifar_configs_smoke_run_on_the_real_images(config, shared_data, tmp_path):
    """The paper's configs, shrunk to one epoch of the 200 real CIFAR images (so they cannot
    rot): VGG-16 at width 1/16, batch 32."""
    config_file = ROOT / "ttfs_plugin" / "configs" / config
    assert main(["train", "--config", str(config_file), "--dataset", "image-folder",
                 "--data-dir", str(shared_data / "cifar10_200"), "--epochs", "1",
                 "--batch-size", "32", "--width", "0.0625", "--out", str(tmp_path),
                 "--quiet"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "vgg16" and metrics["final"]["time_steps"] == 17 * 32
    assert metrics["training"]["sr_target"] in (50, 500)


def torchrun_digits(out: Path, *flags: str) -> None:
    """One digits epoch under ``torchrun --nproc_per_node 2`` on CPU (gloo)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
                           "ttfs_plugin", "train", "--dataset", "digits", "--epochs", "1",
                           "--device", "cpu", *flags, "--out", str(out), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_torchrun_two_processes_on_cpu(tmp_path, capsys):
    out = tmp_path / "ddp"
    torchrun_digits(out)
    assert sorted(p.name for p in out.glob("checkpoint*.pt")) == ["checkpoint.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["history"]) == 1
    assert main(["evaluate", str(out / "checkpoint.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.3


def test_torchrun_with_precise_bn(tmp_path):
    """Both ranks recompute the statistics over the same batches; rank 0 saves them."""
    out = tmp_path / "ddp"
    torchrun_digits(out, "--precise-bn")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"][-1]["precise_bn"]["val_accuracy"] == metrics["final"]["accuracy"]
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["history"][-1]["precise_bn"]["batches"] == 12  # 1,437 digits / batch 128

import json
import subprocess
import sys

import pytest
import torch

from ttfs_plugin.cli import main

REQUIRED_KEYS = {"accuracy", "spikes_per_sample", "neurons", "sparsity", "spike_rate",
                 "time_steps", "energy", "per_layer"}


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    assert run_cli("train", "--dataset", "digits", "--epochs", "2", "--out", out, "--quiet") == 0
    return out


def test_train_writes_checkpoint_and_metrics(digits_run):
    assert (digits_run / "checkpoint.pt").is_file()
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert len(metrics["history"]) == 2
    assert metrics["training"]["lambda_tb"] == 1e-4  # the default preset sm+sr+tr+tb
    assert metrics["preset"] == "sm+sr+tr+tb"
    assert REQUIRED_KEYS <= metrics["final"].keys()
    ckpt = torch.load(digits_run / "checkpoint.pt", weights_only=True)
    assert ckpt["network"]["name"] == "mlp" and "ttfs1.kernel.tau" in ckpt["state_dict"]


def test_evaluate_json_has_the_contract_keys(digits_run, capsys):
    assert run_cli("evaluate", digits_run / "checkpoint.pt", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert REQUIRED_KEYS <= result.keys()
    assert {"truenorth", "spinnaker"} <= result["energy"].keys()
    assert result["samples"] == 360 and result["time_steps"] == (3 + 1) * 32
    assert result["spikes_per_sample"] == pytest.approx(
        sum(layer["spikes_per_sample"] for layer in result["per_layer"]))
    saved = json.loads((digits_run / "metrics.json").read_text())["final"]
    assert result["accuracy"] == pytest.approx(saved["accuracy"])


@pytest.mark.parametrize("split, samples", [("train", 1437), ("val", 360), ("all", 1797)])
def test_evaluate_splits(digits_run, capsys, split, samples):
    assert run_cli("evaluate", digits_run / "checkpoint.pt", "--split", split, "--json") == 0
    assert json.loads(capsys.readouterr().out)["samples"] == samples


def test_same_seed_same_result(tmp_path):
    for name in ("a", "b"):
        assert run_cli("train", "--epochs", "2", "--seed", "3", "--out", tmp_path / name,
                       "--quiet") == 0
    a, b = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=True)["state_dict"]
            for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_preset_sm_starts_with_x_max_2_and_no_sr(tmp_path):
    assert run_cli("train", "--preset", "sm", "--epochs", "1", "--out", tmp_path, "--quiet") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["network"]["td0"] == pytest.approx(10 * 0.6931471805599453)
    assert metrics["history"][0]["p_relax"] == 0.0
    assert metrics["training"]["lambda_tr"] == 0.0 and metrics["training"]["lambda_tb"] == 0.0


def test_relu_baseline_trains_and_reports_accuracy_only(tmp_path, capsys):
    assert run_cli("train", "--activation", "relu", "--epochs", "1", "--out", tmp_path,
                   "--quiet") == 0
    capsys.readouterr()
    assert run_cli("evaluate", tmp_path / "checkpoint.pt", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] > 0.5 and "spikes_per_sample" not in result


def test_mnist_idx_on_the_real_samples(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", "mnist-idx", "--data-dir", shared_data / "mnist9k",
                   "--model", "mlp", "--epochs", "1", "--out", out, "--quiet") == 0
    capsys.readouterr()
    assert run_cli("evaluate", out / "checkpoint.pt", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 1000  # images 8,000-8,999
    assert result["accuracy"] > 0.85
    assert result["per_layer"][0]["neurons"] == 784


def test_demo_command_reaches_94_percent(tmp_path, capsys):
    """The README's `make demo` job (same flags as the Makefile)."""
    assert run_cli("train", "--dataset", "digits", "--epochs", "30", "--out", tmp_path,
                   "--quiet") == 0
    printed = capsys.readouterr().out
    assert "spikes per sample" in printed and "energy (TrueNorth)" in printed
    assert json.loads((tmp_path / "metrics.json").read_text())["final"]["accuracy"] >= 0.94


# --- bad input: one line on stderr, exit status 2, nothing already written lost --------------

def _fails_with(capsys, message, *args):
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert "\n" not in err and "Traceback" not in err


def test_unknown_names(tmp_path, capsys):
    _fails_with(capsys, "unknown dataset 'cifar7'; choose one of: cifar10, cifar100, cifar10dvs, "
                "digits, dvsgesture, fashion-mnist, image-folder, mnist, mnist-idx, nmnist",
                "train", "--dataset", "cifar7", "--out", tmp_path)
    _fails_with(capsys, "unknown model 'resnet'", "train", "--model", "resnet", "--out", tmp_path)
    _fails_with(capsys, "unknown preset 'sm+xx'", "train", "--preset", "sm+xx", "--out", tmp_path)


def test_bad_hyper_parameters(tmp_path, capsys):
    _fails_with(capsys, "T must be an integer >= 2", "train", "--T", "1", "--out", tmp_path)
    _fails_with(capsys, "tau0 must be a finite number > 0", "train", "--tau0", "0", "--out",
                tmp_path)
    _fails_with(capsys, "epochs must be >= 1", "train", "--epochs", "0", "--out", tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_missing_and_malformed_data(tmp_path, capsys):
    _fails_with(capsys, "does not exist", "train", "--dataset", "mnist-idx", "--data-dir",
                tmp_path / "nowhere", "--out", tmp_path / "o")
    _fails_with(capsys, "missing file", "train", "--dataset", "mnist-idx", "--data-dir",
                tmp_path, "--out", tmp_path / "o")
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(b"garbage")
    (tmp_path / "labels-idx1-ubyte.gz").write_bytes(b"garbage")
    _fails_with(capsys, "not a readable gzip file", "train", "--dataset", "mnist-idx",
                "--data-dir", tmp_path, "--out", tmp_path / "o")


def test_truncated_idx_file(tmp_path, capsys):
    import gzip
    import struct
    with gzip.open(tmp_path / "images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">IIII", 2051, 10, 28, 28) + bytes(100))
    with gzip.open(tmp_path / "labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">II", 2049, 10) + bytes(10))
    _fails_with(capsys, "is truncated", "train", "--dataset", "mnist-idx", "--data-dir",
                tmp_path, "--out", tmp_path / "o")


def test_bad_checkpoints(tmp_path, capsys, digits_run):
    truncated = tmp_path / "t.pt"
    truncated.write_bytes((digits_run / "checkpoint.pt").read_bytes()[:1000])
    _fails_with(capsys, "truncated or not a ttfs-plugin checkpoint", "evaluate", truncated)
    foreign = tmp_path / "f.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    _fails_with(capsys, "not a ttfs-plugin checkpoint", "evaluate", foreign)
    _fails_with(capsys, "no checkpoint at", "evaluate", tmp_path / "none.pt")
    _fails_with(capsys, "unknown energy reference", "evaluate", digits_run / "checkpoint.pt",
                "--energy-ref", "zzz")


def test_existing_checkpoint_is_not_overwritten(digits_run, capsys):
    before = (digits_run / "checkpoint.pt").read_bytes()
    _fails_with(capsys, "already holds a run; pass --resume to continue it, --overwrite",
                "train", "--out",
                digits_run)
    assert (digits_run / "checkpoint.pt").read_bytes() == before


def test_console_entry_point_prints_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ttfs_plugin", "train", "--dataset", "nope",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ttfs train: error: unknown dataset 'nope'")
    assert "Traceback" not in proc.stderr


def test_evaluate_replays_the_event_settings_of_training(shared_data, tmp_path, capsys):
    out = tmp_path / "nmnist"
    assert run_cli("train", "--dataset", "nmnist", "--data-dir", shared_data / "nmnist1k",
                   "--time-bins", "2", "--epochs", "1", "--batch-size", "64", "--out", out,
                   "--quiet") == 0
    capsys.readouterr()
    assert run_cli("evaluate", out / "checkpoint.pt", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 100 and result["per_layer"][0]["neurons"] == 4 * 34 * 34

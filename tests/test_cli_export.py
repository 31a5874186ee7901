"""`ttfs evaluate --backend` and `ttfs export`."""

import json

import pytest
import torch

from ttfs_plugin.cli import main

pytest.importorskip("snntorch")


@pytest.fixture
def checkpoint(digits_checkpoint):
    return digits_checkpoint


def evaluate_json(capsys, *args):
    capsys.readouterr()
    assert main(["evaluate", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("backend", ["snntorch", "norse"])
def test_evaluate_with_a_backend_agrees_with_the_surrogate(checkpoint, capsys, backend):
    pytest.importorskip(backend)
    surrogate = evaluate_json(capsys, checkpoint)
    simulated = evaluate_json(capsys, checkpoint, "--backend", backend)
    assert simulated["backend"] == backend
    assert simulated["agreement_with_surrogate"] >= 0.999
    assert simulated["spike_time_agreement"] >= 0.9999
    assert simulated["accuracy"] == pytest.approx(surrogate["accuracy"], abs=0.003)
    assert simulated["time_steps"] == surrogate["time_steps"]
    assert simulated["spikes_per_sample"] == pytest.approx(surrogate["spikes_per_sample"],
                                                           rel=1e-3)


@pytest.mark.parametrize("backend", ["snntorch", "norse"])
def test_export_then_load_without_the_surrogate(checkpoint, tmp_path, backend):
    adapter = pytest.importorskip(f"ttfs_plugin.{backend}")
    out = tmp_path / f"{backend}.pt"
    assert main(["export", str(checkpoint), "--backend", backend, "--out", str(out)]) == 0
    net = adapter.load(out)
    x = torch.rand(4, 1, 8, 8)
    result = adapter.simulate(net, x)
    assert result.logits.shape == (4, 10)
    from ttfs_plugin.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    assert torch.equal(result.logits.argmax(1), model(x).argmax(1))


def test_export_errors(checkpoint, tmp_path, capsys):
    existing = tmp_path / "taken.pt"
    existing.write_bytes(b"keep me")
    assert main(["export", str(checkpoint), "--backend", "snntorch", "--out",
                 str(existing)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    relu = tmp_path / "relu"
    assert main(["train", "--activation", "relu", "--epochs", "1", "--out", str(relu),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(relu / "checkpoint.pt"), "--backend", "snntorch", "--out",
                 str(tmp_path / "x.pt")]) == 2
    assert "ReLU network cannot be exported" in capsys.readouterr().err
    assert main(["evaluate", str(relu / "checkpoint.pt"), "--backend", "snntorch"]) == 2
    assert "no spiking simulation" in capsys.readouterr().err

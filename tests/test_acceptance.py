"""The foundation issue's acceptance run on mnist9k (slow: ~6 min on 2 CPU cores).

Run with ``pytest -m slow tests/test_acceptance.py``. It trains the bundled config
``ttfs_plugin/configs/mnist_cnn.toml`` and its ReLU twin with the same budget and seed;
docs/results.md records these runs over 3 seeds.
"""

import json
from pathlib import Path

import pytest

from ttfs_plugin.cli import main

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[1] / "ttfs_plugin" / "configs" / "mnist_cnn.toml"


def test_small_cnn_on_mnist9k_matches_relu_at_low_sparsity(shared_data, tmp_path):
    common = ["--config", str(CONFIG), "--data-dir", str(shared_data / "mnist9k"), "--quiet",
              "--seed", "0"]
    assert main(["train", *common, "--out", str(tmp_path / "ttfs")]) == 0
    twin = ["--activation", "relu", "--lambda-tr", "0", "--lambda-tb", "0"]  # docs/results.md
    assert main(["train", *common, *twin, "--out", str(tmp_path / "relu")]) == 0
    ttfs = json.loads((tmp_path / "ttfs" / "metrics.json").read_text())["final"]
    relu = json.loads((tmp_path / "relu" / "metrics.json").read_text())["final"]
    assert ttfs["accuracy"] >= 0.985
    assert ttfs["accuracy"] >= relu["accuracy"] - 0.005
    assert ttfs["sparsity"] <= 0.10  # spikes per neuron, input encoder included

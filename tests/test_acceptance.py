"""The foundation issue's acceptance run on mnist9k (slow: ~10 min on 2 CPU cores).

Run with ``pytest -m slow tests/test_acceptance.py``; the figures are recorded in
docs/results.md.
"""

import json

import pytest

from ttfs_plugin.cli import main

pytestmark = pytest.mark.slow

COMMON = ["--dataset", "mnist-idx", "--model", "cnn", "--epochs", "15", "--quiet"]


def test_small_cnn_on_mnist9k_matches_relu_at_low_sparsity(shared_data, tmp_path):
    data = ["--data-dir", str(shared_data / "mnist9k")]
    assert main(["train", *COMMON, *data, "--preset", "sm+sr+tr+tb", "--lambda-tb", "3e-4",
                 "--out", str(tmp_path / "ttfs")]) == 0
    assert main(["train", *COMMON, *data, "--activation", "relu",
                 "--out", str(tmp_path / "relu")]) == 0
    ttfs = json.loads((tmp_path / "ttfs" / "metrics.json").read_text())["final"]
    relu = json.loads((tmp_path / "relu" / "metrics.json").read_text())["final"]
    assert ttfs["accuracy"] >= 0.985
    assert ttfs["accuracy"] >= relu["accuracy"] - 0.005
    assert ttfs["sparsity"] <= 0.10

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.load_profile("default")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample datasets (``TTFS_DATA_DIR`` or ``../shared/data``), read-only."""
    path = Path(os.environ.get("TTFS_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
    if not (path / "mnist9k").is_dir():
        pytest.skip(f"sample data not found at {path}; set TTFS_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A TTFS MLP trained 2 epochs on the built-in digits (``ttfs train``), shared read-only."""
    from ttfs_plugin.cli import main

    out = tmp_path_factory.mktemp("digits_run")
    assert main(["train", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out / "checkpoint.pt"

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

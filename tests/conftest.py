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


@pytest.fixture(autouse=True, scope="session")
def _caches_in_a_temp_dir(tmp_path_factory):
    """Event-frame caches and the built CPU kernel of the whole run (subprocesses and notebooks
    included) go to temp folders, never into the user's ~/.cache (a test that needs its own sets
    TTFS_CACHE_DIR / TTFS_KERNEL_DIR)."""
    names = {"TTFS_CACHE_DIR": "event_cache", "TTFS_KERNEL_DIR": "kernels"}
    before = {name: os.environ.get(name) for name in names}
    for name, folder in names.items():
        os.environ[name] = str(tmp_path_factory.mktemp(folder))
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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

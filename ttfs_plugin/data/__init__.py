"""Datasets by name. Each loader returns a :class:`SplitData` of float images in [0, 1].

``TTFS_DATA_DIR`` names a folder of datasets; a dataset that needs files and gets no
``data_dir`` looks for its default sub-folder there (``mnist-idx`` → ``$TTFS_DATA_DIR/mnist9k``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import unknown_name
from .base import SPLITS, SplitData
from .digits import load_digits
from .idx import load_mnist_idx

DATASETS: dict[str, Callable[..., SplitData]] = {
    "digits": load_digits,
    "mnist-idx": load_mnist_idx,
}
#: Sub-folder of ``TTFS_DATA_DIR`` used when no ``data_dir`` is given.
DEFAULT_SUBDIRS = {"mnist-idx": "mnist9k"}


def load_dataset(name: str, data_dir: str | Path | None = None) -> SplitData:
    """Load dataset ``name`` (``digits``, ``mnist-idx``) from ``data_dir``."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    if data_dir is None and name in DEFAULT_SUBDIRS and os.environ.get("TTFS_DATA_DIR"):
        data_dir = Path(os.environ["TTFS_DATA_DIR"]) / DEFAULT_SUBDIRS[name]
    return DATASETS[name](data_dir)


__all__ = ["DATASETS", "SPLITS", "SplitData", "load_dataset", "load_digits", "load_mnist_idx"]

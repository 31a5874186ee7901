"""scikit-learn's 8×8 digits (1,797 images, shipped inside scikit-learn): the built-in dataset.

scikit-learn is the ``digits`` extra (``pip install 'ttfs-plugin[digits]'``, part of ``all``);
only this loader needs it, so the adapters and the other datasets work without it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .base import SplitData, tensor_split

#: What the error for a missing scikit-learn tells the user to run.
INSTALL_HINT = "pip install 'ttfs-plugin[digits]'"

#: Fixed split: 1,437 for training, 360 held out (seeded shuffle, so every run sees the same).
DIGITS_VAL_SIZE = 360


def load_digits(data_dir: str | Path | None = None) -> SplitData:
    """Digits scaled to [0, 1] as ``(1, 8, 8)`` images; ``data_dir`` is not needed."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError(f"the digits dataset needs scikit-learn; install it with {INSTALL_HINT} "
                        "(or choose another --dataset)") from None

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    train, val = tensor_split(images, labels, len(labels) - DIGITS_VAL_SIZE)
    return SplitData("digits", train, val, (1, 8, 8), 10)

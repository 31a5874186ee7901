"""MNIST-format IDX files: ``images-idx3-ubyte.gz`` and ``labels-idx1-ubyte.gz`` in a directory.

The split follows ``../shared/data/README.md``: the last ``val_size`` images (default 1,000) are
the validation split, so ``mnist9k`` trains on images 0–7,999 and validates on 8,000–8,999.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .augment import AugmentedTensorDataset, augmentation_for
from .base import SplitData, tensor_split

IMAGES_FILE = "images-idx3-ubyte.gz"
LABELS_FILE = "labels-idx1-ubyte.gz"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array (uint8) from a gzip file, checking magic number and size."""
    if not path.is_file():
        raise DataError(f"missing file {path}; the directory must hold {IMAGES_FILE} and "
                        f"{LABELS_FILE}")
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); download it again") from None
    ndim = magic - 2048
    header = 4 + 4 * ndim
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file with magic number {magic}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, "
                        f"found {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist_idx(data_dir: str | Path | None, val_size: int = 1000,
                   augment: bool = False) -> SplitData:
    """Images scaled to [0, 1] as ``(1, 28, 28)`` tensors; the last ``val_size`` are validation.
    ``augment`` shifts each training image by up to 2 pixels as it is read."""
    if data_dir is None:
        raise DataError("dataset 'mnist-idx' needs --data-dir DIR (a directory holding "
                        f"{IMAGES_FILE} and {LABELS_FILE}), or TTFS_DATA_DIR set")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    images = read_idx(root / IMAGES_FILE, IMAGES_MAGIC)
    labels = read_idx(root / LABELS_FILE, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels")
    if len(images) <= val_size:
        raise DataError(f"{root}: {len(images)} images, need more than the {val_size} "
                        "held out for validation")
    x = torch.from_numpy(images.copy()).float().unsqueeze(1) / 255.0
    y = torch.from_numpy(labels.astype(np.int64))
    train, val = tensor_split(x, y, len(x) - val_size)
    if augment:
        train = AugmentedTensorDataset(*train.tensors, augmentation_for("mnist-idx"))
    return SplitData("mnist-idx", train, val, (1, images.shape[1], images.shape[2]),
                     int(y.max()) + 1 if len(y) else 10)

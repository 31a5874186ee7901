"""MNIST-format IDX files in a directory (the ``mnist-idx`` dataset).

The directory holds one of two layouts; every file may be gzip-compressed (``.gz``) or not:

* **one set** — ``images-idx3-ubyte`` + ``labels-idx1-ubyte`` (as ``../shared/data/mnist9k``),
  or only MNIST's ``train-…`` or only its ``t10k-…`` pair (below). The last ``val_size`` images
  (default 1,000) are the validation split, so ``mnist9k`` trains on images 0–7,999 and
  validates on 8,000–8,999 (the split of ``../shared/data/README.md``). A set of ``val_size``
  images or fewer has no train / validation split, but ``split("all")`` still gives every
  image, for ``ttfs evaluate --split all``.
* **MNIST's own files** — ``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte`` and
  ``t10k-images-idx3-ubyte`` + ``t10k-labels-idx1-ubyte``: the train set for training, the t10k
  (test) set for validation, as torchvision's ``mnist``.

Labels are checked against the entry's class count (10: labels 0..9).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import DataError
from .augment import AugmentedTensorDataset, RandomShiftFlip
from .base import DatasetEntry, SplitData, holdout_split, image_shape

IMAGES_FILE = "images-idx3-ubyte.gz"
LABELS_FILE = "labels-idx1-ubyte.gz"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
#: The validation split of a single set: its last 1,000 images.
VAL_SIZE = 1000
#: set → (images, labels) file names, each also accepted with ``.gz``.
IDX_SETS: dict[str, tuple[str, str]] = {
    "one": ("images-idx3-ubyte", "labels-idx1-ubyte"),
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_LAYOUTS = ("images-idx3-ubyte.gz + labels-idx1-ubyte.gz, or MNIST's "
            "train-images-idx3-ubyte / t10k-images-idx3-ubyte with their -labels-idx1-ubyte "
            "partners (each .gz or not)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array (uint8) from a file, gzip-compressed or not, checking magic number and
    size."""
    if not path.is_file():
        raise DataError(f"missing file {path}; the directory must hold {_LAYOUTS}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc})") from None
    if raw[:2] == _GZIP_MAGIC or path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is not a readable gzip file ({exc}); download it "
                            "again") from None
    ndim = magic - 2048
    header = 4 + 4 * ndim
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file with magic number {magic} "
                        f"({'images' if magic == IMAGES_MAGIC else 'labels'})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, "
                        f"found {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    """``root/stem`` or ``root/stem.gz``; both is ambiguous."""
    found = [root / name for name in (stem, stem + ".gz") if (root / name).is_file()]
    if len(found) == 2:
        raise DataError(f"{root} holds both {stem} and {stem}.gz; keep one of them")
    return found[0] if found else None


def _missing_partner(root: Path, have: Path, want: str) -> DataError:
    return DataError(f"{root} holds {have.name} but not its partner {want} (or {want}.gz); "
                     f"add it, or remove {have.name}")


def find_idx_sets(root: Path) -> dict[str, tuple[Path, Path]]:
    """The complete ``(images, labels)`` pairs of :data:`IDX_SETS` in ``root``, checked to
    form one of the two layouts."""
    sets: dict[str, tuple[Path, Path]] = {}
    for key, (images_stem, labels_stem) in IDX_SETS.items():
        images, labels = _find(root, images_stem), _find(root, labels_stem)
        if images is not None and labels is not None:
            sets[key] = (images, labels)
        elif images is not None:
            raise _missing_partner(root, images, labels_stem)
        elif labels is not None:
            raise _missing_partner(root, labels, images_stem)
    if not sets:
        raise DataError(f"missing file {root / IMAGES_FILE}; the directory must hold "
                        f"{_LAYOUTS}")
    if "one" in sets and len(sets) > 1:
        others = " and ".join(sets[k][0].name for k in sets if k != "one")
        raise DataError(f"{root} holds both {sets['one'][0].name} and {others}; keep one "
                        "layout (one set, or MNIST's train + t10k files)")
    return sets


def read_idx_set(images_path: Path, labels_path: Path, num_classes: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] ``(N, 1, H, W)`` and labels ``(N,)``, checked: as many labels as
    images, at least one image, every label in ``0 .. num_classes - 1``."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path.parent}: {len(images)} images in {images_path.name} "
                        f"but {len(labels)} labels in {labels_path.name}; the two files must "
                        "belong together")
    if not len(images):
        raise DataError(f"{images_path} holds no images")
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        first = int(bad[0])
        raise DataError(f"{labels_path}: label {int(labels[first])} of image {first} (and "
                        f"{bad.size - 1} more) is outside 0..{num_classes - 1}; mnist-idx is "
                        f"for MNIST-like data with {num_classes} classes, labels "
                        f"0..{num_classes - 1} — the file is damaged or holds another dataset")
    x = torch.from_numpy(images.copy()).float().unsqueeze(1) / 255.0
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_idx_folder(entry: DatasetEntry, data_dir: str | Path | None, augment: bool = False,
                    val_size: int = VAL_SIZE) -> SplitData:
    """Images scaled to [0, 1] as ``(1, H, W)`` tensors (``(1, 28, 28)`` for MNIST), in one of
    the two layouts of this module. ``augment`` shifts each training image by the entry's
    augmentation (up to 2 pixels) as it is read."""
    num_classes = entry.num_classes or 10
    if data_dir is None:
        raise DataError(f"dataset {entry.name!r} needs --data-dir DIR (a directory holding "
                        f"{_LAYOUTS}), or TTFS_DATA_DIR set")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    sets = find_idx_sets(root)
    if "train" in sets and "t10k" in sets:
        x_train, y_train = read_idx_set(*sets["train"], num_classes)
        x_val, y_val = read_idx_set(*sets["t10k"], num_classes)
        if x_train.shape[1:] != x_val.shape[1:]:
            raise DataError(f"{root}: train images are {tuple(x_train.shape[2:])} but t10k "
                            f"images are {tuple(x_val.shape[2:])}; both sets must share one "
                            "image size")
        in_shape = image_shape(x_train)
        train: Dataset = TensorDataset(x_train, y_train)
        if augment and entry.augmentation is not None:
            train = AugmentedTensorDataset(x_train, y_train, RandomShiftFlip(*entry.augmentation))
        return SplitData(entry.name, train, TensorDataset(x_val, y_val), in_shape, num_classes)
    images_path, labels_path = next(iter(sets.values()))
    x, y = read_idx_set(images_path, labels_path, num_classes)
    in_shape = image_shape(x)
    return holdout_split(entry, x, y, val_size, in_shape, num_classes,
                         where=f"{root} ({images_path.name})", augment=augment)

"""Image datasets: torchvision's MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100 (any torchvision
dataset class taking ``root, train, download, transform``: its table entry names it with a
:class:`TorchvisionSource`), and a folder of images labelled by a CSV file (Kaggle's CIFAR-10
layout, ``../shared/data/cifar10_200``).

Images become float tensors in [0, 1] (``ToTensor``) with no mean / std normalisation: the TTFS
input encoder turns intensities in [0, 1] into spike times. ``augment=True`` applies the
entry's augmentation (:mod:`.augment`: the paper's crop + flip for CIFAR, a shift of up to 2
pixels for MNIST-like data) to the training split only.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .augment import RandomShiftFlip
from .base import DatasetEntry, SplitData, holdout_split, image_shape, natural_key


@dataclass(frozen=True)
class TorchvisionSource:
    """Where a torchvision dataset comes from: ``cls`` is the class in ``torchvision.datasets``
    (constructed as ``cls(root=..., train=..., download=..., transform=...)``), ``folder`` the
    folder it keeps under its root (named in the "not found" message)."""

    cls: str
    folder: str


#: CIFAR-10's class order; an image folder whose class names all come from it uses these indices,
#: and numeric labels are indices into it.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
LABEL_FILES = ("labels.csv", "trainLabels.csv")  # ours / Kaggle's name for it
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_HEADER_WORDS = {"id", "file", "filename", "image", "img", "name", "path", "sample", "label",
                 "labels", "class", "classname", "category", "target"}
_INTEGER = re.compile(r"[+-]?\d+")


def _torchvision():
    try:
        import torchvision
        import torchvision.datasets
        import torchvision.transforms
    except ImportError:  # pragma: no cover - torchvision is an optional dependency
        raise DataError("image datasets need torchvision; install it with "
                        "pip install 'ttfs-plugin[vision]'") from None
    return torchvision


# --- torchvision ------------------------------------------------------------------------------

def load_torchvision(entry: DatasetEntry, data_dir: str | Path | None, download: bool = False,
                     augment: bool = False) -> SplitData:
    """torchvision's train set for training, its test set for validation (the entry's
    :class:`TorchvisionSource`, ``in_shape`` and ``num_classes``)."""
    name, source = entry.name, entry.source
    if not isinstance(source, TorchvisionSource) or entry.in_shape is None \
            or entry.num_classes is None:
        raise ConfigError(f"dataset {name!r}: a torchvision entry needs "
                          "source=TorchvisionSource(...), in_shape and num_classes")
    tv = _torchvision()
    if data_dir is None:
        raise DataError(f"dataset {name!r} needs --data-dir DIR (torchvision's root folder; add "
                        "--download to fetch it there), or TTFS_DATA_DIR set")
    root = Path(data_dir)
    if not root.is_dir() and not download:
        raise DataError(f"data directory {root} does not exist; pass --download to fetch "
                        f"{name!r} there, or point --data-dir at the folder that holds "
                        f"{source.folder}/")
    cls = getattr(tv.datasets, source.cls)  # looked up now, so tests can replace it
    plain = tv.transforms.ToTensor()
    train_tf = plain
    if augment and entry.augmentation is not None:
        train_tf = tv.transforms.Compose([plain, RandomShiftFlip(*entry.augmentation)])
    try:
        train = cls(root=str(root), train=True, download=download, transform=train_tf)
        val = cls(root=str(root), train=False, download=download, transform=plain)
    except (OSError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if not download:
            raise DataError(f"{name!r} not found under {root} (torchvision looks for "
                            f"{root / source.folder}: {first}); pass --download to fetch it "
                            "there, or point --data-dir at the folder that holds it") from None
        raise DataError(f"could not download {name!r} into {root} ({first}); check the network, "
                        f"or put torchvision's {source.folder}/ files there by hand") from None
    return SplitData(name, train, val, entry.in_shape, entry.num_classes)


# --- a CSV-labelled image folder --------------------------------------------------------------

def _is_header(row: list[str]) -> bool:
    return len(row) >= 2 and (row[0].strip().lower() in _HEADER_WORDS
                              or row[1].strip().lower() in _HEADER_WORDS)


def _read_label_rows(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, file, label)`` of every ``file,classname`` row."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({exc}); it must be a CSV file of "
                        "'file,classname' rows") from None
    found: list[tuple[int, str, str]] = []
    for number, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        if number == 1 and _is_header(row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path} line {number}: expected 'file,classname', got "
                            f"{','.join(row)!r}")
        found.append((number, row[0].strip(), row[1].strip()))
    if not found:
        raise DataError(f"{path} lists no images; it needs 'file,classname' rows")
    return found


def read_labels_csv(path: Path) -> list[tuple[str, str]]:
    """``file,classname`` rows; a first row such as ``id,label`` is taken as a header."""
    return [(name, label) for _, name, label in _read_label_rows(path)]


def _find_labels(root: Path) -> Path:
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root} holds no labels.csv; an image folder needs labels.csv with "
                    "'file,classname' rows and the images in train/ or next to it")


def _image_path(image_dir: Path, name: str) -> Path:
    path = image_dir / name
    if path.is_file() or Path(name).suffix:
        return path
    for suffix in IMAGE_SUFFIXES:  # Kaggle lists ids ("1") for files named "1.png"
        if (image_dir / (name + suffix)).is_file():
            return image_dir / (name + suffix)
    return path


def class_indices(path: Path, rows: list[tuple[int, str, str]]) -> tuple[list[int], int]:
    """The class index of every ``(line, file, label)`` row, and the class count.

    * Numeric labels (``3``) are class indices — CIFAR-10's, so they must lie in 0..9
      (``0`` = airplane … ``9`` = truck); 10 classes.
    * Names that all come from CIFAR-10 take CIFAR-10's order (``airplane`` = 0 …), 10 classes.
    * Other names are sorted into indices, one class per distinct name.

    Mixing numbers and names, or a number out of range, is a ``DataError`` naming the line.
    """
    numeric = [row for row in rows if _INTEGER.fullmatch(row[2])]
    if numeric and len(numeric) < len(rows):
        number_row = numeric[0]
        name_row = next(row for row in rows if not _INTEGER.fullmatch(row[2]))
        raise DataError(f"{path} mixes class indices and class names (line {number_row[0]}: "
                        f"{number_row[2]!r}, line {name_row[0]}: {name_row[2]!r}); write every "
                        "label as a number 0..9 or every label as a class name")
    if numeric:
        count = len(CIFAR10_CLASSES)
        for number, name, label in rows:
            if not 0 <= int(label) < count:
                raise DataError(f"{path} line {number}: class index {label} of {name} is out "
                                f"of range; numeric labels are CIFAR-10 class indices "
                                f"0..{count - 1} (0 = {CIFAR10_CLASSES[0]} … {count - 1} = "
                                f"{CIFAR10_CLASSES[-1]}) — fix the row, or write class names, "
                                "which are sorted into indices")
        return [int(label) for _, _, label in rows], count
    names = [label for _, _, label in rows]
    distinct = set(names)
    if distinct <= set(CIFAR10_CLASSES):
        order = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
        return [order[c] for c in names], len(CIFAR10_CLASSES)
    order = {c: i for i, c in enumerate(sorted(distinct))}
    return [order[c] for c in names], len(order)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if opened.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); replace the file or drop its row "
                        "from labels.csv") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_csv_folder(entry: DatasetEntry, data_dir: str | Path | None,
                    augment: bool = False) -> SplitData:
    """Images named by ``labels.csv`` (``N.png,classname``) in ``train/`` or next to it.

    Labels become indices as :func:`class_indices` says (numbers are CIFAR-10 class indices;
    CIFAR-10 names take CIFAR-10's order; other names are sorted); images are ordered by number
    and the last 10 % (at least one) are validation. A single image has no train / validation
    split but is still there for ``split("all")``.
    """
    if data_dir is None:
        raise DataError(f"dataset {entry.name!r} needs --data-dir DIR (a folder with labels.csv "
                        "and the images in train/), or TTFS_DATA_DIR set")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    labels_path = _find_labels(root)
    image_dir = root / "train" if (root / "train").is_dir() else root
    rows = sorted(_read_label_rows(labels_path), key=lambda row: natural_key(row[1]))
    indices, num_classes = class_indices(labels_path, rows)
    images, first = [], None
    for _, name, _ in rows:
        path = _image_path(image_dir, name)
        if not path.is_file():
            raise DataError(f"{labels_path.name} names {name} but {path} does not exist; add "
                            f"the image or drop its row")
        array = _read_image(path)
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            raise DataError(f"image {path} is {_describe(array.shape)} but {first[0].name} is "
                            f"{_describe(first[1])}; all images must share one size")
        images.append(array)
    x = torch.from_numpy(np.stack(images)).float() / 255.0
    y = torch.tensor(indices, dtype=torch.long)
    return holdout_split(entry, x, y, max(1, len(y) // 10), image_shape(x), num_classes,
                         where=str(labels_path), augment=augment)


def _describe(shape) -> str:
    channels, height, width = shape
    return f"{width}×{height} with {channels} channel{'s' if channels != 1 else ''}"

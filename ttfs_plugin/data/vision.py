"""Image datasets: torchvision's MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100, and a folder of
images labelled by a CSV file (Kaggle's CIFAR-10 layout, ``../shared/data/cifar10_200``).

Images become float tensors in [0, 1] (``ToTensor``) with no mean / std normalisation: the TTFS
input encoder turns intensities in [0, 1] into spike times. ``augment=True`` applies the
dataset's augmentation (:mod:`.augment`: the paper's crop + flip for CIFAR, a shift of up to 2
pixels for MNIST-like data) to the training split only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .augment import AugmentedTensorDataset, augmentation_for
from .base import SplitData, natural_key, tensor_split

#: name → (torchvision class, the folder torchvision keeps under its root, input shape, classes)
TORCHVISION_DATASETS = {
    "mnist": ("MNIST", "MNIST", (1, 28, 28), 10),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST", (1, 28, 28), 10),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (3, 32, 32), 10),
    "cifar100": ("CIFAR100", "cifar-100-python", (3, 32, 32), 100),
}

#: CIFAR-10's class order; an image folder whose class names all come from it uses these indices.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
LABEL_FILES = ("labels.csv", "trainLabels.csv")  # ours / Kaggle's name for it
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_HEADER_WORDS = {"id", "file", "filename", "image", "img", "name", "path", "sample", "label",
                 "labels", "class", "classname", "category", "target"}


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

def load_torchvision(name: str, data_dir: str | Path | None, download: bool = False,
                     augment: bool = False) -> SplitData:
    """torchvision's train set for training, its test set for validation."""
    cls_name, folder, in_shape, num_classes = TORCHVISION_DATASETS[name]
    tv = _torchvision()
    if data_dir is None:
        raise DataError(f"dataset {name!r} needs --data-dir DIR (torchvision's root folder; add "
                        "--download to fetch it there), or TTFS_DATA_DIR set")
    root = Path(data_dir)
    if not root.is_dir() and not download:
        raise DataError(f"data directory {root} does not exist; pass --download to fetch "
                        f"{name!r} there, or point --data-dir at the folder that holds {folder}/")
    cls = getattr(tv.datasets, cls_name)  # looked up now, so tests can replace it
    plain = tv.transforms.ToTensor()
    train_tf = tv.transforms.Compose([plain, augmentation_for(name)]) if augment else plain
    try:
        train = cls(root=str(root), train=True, download=download, transform=train_tf)
        val = cls(root=str(root), train=False, download=download, transform=plain)
    except (OSError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if not download:
            raise DataError(f"{name!r} not found under {root} (torchvision looks for "
                            f"{root / folder}: {first}); pass --download to fetch it there, or "
                            "point --data-dir at the folder that holds it") from None
        raise DataError(f"could not download {name!r} into {root} ({first}); check the network, "
                        f"or put torchvision's {folder}/ files there by hand") from None
    return SplitData(name, train, val, in_shape, num_classes)


def _torchvision_loader(name: str):
    def load(data_dir: str | Path | None = None, download: bool = False,
             augment: bool = False) -> SplitData:
        return load_torchvision(name, data_dir, download=download, augment=augment)

    cls_name, _, in_shape, _ = TORCHVISION_DATASETS[name]
    load.__name__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = (f"torchvision.datasets.{cls_name} as {in_shape} images in [0, 1]: train set "
                    "for training, test set for validation.")
    return load


load_mnist = _torchvision_loader("mnist")
load_fashion_mnist = _torchvision_loader("fashion-mnist")
load_cifar10 = _torchvision_loader("cifar10")
load_cifar100 = _torchvision_loader("cifar100")


# --- a CSV-labelled image folder --------------------------------------------------------------

def _is_header(row: list[str]) -> bool:
    return len(row) >= 2 and (row[0].strip().lower() in _HEADER_WORDS
                              or row[1].strip().lower() in _HEADER_WORDS)


def read_labels_csv(path: Path) -> list[tuple[str, str]]:
    """``file,classname`` rows; a first row such as ``id,label`` is taken as a header."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({exc}); it must be a CSV file of "
                        "'file,classname' rows") from None
    pairs: list[tuple[str, str]] = []
    for number, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        if number == 1 and _is_header(row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path} line {number}: expected 'file,classname', got "
                            f"{','.join(row)!r}")
        pairs.append((row[0].strip(), row[1].strip()))
    if len(pairs) < 2:
        raise DataError(f"{path} lists {len(pairs)} images; need at least 2 (one for training, "
                        "one for validation)")
    return pairs


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


def _class_indices(names: list[str]) -> tuple[dict[str, int], int]:
    distinct = set(names)
    if distinct <= set(CIFAR10_CLASSES):
        return {c: i for i, c in enumerate(CIFAR10_CLASSES)}, len(CIFAR10_CLASSES)
    ordered = sorted(distinct)
    return {c: i for i, c in enumerate(ordered)}, len(ordered)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); replace the file or drop its row "
                        "from labels.csv") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_image_folder(data_dir: str | Path | None, augment: bool = False) -> SplitData:
    """Images named by ``labels.csv`` (``N.png,classname``) in ``train/`` or next to it.

    Class names are sorted into indices (CIFAR-10's own order when every name is a CIFAR-10
    class); images are ordered by number and the last 10 % (at least one) are validation.
    """
    if data_dir is None:
        raise DataError("dataset 'image-folder' needs --data-dir DIR (a folder with labels.csv "
                        "and the images in train/), or TTFS_DATA_DIR set")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist")
    labels_path = _find_labels(root)
    image_dir = root / "train" if (root / "train").is_dir() else root
    rows = sorted(read_labels_csv(labels_path), key=lambda row: natural_key(row[0]))
    classes, num_classes = _class_indices([c for _, c in rows])
    images, first = [], None
    for name, _ in rows:
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
    y = torch.tensor([classes[c] for _, c in rows], dtype=torch.long)
    n_train = len(y) - max(1, len(y) // 10)
    in_shape = tuple(int(s) for s in x.shape[1:])
    train, val = tensor_split(x, y, n_train)
    if augment:
        train = AugmentedTensorDataset(*train.tensors, augmentation_for("image-folder"))
    return SplitData("image-folder", train, val, in_shape, num_classes)


def _describe(shape) -> str:
    channels, height, width = shape
    return f"{width}×{height} with {channels} channel{'s' if channels != 1 else ''}"

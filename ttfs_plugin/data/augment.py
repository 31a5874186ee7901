"""Training-split augmentation of in-memory images (plain torch: ``mnist-idx`` needs no
torchvision).

Which dataset gets which augmentation is its table entry's ``augmentation`` field
(:class:`~ttfs_plugin.data.base.DatasetEntry`); the two kinds in use are

* :data:`CROP_FLIP` for CIFAR (``cifar10``, ``cifar100``, ``image-folder``): the paper's random
  crop with 4 pixels of zero padding, then a random horizontal flip;
* :data:`SHIFT` for handwritten digits and clothes (``mnist``, ``mnist-idx``,
  ``fashion-mnist``): a random shift of up to 2 pixels (crop with 2 pixels of padding), no
  flip — a mirrored digit is another glyph.

``AUGMENTATIONS`` (dataset → ``(padding, flip)``) and ``AUGMENTABLE`` (their names) are read
from the table each time they are used, so they always agree with it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

#: ``(padding, flip)``: the paper's CIFAR augmentation, crop from 4 pixels of padding + flip.
CROP_FLIP: tuple[int, bool] = (4, True)
#: ``(padding, flip)``: a shift of up to 2 pixels each way, no flip (digits, clothes).
SHIFT: tuple[int, bool] = (2, False)


def _augmentations() -> dict[str, tuple[int, bool]]:
    from . import DATASETS  # the table imports this module, so look it up when asked

    return {name: entry.augmentation for name, entry in DATASETS.items()
            if entry.augmentation is not None}


def __getattr__(name: str) -> Any:
    """``AUGMENTATIONS`` and ``AUGMENTABLE``, derived from the dataset table."""
    if name == "AUGMENTATIONS":
        return _augmentations()
    if name == "AUGMENTABLE":
        return tuple(_augmentations())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RandomShiftFlip:
    """A ``(C, H, W)`` image cropped at a random place from itself zero-padded by ``padding``
    pixels (a shift of up to ``padding`` pixels each way; torchvision's
    ``RandomCrop(size, padding)``), then mirrored left-right with probability 1/2 if ``flip``."""

    def __init__(self, padding: int, flip: bool = False):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding, self.flip = int(padding), bool(flip)

    def __call__(self, image: Tensor) -> Tensor:
        p = self.padding
        if p:
            height, width = image.shape[-2:]
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            image = F.pad(image, (p, p, p, p))[..., dy:dy + height, dx:dx + width]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(padding={self.padding}, flip={self.flip})"


def augmentation_for(name: str) -> RandomShiftFlip:
    """The training-split augmentation of dataset ``name`` (its entry's ``augmentation``)."""
    from ..errors import ConfigError

    augmentations = _augmentations()
    if name not in augmentations:
        raise ConfigError(f"dataset {name!r} has no augmentation; only "
                          f"{', '.join(augmentations)} have")
    return RandomShiftFlip(*augmentations[name])


class AugmentedTensorDataset(Dataset):
    """In-memory images with a random transform applied to each one as it is read."""

    def __init__(self, images: Tensor, labels: Tensor, transform):
        self.tensors = (images, labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.tensors[1])

    def __getitem__(self, index):
        images, labels = self.tensors
        return self.transform(images[index]), labels[index]

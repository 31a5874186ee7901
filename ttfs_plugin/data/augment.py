"""Training-split augmentation of in-memory images (plain torch: ``mnist-idx`` needs no
torchvision).

* CIFAR (``cifar10``, ``cifar100``, ``image-folder``): the paper's random crop with 4 pixels of
  zero padding, then a random horizontal flip;
* handwritten digits and clothes (``mnist``, ``mnist-idx``, ``fashion-mnist``): a random shift
  of up to 2 pixels (crop with 2 pixels of padding), no flip — a mirrored digit is another glyph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

#: dataset → (crop padding in pixels, random horizontal flip)
AUGMENTATIONS: dict[str, tuple[int, bool]] = {
    "cifar10": (4, True),
    "cifar100": (4, True),
    "image-folder": (4, True),
    "mnist": (2, False),
    "mnist-idx": (2, False),
    "fashion-mnist": (2, False),
}
AUGMENTABLE = tuple(AUGMENTATIONS)


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
    """The training-split augmentation of dataset ``name`` (one of :data:`AUGMENTABLE`)."""
    return RandomShiftFlip(*AUGMENTATIONS[name])


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

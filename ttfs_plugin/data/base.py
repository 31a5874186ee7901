"""What every dataset loader returns: train and validation splits plus the input shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from ..errors import ConfigError

SPLITS = ("train", "val", "all")


@dataclass
class SplitData:
    """A dataset as the trainer sees it. Images are float tensors in [0, 1], shape (C, H, W)."""

    name: str
    train: Dataset
    val: Dataset
    in_shape: tuple[int, int, int]
    num_classes: int

    def split(self, which: str) -> Dataset:
        """``"train"``, ``"val"`` or ``"all"`` (both)."""
        if which not in SPLITS:
            raise ConfigError(f"unknown split {which!r}; choose one of: {', '.join(SPLITS)}")
        if which == "all":
            if isinstance(self.train, TensorDataset) and isinstance(self.val, TensorDataset):
                return TensorDataset(*(torch.cat(pair) for pair in
                                       zip(self.train.tensors, self.val.tensors)))
            return ConcatDataset([self.train, self.val])
        return self.train if which == "train" else self.val


def tensor_split(images: torch.Tensor, labels: torch.Tensor, n_train: int
                 ) -> tuple[TensorDataset, TensorDataset]:
    """First ``n_train`` samples for training, the rest for validation."""
    return (TensorDataset(images[:n_train], labels[:n_train]),
            TensorDataset(images[n_train:], labels[n_train:]))


def natural_key(name: str) -> tuple:
    """Sort key putting ``2.png`` before ``10.png`` (numbered files by number, others after)."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)

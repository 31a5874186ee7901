"""What every dataset loader returns (train and validation splits plus the input shape), and the
:class:`DatasetEntry` each dataset of :data:`ttfs_plugin.data.DATASETS` is described by."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import ConcatDataset, Dataset, TensorDataset

from ..errors import ConfigError, DataError
from .augment import AugmentedTensorDataset, RandomShiftFlip

SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset: its loader and everything the rest of the package needs to know about it.

    ``loader(entry, data_dir, **options)`` returns a :class:`SplitData`; it is passed the entry
    itself (so a generic loader, such as the torchvision one, reads ``source``, ``in_shape``,
    ``num_classes`` and ``augmentation`` from it) and only the options the entry accepts
    (:meth:`options`).

    * ``num_classes`` — classes of the network trained on it; labels must lie in
      ``0 .. num_classes - 1``. ``None``: the files decide (``image-folder``'s class names).
    * ``in_shape`` — ``(C, H, W)`` when fixed; ``None``: read from the files or set by the
      event options.
    * ``default_model`` — the ``--model`` of ``ttfs train`` when none is given.
    * ``default_subdir`` — the sub-folder of ``$TTFS_DATA_DIR`` used without a ``data_dir``.
    * ``root_is_data_dir`` — ``$TTFS_DATA_DIR`` itself is the default ``data_dir`` (the root of
      torchvision / tonic, which keep their own sub-folder in it); with a ``default_subdir``
      too, the sub-folder wins when it exists.
    * ``downloadable`` — ``download=True`` (``--download``) applies.
    * ``augmentation`` — ``(padding, flip)`` of the training-split
      :class:`~ttfs_plugin.data.augment.RandomShiftFlip`; ``None``: ``augment=True`` is refused.
    * ``event_options`` — the :class:`~ttfs_plugin.data.events.EventOptions` (``--time-bins``
      …) apply, and the event cache: its loader also takes ``cache_dir`` and ``event_workers``
      (``--cache-dir``, ``--event-workers``).
    * ``needs_data_dir`` — ``False`` for built-in data (``digits``).
    * ``source`` — loader-specific facts, e.g. a
      :class:`~ttfs_plugin.data.vision.TorchvisionSource` or
      :class:`~ttfs_plugin.data.events.TonicSource`.
    """

    name: str
    loader: Callable[..., SplitData]
    summary: str
    num_classes: int | None = None
    in_shape: tuple[int, int, int] | None = None
    default_model: str = "cnn"
    default_subdir: str | None = None
    root_is_data_dir: bool = False
    downloadable: bool = False
    augmentation: tuple[int, bool] | None = None
    event_options: bool = False
    needs_data_dir: bool = True
    source: Any = None

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower() or " " in self.name:
            raise ConfigError(f"dataset name {self.name!r} must be a lower-case word "
                              "(e.g. 'kmnist')")
        if self.num_classes is not None and (isinstance(self.num_classes, bool)
                                             or not isinstance(self.num_classes, int)
                                             or self.num_classes < 2):
            raise ConfigError(f"dataset {self.name!r}: num_classes must be an integer >= 2 or "
                              f"None, got {self.num_classes!r}")
        if self.augmentation is not None:
            padding, flip = self.augmentation
            if not isinstance(padding, int) or padding < 0 or not isinstance(flip, bool):
                raise ConfigError(f"dataset {self.name!r}: augmentation must be (padding >= 0, "
                                  f"flip: bool) or None, got {self.augmentation!r}")
        if not self.needs_data_dir and (self.default_subdir or self.root_is_data_dir
                                        or self.downloadable):
            raise ConfigError(f"dataset {self.name!r} needs no data_dir, so it can have no "
                              "default folder and no download")

    @property
    def augmentable(self) -> bool:
        """Whether ``augment=True`` (``--augment``) applies."""
        return self.augmentation is not None

    def options(self) -> tuple[str, ...]:
        """The keywords of :func:`~ttfs_plugin.data.load_dataset` its loader takes."""
        return tuple(name for name, applies in (("download", self.downloadable),
                                                ("augment", self.augmentable),
                                                ("events", self.event_options)) if applies)

    def load(self, data_dir: str | Path | None, **options) -> SplitData:
        """``loader(self, data_dir, **options)``."""
        return self.loader(self, data_dir, **options)


class SplitData:
    """A dataset as the trainer sees it. Images are float tensors in [0, 1], shape (C, H, W).

    ``train`` and ``val`` are the training and validation splits; ``split("all")`` is every
    sample. A folder too small to hold out a validation split (:meth:`unsplit`, e.g. 1,000 IDX
    images when the last 1,000 are held out) still gives ``split("all")``; asking it for
    ``train`` or ``val`` raises :class:`~ttfs_plugin.errors.DataError` saying so.
    """

    def __init__(self, name: str, train: Dataset, val: Dataset, in_shape: tuple[int, int, int],
                 num_classes: int):
        self.name = name
        self._train, self._val = train, val
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes
        self._every: Dataset | None = None
        self._no_split: str | None = None

    @classmethod
    def unsplit(cls, name: str, every: Dataset, in_shape: tuple[int, int, int],
                num_classes: int, reason: str) -> SplitData:
        """Data with no train / validation split: ``split("all")`` is ``every``; ``train``,
        ``val``, ``split("train")`` and ``split("val")`` raise ``DataError(reason)``."""
        data = cls(name, None, None, in_shape, num_classes)  # type: ignore[arg-type]
        data._every, data._no_split = every, reason
        return data

    @property
    def has_split(self) -> bool:
        """Whether ``train`` and ``val`` exist (``False`` for :meth:`unsplit` data)."""
        return self._no_split is None

    @property
    def train(self) -> Dataset:
        """The training split."""
        if self._no_split is not None:
            raise DataError(self._no_split)
        return self._train

    @property
    def val(self) -> Dataset:
        """The validation split."""
        if self._no_split is not None:
            raise DataError(self._no_split)
        return self._val

    def split(self, which: str) -> Dataset:
        """``"train"``, ``"val"`` or ``"all"`` (both; every sample of an unsplit dataset)."""
        if which not in SPLITS:
            raise ConfigError(f"unknown split {which!r}; choose one of: {', '.join(SPLITS)}")
        if which == "all":
            if self._every is not None:
                return self._every
            if isinstance(self._train, TensorDataset) and isinstance(self._val, TensorDataset):
                return TensorDataset(*(torch.cat(pair) for pair in
                                       zip(self._train.tensors, self._val.tensors)))
            return ConcatDataset([self._train, self._val])
        return self.train if which == "train" else self.val

    def __repr__(self) -> str:
        if self._no_split is not None:
            sizes = f"all={_size(self._every)}, no train/val split"
        else:
            sizes = f"train={_size(self._train)}, val={_size(self._val)}"
        return (f"SplitData({self.name!r}, {sizes}, in_shape={self.in_shape}, "
                f"num_classes={self.num_classes})")


def _size(dataset) -> str:
    try:
        return str(len(dataset))
    except TypeError:
        return "?"


def image_shape(images: torch.Tensor) -> tuple[int, int, int]:
    """``(C, H, W)`` of a batch of images ``(N, C, H, W)``."""
    channels, height, width = images.shape[1:]
    return int(channels), int(height), int(width)


def tensor_split(images: torch.Tensor, labels: torch.Tensor, n_train: int
                 ) -> tuple[TensorDataset, TensorDataset]:
    """First ``n_train`` samples for training, the rest for validation."""
    return (TensorDataset(images[:n_train], labels[:n_train]),
            TensorDataset(images[n_train:], labels[n_train:]))


def holdout_split(entry: DatasetEntry, images: torch.Tensor, labels: torch.Tensor,
                  n_val: int, in_shape: tuple[int, int, int], num_classes: int, *, where: str,
                  what: str = "images", augment: bool = False) -> SplitData:
    """The last ``n_val`` samples for validation, the rest for training (augmented with the
    entry's augmentation when ``augment``).

    With ``n_val`` or fewer samples there is nothing left to train on: the result is
    :meth:`SplitData.unsplit` — every sample for ``split("all")`` (evaluation), and a
    ``DataError`` naming ``where`` for ``train`` / ``val``.
    """
    n = len(labels)
    if n <= n_val:
        reason = (f"{where}: {n} {what} are too few for a train / validation split (the last "
                  f"{n_val} are held out for validation, which leaves none to train on); "
                  f"evaluate on all {n} with --split all (split('all')), or use more than "
                  f"{n_val} {what}")
        return SplitData.unsplit(entry.name, TensorDataset(images, labels), in_shape,
                                 num_classes, reason)
    train: Dataset
    train, val = tensor_split(images, labels, n - n_val)
    if augment and entry.augmentation is not None:
        x_train, y_train = train.tensors
        train = AugmentedTensorDataset(x_train, y_train, RandomShiftFlip(*entry.augmentation))
    return SplitData(entry.name, train, val, in_shape, num_classes)


def natural_key(name: str) -> tuple:
    """Sort key putting ``2.png`` before ``10.png`` (numbered files by number, others after)."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)

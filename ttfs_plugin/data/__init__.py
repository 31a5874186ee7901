"""Datasets by name: one table, :data:`DATASETS`, of :class:`DatasetEntry` rows.

Each entry says everything about its dataset — loader, class count, default model, default
folder, which options (``download``, ``augment``, ``events``) apply — and every other part of
the package (``load_dataset``, the CLI's help and default model, the option checks) reads it
from there. Adding a dataset is adding one entry to :data:`ENTRIES`; see ``docs/datasets.md``.

``TTFS_DATA_DIR`` names a folder of datasets; a dataset that needs files and gets no
``data_dir`` looks for its ``default_subdir`` there (``mnist-idx`` → ``$TTFS_DATA_DIR/mnist9k``,
``image-folder`` → ``cifar10_200``, ``nmnist`` → ``nmnist1k``); the torchvision and tonic
datasets use ``$TTFS_DATA_DIR`` itself as their root (``root_is_data_dir``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import ConfigError, unknown_name
from .augment import CROP_FLIP, SHIFT
from .base import SPLITS, DatasetEntry, SplitData
from .digits import load_digits
from .events import (
    CACHE_ENV,
    CACHE_OFF,
    DEFAULT_CLIP,
    NORMALISATIONS,
    EventOptions,
    TonicSource,
    check_event_workers,
    load_nmnist_folder,
    load_tonic,
)
from .idx import load_idx_folder
from .vision import TorchvisionSource, load_csv_folder, load_torchvision


def _builtin_digits(entry: DatasetEntry, data_dir: str | Path | None = None) -> SplitData:
    return load_digits(data_dir)


def torchvision_entry(name: str, cls: str, folder: str, in_shape: tuple[int, int, int],
                      num_classes: int, augmentation: tuple[int, bool] | None = None,
                      summary: str = "", **fields: Any) -> DatasetEntry:
    """The entry of a torchvision dataset class ``cls(root, train, download, transform)``:
    downloadable, rooted at ``$TTFS_DATA_DIR``, train set / test set."""
    return DatasetEntry(name, load_torchvision, summary or f"torchvision.datasets.{cls}",
                        num_classes=num_classes, in_shape=in_shape, root_is_data_dir=True,
                        downloadable=True, augmentation=augmentation,
                        source=TorchvisionSource(cls, folder), **fields)


#: Every dataset, in the order ``--help`` and the docs list them.
ENTRIES: tuple[DatasetEntry, ...] = (
    DatasetEntry("digits", _builtin_digits, "scikit-learn's 8×8 digits (built in)",
                 num_classes=10, in_shape=(1, 8, 8), default_model="mlp",
                 needs_data_dir=False),
    DatasetEntry("mnist-idx", load_idx_folder, "MNIST-format IDX files (.gz or not)",
                 num_classes=10, default_subdir="mnist9k", augmentation=SHIFT),
    torchvision_entry("mnist", "MNIST", "MNIST", (1, 28, 28), 10, SHIFT),
    torchvision_entry("fashion-mnist", "FashionMNIST", "FashionMNIST", (1, 28, 28), 10, SHIFT),
    torchvision_entry("cifar10", "CIFAR10", "cifar-10-batches-py", (3, 32, 32), 10, CROP_FLIP),
    torchvision_entry("cifar100", "CIFAR100", "cifar-100-python", (3, 32, 32), 100, CROP_FLIP),
    DatasetEntry("image-folder", load_csv_folder, "PNG/JPEG files labelled by labels.csv",
                 default_subdir="cifar10_200", augmentation=CROP_FLIP),
    DatasetEntry("nmnist", load_nmnist_folder,
                 "N-MNIST .bin files + labels.tsv, else tonic.datasets.NMNIST",
                 num_classes=10, default_subdir="nmnist1k", root_is_data_dir=True,
                 downloadable=True, event_options=True,
                 source=TonicSource("NMNIST", ".bin", (34, 34, 2))),
    DatasetEntry("dvsgesture", load_tonic, "tonic.datasets.DVSGesture", num_classes=11,
                 root_is_data_dir=True, downloadable=True, event_options=True,
                 source=TonicSource("DVSGesture", ".npy", (128, 128, 2))),
    DatasetEntry("cifar10dvs", load_tonic, "tonic.datasets.CIFAR10DVS", num_classes=10,
                 root_is_data_dir=True, downloadable=True, event_options=True,
                 source=TonicSource("CIFAR10DVS", ".aedat4", (128, 128, 2), holdout_every=10)),
)


def _table(entries: tuple[DatasetEntry, ...]) -> Mapping[str, DatasetEntry]:
    table: dict[str, DatasetEntry] = {}
    for entry in entries:
        if entry.name in table:
            raise ConfigError(f"dataset {entry.name!r} is in the table twice")
        table[entry.name] = entry
    return MappingProxyType(table)


#: name → :class:`DatasetEntry` (read-only; built from :data:`ENTRIES`).
DATASETS: Mapping[str, DatasetEntry] = _table(ENTRIES)


def dataset_entry(name: str) -> DatasetEntry:
    """The entry of dataset ``name``; an unknown name is a ``ConfigError`` listing them all."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[name]


def default_model(name: str) -> str:
    """The model ``ttfs train --dataset NAME`` builds without ``--model`` (``mlp`` for
    ``digits``, ``cnn`` for the others)."""
    return dataset_entry(name).default_model


def _names(flag: str) -> list[str]:
    return [name for name, entry in DATASETS.items() if getattr(entry, flag)]


def default_data_dir(name: str) -> Path | None:
    """Where ``name`` looks when no ``data_dir`` is given (``None``: nowhere)."""
    env = os.environ.get("TTFS_DATA_DIR")
    entry = DATASETS.get(name)
    if not env or entry is None or not entry.needs_data_dir:
        return None
    root = Path(env)
    sub = entry.default_subdir
    if sub and ((root / sub).is_dir() or not entry.root_is_data_dir):
        return root / sub
    return root if entry.root_is_data_dir else None


def _check_options(entry: DatasetEntry, download: bool, augment: bool, events: EventOptions,
                   cache: dict[str, Any]) -> None:
    """Options that cannot apply to the entry are errors, not silently ignored."""
    name = entry.name
    if download and not entry.downloadable:
        raise ConfigError(f"dataset {name!r} cannot be downloaded (download=True / --download); "
                          f"only {', '.join(sorted(_names('downloadable')))} can — drop "
                          "--download")
    if augment and not entry.augmentable:
        raise ConfigError(f"augment=True (--augment, random shift / crop + flip) is for "
                          f"{', '.join(_names('augmentable'))}, not {name!r}; drop --augment")
    if events != EventOptions() and not entry.event_options:
        raise ConfigError(f"event options (--time-bins, --denoise-us, --merge-polarity, "
                          f"--event-norm, --event-clip) are for "
                          f"{', '.join(_names('event_options'))}, not {name!r}; drop them")
    check_event_workers(cache["event_workers"])
    given = [f"--{key.replace('_', '-')}" for key, value in cache.items() if value is not None]
    if given and not entry.event_options:
        raise ConfigError(f"the event cache options ({', '.join(given)}) are for "
                          f"{', '.join(_names('event_options'))}, not {name!r}; drop them")


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = False,
                 augment: bool = False, events: EventOptions | dict | None = None,
                 cache_dir: str | Path | None = None,
                 event_workers: int | None = None) -> SplitData:
    """Load dataset ``name`` (one of :data:`DATASETS`) from ``data_dir``.

    ``download`` lets torchvision / tonic fetch a missing dataset into ``data_dir``; ``augment``
    augments the training split (the entry's ``augmentation``: crop + flip for CIFAR and
    ``image-folder``, a 2-pixel shift for ``mnist``, ``mnist-idx``, ``fashion-mnist``);
    ``events`` (an :class:`EventOptions`, a dict of its fields, or ``None`` for the defaults)
    sets how event datasets become frames. Event datasets cache their frames on disk:
    ``cache_dir`` is the folder (``None``: ``$TTFS_CACHE_DIR``, else
    ``~/.cache/ttfs-plugin/events``; ``"none"``: no cache) and ``event_workers`` the DataLoader
    worker processes of the first conversion (``None``: automatic, ``0``: none). An option that
    does not apply to ``name`` raises :class:`ConfigError`.
    """
    entry = dataset_entry(name)
    opts = EventOptions.coerce(events)
    cache = {"cache_dir": cache_dir, "event_workers": event_workers}
    _check_options(entry, bool(download), bool(augment), opts, cache)
    if data_dir is None:
        data_dir = default_data_dir(name)
    given = {"download": bool(download), "augment": bool(augment), "events": opts}
    options: dict[str, Any] = {key: given[key] for key in entry.options()}
    if entry.event_options:
        options.update(cache)
    return entry.load(data_dir, **options)


def _public_loader(name: str):
    """``load_<name>(data_dir=None, **options)``: ``load_dataset(name, ...)`` under its own
    name, for the datasets that had one before the table."""
    def load(data_dir: str | Path | None = None, **options) -> SplitData:
        return load_dataset(name, data_dir, **options)

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = (f"``load_dataset({name!r}, data_dir, **options)``: "
                    f"{DATASETS[name].summary}.")
    return load


load_mnist_idx = _public_loader("mnist-idx")
load_mnist = _public_loader("mnist")
load_fashion_mnist = _public_loader("fashion-mnist")
load_cifar10 = _public_loader("cifar10")
load_cifar100 = _public_loader("cifar100")
load_image_folder = _public_loader("image-folder")
load_nmnist = _public_loader("nmnist")
load_dvsgesture = _public_loader("dvsgesture")
load_cifar10dvs = _public_loader("cifar10dvs")


def add_data_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup):
    """Add ``--download``, ``--augment`` and the event options to ``parser`` (an argument parser,
    which gets a "dataset options" group, or an argument group, used as is). ``--dataset`` and
    ``--data-dir`` are the caller's. Turn the parsed args into ``load_dataset`` keywords with
    :func:`dataset_options`; returns the group the options went into."""
    if isinstance(parser, argparse._ArgumentGroup):
        group = parser
    else:
        group = parser.add_argument_group("dataset options")
    group.add_argument("--download", action="store_true",
                       help=f"let torchvision / tonic fetch a missing dataset into --data-dir "
                            f"({', '.join(_names('downloadable'))})")
    group.add_argument("--augment", action="store_true",
                       help="training split only: random crop (padding 4) + horizontal flip for "
                            "CIFAR and image-folder, a random shift of up to 2 pixels for "
                            f"MNIST-like data ({', '.join(_names('augmentable'))})")
    group.add_argument("--no-augment", dest="augment", action="store_false", default=False,
                       help="undo --augment (the default; e.g. over a config file)")
    group.add_argument("--time-bins", type=int, default=1, metavar="N",
                       help="event datasets: frames per sample; channels = 2 × N (default 1)")
    group.add_argument("--denoise-us", type=int, default=None, metavar="US",
                       help="event datasets: drop isolated events (tonic Denoise, filter time "
                            "in µs; default off)")
    group.add_argument("--merge-polarity", action="store_true",
                       help="event datasets: add ON and OFF counts (N channels instead of 2N)")
    group.add_argument("--event-norm", choices=NORMALISATIONS, default="max",
                       help="event datasets: counts → [0, 1] by the sample's max count, or "
                            "clipped at --event-clip (default max)")
    group.add_argument("--event-clip", type=float, default=DEFAULT_CLIP, metavar="COUNT",
                       help=f"event datasets: count cap of --event-norm clip "
                            f"(default {DEFAULT_CLIP:g})")
    group.add_argument("--cache-dir", default=None, metavar="DIR",
                       help=f"event datasets: folder caching the converted frames (default "
                            f"${CACHE_ENV}, else ~/.cache/ttfs-plugin/events); "
                            f"'{CACHE_OFF}' = no cache")
    group.add_argument("--event-workers", type=int, default=None, metavar="N",
                       help="event datasets: DataLoader worker processes converting events "
                            "on the first pass (default automatic; 0 = none)")
    return group


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """``load_dataset`` keywords from args parsed with :func:`add_data_arguments`.

    Returns plain JSON-friendly values — ``{"download": bool, "augment": bool, "events":
    {"time_bins", "denoise_us", "merge_polarity", "normalise", "clip"}}``, plus ``"cache_dir"``
    and ``"event_workers"`` when ``--cache-dir`` / ``--event-workers`` are given — so the dict
    can be stored in metrics.json / a checkpoint and passed back as
    ``load_dataset(..., **options)``. A missing argument takes its default; a bad value raises
    :class:`ConfigError`.
    """
    events = EventOptions(
        time_bins=getattr(args, "time_bins", 1),
        denoise_us=getattr(args, "denoise_us", None),
        merge_polarity=bool(getattr(args, "merge_polarity", False)),
        normalise=getattr(args, "event_norm", "max"),
        clip=float(getattr(args, "event_clip", DEFAULT_CLIP)),
    )
    options: dict[str, Any] = {"download": bool(getattr(args, "download", False)),
                               "augment": bool(getattr(args, "augment", False)),
                               "events": events.to_dict()}
    for key in ("cache_dir", "event_workers"):  # only when given: defaults are not recorded
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    check_event_workers(options.get("event_workers"))
    return options


__all__ = ["DATASETS", "ENTRIES", "SPLITS", "DatasetEntry", "EventOptions", "SplitData",
           "TonicSource", "TorchvisionSource", "add_data_arguments", "dataset_entry",
           "dataset_options", "default_data_dir", "default_model", "load_cifar10",
           "load_cifar100", "load_cifar10dvs", "load_dataset", "load_digits", "load_dvsgesture",
           "load_fashion_mnist", "load_image_folder", "load_mnist", "load_mnist_idx",
           "load_nmnist", "torchvision_entry"]

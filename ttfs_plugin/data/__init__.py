"""Datasets by name. Each loader returns a :class:`SplitData` of float images in [0, 1].

``TTFS_DATA_DIR`` names a folder of datasets; a dataset that needs files and gets no
``data_dir`` looks for its default sub-folder there (``mnist-idx`` → ``$TTFS_DATA_DIR/mnist9k``,
``image-folder`` → ``cifar10_200``, ``nmnist`` → ``nmnist1k``); the torchvision and tonic
datasets use ``$TTFS_DATA_DIR`` itself as their root (they keep their own sub-folders).
See ``docs/datasets.md``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, unknown_name
from .augment import AUGMENTABLE, AUGMENTATIONS
from .base import SPLITS, SplitData
from .digits import load_digits
from .events import (
    DEFAULT_CLIP,
    EVENT_DATASETS,
    NORMALISATIONS,
    EventOptions,
    load_cifar10dvs,
    load_dvsgesture,
    load_nmnist,
)
from .idx import load_mnist_idx
from .vision import (
    TORCHVISION_DATASETS,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
)

DATASETS: dict[str, Callable[..., SplitData]] = {
    "digits": load_digits,
    "mnist-idx": load_mnist_idx,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "image-folder": load_image_folder,
    "nmnist": load_nmnist,
    "dvsgesture": load_dvsgesture,
    "cifar10dvs": load_cifar10dvs,
}
#: Sub-folder of ``TTFS_DATA_DIR`` used when no ``data_dir`` is given.
DEFAULT_SUBDIRS = {"mnist-idx": "mnist9k", "image-folder": "cifar10_200", "nmnist": "nmnist1k"}
#: Datasets whose default ``data_dir`` is ``TTFS_DATA_DIR`` itself (torchvision / tonic roots);
#: ``nmnist`` uses it when ``$TTFS_DATA_DIR/nmnist1k`` does not exist.
ROOT_DATASETS = (*TORCHVISION_DATASETS, *EVENT_DATASETS)
#: Datasets ``download=True`` applies to.
DOWNLOADABLE = ROOT_DATASETS


def default_data_dir(name: str) -> Path | None:
    """Where ``name`` looks when no ``data_dir`` is given (``None``: nowhere)."""
    env = os.environ.get("TTFS_DATA_DIR")
    if not env:
        return None
    root = Path(env)
    sub = DEFAULT_SUBDIRS.get(name)
    if sub and ((root / sub).is_dir() or name not in ROOT_DATASETS):
        return root / sub
    return root if name in ROOT_DATASETS else None


def _check_options(name: str, download: bool, augment: bool, events: EventOptions) -> None:
    """Options that cannot apply to ``name`` are errors, not silently ignored."""
    if download and name not in DOWNLOADABLE:
        raise ConfigError(f"dataset {name!r} cannot be downloaded (download=True / --download); "
                          f"only {', '.join(sorted(DOWNLOADABLE))} can — drop --download")
    if augment and name not in AUGMENTABLE:
        raise ConfigError(f"augment=True (--augment, random shift / crop + flip) is for "
                          f"{', '.join(AUGMENTABLE)}, not {name!r}; drop --augment")
    if events != EventOptions() and name not in EVENT_DATASETS:
        raise ConfigError(f"event options (--time-bins, --denoise-us, --merge-polarity, "
                          f"--event-norm, --event-clip) are for {', '.join(EVENT_DATASETS)}, "
                          f"not {name!r}; drop them")


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = False,
                 augment: bool = False, events: EventOptions | dict | None = None) -> SplitData:
    """Load dataset ``name`` (one of :data:`DATASETS`) from ``data_dir``.

    ``download`` lets torchvision / tonic fetch a missing dataset into ``data_dir``; ``augment``
    augments the training split (:data:`AUGMENTATIONS`: crop + flip for CIFAR and
    ``image-folder``, a 2-pixel shift for ``mnist``, ``mnist-idx``, ``fashion-mnist``);
    ``events`` (an :class:`EventOptions`, a dict of its fields, or ``None`` for the defaults)
    sets how event datasets become frames. An option that does not apply to
    ``name`` raises :class:`ConfigError`.
    """
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    opts = EventOptions.coerce(events)
    _check_options(name, bool(download), bool(augment), opts)
    if data_dir is None:
        data_dir = default_data_dir(name)
    kwargs: dict[str, Any] = {}
    if name in DOWNLOADABLE:
        kwargs["download"] = bool(download)
    if name in AUGMENTABLE:
        kwargs["augment"] = bool(augment)
    if name in EVENT_DATASETS:
        kwargs["events"] = opts
    return DATASETS[name](data_dir, **kwargs)


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
                            f"({', '.join(DOWNLOADABLE)})")
    group.add_argument("--augment", action="store_true",
                       help="training split only: random crop (padding 4) + horizontal flip for "
                            "CIFAR and image-folder, a random shift of up to 2 pixels for "
                            f"MNIST-like data ({', '.join(AUGMENTABLE)})")
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
    return group


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """``load_dataset`` keywords from args parsed with :func:`add_data_arguments`.

    Returns plain JSON-friendly values — ``{"download": bool, "augment": bool, "events":
    {"time_bins", "denoise_us", "merge_polarity", "normalise", "clip"}}`` — so the dict can be
    stored in metrics.json / a checkpoint and passed back as ``load_dataset(..., **options)``.
    A missing argument takes its default; a bad value raises :class:`ConfigError`.
    """
    events = EventOptions(
        time_bins=getattr(args, "time_bins", 1),
        denoise_us=getattr(args, "denoise_us", None),
        merge_polarity=bool(getattr(args, "merge_polarity", False)),
        normalise=getattr(args, "event_norm", "max"),
        clip=float(getattr(args, "event_clip", DEFAULT_CLIP)),
    )
    return {"download": bool(getattr(args, "download", False)),
            "augment": bool(getattr(args, "augment", False)),
            "events": events.to_dict()}


__all__ = ["AUGMENTATIONS", "DATASETS", "DEFAULT_SUBDIRS", "SPLITS", "EventOptions", "SplitData",
           "add_data_arguments", "dataset_options", "default_data_dir", "load_dataset",
           "load_cifar10", "load_cifar100", "load_cifar10dvs", "load_digits", "load_dvsgesture",
           "load_fashion_mnist", "load_image_folder", "load_mnist", "load_mnist_idx",
           "load_nmnist"]

"""Typed records that cross files: which data a run used, and what a checkpoint holds.

* :class:`DatasetRef` — a dataset by name, folder and options: loads what a run was trained on
  (:meth:`DatasetRef.load`), or, for evaluation and plots, the same data or any other folder
  (:meth:`DatasetRef.for_evaluation`) — the one place that rule lives.
* :class:`Checkpoint` — everything ``checkpoint.pt`` holds, with one writer (:meth:`save`) and
  one reader (:meth:`read`). On disk it is a plain dict of tensors and Python values (it loads
  with ``torch.load(weights_only=True)``), tagged ``format = "ttfs-plugin/checkpoint"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError

CHECKPOINT_FORMAT = "ttfs-plugin/checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class DatasetRef:
    """A dataset by ``name``, its folder (``None``: the dataset's default) and its options
    (event bins, augmentation, download …, as ``ttfs_plugin.data.load_dataset`` takes them)."""

    name: str
    data_dir: str | None = None
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "data_dir": self.data_dir, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, raw: Any) -> DatasetRef | None:
        if not raw:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise CheckpointError(f"the dataset record {raw!r} is not valid; pass --dataset")
        data_dir = raw.get("data_dir")
        return cls(raw["name"], None if data_dir is None else str(data_dir),
                   dict(raw.get("options") or {}))

    def load(self):
        """The dataset exactly as recorded (a training run, or its resumption)."""
        from .data import load_dataset

        return load_dataset(self.name, self.data_dir, **self.options)

    def for_evaluation(self, name: str | None = None, data_dir: str | None = None
                       ) -> DatasetRef:
        """The data to evaluate on: this one, or ``name`` / ``data_dir`` when given.

        Naming a dataset or a folder drops the recorded folder; the recorded event and frame
        options are kept while the dataset stays the same. Evaluation never augments and never
        downloads.
        """
        target = name or self.name
        folder = data_dir if (name or data_dir) else self.data_dir
        options = dict(self.options) if target == self.name else {}
        options.update(augment=False, download=False)
        return DatasetRef(target, folder, options)


def evaluation_data(recorded: DatasetRef | None, name: str | None, data_dir: str | None,
                    what: str = "the checkpoint") -> DatasetRef:
    """:meth:`DatasetRef.for_evaluation` of ``recorded``, or of ``name`` when nothing is
    recorded (with a clear error when neither is known)."""
    if recorded is None:
        if name is None:
            raise ConfigError(f"{what} does not record its dataset; pass --dataset")
        recorded = DatasetRef(name)
    return recorded.for_evaluation(name, data_dir)


def _versions() -> dict:
    import torch

    from . import __version__

    return {"ttfs-plugin": str(__version__), "torch": str(torch.__version__)}


@dataclass
class Checkpoint:
    """What ``checkpoint.pt`` holds. ``network`` is the ``NetworkConfig`` as a dict and
    ``training`` the ``TrainConfig`` as a dict (so a checkpoint written by an older release,
    with fewer fields, still reads); :meth:`train_config` builds the dataclass."""

    network: dict
    state_dict: dict
    epoch: int = 0
    history: list = field(default_factory=list)
    training: dict | None = None
    dataset: DatasetRef | None = None
    model: str | None = None
    preset: str | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    versions: dict = field(default_factory=_versions)

    @classmethod
    def of(cls, network, **fields) -> Checkpoint:
        """A checkpoint of a ``TTFSNetwork`` (its config and current state)."""
        return cls(network=network.config.to_dict(), state_dict=network.state_dict(), **fields)

    def to_dict(self) -> dict:
        out = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, DatasetRef) else value
        return out

    def save(self, path: str | Path) -> None:
        """Write atomically (a temp file renamed over ``path``; a failure leaves the old file)."""
        from .checkpoint import atomic_torch_save

        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def read(cls, path: str | Path) -> Checkpoint:
        """The checkpoint at ``path``, or a ``CheckpointError`` saying what is wrong."""
        from .checkpoint import read_checkpoint_dict

        raw = read_checkpoint_dict(path)
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            values = {k: v for k, v in raw.items() if k in known}
            values["dataset"] = DatasetRef.from_dict(raw.get("dataset"))
            values.setdefault("versions", {})
            record = cls(**values)
        except TypeError as exc:
            raise CheckpointError(f"{path} lacks part of a checkpoint ({exc}); the file is "
                                  "damaged or from something else") from None
        if not isinstance(record.network, dict) or not isinstance(record.state_dict, dict):
            raise CheckpointError(f"{path} holds no network config and weights")
        return record

    def train_config(self):
        """The run's ``TrainConfig`` (``None`` for a checkpoint saved outside training)."""
        from .training.config import TrainConfig

        if self.training is None:
            return None
        try:
            return TrainConfig.from_dict(self.training)
        except ConfigError as exc:
            raise CheckpointError(f"the checkpoint's training settings are invalid ({exc})"
                                  ) from None

    def build_network(self):
        """The ``TTFSNetwork`` with the saved weights, in eval mode."""
        from .models import NetworkConfig, TTFSNetwork

        try:
            network = TTFSNetwork(NetworkConfig.from_dict(self.network))
            network.load_state_dict(self.state_dict)
        except (KeyError, TypeError, RuntimeError, ConfigError) as exc:
            raise CheckpointError(f"its weights do not match its own network config "
                                  f"({str(exc).splitlines()[0]}); the file is damaged") from None
        return network.eval()


__all__ = ["DatasetRef", "Checkpoint", "evaluation_data", "CHECKPOINT_FORMAT",
           "CHECKPOINT_VERSION"]

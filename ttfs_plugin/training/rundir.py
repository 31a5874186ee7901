"""A run folder — the one owner of its layout: checkpoints that survive a crash or a full disk,
and logs as CSV, JSON and TensorBoard.

* ``checkpoint.pt`` — the latest epoch, and ``checkpoint.prev.pt`` — the one before. A new
  checkpoint is written to a temp file first; only once it is complete does the latest move to
  ``.prev`` (and only if it reads back: a damaged latest file is dropped, never rotated over the
  good previous one) and the new one take its place. A failed save leaves both as they were.
* ``metrics.csv`` (one row per epoch), ``metrics.json`` (config, history, final figures; strict
  JSON: a non-finite number is written as ``null``), tagged with ``format`` so that an unrelated
  ``metrics.json`` is never overwritten;
* ``tensorboard/`` when TensorBoard is installed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path

from ..checkpoint import LATEST, PREVIOUS, atomic_torch_save, existing_checkpoints, new_file_mode
from ..errors import CheckpointError, ConfigError
from ..records import Checkpoint

METRICS_FORMAT = "ttfs-plugin/run-metrics"
RUN_FILES = (LATEST, PREVIOUS, "metrics.csv", "metrics.json")


def finite_json(value):
    """``value`` with non-finite floats as ``None`` (strict JSON has no NaN or Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def check_out_folder(path: Path) -> None:
    """A usable run folder (or one that can be made), or one clear error before any training."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder; choose a folder for the run")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write into {existing} (permission denied); choose another "
                          "--out")
    metrics = path / "metrics.json"
    if metrics.is_file() and not existing_checkpoints(path):
        try:
            ours = json.loads(metrics.read_text()).get("format") == METRICS_FORMAT
        except (ValueError, AttributeError, OSError):
            ours = False
        if not ours:
            raise ConfigError(f"{path} holds a metrics.json that ttfs-plugin did not write; "
                              "choose another --out (it is left untouched)")


class RunDirectory:
    def __init__(self, path: str | Path, tensorboard: bool = True) -> None:
        self.path = Path(path)
        check_out_folder(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                pass
            else:
                self._writer = SummaryWriter(str(self.path / "tensorboard"))

    @property
    def checkpoint(self) -> Path:
        return self.path / LATEST

    @property
    def previous(self) -> Path:
        return self.path / PREVIOUS

    def clear(self) -> None:
        """Remove the files of an earlier run (``--overwrite``)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    def save_checkpoint(self, record: Checkpoint) -> None:
        """Write ``record`` as the latest checkpoint, keeping the current one as previous."""
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=".new", dir=self.path)
        os.close(fd)
        try:
            atomic_torch_save(record.to_dict(), tmp)  # complete, or an error and no change
            if self.checkpoint.exists():
                if self._readable(self.checkpoint):
                    os.replace(self.checkpoint, self.previous)
                else:  # a damaged latest file must not push the good previous one out
                    self.checkpoint.unlink()
            os.replace(tmp, self.checkpoint)
        finally:
            Path(tmp).unlink(missing_ok=True)

    @staticmethod
    def _readable(path: Path) -> bool:
        try:
            Checkpoint.read(path)
        except CheckpointError:
            return False
        return True

    def log_epoch(self, record: dict) -> None:
        """Append one row to ``metrics.csv`` (and TensorBoard scalars)."""
        path = self.path / "metrics.csv"
        record = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
        fields = list(record)
        new = not path.exists()
        if not new:
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), None)
            if header != fields:  # columns changed (e.g. a resumed run): start afresh
                new = True
        with open(path, "w" if new else "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerow(record)
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._writer.add_scalar(key, value, record["epoch"])
            self._writer.flush()

    def rewrite_csv(self, history: list[dict]) -> None:
        """Rewrite ``metrics.csv`` from a history (after a resume dropped a lost epoch)."""
        path = self.path / "metrics.csv"
        path.unlink(missing_ok=True)
        for record in history:
            self.log_epoch(record)

    def write_json(self, data: dict) -> None:
        """``metrics.json`` (strict JSON, tagged as this library's), written atomically."""
        text = json.dumps({"format": METRICS_FORMAT, **finite_json(data)}, indent=2,
                          allow_nan=False)
        fd, tmp = tempfile.mkstemp(prefix=".metrics.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, self.path / "metrics.json")
        finally:
            Path(tmp).unlink(missing_ok=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

"""A run folder: checkpoints that survive a crash, and logs as CSV, JSON and TensorBoard.

* ``checkpoint.pt`` — the latest epoch (written to a temp file, then renamed), and
  ``checkpoint.prev.pt`` — the one before, kept so a damaged latest file never loses the run;
* ``metrics.csv`` (one row per epoch), ``metrics.json`` (config, history, final figures);
* ``tensorboard/`` when TensorBoard is installed.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..checkpoint import read_checkpoint
from ..errors import CheckpointError

LATEST, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"


class RunDirectory:
    def __init__(self, path: str | Path, tensorboard: bool = True) -> None:
        self.path = Path(path)
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

    def rotate(self) -> None:
        """Keep the current latest checkpoint as the previous one before a new one is written."""
        if self.checkpoint.exists():
            os.replace(self.checkpoint, self.path / PREVIOUS)

    def latest_readable(self, warn=print) -> dict | None:
        """The newest checkpoint that reads back, falling back to the previous one."""
        candidates = [self.checkpoint, self.path / PREVIOUS]
        errors = []
        for path in candidates:
            if not path.exists():
                continue
            try:
                data = read_checkpoint(path)
            except CheckpointError as exc:
                errors.append(str(exc))
                continue
            if errors:
                warn(f"warning: {errors[0]}; resuming from {path.name} instead")
            return data
        if errors:
            raise CheckpointError("; ".join(errors) + "; no usable checkpoint to resume from")
        return None

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
        tmp = self.path / ".metrics.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path / "metrics.json")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

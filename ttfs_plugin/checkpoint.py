"""Checkpoint files: atomic writes, clear errors for damaged or foreign files, run folders.

The record itself (what a checkpoint holds) is :class:`ttfs_plugin.records.Checkpoint`;
:func:`load_checkpoint` is the usual entry point: ``network, record = load_checkpoint(path)``
where ``path`` is a ``checkpoint.pt`` or its run folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError
from .records import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Checkpoint

FORMAT, VERSION = CHECKPOINT_FORMAT, CHECKPOINT_VERSION
LATEST, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"


def new_file_mode() -> int:
    """The mode the user's umask gives a new file (``0o666 & ~umask``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``.

    A crash or a full disk mid-write leaves the previous file intact; the file gets the mode
    the user's umask gives new files (not the temp file's 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint_dict(path: str | Path) -> dict:
    """The raw dict of a checkpoint file, or a ``CheckpointError`` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train one with "
                              "'ttfs train --out DIR' (it writes DIR/checkpoint.pt)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise CheckpointError(f"{path} is truncated or not a ttfs-plugin checkpoint "
                              f"({type(exc).__name__}); re-run training or pass the right "
                              "file") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ttfs-plugin checkpoint (no '{FORMAT}' tag); "
                              "pass a checkpoint written by 'ttfs train'")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer ttfs-plugin (format version "
                              f"{data['version']}); upgrade ttfs-plugin to read it")
    return data


def save_checkpoint(path: str | Path, network, **fields) -> None:
    """Write ``network`` (config + state) and the :class:`Checkpoint` ``fields`` given."""
    try:
        record = Checkpoint.of(network, **fields)
    except TypeError as exc:
        raise CheckpointError(f"not a checkpoint field ({exc})") from None
    record.save(path)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The :class:`Checkpoint` at ``path`` (a file; see :func:`find_checkpoint` for folders)."""
    return Checkpoint.read(path)


def existing_checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoint files a run folder holds (latest first), readable or not."""
    return [Path(folder) / n for n in (LATEST, PREVIOUS) if (Path(folder) / n).is_file()]


def find_checkpoint(path: str | Path, warn=None) -> Path:
    """``path`` itself, or for a run folder its newest readable checkpoint: ``checkpoint.pt``,
    else ``checkpoint.prev.pt`` (with a warning saying why)."""
    path = Path(path)
    if not path.is_dir():
        return path
    errors = []
    for name in (LATEST, PREVIOUS):
        candidate = path / name
        if not candidate.exists():
            errors.append(f"{candidate} is missing")
            continue
        try:
            read_checkpoint_dict(candidate)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        if name == PREVIOUS:
            (warn or (lambda m: print(m, file=sys.stderr)))(
                f"warning: {errors[0]}; using {candidate} instead")
        return candidate
    raise CheckpointError(f"{path} holds no readable checkpoint ({'; '.join(errors)}); train "
                          "with 'ttfs train --out DIR'")


def load_checkpoint(path: str | Path) -> tuple:
    """``(network, record)``: the ``TTFSNetwork`` stored at ``path`` (a checkpoint file or its
    run folder), in eval mode, and its :class:`~ttfs_plugin.records.Checkpoint`."""
    file = find_checkpoint(path)
    record = Checkpoint.read(file)
    try:
        return record.build_network(), record
    except CheckpointError as exc:
        raise CheckpointError(f"{file}: {exc}") from None


__all__ = ["atomic_torch_save", "read_checkpoint_dict", "read_checkpoint", "save_checkpoint",
           "existing_checkpoints", "find_checkpoint", "load_checkpoint", "new_file_mode",
           "Checkpoint", "LATEST", "PREVIOUS"]

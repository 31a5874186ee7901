"""Checkpoints: the weights, kernel parameters and the full config, written atomically.

A checkpoint is a ``torch.save`` d dict tagged ``format = "ttfs-plugin/checkpoint"``; it holds only
tensors and plain Python values, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError
from .models import NetworkConfig, TTFSNetwork

FORMAT = "ttfs-plugin/checkpoint"
VERSION = 1


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, network: TTFSNetwork, **metadata) -> None:
    """Write ``network`` (config + state) and any JSON-like ``metadata`` to ``path``."""
    atomic_torch_save({"format": FORMAT, "version": VERSION,
                       "network": network.config.to_dict(),
                       "state_dict": network.state_dict(), **metadata}, path)


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, or a ``CheckpointError`` that says what is wrong with the file."""
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


def load_checkpoint(path: str | Path) -> tuple[TTFSNetwork, dict]:
    """Rebuild the network stored at ``path``; returns ``(network, checkpoint_dict)``."""
    data = read_checkpoint(path)
    try:
        network = TTFSNetwork(NetworkConfig.from_dict(data["network"]))
        network.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: its weights do not match its own network config "
                              f"({str(exc).splitlines()[0]}); the file is damaged") from None
    network.eval()
    return network, data

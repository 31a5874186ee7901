"""Errors the library raises for bad input.

Each one is a ``ValueError`` (so generic handlers still catch it) whose message names the
problem and the fix. The CLI prints them as one line instead of a traceback.
"""

from __future__ import annotations


class TTFSError(ValueError):
    """Base class of every error ttfs-plugin raises on purpose."""


class ConfigError(TTFSError):
    """An invalid hyper-parameter or an unknown name (model, preset, dataset, mode)."""


class InputShapeError(TTFSError):
    """A tensor of the wrong shape, channel count or with non-finite values."""


class DataError(TTFSError):
    """A missing or malformed data directory or file."""


class CheckpointError(TTFSError):
    """A checkpoint that is missing, truncated or not written by ttfs-plugin."""


def unknown_name(kind: str, name: str, known) -> ConfigError:
    """``ConfigError`` for an unknown ``kind`` (e.g. ``"model"``) listing the known names."""
    return ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")

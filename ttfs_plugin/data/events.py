"""Neuromorphic (event-camera) datasets through tonic, turned into frames of intensities in [0, 1].

Each recording is a list of events ``(x, y, t, p)``. At load time every sample goes through
``tonic.transforms.Denoise`` (optional) and ``tonic.transforms.ToFrame(n_time_bins=...)``, which
counts the events per time bin, polarity and pixel. Time bins and polarities become channels —
channel ``2 * t + p`` (or ``t`` with ``merge_polarity``) — and the counts are scaled to [0, 1]
per sample (``normalise="max"``) or capped (``normalise="clip"``). The frames are kept in memory
as a ``TensorDataset``, so training never touches the event files again.

The conversion runs once: tonic's ``DiskCachedDataset`` stores each sample's frames in a cache
folder (:func:`resolve_cache_dir`: ``cache_dir`` / ``--cache-dir``, ``$TTFS_CACHE_DIR``, else
``~/.cache/ttfs-plugin/events``; ``"none"`` turns it off) under a key of everything the frames
depend on, and later loads read them back: from one snapshot file of all of them
(``frames.pt``, checked by its own CRC-32; one read instead of one HDF5 file per sample), or the
per-sample files when the snapshot is missing or damaged. The first pass converts in DataLoader
worker processes (``event_workers``) and says so on stderr.

* ``nmnist`` — a folder of N-MNIST ``.bin`` files plus ``labels.tsv`` (as in
  ``../shared/data/nmnist1k``; the last 10 % by sample number are validation), or without
  ``labels.tsv`` tonic's own ``NMNIST`` download under ``data_dir`` (its train / test sets).
* ``dvsgesture`` — ``tonic.datasets.DVSGesture`` (train / test sets, 11 classes, 128×128).
* ``cifar10dvs`` — ``tonic.datasets.CIFAR10DVS`` (one set; every 10th sample is validation).

Which tonic class, event-file suffix and sensor a dataset has is its table entry's
:class:`TonicSource`; its class count is the entry's ``num_classes``.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError
from .base import DatasetEntry, SplitData, holdout_split, natural_key

#: How counts become intensities: divide by the sample's largest count, or cap then divide.
NORMALISATIONS = ("max", "clip")
#: Default cap for ``normalise="clip"``: about the 95th percentile of non-zero per-pixel counts
#: of N-MNIST at one time bin (median 5, 99th percentile 12, maximum 24 on nmnist1k).
DEFAULT_CLIP = 10.0

LABELS_FILE = "labels.tsv"
#: Bytes per event of an N-MNIST ``.bin`` file.
NMNIST_EVENT_BYTES = 5


@dataclass(frozen=True)
class TonicSource:
    """Where an event dataset comes from: ``cls`` is the class in ``tonic.datasets``
    (constructed as ``cls(save_to=data_dir, train=...)``; tonic keeps it under
    ``data_dir/<cls>``), ``suffix`` its event files' suffix (to tell whether it is on disk),
    ``sensor_size`` ``(x, y, polarities)`` when the class does not say. ``holdout_every=k``:
    the class has one set (no ``train`` flag) and every k-th sample is validation."""

    cls: str
    suffix: str
    sensor_size: tuple[int, int, int]
    holdout_every: int | None = None


@dataclass(frozen=True)
class EventOptions:
    """How events become the encoder's input frames (see ``docs/datasets.md``).

    * ``time_bins`` — frames per sample (``ToFrame(n_time_bins=...)``), each a pair of channels.
    * ``denoise_us`` — ``Denoise(filter_time=...)`` in µs before framing; ``None`` = off.
    * ``merge_polarity`` — add ON and OFF counts: ``time_bins`` channels instead of twice that.
    * ``normalise`` — ``"max"``: divide each sample by its largest count (every non-empty sample
      then peaks at exactly 1); ``"clip"``: ``min(count, clip) / clip``.
    * ``clip`` — the count cap of ``normalise="clip"``.
    """

    time_bins: int = 1
    denoise_us: int | None = None
    merge_polarity: bool = False
    normalise: str = "max"
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        if isinstance(self.time_bins, bool) or not isinstance(self.time_bins, int) \
                or self.time_bins < 1:
            raise ConfigError(f"time_bins must be an integer >= 1, got {self.time_bins!r}; "
                              "pass e.g. --time-bins 2")
        if self.denoise_us is not None and (isinstance(self.denoise_us, bool)
                                            or not isinstance(self.denoise_us, int)
                                            or self.denoise_us <= 0):
            raise ConfigError(f"denoise_us must be a positive integer (µs) or None, got "
                              f"{self.denoise_us!r}; pass e.g. --denoise-us 10000, or leave it out")
        if self.normalise not in NORMALISATIONS:
            raise ConfigError(f"unknown event normalisation {self.normalise!r}; choose one of: "
                              f"{', '.join(NORMALISATIONS)}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) \
                or not math.isfinite(self.clip) or self.clip <= 0:
            raise ConfigError(f"event clip must be a finite number > 0, got {self.clip!r}; "
                              "pass e.g. --event-clip 10")

    @classmethod
    def coerce(cls, value: EventOptions | dict | None) -> EventOptions:
        """``None`` (the defaults), an ``EventOptions`` or a dict of its fields (as saved)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigError(f"unknown event option(s) {', '.join(unknown)}; choose from: "
                                  f"{', '.join(sorted(known))}")
            return cls(**value)
        raise ConfigError(f"events must be an EventOptions, a dict or None, not "
                          f"{type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly) of the fields; ``EventOptions(**d)`` rebuilds it."""
        return asdict(self)

    def channels(self) -> int:
        """Channels of one frame stack: ``time_bins`` × 2 polarities, or ``time_bins``."""
        return self.time_bins * (1 if self.merge_polarity else 2)

    def in_shape(self, sensor_size: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(C, H, W)`` for a tonic ``sensor_size`` ``(x, y, polarities)``."""
        width, height, polarities = sensor_size
        per_bin = 1 if self.merge_polarity else polarities
        return (self.time_bins * per_bin, height, width)


def _tonic():
    try:
        import tonic
        import tonic.io
        import tonic.transforms
    except ImportError:  # pragma: no cover - tonic is an optional dependency
        raise DataError("event datasets need tonic; install it with "
                        "pip install 'ttfs-plugin[events]'") from None
    return tonic


def event_transform(sensor_size: tuple[int, int, int], opts: EventOptions) -> Callable:
    """The tonic pipeline events → counts ``(time_bins, polarities, H, W)``."""
    tonic = _tonic()
    steps: list[Callable] = []
    if opts.denoise_us is not None:
        steps.append(tonic.transforms.Denoise(filter_time=opts.denoise_us))
    steps.append(tonic.transforms.ToFrame(sensor_size=tuple(sensor_size),
                                          n_time_bins=opts.time_bins))
    return tonic.transforms.Compose(steps)


def events_to_frames(events: np.ndarray, sensor_size: tuple[int, int, int], opts: EventOptions,
                     transform: Callable | None = None) -> torch.Tensor:
    """One recording (a structured array with ``x, y, t, p``) as a float ``(C, H, W)`` tensor in
    [0, 1]; channel ``2 * bin + polarity`` (``bin`` with ``merge_polarity``)."""
    width, height, polarities = sensor_size
    shape = (opts.time_bins, polarities, height, width)
    counts = np.zeros(shape, dtype=np.float32)
    if len(events):
        if transform is None:
            transform = event_transform(sensor_size, opts)
        framed = None
        inside = all(0 <= int(events[axis].min()) and int(events[axis].max()) < size
                     for axis, size in (("x", width), ("y", height), ("p", polarities)))
        if inside:
            try:
                framed = np.asarray(transform(events), dtype=np.float32)
            except IndexError:
                framed = None
        if framed is not None and framed.shape == shape:
            counts = framed
        elif framed is None or framed.size:  # (an empty result: every event denoised away)
            raise DataError(f"events do not fit the {width}×{height} sensor (x < {width}, "
                            f"y < {height}, {polarities} polarities); check the dataset files")
    frames = torch.from_numpy(counts)
    if opts.merge_polarity:
        frames = frames.sum(dim=1, keepdim=True)
    frames = frames.reshape(-1, height, width)
    return normalise_counts(frames, opts)


def normalise_counts(frames: torch.Tensor, opts: EventOptions) -> torch.Tensor:
    """Event counts → intensities in [0, 1] (``"max"`` per sample, or ``"clip"`` at a cap)."""
    if opts.normalise == "clip":
        return frames.clamp(max=opts.clip) / opts.clip
    peak = frames.max()
    return frames / peak if peak > 0 else frames


def read_nmnist_events(path: str | Path) -> np.ndarray:
    """Events of one N-MNIST ``.bin`` file, decoded by tonic's reader (``tonic.io``).

    A missing, empty (0 bytes) or truncated file (not whole 5-byte events), or one that holds
    no events, is a ``DataError`` naming it — never a blank sample."""
    tonic = _tonic()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing N-MNIST file {path}; labels.tsv names it, so put it back or "
                        "drop its row")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"N-MNIST file {path} is empty (0 bytes; a recording holds thousands "
                        f"of {NMNIST_EVENT_BYTES}-byte events); download it again or drop its "
                        "row from labels.tsv")
    if size % NMNIST_EVENT_BYTES:
        raise DataError(f"{path} is not an N-MNIST file: {size} bytes is not a multiple of "
                        f"{NMNIST_EVENT_BYTES} ({NMNIST_EVENT_BYTES} bytes per event); the file "
                        "is truncated, download it again")
    events = tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    if not len(events):
        raise DataError(f"N-MNIST file {path} holds no events ({size} bytes of overflow "
                        "records only); download it again or drop its row from labels.tsv")
    return events


def read_labels_tsv(path: Path, num_classes: int | None = None) -> list[tuple[str, int]]:
    """``sample<TAB>label`` rows (an optional header row), sorted by sample number. With
    ``num_classes``, a label outside ``0 .. num_classes - 1`` is a ``DataError`` naming its
    line."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path} ({exc}); it must be a text file of "
                        "sample<TAB>label rows") from None
    rows: list[tuple[str, int]] = []
    for number, line in enumerate(lines, 1):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != 2:
            raise DataError(f"{path} line {number}: expected 'sample<TAB>label', got {line!r}")
        try:
            label = int(cells[1])
        except ValueError:
            if not rows and number == 1:  # a header row such as "sample\tlabel"
                continue
            raise DataError(f"{path} line {number}: label {cells[1]!r} is not an integer; "
                            "labels.tsv rows are 'sample<TAB>label'") from None
        if num_classes is not None and not 0 <= label < num_classes:
            raise DataError(f"{path} line {number}: label {label} of {cells[0]} is outside "
                            f"0..{num_classes - 1}; labels must lie in 0..{num_classes - 1} "
                            f"({num_classes} classes) — fix the row")
        rows.append((cells[0], label))
    if not rows:
        raise DataError(f"{path} lists no samples; it needs 'sample<TAB>label' rows")
    return sorted(rows, key=lambda row: natural_key(row[0]))


# --- the on-disk cache of converted frames ----------------------------------------------------

#: Bump when what a cache file holds, or how frames are made, changes: caches written before
#: then get another key and are never read again.
CACHE_VERSION = 1
#: Environment variable naming the cache folder (``none``: no cache).
CACHE_ENV = "TTFS_CACHE_DIR"
#: The ``cache_dir`` / ``--cache-dir`` / ``$TTFS_CACHE_DIR`` value that turns the cache off.
CACHE_OFF = "none"
MANIFEST = "manifest.json"
#: All frames and labels of a complete cache in one file (per-sample files stay the reference).
SNAPSHOT = "frames.pt"
#: ``event_workers=None``: conversion workers are used only for this many samples or more …
_AUTO_WORKERS_FROM = 64
#: … and at most this many.
_AUTO_WORKERS_MAX = 8


def user_cache_dir() -> Path:
    """The default cache folder: ``$XDG_CACHE_HOME/ttfs-plugin/events`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ttfs-plugin" / "events"


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path | None:
    """Where converted frames are cached (``None``: no cache).

    ``cache_dir`` (``--cache-dir``) wins, then ``$TTFS_CACHE_DIR``, then :func:`user_cache_dir`;
    the value ``"none"`` in either place turns the cache off. The data folder itself is never
    written to."""
    explicit = cache_dir is not None
    if not explicit:
        cache_dir = os.environ.get(CACHE_ENV) or None
    if cache_dir is None:
        return user_cache_dir()
    if not isinstance(cache_dir, (str, Path)) or not str(cache_dir).strip():
        where = "cache_dir (--cache-dir)" if explicit else f"${CACHE_ENV}"
        raise ConfigError(f"{where} must be a folder or {CACHE_OFF!r} (no cache), got "
                          f"{cache_dir!r}; pass e.g. --cache-dir ~/.cache/ttfs-plugin/events")
    if str(cache_dir).strip().lower() == CACHE_OFF:
        return None
    return Path(cache_dir).expanduser()


def check_event_workers(event_workers: int | None) -> None:
    """``event_workers`` must be ``None`` (automatic) or an integer >= 0."""
    if event_workers is not None and (isinstance(event_workers, bool)
                                      or not isinstance(event_workers, int)
                                      or event_workers < 0):
        raise ConfigError(f"event_workers must be an integer >= 0 or None (automatic), got "
                          f"{event_workers!r}; pass e.g. --event-workers 4, or 0 for none")


def _workers_for(n: int, event_workers: int | None) -> int:
    """DataLoader workers for converting ``n`` samples (``None``: one per usable CPU, up to
    :data:`_AUTO_WORKERS_MAX`, for :data:`_AUTO_WORKERS_FROM` samples or more, and only where
    worker processes fork — elsewhere a script without a ``__main__`` guard would break)."""
    if event_workers is not None:
        return event_workers
    method = multiprocessing.get_start_method(allow_none=True) \
        or multiprocessing.get_all_start_methods()[0]
    if n < _AUTO_WORKERS_FROM or method != "fork":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    workers = min(cpus, _AUTO_WORKERS_MAX)
    return workers if workers > 1 else 0


def _checksum(key: str, index: int, label: int, frames: np.ndarray) -> int:
    """CRC-32 over the cache key, the sample's index and label, and its frames: a cache file
    that is damaged, or belongs to another sample or another cache, does not match."""
    head = f"{key}:{index}:{label}:{frames.shape}:".encode()
    return zlib.crc32(np.ascontiguousarray(frames).tobytes(), zlib.crc32(head))


class _SourceError(Exception):
    """An error reading or converting a sample (``args[0]``), kept apart from a cache file's
    own errors and re-raised as it is."""


class _NmnistFiles:
    """N-MNIST ``.bin`` files as a map-style dataset: ``[i]`` → ``(events, label)``."""

    def __init__(self, paths: list[Path], labels: list[int]):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return read_nmnist_events(self.paths[index]), self.labels[index]


class _EventFrames(Dataset):
    """``[i]`` → ``(frames, (label, checksum))``: sample ``i`` of ``source`` (anything whose
    ``[i]`` is ``(events, label)``) as a float32 ``(C, H, W)`` array; ``names[i]`` names it in
    errors."""

    def __init__(self, source: Any, names: list[str], sensor_size: tuple[int, int, int],
                 opts: EventOptions, key: str):
        self.source, self.names, self.key = source, names, key
        self.sensor_size, self.opts = sensor_size, opts
        self._transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        if self._transform is None:
            self._transform = event_transform(self.sensor_size, self.opts)
        try:
            events, label = self.source[index]
            frames = events_to_frames(events, self.sensor_size, self.opts,
                                      self._transform).numpy()
        except DataError as exc:
            raise DataError(f"{self.names[index]}: {exc}") from None
        except Exception as exc:  # not the cache's: re-raised unchanged by _Samples
            raise _SourceError(exc) from exc
        label = int(label)
        return frames, (label, _checksum(self.key, index, label, frames))


class _Samples(Dataset):
    """``[i]`` → ``(frames, label)``, from the cache at ``cache_path`` (converting and storing
    what is missing, with tonic's ``DiskCachedDataset``) or straight from ``frames``. A cache
    file that does not load or fails its checksum is converted again; an error converting a
    sample comes back as its message (a ``str``), for the main process to raise."""

    def __init__(self, frames: _EventFrames, cache_path: Path | None):
        self.frames, self.cache_path = frames, cache_path
        self.shape = frames.opts.in_shape(frames.sensor_size)
        self.cached = None if cache_path is None else \
            _tonic().DiskCachedDataset(frames, cache_path=str(cache_path))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int] | str:
        try:
            if self.cached is None:
                frames, (label, _) = self.frames[index]
                return frames, label
            return self._from_cache(index)
        except DataError as exc:
            return str(exc)
        except _SourceError as exc:
            raise exc.args[0] from None

    def _read(self, index: int) -> tuple[np.ndarray, int] | None:
        try:
            frames, target = self.cached[index]  # type: ignore[index]
            label, checksum = (int(value) for value in target)
        except (DataError, _SourceError):
            raise
        except (OSError, KeyError, ValueError, TypeError):  # not a readable cache file
            return None
        if not isinstance(frames, np.ndarray) or frames.dtype != np.float32 \
                or frames.shape != self.shape \
                or checksum != _checksum(self.frames.key, index, label, frames):
            return None
        return frames, label

    def _from_cache(self, index: int) -> tuple[np.ndarray, int]:
        sample = self._read(index)
        if sample is None:  # damaged: drop the file, and tonic converts the sample again
            file = Path(self.cache_path or "") / f"{index}_0.hdf5"  # tonic's file name
            file.unlink(missing_ok=True)
            sample = self._read(index)
            if sample is None:
                raise DataError(f"the event cache file {file} cannot be written or read back "
                                f"(sample {index} converted again: is the disk full?); delete "
                                f"{self.cache_path}, or pass --cache-dir {CACHE_OFF}")
        return sample


def _as_list(batch: list) -> list:
    """DataLoader ``collate_fn``: the samples as they are."""
    return batch


def _run(samples: _Samples, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample, in order (in ``workers`` DataLoader processes; 0: this one), stacked."""
    loader = DataLoader(samples, batch_size=16, num_workers=workers, collate_fn=_as_list,
                        generator=torch.Generator().manual_seed(0))  # not torch's global one
    images, labels = [], []
    for batch in loader:
        for sample in batch:
            if isinstance(sample, str):
                raise DataError(sample)
            images.append(torch.from_numpy(sample[0]))
            labels.append(sample[1])
    if not images:
        return torch.zeros((0, *samples.shape)), torch.zeros(0, dtype=torch.long)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _snapshot_checksum(key: str, images: torch.Tensor, labels: torch.Tensor) -> int:
    crc = zlib.crc32(f"{key}:{tuple(images.shape)}:{tuple(labels.shape)}:".encode())
    crc = zlib.crc32(images.contiguous().numpy().data, crc)
    return zlib.crc32(labels.contiguous().numpy().data, crc)


def _write_snapshot(folder: Path, key: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """``folder/frames.pt``: every frame and label, the key and a CRC-32, written beside and
    renamed. A folder that cannot be written keeps the per-sample files only (no error: the
    snapshot only saves time)."""
    record = {"key": key, "images": images, "labels": labels,
              "crc32": _snapshot_checksum(key, images, labels)}
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{SNAPSHOT}.", dir=folder)
        os.close(fd)
        try:
            torch.save(record, tmp)
            os.replace(tmp, folder / SNAPSHOT)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


def _read_snapshot(folder: Path, key: str, samples: int, shape: tuple[int, ...]
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The snapshot's ``(images, labels)`` if it is this cache's and intact, else ``None``."""
    try:
        record = torch.load(folder / SNAPSHOT, weights_only=True)
    except Exception:  # noqa: BLE001 - missing, truncated or not a torch file: not used
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    images, labels = record.get("images"), record.get("labels")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor) \
            or images.dtype != torch.float32 or labels.dtype != torch.long \
            or tuple(images.shape) != (samples, *shape) or tuple(labels.shape) != (samples,) \
            or record.get("crc32") != _snapshot_checksum(key, images, labels):
        return None
    return images, labels


def _cache_key(manifest: dict[str, Any]) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _read_manifest(path: Path) -> Any:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _cached_frames(entry: DatasetEntry, part: str, source: Any, names: list[str],
                   identity: dict[str, Any], sensor_size: tuple[int, int, int],
                   opts: EventOptions, cache_dir: str | Path | None,
                   event_workers: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames and labels of ``source`` (``[i]`` → ``(events, label)``), from the cache
    when it holds them, else converted (and cached).

    The cache key hashes everything the frames depend on: ``identity`` (which files, in which
    order, with which labels), the sensor, every event option, tonic's version and
    :data:`CACHE_VERSION`. A cache is used only once complete: the first pass writes into a
    folder of its own and renames it into place at the end."""
    check_event_workers(event_workers)
    root = resolve_cache_dir(cache_dir)
    manifest = {"format": "ttfs-plugin/event-frames", "version": CACHE_VERSION,
                "tonic": getattr(_tonic(), "__version__", "?"), "dataset": entry.name,
                "part": part, "samples": len(names), "source": identity,
                "sensor_size": list(sensor_size), "events": opts.to_dict()}
    key = _cache_key(manifest)
    frames = _EventFrames(source, names, sensor_size, opts, key)
    workers = _workers_for(len(names), event_workers)
    if root is None:
        return _run(_Samples(frames, None), workers)
    final = root / entry.name / f"{part}-{key}"
    if _read_manifest(final) == manifest:  # a hit: read in this process
        samples = _Samples(frames, final)
        snapshot = _read_snapshot(final, key, len(samples), samples.shape)
        if snapshot is not None:
            return snapshot
        result = _run(samples, 0)  # per sample (damaged ones converted again)
        _write_snapshot(final, key, *result)
        return result
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{final.name}.partial-", dir=final.parent))
    except OSError as exc:  # no cache folder: the cache only saves time, so go without it
        print(f"ttfs: cannot write the event cache in {root} ({exc.strerror or exc}); "
              f"converting without it — pass --cache-dir (or set {CACHE_ENV}) with a writable "
              f"folder, or {CACHE_OFF}", file=sys.stderr, flush=True)
        return _run(_Samples(frames, None), workers)
    helpers = f" in {workers} worker processes" if workers else ""
    print(f"ttfs: converting {len(names):,} {entry.name} samples to frames{helpers} and caching "
          f"them in {final} (once: later runs with the same options read them from there)",
          file=sys.stderr, flush=True)
    try:
        result = _run(_Samples(frames, partial), workers)
        _write_snapshot(partial, key, *result)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if final.exists() and _read_manifest(final) != manifest:  # incomplete or foreign
            shutil.rmtree(final, ignore_errors=True)
        try:
            partial.rename(final)
        except OSError:  # another process finished the same cache first: keep theirs
            pass
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return result


def _val_size(n: int) -> int:
    """The last 10 % (at least one sample) are the validation split."""
    return max(1, n // 10)


def _check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, found "
                        f"{int(y.min())}..{int(y.max())}")


def _entry_facts(entry: DatasetEntry) -> tuple[TonicSource, int]:
    if not isinstance(entry.source, TonicSource) or entry.num_classes is None:
        raise ConfigError(f"dataset {entry.name!r}: an event entry needs source=TonicSource(...) "
                          "and num_classes")
    return entry.source, entry.num_classes


def _file_identity(path: Path) -> list[Any]:
    """Size and modification time (ns) of a file, or ``None`` for one that is missing."""
    try:
        stat = path.stat()
    except OSError:
        return [None, None]
    return [stat.st_size, stat.st_mtime_ns]


def load_nmnist_folder(entry: DatasetEntry, data_dir: str | Path | None, download: bool = False,
                       events: EventOptions | dict | None = None,
                       cache_dir: str | Path | None = None,
                       event_workers: int | None = None) -> SplitData:
    """N-MNIST frames ``(C, 34, 34)``: a folder with ``labels.tsv`` (last 10 % validation; a
    single sample has no split but is there for ``split("all")``) or, without one, tonic's
    NMNIST train / test sets under ``data_dir``. The frames are cached on disk
    (``cache_dir``, see :func:`resolve_cache_dir`), keyed by the files (name, label, size,
    modification time) and the event options."""
    opts = EventOptions.coerce(events)
    root = _require_dir(entry.name, data_dir, download)
    if not (root / LABELS_FILE).is_file():
        return load_tonic(entry, root, download=download, events=opts, cache_dir=cache_dir,
                          event_workers=event_workers)
    source, num_classes = _entry_facts(entry)
    sensor_size = source.sensor_size
    rows = read_labels_tsv(root / LABELS_FILE, num_classes)
    paths = [root / name for name, _ in rows]
    identity = {"folder": str(root.resolve()), "files": [
        [name, label, *_file_identity(path)] for (name, label), path in zip(rows, paths)]}
    x, y = _cached_frames(entry, "all", _NmnistFiles(paths, [label for _, label in rows]),
                          [str(path) for path in paths], identity, sensor_size, opts,
                          cache_dir, event_workers)
    _check_labels(y, num_classes, str(root / LABELS_FILE))
    return holdout_split(entry, x, y, _val_size(len(y)), opts.in_shape(sensor_size), num_classes,
                         where=str(root / LABELS_FILE), what="samples")


def _require_dir(name: str, data_dir: str | Path | None, download: bool) -> Path:
    if data_dir is None:
        raise DataError(f"dataset {name!r} needs --data-dir DIR (or TTFS_DATA_DIR set); add "
                        "--download to let tonic fetch it there")
    root = Path(data_dir)
    if not root.is_dir() and not download:
        raise DataError(f"data directory {root} does not exist; pass --download to fetch "
                        f"{name!r} there, or point --data-dir at the folder that holds it")
    return root


def _tonic_present(root: Path, folder: str, suffix: str) -> bool:
    location = root / folder
    return location.is_dir() and next(location.rglob(f"*{suffix}"), None) is not None


def load_tonic(entry: DatasetEntry, data_dir: str | Path | None, download: bool = False,
               events: EventOptions | dict | None = None, cache_dir: str | Path | None = None,
               event_workers: int | None = None) -> SplitData:
    """A ``tonic.datasets`` class (the entry's :class:`TonicSource`) turned into frames: its
    train / test sets, or with ``holdout_every=k`` one set of which every k-th sample is
    validation. The frames are cached on disk (``cache_dir``, see :func:`resolve_cache_dir`),
    keyed by the folder, the set, its length and the event options."""
    opts = EventOptions.coerce(events)
    check_event_workers(event_workers)
    name = entry.name
    root = _require_dir(name, data_dir, download)
    source, num_classes = _entry_facts(entry)
    tonic = _tonic()
    if not download and not _tonic_present(root, source.cls, source.suffix):
        extra = (f" and no {LABELS_FILE} (the nmnist1k layout: .bin files plus {LABELS_FILE})"
                 if entry.loader is load_nmnist_folder else "")
        raise DataError(f"{root} holds no {source.cls}/ folder of {source.suffix} files{extra}; "
                        f"pass --download to fetch {name!r} there with tonic, or point "
                        "--data-dir at the folder that holds it")
    cls = getattr(tonic.datasets, source.cls)  # looked up now, so tests can replace it
    sensor_size = tuple(getattr(cls, "sensor_size", source.sensor_size))
    root.mkdir(parents=True, exist_ok=True)

    def build(**kwargs):
        try:
            return cls(save_to=str(root), **kwargs)
        except (OSError, RuntimeError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            if download:
                raise DataError(f"could not download {name!r} into {root} ({first}); check the "
                                f"network, or put tonic's {source.cls}/ folder there by hand") \
                    from None
            raise DataError(f"could not read {name!r} from {root} ({first}); tonic also wants "
                            "the downloaded archive next to the extracted files — pass "
                            "--download to fetch it again") from None

    where = f"{root}/{source.cls}"

    def convert(ds, part: str, train: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
        identity = {"folder": str(root.resolve()), "class": source.cls, "train": train}
        x, y = _cached_frames(entry, part, ds, [f"{where} sample {i}" for i in range(len(ds))],
                              identity, sensor_size, opts, cache_dir, event_workers)
        _check_labels(y, num_classes, where)
        return x, y

    if source.holdout_every:  # one set, sorted by class: every k-th sample is held out
        x, y = convert(build(), "all", None)
        k = source.holdout_every
        held = torch.arange(len(y)) % k == k - 1
        train = torch.utils.data.TensorDataset(x[~held], y[~held])
        val = torch.utils.data.TensorDataset(x[held], y[held])
    else:
        parts = []
        for is_train in (True, False):
            parts.append(torch.utils.data.TensorDataset(*convert(
                build(train=is_train), "train" if is_train else "test", is_train)))
        train, val = parts
    return SplitData(name, train, val, opts.in_shape(sensor_size), num_classes)

"""Neuromorphic (event-camera) datasets through tonic, turned into frames of intensities in [0, 1].

Each recording is a list of events ``(x, y, t, p)``. At load time every sample goes through
``tonic.transforms.Denoise`` (optional) and ``tonic.transforms.ToFrame(n_time_bins=...)``, which
counts the events per time bin, polarity and pixel. Time bins and polarities become channels —
channel ``2 * t + p`` (or ``t`` with ``merge_polarity``) — and the counts are scaled to [0, 1]
per sample (``normalise="max"``) or capped (``normalise="clip"``). The frames are kept in memory
as a ``TensorDataset``, so training never touches the event files again.

* ``nmnist`` — a folder of N-MNIST ``.bin`` files plus ``labels.tsv`` (as in
  ``../shared/data/nmnist1k``; the last 10 % by sample number are validation), or without
  ``labels.tsv`` tonic's own ``NMNIST`` download under ``data_dir`` (its train / test sets).
* ``dvsgesture`` — ``tonic.datasets.DVSGesture`` (train / test sets, 11 classes, 128×128).
* ``cifar10dvs`` — ``tonic.datasets.CIFAR10DVS`` (one set; every 10th sample is validation).

Which tonic class, event-file suffix and sensor a dataset has is its table entry's
:class:`TonicSource`; its class count is the entry's ``num_classes``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

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


def _val_size(n: int) -> int:
    """The last 10 % (at least one sample) are the validation split."""
    return max(1, n // 10)


def _convert(samples, sensor_size, opts: EventOptions, num_classes: int, where: str):
    """``(events, label, source)`` triples → stacked frames and labels; ``source`` names the
    sample in errors."""
    transform = event_transform(sensor_size, opts)
    shape = opts.in_shape(sensor_size)
    images, labels = [], []
    for events, label, source in samples:
        try:
            images.append(events_to_frames(events, sensor_size, opts, transform))
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None
        labels.append(int(label))
    if not images:
        return torch.zeros((0, *shape)), torch.zeros(0, dtype=torch.long)
    y = torch.tensor(labels, dtype=torch.long)
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, found "
                        f"{int(y.min())}..{int(y.max())}")
    return torch.stack(images), y


def _entry_facts(entry: DatasetEntry) -> tuple[TonicSource, int]:
    if not isinstance(entry.source, TonicSource) or entry.num_classes is None:
        raise ConfigError(f"dataset {entry.name!r}: an event entry needs source=TonicSource(...) "
                          "and num_classes")
    return entry.source, entry.num_classes


def load_nmnist_folder(entry: DatasetEntry, data_dir: str | Path | None, download: bool = False,
                       events: EventOptions | dict | None = None) -> SplitData:
    """N-MNIST frames ``(C, 34, 34)``: a folder with ``labels.tsv`` (last 10 % validation; a
    single sample has no split but is there for ``split("all")``) or, without one, tonic's
    NMNIST train / test sets under ``data_dir``."""
    opts = EventOptions.coerce(events)
    root = _require_dir(entry.name, data_dir, download)
    if not (root / LABELS_FILE).is_file():
        return load_tonic(entry, root, download=download, events=opts)
    source, num_classes = _entry_facts(entry)
    sensor_size = source.sensor_size
    rows = read_labels_tsv(root / LABELS_FILE, num_classes)
    samples = ((read_nmnist_events(root / name), label, root / name) for name, label in rows)
    x, y = _convert(samples, sensor_size, opts, num_classes, str(root / LABELS_FILE))
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
               events: EventOptions | dict | None = None) -> SplitData:
    """A ``tonic.datasets`` class (the entry's :class:`TonicSource`) turned into frames: its
    train / test sets, or with ``holdout_every=k`` one set of which every k-th sample is
    validation."""
    opts = EventOptions.coerce(events)
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

    def samples(ds):
        return ((*ds[i], f"{where} sample {i}") for i in range(len(ds)))

    if source.holdout_every:  # one set, sorted by class: every k-th sample is held out
        full = build()
        x, y = _convert(samples(full), sensor_size, opts, num_classes, where)
        k = source.holdout_every
        held = torch.arange(len(y)) % k == k - 1
        train = torch.utils.data.TensorDataset(x[~held], y[~held])
        val = torch.utils.data.TensorDataset(x[held], y[held])
    else:
        parts = []
        for is_train in (True, False):
            ds = build(train=is_train)
            parts.append(torch.utils.data.TensorDataset(*_convert(
                samples(ds), sensor_size, opts, num_classes, where)))
        train, val = parts
    return SplitData(name, train, val, opts.in_shape(sensor_size), num_classes)

"""Event datasets: N-MNIST on the real samples in ../shared/data/nmnist1k, and the tonic
datasets through fakes (nothing here touches the network)."""

import shutil
import urllib.error

import numpy as np
import pytest
import tonic
import torch
from _data_helpers import _one_line, one_training_step  # noqa: E402

from ttfs_plugin.data import EventOptions, default_data_dir, load_dataset
from ttfs_plugin.data.events import events_to_frames, read_nmnist_events
from ttfs_plugin.errors import ConfigError, DataError

SENSOR = (34, 34, 2)


def hand_decode(path):
    """The shared README's bit layout: x = b0, y = b1, p = b2 >> 7, ts = 23 bits."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    b0, b1, b2, b3, b4 = raw.T
    return b0, b1, b2 >> 7, ((b2 & 0x7F) << 16) | (b3 << 8) | b4


@pytest.fixture(scope="module", autouse=True)
def _event_cache(tmp_path_factory):
    """Converted frames are cached in a temporary folder, never ~/.cache or ../shared."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TTFS_CACHE_DIR", str(tmp_path_factory.mktemp("event_cache")))
        yield


@pytest.fixture(scope="module")
def nmnist_dir(shared_data):
    return shared_data / "nmnist1k"


@pytest.fixture(scope="module")
def labels(nmnist_dir):
    lines = (nmnist_dir / "labels.tsv").read_text().split("\n")
    assert lines[0] == "sample\tlabel"  # a header row
    rows = dict(line.split("\t") for line in lines[1:] if line)
    return [int(rows[f"{i}.bin"]) for i in range(1, 1001)]


@pytest.fixture(scope="module")
def nmnist(nmnist_dir):
    return load_dataset("nmnist", nmnist_dir, events=EventOptions(time_bins=2))


@pytest.fixture
def small_nmnist(tmp_path, nmnist_dir, labels):
    """Samples 1-20 copied to tmp_path (fast to reload with other options)."""
    lines = ["sample\tlabel"]
    for i in range(1, 21):
        shutil.copyfile(nmnist_dir / f"{i}.bin", tmp_path / f"{i}.bin")
        lines.append(f"{i}.bin\t{labels[i - 1]}")
    (tmp_path / "labels.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


# --- N-MNIST on the real samples -------------------------------------------------------------

def test_nmnist_split_shapes_and_labels(nmnist, labels):
    assert nmnist.name == "nmnist" and nmnist.num_classes == 10
    assert nmnist.in_shape == (4, 34, 34)  # 2 time bins × 2 polarities
    assert len(nmnist.train) == 900 and len(nmnist.val) == 100  # samples 1-900 / 901-1,000
    x, y = nmnist.split("all").tensors
    assert x.shape == (1000, 4, 34, 34) and x.dtype == torch.float32
    assert y.tolist() == labels
    assert nmnist.val.tensors[1].tolist() == labels[900:]
    assert x.min() == 0 and x.max() == 1
    assert torch.all(x.flatten(1).max(dim=1).values == 1)  # "max": each sample peaks at 1


def test_all_1000_samples_are_bit_identical_from_the_cache(nmnist, nmnist_dir, monkeypatch):
    """The module's load converted and cached the samples; this one reads them back."""
    import ttfs_plugin.data.events as events_module

    opts = EventOptions(time_bins=2)
    uncached = load_dataset("nmnist", nmnist_dir, events=opts, cache_dir="none")
    monkeypatch.setattr(events_module, "read_nmnist_events", None)  # a hit reads no file
    cached = load_dataset("nmnist", nmnist_dir, events=opts)
    for data in (nmnist, cached):
        for split in ("train", "val"):
            for a, b in zip(getattr(data, split).tensors, getattr(uncached, split).tensors):
                assert torch.equal(a, b)


def test_tonic_reader_matches_a_hand_decode(nmnist_dir):
    x, y, p, t = hand_decode(nmnist_dir / "1.bin")
    assert not np.any(y == 240)  # no overflow events, so every record is a spike
    events = read_nmnist_events(nmnist_dir / "1.bin")
    assert len(events) == len(x) == 4681
    for field, ours in zip("xypt", (x, y, p, t)):
        assert np.array_equal(events[field], ours), field
    assert x.max() < 34 and y.max() < 34 and set(np.unique(p)) == {0, 1}


def test_channels_are_bin_times_two_plus_polarity(nmnist_dir):
    """With a huge clip the intensities are counts / clip: compare with a hand-made histogram."""
    x, y, p, t = hand_decode(nmnist_dir / "1.bin")
    events = read_nmnist_events(nmnist_dir / "1.bin")
    opts = EventOptions(time_bins=2, normalise="clip", clip=1000.0)
    frames = events_to_frames(events, SENSOR, opts) * 1000.0
    assert frames.shape == (4, 34, 34)
    tonic_counts = tonic.transforms.ToFrame(sensor_size=SENSOR, n_time_bins=2)(events)
    assert torch.allclose(frames, torch.from_numpy(tonic_counts).float().reshape(4, 34, 34))
    # tonic's bins: width (t_last - t_first) // bins, half-open, so the last µs are left out
    width = (t[-1] - t[0]) // 2
    b = (t - t[0]) // width
    kept = b < 2
    assert 1 <= (~kept).sum() <= 2
    counts = np.zeros((4, 34, 34))
    np.add.at(counts, (2 * b[kept] + p[kept], y[kept], x[kept]), 1)  # channel 2 * bin + p
    assert torch.allclose(frames, torch.from_numpy(counts).float(), atol=1e-3)


def test_nmnist_trains_one_step(nmnist):
    one_training_step(nmnist)


def test_event_options_change_the_frames(small_nmnist, nmnist_dir):
    base = load_dataset("nmnist", small_nmnist)
    assert len(base.train) == 18 and len(base.val) == 2 and base.in_shape == (2, 34, 34)
    merged = load_dataset("nmnist", small_nmnist,
                          events=EventOptions(time_bins=3, merge_polarity=True))
    assert merged.in_shape == (3, 34, 34)
    assert merged.train.tensors[0].shape == (18, 3, 34, 34)
    clipped = load_dataset("nmnist", small_nmnist, events={"normalise": "clip", "clip": 4})
    events = read_nmnist_events(nmnist_dir / "1.bin")
    counts = torch.from_numpy(
        tonic.transforms.ToFrame(sensor_size=SENSOR, n_time_bins=1)(events)).float()
    assert torch.allclose(clipped.train.tensors[0][0], counts[0].clamp(max=4) / 4)
    assert clipped.train.tensors[0].max() == 1 and clipped.train.tensors[0].min() == 0
    denoised = load_dataset("nmnist", small_nmnist, events=EventOptions(
        denoise_us=2000, normalise="clip", clip=1000.0))
    plain = load_dataset("nmnist", small_nmnist, events=EventOptions(normalise="clip",
                                                                     clip=1000.0))
    kept, total = denoised.train.tensors[0].sum(), plain.train.tensors[0].sum()
    assert 0 < kept < total  # isolated events dropped


def test_default_dir_is_nmnist1k(shared_data, monkeypatch):
    monkeypatch.setenv("TTFS_DATA_DIR", str(shared_data))
    assert default_data_dir("nmnist") == shared_data / "nmnist1k"
    assert default_data_dir("dvsgesture") == shared_data


# --- N-MNIST folder errors --------------------------------------------------------------------

def test_missing_and_truncated_bin(small_nmnist):
    (small_nmnist / "5.bin").unlink()
    with pytest.raises(DataError, match="missing N-MNIST file .*5.bin") as info:
        load_dataset("nmnist", small_nmnist)
    _one_line(info)
    (small_nmnist / "5.bin").write_bytes(b"\x01\x02\x03\x04\x05\x06")
    with pytest.raises(DataError, match="6 bytes is not a multiple of 5"):
        load_dataset("nmnist", small_nmnist)


def test_empty_bin_is_an_error_naming_the_file(small_nmnist):
    """A 0-byte .bin (5 bytes per event, so 0 is "a multiple of 5") is not a blank sample."""
    (small_nmnist / "7.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"N-MNIST file .*7.bin is empty \(0 bytes") as info:
        load_dataset("nmnist", small_nmnist)
    _one_line(info)
    with pytest.raises(DataError, match="7.bin is empty"):
        read_nmnist_events(small_nmnist / "7.bin")


def test_bin_of_overflow_records_only_is_an_error(small_nmnist):
    (small_nmnist / "3.bin").write_bytes(bytes([0, 240, 0, 0, 0]) * 4)  # y = 240: overflow
    with pytest.raises(DataError, match="N-MNIST file .*3.bin holds no events") as info:
        load_dataset("nmnist", small_nmnist)
    _one_line(info)


def test_events_off_the_sensor_name_the_file(small_nmnist):
    (small_nmnist / "4.bin").write_bytes(bytes([50, 3, 0, 0, 1, 2, 3, 0, 0, 9]))  # x = 50
    with pytest.raises(DataError, match=r".*4.bin: events do not fit the 34×34 sensor") as info:
        load_dataset("nmnist", small_nmnist)
    _one_line(info)


def test_bad_labels_tsv(small_nmnist):
    path = small_nmnist / "labels.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + ["3.bin\tseven"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match="line 4: label 'seven' is not an integer"):
        load_dataset("nmnist", small_nmnist)
    path.write_text("\n".join(lines[:3] + ["3.bin\t12"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"line 4: label 12 of 3.bin is outside 0..9; labels "
                       r"must lie in 0..9 \(10 classes\)") as info:
        load_dataset("nmnist", small_nmnist)
    _one_line(info)
    path.write_text("\n".join(lines[:3] + ["3.bin\t-1"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"line 4: label -1 of 3.bin is outside 0..9"):
        load_dataset("nmnist", small_nmnist)
    path.write_text("sample\tlabel\n")
    with pytest.raises(DataError, match="lists no samples"):
        load_dataset("nmnist", small_nmnist)


def test_a_single_sample_is_evaluable_but_has_no_split(small_nmnist):
    (small_nmnist / "labels.tsv").write_text("1.bin\t5\n")  # no header, a single sample
    data = load_dataset("nmnist", small_nmnist)  # no longer "need at least 2"
    x, y = data.split("all").tensors
    assert x.shape == (1, 2, 34, 34) and y.tolist() == [5] and x.max() == 1
    with pytest.raises(DataError, match="1 samples are too few for a train / validation split"
                       ".*--split all") as info:
        data.split("val")
    _one_line(info)


def test_nmnist_without_labels_or_download(tmp_path, monkeypatch):
    monkeypatch.delenv("TTFS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="holds no NMNIST/ folder of .bin files and no "
                       "labels.tsv .*pass --download") as info:
        load_dataset("nmnist", tmp_path)
    _one_line(info)
    with pytest.raises(DataError, match="does not exist; pass --download"):
        load_dataset("nmnist", tmp_path / "nope")
    with pytest.raises(DataError, match="'dvsgesture' needs --data-dir DIR"):
        load_dataset("dvsgesture")


@pytest.mark.parametrize("kwargs, problem", [
    ({"time_bins": 0}, "time_bins must be an integer >= 1"),
    ({"time_bins": 1.5}, "time_bins must be an integer >= 1"),
    ({"denoise_us": -5}, "denoise_us must be a positive integer"),
    ({"normalise": "mean"}, "unknown event normalisation 'mean'; choose one of: max, clip"),
    ({"clip": 0}, "event clip must be a finite number > 0"),
])
def test_bad_event_options(kwargs, problem):
    with pytest.raises(ConfigError, match=problem):
        EventOptions(**kwargs)


def test_event_options_round_trip_as_dict():
    opts = EventOptions(time_bins=2, denoise_us=10000, merge_polarity=True)
    assert EventOptions.coerce(opts.to_dict()) == opts
    assert EventOptions.coerce(None) == EventOptions()
    with pytest.raises(ConfigError, match="unknown event option.* bins"):
        EventOptions.coerce({"bins": 2})


# --- tonic datasets through fakes -------------------------------------------------------------

def fake_tonic(sensor_size, num_classes, n_train=6, n_test=3, offline=False, order="xytp"):
    """A stand-in for a tonic dataset class recording its keyword arguments."""
    width, height, _ = sensor_size
    dtype = np.dtype([(f, np.int64) for f in order])

    class Fake:
        calls = []

        def __init__(self, save_to, **kwargs):
            Fake.calls.append({"save_to": save_to, **kwargs})
            if offline:
                raise urllib.error.URLError("[Errno -2] Name or service not known")
            n = n_train if kwargs.get("train", True) else n_test
            rng = np.random.default_rng(len(Fake.calls))
            self.samples = []
            for i in range(n):
                k = 200
                events = np.zeros(k, dtype=dtype)
                events["x"] = rng.integers(0, width, k)
                events["y"] = rng.integers(0, height, k)
                events["p"] = rng.integers(0, 2, k)
                events["t"] = np.sort(rng.integers(0, 100_000, k))
                self.samples.append((events, i % num_classes))

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, index):
            return self.samples[index]

    Fake.sensor_size = sensor_size
    return Fake


@pytest.mark.parametrize("name, cls_name, classes", [("dvsgesture", "DVSGesture", 11),
                                                     ("nmnist", "NMNIST", 10)])
def test_tonic_download_is_wired(tmp_path, monkeypatch, name, cls_name, classes):
    sensor = (128, 128, 2) if name == "dvsgesture" else SENSOR
    fake = fake_tonic(sensor, classes)
    monkeypatch.setattr(tonic.datasets, cls_name, fake)
    root = tmp_path / "events"  # no labels.tsv: nmnist falls back to tonic's NMNIST
    data = load_dataset(name, root, download=True, events=EventOptions(time_bins=2))
    assert fake.calls == [{"save_to": str(root), "train": True},
                          {"save_to": str(root), "train": False}]
    assert data.in_shape == (4, sensor[1], sensor[0]) and data.num_classes == classes
    assert len(data.train) == 6 and len(data.val) == 3
    x, y = data.train.tensors
    assert x.shape == (6, 4, sensor[1], sensor[0]) and x.min() == 0 and x.max() == 1
    assert y.tolist() == [i % classes for i in range(6)]
    one_training_step(data, batch_size=4)


def test_tonic_dataset_already_on_disk_needs_no_download(tmp_path, monkeypatch):
    fake = fake_tonic((128, 128, 2), 11)
    monkeypatch.setattr(tonic.datasets, "DVSGesture", fake)
    with pytest.raises(DataError, match="holds no DVSGesture/ folder of .npy files; pass "
                       "--download to fetch 'dvsgesture' there") as info:
        load_dataset("dvsgesture", tmp_path)
    _one_line(info)
    assert fake.calls == []  # nothing constructed, so nothing downloaded
    (tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_fluorescent").mkdir(parents=True)
    (tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_fluorescent" / "0.npy").touch()
    data = load_dataset("dvsgesture", tmp_path, events=EventOptions(merge_polarity=True))
    assert data.in_shape == (1, 128, 128) and len(fake.calls) == 2


def test_cifar10dvs_holds_out_every_tenth_sample(tmp_path, monkeypatch):
    fake = fake_tonic((128, 128, 2), 10, n_train=30, order="txyp")
    monkeypatch.setattr(tonic.datasets, "CIFAR10DVS", fake)
    data = load_dataset("cifar10dvs", tmp_path, download=True)
    assert fake.calls == [{"save_to": str(tmp_path)}]  # one set, no train flag
    assert len(data.train) == 27 and len(data.val) == 3
    assert data.val.tensors[1].tolist() == [9, 9, 9]  # samples 9, 19, 29
    assert data.in_shape == (2, 128, 128)
    one_training_step(data, batch_size=4)


def test_failed_tonic_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(tonic.datasets, "DVSGesture", fake_tonic((128, 128, 2), 11,
                                                                 offline=True))
    with pytest.raises(DataError, match="could not download 'dvsgesture' into .*check the "
                       "network") as info:
        load_dataset("dvsgesture", tmp_path, download=True)
    _one_line(info)


def test_events_outside_the_sensor():
    events = np.zeros(3, dtype=tonic.datasets.NMNIST.dtype)
    events["x"] = [1, 40, 2]
    events["t"] = [0, 10, 20]
    with pytest.raises(DataError, match="events do not fit the 34×34 sensor"):
        events_to_frames(events, SENSOR, EventOptions())


def test_empty_recording_gives_zero_frames():
    events = np.zeros(0, dtype=tonic.datasets.NMNIST.dtype)
    frames = events_to_frames(events, SENSOR, EventOptions(time_bins=2, denoise_us=1000))
    assert frames.shape == (4, 34, 34) and frames.sum() == 0

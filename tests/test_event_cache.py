"""The on-disk cache of converted event frames (tonic's DiskCachedDataset): its key, its
location, damaged files, DataLoader workers, and that a cached load is bit-identical to an
uncached one. Caches go to tmp_path only, never to ~/.cache or ../shared."""

import argparse
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import tonic
import torch
from _data_helpers import _one_line  # noqa: E402

import ttfs_plugin.data.events as events_module
from ttfs_plugin.data import (
    DATASETS,
    EventOptions,
    add_data_arguments,
    dataset_options,
    load_dataset,
)
from ttfs_plugin.data.base import DatasetEntry
from ttfs_plugin.data.events import (
    CACHE_ENV,
    MANIFEST,
    SNAPSHOT,
    TonicSource,
    load_nmnist_folder,
    resolve_cache_dir,
    user_cache_dir,
)
from ttfs_plugin.errors import ConfigError, DataError

N = 12  # samples in the small folder: 11 train / 1 validation


@pytest.fixture(autouse=True)
def _no_default_cache(tmp_path, monkeypatch):
    """A test that forgets cache_dir= writes below tmp_path, not into the user's cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def folder(tmp_path, shared_data):
    """Samples 1-12 of nmnist1k copied to tmp_path (the shared folder is read-only)."""
    source = shared_data / "nmnist1k"
    rows = dict(line.split("\t") for line in (source / "labels.tsv").read_text().splitlines()[1:]
                if line)
    target = tmp_path / "nmnist"
    target.mkdir()
    lines = ["sample\tlabel"]
    for i in range(1, N + 1):
        shutil.copyfile(source / f"{i}.bin", target / f"{i}.bin")
        lines.append(f"{i}.bin\t{rows[f'{i}.bin']}")
    (target / "labels.tsv").write_text("\n".join(lines) + "\n")
    return target


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def frames(data):
    return data.split("all").tensors


def assert_identical(a, b):
    (xa, ya), (xb, yb) = frames(a), frames(b)
    assert xa.dtype == xb.dtype == torch.float32 and ya.dtype == yb.dtype == torch.long
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def cache_dirs(cache, name="nmnist"):
    where = cache / name
    return sorted(p.name for p in where.iterdir()) if where.is_dir() else []


def no_conversion(monkeypatch):
    """From here on, reading any event file fails: what still loads came from the cache."""
    def refuse(*args, **kwargs):
        raise AssertionError("an event file was read: the cache was not used")

    monkeypatch.setattr(events_module, "read_nmnist_events", refuse)


# --- a hit is a hit, and bit-identical ---------------------------------------------------------

def test_second_load_reads_the_cache_and_equals_an_uncached_load(folder, cache, capsys,
                                                                  monkeypatch):
    opts = EventOptions(time_bins=2, denoise_us=5000)
    cold = load_dataset("nmnist", folder, events=opts, cache_dir=cache)
    err = capsys.readouterr().err
    [name] = cache_dirs(cache)
    path = cache / "nmnist" / name
    assert err.count("\n") == 1  # one line
    assert f"converting {N} nmnist samples to frames and caching them in {path}" in err
    assert "later runs with the same options read them from there" in err
    assert sorted(os.listdir(path)) == sorted([MANIFEST, SNAPSHOT]
                                              + [f"{i}_0.hdf5" for i in range(N)])
    uncached = load_dataset("nmnist", folder, events=opts, cache_dir="none")
    assert_identical(cold, uncached)
    no_conversion(monkeypatch)
    warm = load_dataset("nmnist", folder, events=opts, cache_dir=cache)
    assert capsys.readouterr().err == ""  # a hit says nothing
    assert_identical(warm, uncached)
    assert torch.equal(warm.train.tensors[0], uncached.train.tensors[0])
    assert torch.equal(warm.val.tensors[1], uncached.val.tensors[1])
    assert cache_dirs(cache) == [name]


def test_loading_leaves_the_global_generators_alone(folder, cache):
    torch.manual_seed(3)
    np.random.seed(3)
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    for _ in range(2):  # cold, then warm
        load_dataset("nmnist", folder, cache_dir=cache)
        assert torch.equal(torch.random.get_rng_state(), torch_state)
        assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_workers_convert_the_same_frames(folder, cache, capsys):
    opts = EventOptions(time_bins=3, merge_polarity=True)
    parallel = load_dataset("nmnist", folder, events=opts, cache_dir=cache, event_workers=2)
    assert "in 2 worker processes" in capsys.readouterr().err
    assert_identical(parallel, load_dataset("nmnist", folder, events=opts, cache_dir="none",
                                            event_workers=0))
    assert_identical(parallel, load_dataset("nmnist", folder, events=opts, cache_dir="none",
                                            event_workers=2))


def test_automatic_workers(monkeypatch):
    workers = events_module._workers_for
    monkeypatch.setattr(events_module.os, "sched_getaffinity", lambda pid: set(range(16)),
                        raising=False)
    monkeypatch.setattr(events_module.multiprocessing, "get_start_method",
                        lambda allow_none=False: "fork")
    assert workers(1000, None) == 8 and workers(63, None) == 0  # at most 8; not for a few
    assert workers(10, 3) == 3 and workers(1000, 0) == 0  # as asked
    monkeypatch.setattr(events_module.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert workers(1000, None) == 0  # one CPU: in the main process
    monkeypatch.setattr(events_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert workers(1000, None) == 2
    monkeypatch.setattr(events_module.multiprocessing, "get_start_method",
                        lambda allow_none=False: "spawn")
    assert workers(1000, None) == 0  # spawn would re-run a script without a __main__ guard


# --- the key: every option that changes the frames ---------------------------------------------

def _relabel(folder):
    path = folder / "labels.tsv"
    lines = path.read_text().splitlines()
    name, label = lines[3].split("\t")
    lines[3] = f"{name}\t{(int(label) + 1) % 10}"
    path.write_text("\n".join(lines) + "\n")


def _drop_row(folder):
    path = folder / "labels.tsv"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")


def _replace_file(folder):
    shutil.copyfile(folder / "2.bin", folder / "1.bin")  # same name, other events


@pytest.mark.parametrize("change", [
    {"time_bins": 2}, {"denoise_us": 3000}, {"merge_polarity": True}, {"normalise": "clip"},
    {"normalise": "clip", "clip": 3.0}, "labels", "rows", "file", "version", "sensor",
])
def test_a_changed_option_gets_its_own_cache(folder, cache, monkeypatch, capsys, change):
    base = EventOptions(normalise="clip") if change == {"normalise": "clip", "clip": 3.0} \
        else EventOptions()
    load_dataset("nmnist", folder, events=base, cache_dir=cache)
    before = cache_dirs(cache)
    assert len(before) == 1
    capsys.readouterr()
    opts, entry = base, DATASETS["nmnist"]
    if isinstance(change, dict):
        opts = EventOptions(**{**base.to_dict(), **change})
    elif change == "labels":
        _relabel(folder)
    elif change == "rows":
        _drop_row(folder)
    elif change == "file":
        _replace_file(folder)
    elif change == "version":
        monkeypatch.setattr(events_module, "CACHE_VERSION", events_module.CACHE_VERSION + 1)
    else:  # the sensor: a 40×40 entry reading the same (34×34) files
        entry = DatasetEntry("nmnist", load_nmnist_folder, "wider", num_classes=10,
                             event_options=True, source=TonicSource("NMNIST", ".bin",
                                                                    (40, 40, 2)))
    changed = load_nmnist_folder(entry, folder, events=opts, cache_dir=cache)
    assert "converting" in capsys.readouterr().err  # not a hit
    after = cache_dirs(cache)
    assert len(after) == 2 and set(before) < set(after)
    fresh = load_nmnist_folder(entry, folder, events=opts, cache_dir="none")
    assert_identical(changed, fresh)  # never the stale frames


def test_the_key_names_every_event_option():
    assert set(EventOptions().to_dict()) == {"time_bins", "denoise_us", "merge_polarity",
                                             "normalise", "clip"}  # all hashed (to_dict)


# --- damaged caches ----------------------------------------------------------------------------

def _damage(path, how, other):
    if how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "garbage":
        path.write_bytes(b"not an hdf5 file" * 10)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "other sample":  # a valid file, but sample 5's frames and label
        shutil.copyfile(other, path)
    elif how == "no groups":
        with h5py.File(path, "w"):
            pass
    elif how == "flipped":  # one value changed (same shape, dtype and label)
        with h5py.File(path, "r+") as f:
            data = f["data/0"][()]
            data.flat[np.argmax(data)] = 0.5
            del f["data/0"]
            f.create_dataset("data/0", data=data)
    elif how == "wrong shape":
        with h5py.File(path, "r+") as f:
            data = f["data/0"][()]
            del f["data/0"]
            f.create_dataset("data/0", data=data[:1])


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "other sample", "no groups",
                                 "flipped", "wrong shape"])
def test_a_damaged_cache_file_is_converted_again(folder, cache, capsys, how):
    opts = EventOptions(time_bins=2)
    reference = load_dataset("nmnist", folder, events=opts, cache_dir="none")
    load_dataset("nmnist", folder, events=opts, cache_dir=cache)
    [name] = cache_dirs(cache)
    path = cache / "nmnist" / name
    (path / SNAPSHOT).unlink()  # the per-sample files are read (and repaired) without it
    _damage(path / "3_0.hdf5", how, path / "5_0.hdf5")
    capsys.readouterr()
    repaired = load_dataset("nmnist", folder, events=opts, cache_dir=cache)
    assert_identical(repaired, reference)
    assert capsys.readouterr().err == ""  # the rest was a hit
    assert_identical(load_dataset("nmnist", folder, events=opts, cache_dir=cache), reference)


def refuse_sample_files(monkeypatch):
    """From here on, reading a per-sample cache file fails: what loads came from the snapshot."""
    def refuse(self, index):
        raise AssertionError("a per-sample cache file was read: the snapshot was not used")

    monkeypatch.setattr(tonic.DiskCachedDataset, "__getitem__", refuse)


def test_a_hit_reads_the_snapshot_alone(folder, cache, monkeypatch):
    opts = EventOptions(time_bins=2)
    reference = load_dataset("nmnist", folder, events=opts, cache_dir="none")
    load_dataset("nmnist", folder, events=opts, cache_dir=cache)
    no_conversion(monkeypatch)
    refuse_sample_files(monkeypatch)
    assert_identical(load_dataset("nmnist", folder, events=opts, cache_dir=cache), reference)


def _damage_snapshot(path, how, other):
    if how == "missing":  # a cache written before snapshots existed
        path.unlink()
    elif how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a torch file" * 10)
    elif how in ("flipped", "other cache"):
        record = torch.load(other if how == "other cache" else path, weights_only=True)
        if how == "flipped":  # one value changed, the CRC kept
            record["images"].view(-1)[int(record["images"].argmax())] = 0.5
        torch.save(record, path)


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage", "flipped", "other cache"])
def test_a_missing_or_damaged_snapshot_falls_back_to_the_sample_files(folder, cache, capsys,
                                                                       monkeypatch, how):
    opts = EventOptions(time_bins=2)
    reference = load_dataset("nmnist", folder, events=opts, cache_dir="none")
    load_dataset("nmnist", folder, events=opts, cache_dir=cache)
    load_dataset("nmnist", folder, events=EventOptions(time_bins=2, merge_polarity=True),
                 cache_dir=cache)  # another cache, with another key and shape
    names = cache_dirs(cache)
    [name] = [n for n in names
              if json.loads((cache / "nmnist" / n / MANIFEST).read_text())["events"]
              == opts.to_dict()]
    [other] = [n for n in names if n != name]
    path = cache / "nmnist" / name / SNAPSHOT
    _damage_snapshot(path, how, cache / "nmnist" / other / SNAPSHOT)
    capsys.readouterr()
    assert_identical(load_dataset("nmnist", folder, events=opts, cache_dir=cache), reference)
    assert capsys.readouterr().err == ""  # a hit: nothing converted
    refuse_sample_files(monkeypatch)  # the snapshot was written again: the next load reads it
    assert_identical(load_dataset("nmnist", folder, events=opts, cache_dir=cache), reference)


def test_a_damaged_or_foreign_manifest_rebuilds_the_cache(folder, cache, capsys):
    reference = load_dataset("nmnist", folder, cache_dir="none")
    load_dataset("nmnist", folder, cache_dir=cache)
    [name] = cache_dirs(cache)
    manifest = cache / "nmnist" / name / MANIFEST
    record = json.loads(manifest.read_text())
    assert record["events"] == EventOptions().to_dict() and record["samples"] == N
    assert record["version"] == events_module.CACHE_VERSION
    for text in ("{not json", json.dumps({**record, "events": {"time_bins": 9}})):
        manifest.write_text(text)
        capsys.readouterr()
        assert_identical(load_dataset("nmnist", folder, cache_dir=cache), reference)
        assert "converting" in capsys.readouterr().err
        assert json.loads(manifest.read_text()) == record
    assert cache_dirs(cache) == [name]


def test_a_cache_file_that_cannot_be_repaired_is_a_clear_error(folder, cache, monkeypatch):
    load_dataset("nmnist", folder, cache_dir=cache)
    [name] = cache_dirs(cache)
    (cache / "nmnist" / name / SNAPSHOT).unlink()
    (cache / "nmnist" / name / "4_0.hdf5").write_bytes(b"x")

    def broken_save(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(tonic.cached_dataset, "save_to_disk_cache", broken_save)
    with pytest.raises(DataError, match=r"event cache file .*4_0.hdf5 cannot be written or read "
                       r"back .*delete .*, or pass --cache-dir none") as info:
        load_dataset("nmnist", folder, cache_dir=cache)
    _one_line(info)


def test_a_failed_first_pass_leaves_no_cache(folder, cache, capsys):
    (folder / "7.bin").write_bytes(b"\x01\x02\x03\x04\x05\x06")
    for workers in (0, 2):
        with pytest.raises(DataError, match=r"7.bin: .*6 bytes is not a multiple of 5") as info:
            load_dataset("nmnist", folder, cache_dir=cache, event_workers=workers)
        _one_line(info)
        assert cache_dirs(cache) == []  # neither a cache nor a partial folder
    shutil.copyfile(folder / "8.bin", folder / "7.bin")
    capsys.readouterr()
    load_dataset("nmnist", folder, cache_dir=cache)
    assert f"converting {N} nmnist samples" in capsys.readouterr().err
    assert len(cache_dirs(cache)) == 1


@pytest.mark.parametrize("error", [OSError("disk read failed"), KeyError("x"),
                                   ValueError("odd events")])
def test_an_error_reading_the_source_is_not_taken_for_a_damaged_cache(tmp_path, cache,
                                                                      monkeypatch, error):
    class Broken:
        sensor_size = (16, 16, 2)

        def __init__(self, save_to, train):
            pass

        def __len__(self):
            return 3

        def __getitem__(self, index):
            raise error

    monkeypatch.setattr(tonic.datasets, "DVSGesture", Broken)
    with pytest.raises(type(error), match=str(error).strip("'")):
        load_dataset("dvsgesture", tmp_path / "dvs", download=True, cache_dir=cache)
    assert cache_dirs(cache, "dvsgesture") == []


# --- where the cache goes, and turning it off --------------------------------------------------

def test_where_the_cache_goes(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV)
    assert user_cache_dir() == tmp_path / "xdg" / "ttfs-plugin" / "events"
    assert resolve_cache_dir() == user_cache_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == user_cache_dir().home() / ".cache" / "ttfs-plugin" / "events"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "flag") == tmp_path / "flag"  # the flag wins
    assert resolve_cache_dir("~/x") == resolve_cache_dir("~/x").home() / "x"
    for off in ("none", "None", "NONE"):
        assert resolve_cache_dir(off) is None
        monkeypatch.setenv(CACHE_ENV, off)
        assert resolve_cache_dir() is None
        assert resolve_cache_dir(tmp_path / "flag") == tmp_path / "flag"
    for bad in (False, 3, " "):
        with pytest.raises(ConfigError, match="cache_dir .* must be a folder or 'none'") as info:
            resolve_cache_dir(bad)
        _one_line(info)


def test_the_environment_variable_places_or_disables_the_cache(folder, tmp_path, monkeypatch):
    load_dataset("nmnist", folder)  # cache_dir=None: $TTFS_CACHE_DIR (the autouse fixture)
    assert len(cache_dirs(tmp_path / "env-cache")) == 1
    monkeypatch.setenv(CACHE_ENV, "none")
    before = sorted(p for p in tmp_path.rglob("*"))
    load_dataset("nmnist", folder, events=EventOptions(time_bins=2))
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not (tmp_path / "xdg").exists()
    assert not any(p.name.startswith(".") for p in folder.iterdir())  # nor in the data folder


def test_an_unwritable_cache_dir_warns_and_loads(folder, tmp_path, monkeypatch, capsys):
    """The cache only saves time (and a checkpoint may record a --cache-dir of another
    machine): a place that cannot be written is one line on stderr, not a failed load."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    reference = load_dataset("nmnist", folder, cache_dir="none")
    for given in ({"cache_dir": blocker / "sub"}, {}):
        monkeypatch.setenv(CACHE_ENV, str(blocker / "env"))
        capsys.readouterr()
        assert_identical(load_dataset("nmnist", folder, **given), reference)
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "cannot write the event cache in " in err and "a-file" in err
        assert f"converting without it — pass --cache-dir (or set {CACHE_ENV}) with a " \
               "writable folder, or none" in err
    assert blocker.read_text() == "not a folder"


def test_cache_options_are_for_event_datasets_only(tmp_path):
    with pytest.raises(ConfigError, match=r"event cache options \(--cache-dir\) are for nmnist, "
                       r"dvsgesture, cifar10dvs, not 'digits'; drop them") as info:
        load_dataset("digits", cache_dir=tmp_path)
    _one_line(info)
    with pytest.raises(ConfigError, match="--event-workers"):
        load_dataset("digits", event_workers=2)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="event_workers must be an integer >= 0") as info:
            load_dataset("nmnist", tmp_path, event_workers=bad)
        _one_line(info)


def test_cli_flags_reach_the_loader(folder, cache):
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    assert "cache_dir" not in dataset_options(parser.parse_args([]))  # defaults: not recorded
    options = dataset_options(parser.parse_args(["--time-bins", "2", "--cache-dir", str(cache),
                                                 "--event-workers", "0"]))
    assert options["cache_dir"] == str(cache) and options["event_workers"] == 0
    assert json.loads(json.dumps(options)) == options
    data = load_dataset("nmnist", folder, **options)
    assert data.in_shape == (4, 34, 34) and len(cache_dirs(cache)) == 1
    off = dataset_options(parser.parse_args(["--cache-dir", "none"]))
    assert off["cache_dir"] == "none"
    with pytest.raises(ConfigError, match="event_workers must be an integer >= 0"):
        dataset_options(parser.parse_args(["--event-workers", "-2"]))


# --- tonic's dataset classes -------------------------------------------------------------------

def test_tonic_sets_are_cached_per_part(tmp_path, cache, monkeypatch, capsys):
    reads = []

    class Fake:
        sensor_size = (16, 16, 2)

        def __init__(self, save_to, train):
            rng = np.random.default_rng(int(train))
            self.samples = []
            for i in range(5 if train else 3):
                events = np.zeros(300, dtype=[(f, np.int64) for f in "xytp"])
                events["x"], events["y"] = rng.integers(0, 16, (2, 300))
                events["p"] = rng.integers(0, 2, 300)
                events["t"] = np.sort(rng.integers(0, 50_000, 300))
                self.samples.append((events, i % 11))

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, index):
            reads.append(index)
            return self.samples[index]

    monkeypatch.setattr(tonic.datasets, "DVSGesture", Fake)
    opts = EventOptions(time_bins=2)
    cold = load_dataset("dvsgesture", tmp_path / "dvs", download=True, events=opts,
                        cache_dir=cache)
    assert "converting 5 dvsgesture samples" in capsys.readouterr().err
    assert [p.split("-")[0] for p in cache_dirs(cache, "dvsgesture")] == ["test", "train"]
    assert len(reads) == 8
    warm = load_dataset("dvsgesture", tmp_path / "dvs", download=True, events=opts,
                        cache_dir=cache)
    assert len(reads) == 8  # nothing read again
    off = load_dataset("dvsgesture", tmp_path / "dvs", download=True, events=opts,
                       cache_dir="none")
    for a, b in ((cold, warm), (cold, off)):
        for split in ("train", "val"):
            for ta, tb in zip(getattr(a, split).tensors, getattr(b, split).tensors):
                assert torch.equal(ta, tb)

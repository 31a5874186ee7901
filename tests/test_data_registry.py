"""The dataset table: one frozen entry per dataset, and everything (option checks, default
folders, default model, help, augmentation) read from it — so a new entry is all a new dataset
needs."""

import argparse
import dataclasses
import re
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import ttfs_plugin.data as data_module
from ttfs_plugin.data import (
    DATASETS,
    ENTRIES,
    DatasetEntry,
    EventOptions,
    SplitData,
    add_data_arguments,
    dataset_entry,
    default_data_dir,
    default_model,
    load_dataset,
    torchvision_entry,
)
from ttfs_plugin.data import augment as augment_module
from ttfs_plugin.data.augment import SHIFT
from ttfs_plugin.errors import ConfigError, DataError
from ttfs_plugin.models import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_one_frozen_entry_per_dataset():
    assert list(DATASETS) == [entry.name for entry in ENTRIES]
    assert all(isinstance(entry, DatasetEntry) for entry in DATASETS.values())
    assert isinstance(DATASETS, MappingProxyType)
    with pytest.raises(TypeError):
        DATASETS["x"] = ENTRIES[0]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["digits"].downloadable = True  # type: ignore[misc]


def test_capabilities_come_from_the_entries():
    """What the old name tables said, now as entry fields."""
    assert [n for n, e in DATASETS.items() if e.event_options] == \
        ["nmnist", "dvsgesture", "cifar10dvs"]
    assert {n for n, e in DATASETS.items() if e.downloadable} == \
        {"mnist", "fashion-mnist", "cifar10", "cifar100", "nmnist", "dvsgesture", "cifar10dvs"}
    assert {n: e.augmentation for n, e in DATASETS.items() if e.augmentable} == {
        "mnist-idx": (2, False), "mnist": (2, False), "fashion-mnist": (2, False),
        "cifar10": (4, True), "cifar100": (4, True), "image-folder": (4, True)}
    assert {n: e.default_subdir for n, e in DATASETS.items() if e.default_subdir} == {
        "mnist-idx": "mnist9k", "image-folder": "cifar10_200", "nmnist": "nmnist1k"}
    assert DATASETS["digits"].options() == ()
    assert DATASETS["mnist-idx"].options() == ("augment",)
    assert DATASETS["nmnist"].options() == ("download", "events")
    assert DATASETS["cifar10"].options() == ("download", "augment")


def test_default_model_per_dataset():
    assert default_model("digits") == "mlp"
    assert all(default_model(name) == "cnn" for name in DATASETS if name != "digits")
    assert all(entry.default_model in MODELS for entry in ENTRIES)
    with pytest.raises(ConfigError, match="unknown dataset 'cifar7'; choose one of: cifar10"):
        default_model("cifar7")
    assert dataset_entry("cifar100").num_classes == 100


def test_class_counts_and_shapes_agree_with_the_loaders():
    digits = load_dataset("digits")
    entry = DATASETS["digits"]
    assert (digits.num_classes, digits.in_shape) == (entry.num_classes, entry.in_shape)
    assert all(e.num_classes for e in ENTRIES if e.name != "image-folder")


def test_augmentations_are_derived_from_the_table():
    assert augment_module.AUGMENTATIONS == {n: e.augmentation for n, e in DATASETS.items()
                                            if e.augmentation is not None}
    assert augment_module.AUGMENTABLE == tuple(augment_module.AUGMENTATIONS)
    assert augment_module.augmentation_for("cifar10").flip is True
    with pytest.raises(ConfigError, match="dataset 'digits' has no augmentation"):
        augment_module.augmentation_for("digits")
    with pytest.raises(AttributeError):
        augment_module.NOT_THERE  # noqa: B018


@pytest.mark.parametrize("fields, problem", [
    ({"name": "Bad Name"}, "must be a lower-case word"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"num_classes": True}, "num_classes must be an integer >= 2"),
    ({"augmentation": (-1, False)}, "augmentation must be"),
    ({"needs_data_dir": False, "downloadable": True}, "needs no data_dir"),
])
def test_a_bad_entry_is_refused(fields, problem):
    kwargs = {"name": "new", "loader": lambda entry, data_dir: None, "summary": "x", **fields}
    with pytest.raises(ConfigError, match=problem):
        DatasetEntry(**kwargs)


def test_a_name_twice_is_refused():
    with pytest.raises(ConfigError, match="'digits' is in the table twice"):
        data_module._table((ENTRIES[0], ENTRIES[0]))


def test_docs_list_every_dataset():
    page = (ROOT / "docs" / "datasets.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", page, re.MULTILINE))
    assert set(DATASETS) <= listed


# --- a new dataset is one entry ---------------------------------------------------------------

class FakeKMNIST:
    """A torchvision-style class (root, train, download, transform)."""

    calls: list = []

    def __init__(self, root, train=True, download=False, transform=None):
        FakeKMNIST.calls.append({"root": root, "train": train, "download": download})
        n = 10 if train else 4
        self.data = np.random.default_rng(int(train)).integers(0, 256, (n, 28, 28),
                                                                dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


@pytest.fixture
def with_kmnist(monkeypatch, tmp_path):
    FakeKMNIST.calls = []
    monkeypatch.setattr(torchvision.datasets, "KMNIST", FakeKMNIST, raising=False)
    entry = torchvision_entry("kmnist", "KMNIST", "KMNIST", (1, 28, 28), 10, SHIFT)
    monkeypatch.setattr(data_module, "DATASETS", data_module._table((*ENTRIES, entry)))
    monkeypatch.setenv("TTFS_DATA_DIR", str(tmp_path))
    return entry


def test_a_torchvision_dataset_is_one_entry(with_kmnist, tmp_path):
    data = load_dataset("kmnist", download=True, augment=True)
    assert isinstance(data, SplitData) and data.name == "kmnist"
    assert (data.in_shape, data.num_classes) == ((1, 28, 28), 10)
    assert len(data.train) == 10 and len(data.val) == 4
    assert FakeKMNIST.calls[0] == {"root": str(tmp_path), "train": True, "download": True}
    x, _ = data.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert data.train.transform.transforms[1].padding == 2
    assert default_data_dir("kmnist") == tmp_path and default_model("kmnist") == "cnn"
    assert augment_module.AUGMENTATIONS["kmnist"] == (2, False)
    with pytest.raises(ConfigError, match="event options .* not 'kmnist'"):
        load_dataset("kmnist", events=EventOptions(time_bins=2))
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    assert "kmnist" in parser.format_help()


def test_option_errors_list_the_table(with_kmnist):
    with pytest.raises(ConfigError, match="only cifar10, cifar100, cifar10dvs, dvsgesture, "
                       "fashion-mnist, kmnist, mnist, nmnist can"):
        load_dataset("digits", download=True)
    with pytest.raises(ConfigError, match="fashion-mnist, cifar10, cifar100, image-folder, "
                       "kmnist, not 'digits'"):
        load_dataset("digits", augment=True)


def test_public_loader_functions_still_work(shared_data, monkeypatch):
    assert data_module.load_mnist_idx(shared_data / "mnist9k").num_classes == 10
    assert len(data_module.load_image_folder(shared_data / "cifar10_200").val) == 20
    assert data_module.load_mnist_idx.__name__ == "load_mnist_idx"
    monkeypatch.delenv("TTFS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="'cifar10' needs --data-dir DIR"):
        data_module.load_cifar10()


# --- SplitData without a split ----------------------------------------------------------------

def test_unsplit_data():
    every = torch.utils.data.TensorDataset(torch.zeros(3, 1, 2, 2), torch.zeros(3).long())
    data = SplitData.unsplit("x", every, (1, 2, 2), 10, "too few; use --split all")
    assert data.split("all") is every and not data.has_split
    assert "all=3, no train/val split" in repr(data)
    with pytest.raises(DataError, match="too few; use --split all"):
        data.split("train")
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        data.split("test")
    normal = load_dataset("digits")
    assert normal.has_split and "train=1437, val=360" in repr(normal)

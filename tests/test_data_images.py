"""Image datasets: the CSV-labelled image folder on real CIFAR-10 PNGs, and the torchvision
datasets through fakes (nothing here touches the network)."""

import argparse
import csv
import json
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from _data_helpers import _one_line, one_training_step  # noqa: E402
from PIL import Image
from torch.utils.data import TensorDataset

from ttfs_plugin.data import (
    DATASETS,
    EventOptions,
    add_data_arguments,
    dataset_options,
    default_data_dir,
    load_dataset,
)
from ttfs_plugin.data.augment import AugmentedTensorDataset
from ttfs_plugin.data.vision import CIFAR10_CLASSES
from ttfs_plugin.errors import ConfigError, DataError

# --- image-folder on ../shared/data/cifar10_200 -----------------------------------------------

@pytest.fixture(scope="module")
def cifar_dir(shared_data):
    return shared_data / "cifar10_200"


@pytest.fixture(scope="module")
def cifar_folder(cifar_dir):
    return load_dataset("image-folder", cifar_dir)


def _csv_rows(path):
    with open(path, newline="") as fh:
        return [row for row in csv.reader(fh) if row]


def test_image_folder_on_the_real_cifar_pngs(cifar_folder, cifar_dir):
    data = cifar_folder
    assert data.name == "image-folder"
    assert data.in_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.train) == 180 and len(data.val) == 20  # last 10 % held out
    x, y = data.split("all").tensors
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    rows = _csv_rows(cifar_dir / "labels.csv")
    assert len(rows) == 200 and rows[0] == ["1.png", "frog"]  # no header row
    expected = {int(name.split(".")[0]): CIFAR10_CLASSES.index(c) for name, c in rows}
    assert y.tolist() == [expected[i] for i in range(1, 201)]
    assert data.val.tensors[1].tolist() == [expected[i] for i in range(181, 201)]


def test_image_folder_pixels_equal_the_png(cifar_folder, cifar_dir):
    png = np.asarray(Image.open(cifar_dir / "train" / "7.png").convert("RGB"))
    tensor = torch.from_numpy(png.copy()).permute(2, 0, 1).float() / 255.0
    assert torch.equal(cifar_folder.train.tensors[0][6], tensor)


def test_image_folder_trains_one_step(cifar_folder):
    one_training_step(cifar_folder)


def test_image_folder_augment_only_touches_training(cifar_dir, cifar_folder):
    data = load_dataset("image-folder", cifar_dir, augment=True)
    assert isinstance(data.train, AugmentedTensorDataset) and isinstance(data.val, TensorDataset)
    assert torch.equal(data.val.tensors[0], cifar_folder.val.tensors[0])
    original = cifar_folder.train.tensors[0][0]
    views = [data.train[0][0] for _ in range(10)]
    assert all(v.shape == (3, 32, 32) and 0 <= v.min() and v.max() <= 1 for v in views)
    assert any(not torch.equal(v, original) for v in views)
    assert data.train[0][1] == cifar_folder.train.tensors[1][0]
    one_training_step(data)


def test_image_folder_default_dir_from_ttfs_data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("TTFS_DATA_DIR", str(shared_data))
    assert default_data_dir("image-folder") == shared_data / "cifar10_200"
    assert len(load_dataset("image-folder").val) == 20


# --- image-folder edge cases, built in tmp_path from a few real PNGs ---------------------------

def _make_folder(tmp_path, cifar_dir, n=6, *, header=None, names=None, sub="train",
                 label_file="labels.csv", ids_only=False):
    rows = _csv_rows(cifar_dir / "labels.csv")[:n]
    image_dir = tmp_path / sub if sub else tmp_path
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = [header] if header else []
    for i, (name, cls) in enumerate(rows):
        Image.open(cifar_dir / "train" / name).save(image_dir / name)
        label = names[i % len(names)] if names else cls
        lines.append(f"{name.split('.')[0] if ids_only else name},{label}")
    (tmp_path / label_file).write_text("\n".join(lines) + "\n")
    return tmp_path, rows


def test_header_row_and_kaggle_ids(tmp_path, cifar_dir):
    root, rows = _make_folder(tmp_path, cifar_dir, header="id,label", ids_only=True,
                              label_file="trainLabels.csv")
    data = load_dataset("image-folder", root)
    assert len(data.train) == 5 and len(data.val) == 1
    labels = data.split("all").tensors[1].tolist()
    assert labels == [CIFAR10_CLASSES.index(c) for _, c in rows]


def test_images_next_to_labels_and_own_class_names(tmp_path, cifar_dir):
    root, _ = _make_folder(tmp_path, cifar_dir, n=4, sub=None, names=["zebra", "cow", "ant"])
    data = load_dataset("image-folder", root)
    assert data.num_classes == 3  # sorted: ant, cow, zebra
    assert data.split("all").tensors[1].tolist() == [2, 1, 0, 2]


def test_numeric_labels_are_class_indices_not_re_indexed(tmp_path, cifar_dir):
    """Labels 3, 5, 9 stay 3, 5, 9 (sorting the names would make them 0, 1, 2)."""
    root, _ = _make_folder(tmp_path, cifar_dir, n=6, names=["3", "5", "9"])
    data = load_dataset("image-folder", root)
    assert data.num_classes == 10  # CIFAR-10's indices, as for CIFAR-10 names
    assert data.split("all").tensors[1].tolist() == [3, 5, 9, 3, 5, 9]


def test_numeric_labels_match_cifar_names(tmp_path, cifar_dir):
    named, rows = _make_folder(tmp_path / "names", cifar_dir, n=6)
    numbered, _ = _make_folder(tmp_path / "numbers", cifar_dir, n=6,
                               names=[str(CIFAR10_CLASSES.index(c)) for _, c in rows])
    assert torch.equal(load_dataset("image-folder", named).split("all").tensors[1],
                       load_dataset("image-folder", numbered).split("all").tensors[1])


@pytest.mark.parametrize("label", ["10", "12", "-1"])
def test_numeric_label_out_of_range_names_the_line(tmp_path, cifar_dir, label):
    root, rows = _make_folder(tmp_path, cifar_dir, n=4, names=["1", "2", label, "0"],
                              header="file,label")
    with pytest.raises(DataError, match=f"labels.csv line 4: class index {label} of "
                       f"{rows[2][0]} is out of range; numeric labels are CIFAR-10 class indices "
                       r"0..9 \(0 = airplane … 9 = truck\)") as info:
        load_dataset("image-folder", root)
    _one_line(info)


def test_numbers_mixed_with_names_are_an_error(tmp_path, cifar_dir):
    root, _ = _make_folder(tmp_path, cifar_dir, n=4, names=["3", "frog"])
    with pytest.raises(DataError, match="mixes class indices and class names \\(line 1: '3', "
                       "line 2: 'frog'\\)") as info:
        load_dataset("image-folder", root)
    _one_line(info)


def test_grey_images_get_one_channel(tmp_path, cifar_dir):
    root, rows = _make_folder(tmp_path, cifar_dir, n=3)
    for name, _ in rows:
        Image.open(root / "train" / name).convert("L").save(root / "train" / name)
    data = load_dataset("image-folder", root)
    assert data.in_shape == (1, 32, 32)


def test_missing_image(tmp_path, cifar_dir):
    root, rows = _make_folder(tmp_path, cifar_dir)
    (root / "train" / rows[2][0]).unlink()
    with pytest.raises(DataError, match=f"names {rows[2][0]} but .* does not exist") as info:
        load_dataset("image-folder", root)
    _one_line(info)


@pytest.mark.parametrize("bad_line, problem", [
    ("4.png,cat,extra", "line 4: expected 'file,classname'"),
    ("4.png", "line 4: expected 'file,classname'"),
    ("4.png,", "line 4: expected 'file,classname'"),
])
def test_bad_csv(tmp_path, cifar_dir, bad_line, problem):
    root, _ = _make_folder(tmp_path, cifar_dir)
    lines = (root / "labels.csv").read_text().splitlines()
    lines[3] = bad_line
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=problem) as info:
        load_dataset("image-folder", root)
    _one_line(info)


def test_one_image_is_evaluable_but_has_no_split_and_no_labels_file(tmp_path, cifar_dir):
    root, rows = _make_folder(tmp_path, cifar_dir, n=1)
    data = load_dataset("image-folder", root)  # no longer "need at least 2"
    assert not data.has_split
    x, y = data.split("all").tensors
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [CIFAR10_CLASSES.index(rows[0][1])]
    for which in ("train", "val"):
        with pytest.raises(DataError, match="1 images are too few for a train / validation "
                           "split .*--split all") as info:
            data.split(which)
        _one_line(info)
    with pytest.raises(DataError, match="--split all"):
        data.train  # noqa: B018 - the attribute the trainer reads
    (root / "labels.csv").write_text("id,label\n")
    with pytest.raises(DataError, match="lists no images"):
        load_dataset("image-folder", root)
    (root / "labels.csv").unlink()
    with pytest.raises(DataError, match="holds no labels.csv"):
        load_dataset("image-folder", root)


def test_mixed_sizes_name_the_odd_file(tmp_path, cifar_dir):
    root, rows = _make_folder(tmp_path, cifar_dir)
    odd = root / "train" / rows[3][0]
    Image.open(odd).resize((16, 16)).save(odd)
    with pytest.raises(DataError, match=f"image .*{rows[3][0]} is 16×16 with 3 channels but "
                       f"{rows[0][0]} is 32×32 with 3 channels; all images must share one size"):
        load_dataset("image-folder", root)


def test_unreadable_image(tmp_path, cifar_dir):
    root, rows = _make_folder(tmp_path, cifar_dir)
    (root / "train" / rows[1][0]).write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot read image .*{rows[1][0]}") as info:
        load_dataset("image-folder", root)
    _one_line(info)


# --- torchvision datasets through fakes -------------------------------------------------------

def fake_torchvision(shape, num_classes, sizes=(12, 4), missing=False, offline=False):
    """A stand-in for a torchvision dataset class recording its keyword arguments."""
    channels, height, width = shape

    class Fake:
        calls = []

        def __init__(self, root, train=True, download=False, transform=None):
            Fake.calls.append({"root": root, "train": train, "download": download})
            if download and offline:
                raise urllib.error.URLError("[Errno -2] Name or service not known")
            if missing and not download:
                raise RuntimeError("Dataset not found. You can use download=True to download it")
            n = sizes[0] if train else sizes[1]
            rng = np.random.default_rng(int(train))
            pixels = rng.integers(0, 256, (n, height, width, channels), dtype=np.uint8)
            self.data = pixels[..., 0] if channels == 1 else pixels
            self.targets = [i % num_classes for i in range(n)]
            self.transform = transform

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, index):
            image = Image.fromarray(self.data[index])
            return self.transform(image), self.targets[index]

    return Fake


TORCHVISION_CASES = [("mnist", "MNIST", (1, 28, 28), 10),
                     ("fashion-mnist", "FashionMNIST", (1, 28, 28), 10),
                     ("cifar10", "CIFAR10", (3, 32, 32), 10),
                     ("cifar100", "CIFAR100", (3, 32, 32), 100)]


@pytest.mark.parametrize("name, cls_name, shape, classes", TORCHVISION_CASES)
def test_torchvision_download_is_wired(tmp_path, monkeypatch, name, cls_name, shape, classes):
    fake = fake_torchvision(shape, classes)
    monkeypatch.setattr(torchvision.datasets, cls_name, fake)
    root = tmp_path / "new"  # does not exist yet: torchvision creates it when downloading
    data = load_dataset(name, root, download=True)
    assert fake.calls == [{"root": str(root), "train": True, "download": True},
                          {"root": str(root), "train": False, "download": True}]
    assert data.name == name and data.in_shape == shape and data.num_classes == classes
    assert len(data.train) == 12 and len(data.val) == 4
    x, y = data.train[0]
    assert x.shape == shape and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    raw = torch.from_numpy(np.asarray(data.train.data[0], dtype=np.float32) / 255.0)
    assert torch.allclose(x, raw[None] if shape[0] == 1 else raw.permute(2, 0, 1))
    one_training_step(data)


def test_torchvision_without_download_reads_the_root(tmp_path, monkeypatch):
    fake = fake_torchvision((3, 32, 32), 10)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake)
    load_dataset("cifar10", tmp_path)
    assert [c["download"] for c in fake.calls] == [False, False]
    assert all(c["root"] == str(tmp_path) for c in fake.calls)


def test_cifar_augment_on_training_split_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_torchvision((3, 32, 32), 10))
    data = load_dataset("cifar10", tmp_path, augment=True)
    plain = torchvision.transforms.ToTensor()
    assert type(data.val.transform) is type(plain)
    to_tensor, augment = data.train.transform.transforms
    assert type(to_tensor) is type(plain)
    assert (augment.padding, augment.flip) == (4, True)  # the paper's crop-4 + flip
    original = plain(Image.fromarray(data.train.data[0]))
    views = [data.train[0][0] for _ in range(10)]
    assert all(v.shape == (3, 32, 32) and v.max() <= 1 for v in views)
    assert any(not torch.equal(v, original) for v in views)


@pytest.mark.parametrize("name, cls", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_augment_is_a_shift_without_flip(tmp_path, monkeypatch, name, cls):
    monkeypatch.setattr(torchvision.datasets, cls, fake_torchvision((1, 28, 28), 10))
    augment = load_dataset(name, tmp_path, augment=True).train.transform.transforms[1]
    assert (augment.padding, augment.flip) == (2, False)


def test_missing_torchvision_dataset_says_pass_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "MNIST",
                        fake_torchvision((1, 28, 28), 10, missing=True))
    with pytest.raises(DataError, match="'mnist' not found under .*pass --download to fetch it "
                       "there, or point --data-dir at the folder that holds it") as info:
        load_dataset("mnist", tmp_path)
    _one_line(info)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR100",
                        fake_torchvision((3, 32, 32), 100, offline=True))
    with pytest.raises(DataError, match="could not download 'cifar100' into .*check the "
                       "network") as info:
        load_dataset("cifar100", tmp_path, download=True)
    _one_line(info)


# --- registry, defaults and bad input ---------------------------------------------------------

def test_registry_keeps_the_old_datasets():
    assert {"digits", "mnist-idx", "mnist", "fashion-mnist", "cifar10", "cifar100",
            "image-folder", "nmnist", "dvsgesture", "cifar10dvs"} == set(DATASETS)
    assert load_dataset("digits").in_shape == (1, 8, 8)


def test_mnist_idx_still_loads_positionally(shared_data):
    assert len(load_dataset("mnist-idx", shared_data / "mnist9k").val) == 1000


def test_unknown_dataset_lists_every_name():
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar7")
    assert _one_line(info) == ("unknown dataset 'cifar7'; choose one of: " +
                               ", ".join(sorted(DATASETS)))


def test_missing_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TTFS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="'cifar10' needs --data-dir DIR") as info:
        load_dataset("cifar10")
    _one_line(info)
    with pytest.raises(DataError, match="'image-folder' needs --data-dir DIR"):
        load_dataset("image-folder")
    with pytest.raises(DataError, match=f"data directory {tmp_path / 'nope'} does not exist; "
                       "pass --download"):
        load_dataset("fashion-mnist", tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("image-folder", tmp_path / "nope")


def test_torchvision_root_defaults_to_ttfs_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TTFS_DATA_DIR", str(tmp_path))
    fake = fake_torchvision((1, 28, 28), 10)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake)
    load_dataset("fashion-mnist")
    assert fake.calls[0]["root"] == str(tmp_path)


@pytest.mark.parametrize("kwargs, problem", [
    ({"download": True}, "'digits' cannot be downloaded"),
    ({"augment": True}, r"augment=True \(--augment, random shift / crop \+ flip\) is for"),
    ({"events": EventOptions(time_bins=2)}, "event options .* are for nmnist"),
])
def test_options_that_do_not_apply(kwargs, problem):
    with pytest.raises(ConfigError, match=problem) as info:
        load_dataset("digits", **kwargs)
    _one_line(info)


def test_cli_helpers_round_trip(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset")
    add_data_arguments(parser)
    defaults = dataset_options(parser.parse_args([]))
    assert defaults == {"download": False, "augment": False,
                        "events": EventOptions().to_dict()}
    args = parser.parse_args(["--download", "--augment", "--time-bins", "3", "--denoise-us",
                              "5000", "--merge-polarity", "--event-norm", "clip",
                              "--event-clip", "4"])
    options = dataset_options(args)
    assert options == {
        "download": True, "augment": True,
        "events": {"time_bins": 3, "denoise_us": 5000, "merge_polarity": True,
                   "normalise": "clip", "clip": 4.0}}
    assert json.loads(json.dumps(options)) == options  # storable in metrics.json
    torch.save(options, tmp_path / "options.pt")
    assert torch.load(tmp_path / "options.pt", weights_only=True) == options  # and checkpoints
    assert dataset_options(argparse.Namespace()) == defaults  # a parser without the options
    assert load_dataset("digits", **defaults).in_shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="time_bins must be an integer >= 1"):
        dataset_options(parser.parse_args(["--time-bins", "0"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--event-norm", "mean"])


def test_cli_helpers_accept_an_argument_group():
    parser = argparse.ArgumentParser()
    group = parser.add_argument_group("data")
    assert add_data_arguments(group) is group
    assert dataset_options(parser.parse_args(["--time-bins", "2"]))["events"]["time_bins"] == 2

"""mnist-idx: both file layouts (one set / MNIST's train + t10k files), gzip or not, folders too
small for a validation hold-out (evaluation with --split all), and labels checked against the
10 classes. The IDX files are written to tmp_path."""

import gzip
import json

import numpy as np
import pytest
import torch
from _data_helpers import _one_line, write_idx  # noqa: E402
from torch.utils.data import TensorDataset

from ttfs_plugin.cli import main
from ttfs_plugin.data import load_dataset
from ttfs_plugin.data.augment import AugmentedTensorDataset
from ttfs_plugin.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from ttfs_plugin.errors import DataError

STEMS = {"one": ("images-idx3-ubyte", "labels-idx1-ubyte"),
         "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def images_and_labels(n, seed=0, size=28):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            (np.arange(n) % 10).astype(np.uint8))


def write_set(root, which, images, labels, gz=True):
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    image_stem, label_stem = STEMS[which]
    write_idx(root / (image_stem + suffix), images, gz=gz)
    write_idx(root / (label_stem + suffix), labels, gz=gz)
    return root


# --- file names and compression ---------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("which", ["one", "train", "t10k"])
def test_one_set_under_every_name_gz_or_not(tmp_path, which, gz):
    images, labels = images_and_labels(1200)
    data = load_dataset("mnist-idx", write_set(tmp_path, which, images, labels, gz))
    assert data.in_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) == 200 and len(data.val) == 1000  # the last 1,000 held out
    x, y = data.split("all").tensors
    assert torch.equal(x, torch.from_numpy(images).float().unsqueeze(1) / 255.0)
    assert y.tolist() == labels.tolist()
    assert torch.equal(data.val.tensors[1], torch.from_numpy(labels[200:]).long())


def test_plain_name_with_gzip_content_is_read(tmp_path):
    images, labels = images_and_labels(5)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz=True)  # gzip, name without .gz
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=False)
    data = load_dataset("mnist-idx", tmp_path)
    assert data.split("all").tensors[1].tolist() == labels.tolist()


def test_read_idx_plain_and_gzip_agree(tmp_path):
    images, _ = images_and_labels(3)
    plain = read_idx(write_idx(tmp_path / "a", images, gz=False), IMAGES_MAGIC)
    packed = read_idx(write_idx(tmp_path / "a.gz", images), IMAGES_MAGIC)
    assert np.array_equal(plain, images) and np.array_equal(packed, images)
    with pytest.raises(DataError, match="not an IDX file with magic number 2049 \\(labels\\)"):
        read_idx(tmp_path / "a", LABELS_MAGIC)


def test_mnist_train_and_t10k_files_are_train_and_validation(tmp_path):
    train_x, train_y = images_and_labels(30, seed=1)
    test_x, test_y = images_and_labels(12, seed=2)
    write_set(tmp_path, "train", train_x, train_y, gz=True)
    write_set(tmp_path, "t10k", test_x, test_y, gz=False)
    data = load_dataset("mnist-idx", tmp_path)
    assert len(data.train) == 30 and len(data.val) == 12  # no 1,000 held out of the train set
    assert torch.equal(data.val.tensors[0], torch.from_numpy(test_x).float().unsqueeze(1) / 255)
    assert len(data.split("all")) == 42
    augmented = load_dataset("mnist-idx", tmp_path, augment=True)
    assert isinstance(augmented.train, AugmentedTensorDataset)
    assert isinstance(augmented.val, TensorDataset)
    assert augmented.train.transform.padding == 2 and not augmented.train.transform.flip


# --- a folder too small for the validation hold-out: evaluation with --split all -------------

@pytest.mark.parametrize("n", [1, 999, 1000])
def test_small_folder_gives_every_image_for_split_all(tmp_path, n):
    images, labels = images_and_labels(n)
    data = load_dataset("mnist-idx", write_set(tmp_path, "t10k", images, labels, gz=False))
    assert not data.has_split
    x, y = data.split("all").tensors
    assert len(x) == n and y.tolist() == labels.tolist()
    for which in ("train", "val"):
        with pytest.raises(DataError, match=f"{n} images are too few for a train / validation "
                           f"split .*last 1000 are held out.*--split all") as info:
            data.split(which)
        _one_line(info)
    with pytest.raises(DataError, match="--split all"):
        data.val  # noqa: B018 - what the trainer reads


def test_one_more_than_the_hold_out_splits(tmp_path):
    images, labels = images_and_labels(1001)
    data = load_dataset("mnist-idx", write_set(tmp_path, "one", images, labels))
    assert data.has_split and len(data.train) == 1 and len(data.val) == 1000


def _evaluate_backends(capsys, checkpoint, data_dir):
    common = ["evaluate", str(checkpoint), "--dataset", "mnist-idx", "--data-dir", str(data_dir)]
    results = {}
    for backend in ("surrogate", "snntorch", "norse"):
        assert main([*common, "--split", "all", "--backend", backend, "--json"]) == 0
        results[backend] = json.loads(capsys.readouterr().out)
        assert results[backend]["samples"] == 1000 and results[backend]["split"] == "all"
    for backend in ("snntorch", "norse"):
        assert results[backend]["agreement_with_surrogate"] > 0.95
    for split in ("val", "train"):
        assert main([*common, "--split", split]) == 2
        err = capsys.readouterr().err.strip()
        assert "1000 images are too few for a train / validation split" in err
        assert "--split all" in err and "\n" not in err
    return results


def test_cli_evaluates_a_1000_image_folder_with_split_all(digits_checkpoint, tmp_path, capsys):
    """``ttfs evaluate CKPT --dataset mnist-idx --data-dir DIR --split all`` on a folder of
    exactly 1,000 images (MNIST's t10k names, not compressed), every backend. The images are the
    built-in 8×8 digits written as IDX, so the shared digits checkpoint classifies them."""
    from ttfs_plugin.data import load_dataset as load

    x, y = load("digits").split("all").tensors
    pixels = (x[:1000, 0] * 255).round().to(torch.uint8).numpy()
    folder = write_set(tmp_path, "t10k", pixels, y[:1000].numpy().astype(np.uint8), gz=False)
    results = _evaluate_backends(capsys, digits_checkpoint, folder)
    assert results["surrogate"]["accuracy"] > 0.6  # the digits, not noise


def test_cli_train_on_a_folder_without_a_split_is_one_line(tmp_path, capsys):
    images, labels = images_and_labels(50)
    folder = write_set(tmp_path / "small", "one", images, labels)
    assert main(["train", "--dataset", "mnist-idx", "--data-dir", str(folder), "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ttfs train: error: ") and "\n" not in err
    assert "50 images are too few for a train / validation split" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_cli_evaluates_1000_mnist_test_images_with_split_all(shared_data, tmp_path, capsys):
    """The issue's case on real MNIST: a net trained on MNIST's train-* files (gz), evaluated
    on 1,000 MNIST test images under MNIST's t10k names (plain) with --split all."""
    images = read_idx(shared_data / "mnist9k" / "images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(shared_data / "mnist9k" / "labels-idx1-ubyte.gz", LABELS_MAGIC)
    train_dir = write_set(tmp_path / "train", "train", images[:3000], labels[:3000], gz=True)
    test_dir = write_set(tmp_path / "test", "t10k", images[8000:], labels[8000:], gz=False)
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist-idx", "--data-dir", str(train_dir), "--model",
                 "mlp", "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    results = _evaluate_backends(capsys, run / "checkpoint.pt", test_dir)
    assert results["surrogate"]["accuracy"] > 0.6


# --- labels against the 10 classes ------------------------------------------------------------

def test_label_out_of_range_is_an_error_not_a_bigger_net(tmp_path):
    images, labels = images_and_labels(20)
    labels[7] = 200
    labels[9] = 10
    write_set(tmp_path, "one", images, labels)
    with pytest.raises(DataError, match=r"labels-idx1-ubyte.gz: label 200 of image 7 \(and 1 "
                       r"more\) is outside 0..9; mnist-idx is for MNIST-like data with 10 "
                       r"classes, labels 0..9") as info:
        load_dataset("mnist-idx", tmp_path)
    _one_line(info)


def test_class_count_is_ten_whatever_labels_occur(tmp_path):
    images, _ = images_and_labels(20)
    labels = (np.arange(20) % 3).astype(np.uint8)  # only classes 0, 1, 2 present
    data = load_dataset("mnist-idx", write_set(tmp_path, "one", images, labels))
    assert data.num_classes == 10


def test_t10k_labels_are_checked_too(tmp_path):
    train_x, train_y = images_and_labels(20)
    test_x, test_y = images_and_labels(5)
    test_y[0] = 12
    write_set(tmp_path, "train", train_x, train_y)
    write_set(tmp_path, "t10k", test_x, test_y)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: label 12 of image 0"):
        load_dataset("mnist-idx", tmp_path)


# --- bad layouts ------------------------------------------------------------------------------

def test_missing_partner_is_named(tmp_path):
    images, _ = images_and_labels(5)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    with pytest.raises(DataError, match="holds t10k-images-idx3-ubyte.gz but not its partner "
                       r"t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)") as info:
        load_dataset("mnist-idx", tmp_path)
    _one_line(info)


def test_empty_folder_lists_the_accepted_names(tmp_path):
    with pytest.raises(DataError, match="missing file .*images-idx3-ubyte.gz; the directory "
                       "must hold .*train-images-idx3-ubyte / t10k-images-idx3-ubyte") as info:
        load_dataset("mnist-idx", tmp_path)
    _one_line(info)


def test_gz_and_plain_of_one_file_is_ambiguous(tmp_path):
    images, labels = images_and_labels(5)
    write_set(tmp_path, "t10k", images, labels, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:2], gz=False)
    with pytest.raises(DataError, match="holds both t10k-images-idx3-ubyte and "
                       "t10k-images-idx3-ubyte.gz; keep one of them"):
        load_dataset("mnist-idx", tmp_path)


def test_one_set_beside_mnist_files_is_ambiguous(tmp_path):
    images, labels = images_and_labels(5)
    write_set(tmp_path, "one", images, labels)
    write_set(tmp_path, "t10k", images, labels)
    with pytest.raises(DataError, match="holds both images-idx3-ubyte.gz and "
                       "t10k-images-idx3-ubyte.gz; keep one layout"):
        load_dataset("mnist-idx", tmp_path)


def test_counts_sizes_and_emptiness_are_checked(tmp_path):
    images, labels = images_and_labels(5)
    write_set(tmp_path / "a", "one", images, labels[:4])
    with pytest.raises(DataError, match="5 images in images-idx3-ubyte.gz but 4 labels"):
        load_dataset("mnist-idx", tmp_path / "a")
    write_set(tmp_path / "b", "one", images[:0], labels[:0])
    with pytest.raises(DataError, match="holds no images"):
        load_dataset("mnist-idx", tmp_path / "b")
    write_set(tmp_path / "c", "train", images, labels)
    small, _ = images_and_labels(5, size=20)
    write_set(tmp_path / "c", "t10k", small, labels)
    with pytest.raises(DataError, match=r"train images are \(28, 28\) but t10k images are "
                       r"\(20, 20\)"):
        load_dataset("mnist-idx", tmp_path / "c")


def test_truncated_plain_file(tmp_path):
    images, labels = images_and_labels(5)
    write_set(tmp_path, "train", images, labels, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated"):
        load_dataset("mnist-idx", tmp_path)
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"")[:5])
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_idx(tmp_path / "x.gz", IMAGES_MAGIC)

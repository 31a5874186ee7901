"""Training-split augmentation: the random shift / flip itself, and mnist-idx with --augment on
the real mnist9k images."""

import pytest
import torch
from torch.utils.data import TensorDataset

from ttfs_plugin.data import load_dataset
from ttfs_plugin.data.augment import AUGMENTATIONS, AugmentedTensorDataset, RandomShiftFlip


def _shifted(image, dy, dx):
    """``image`` moved down by dy and right by dx pixels, zeros coming in."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


@pytest.mark.parametrize("padding, flip", [(2, False), (4, True)])
def test_every_view_is_a_shift_within_the_padding(padding, flip):
    torch.manual_seed(0)
    image = torch.rand(3, 9, 11) + 0.1  # no zeros, so a shift is recognisable
    candidates = {}
    for dy in range(-padding, padding + 1):
        for dx in range(-padding, padding + 1):
            candidates[(dy, dx, False)] = _shifted(image, dy, dx)
            if flip:
                candidates[(dy, dx, True)] = _shifted(image, dy, dx).flip(-1)
    augment = RandomShiftFlip(padding, flip)
    seen = set()
    for _ in range(2000):
        view = augment(image)
        assert view.shape == image.shape
        matches = [key for key, c in candidates.items() if torch.equal(view, c)]
        assert matches, "a view that is not a shift (and flip) of the image"
        seen.update(matches)
    assert seen == set(candidates)  # every shift (and flip) is drawn


def test_padding_zero_without_flip_is_the_identity():
    image = torch.rand(1, 5, 5)
    assert torch.equal(RandomShiftFlip(0)(image), image)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        RandomShiftFlip(-1)


def test_draws_follow_the_torch_seed():
    image = torch.rand(1, 28, 28)
    augment = RandomShiftFlip(2)
    torch.manual_seed(3)
    first = [augment(image) for _ in range(5)]
    torch.manual_seed(3)
    assert all(torch.equal(a, augment(image)) for a in first)


def test_mnist_idx_augment_shifts_training_images_only(shared_data):
    plain = load_dataset("mnist-idx", shared_data / "mnist9k")
    data = load_dataset("mnist-idx", shared_data / "mnist9k", augment=True)
    assert AUGMENTATIONS["mnist-idx"] == (2, False)
    assert isinstance(data.train, AugmentedTensorDataset) and isinstance(data.val, TensorDataset)
    assert torch.equal(data.val.tensors[0], plain.val.tensors[0])
    assert len(data.train) == 8000
    original, label = plain.train.tensors[0][5], plain.train.tensors[1][5]
    shifts = {(dy, dx): _shifted(original, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    torch.manual_seed(0)
    views = [data.train[5] for _ in range(50)]
    assert all(y == label for _, y in views)
    assert all(any(torch.equal(x, s) for s in shifts.values()) for x, _ in views)
    assert len({tuple(x.flatten().tolist()) for x, _ in views}) > 5

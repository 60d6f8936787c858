"""Training-batch augmentation: every shifted image is its input moved by one offset in [-2, 2]^2 with
a zero border, mirror flips about half, both are seeded, and names are checked."""
from __future__ import annotations

import pytest
import torch

from compress.data.augment import AUGMENTATIONS, augmenter, mirror, shift
from compress.errors import CompressError
from compress.train.trainer import TrainConfig, train
from tests.test_prune_train import assert_resume_is_exact, loader, make


def moved(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``img`` (C, H, W) translated so that out[y, x] = img[y + dy, x + dx], zero outside."""
    out = torch.zeros_like(img)
    h, w = img.shape[1:]
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[:, y, x] = img[:, y + dy, x + dx]
    return out


def test_shift_moves_each_image_by_one_offset_within_two_pixels_with_a_zero_border():
    torch.manual_seed(0)
    x = torch.arange(1, 200 * 2 * 6 * 7 + 1, dtype=torch.float32).reshape(200, 2, 6, 7)  # all distinct
    out = shift(x)
    seen = set()
    for img, got in zip(x, out, strict=True):
        offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(got, moved(img, dy, dx))]
        assert len(offsets) == 1
        seen.add(offsets[0])
    assert len(seen) == 25  # every offset is drawn


def test_mirror_flips_about_half_and_leaves_the_rest():
    torch.manual_seed(0)
    x = torch.randn(400, 3, 4, 5)
    out = mirror(x)
    flipped = [torch.equal(o, i.flip(2)) for i, o in zip(x, out, strict=True)]
    same = [torch.equal(o, i) for i, o in zip(x, out, strict=True)]
    assert all(f != s for f, s in zip(flipped, same, strict=True))
    assert 150 < sum(flipped) < 250


def test_augmentations_are_seeded_and_compose_in_order():
    x = torch.randn(16, 1, 8, 8)
    aug = augmenter(["shift", "mirror"])
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    b = mirror(shift(x))
    assert torch.equal(a, b)
    assert augmenter([]) is None


def test_unknown_names_are_clear_errors_in_the_registry_and_the_train_config():
    with pytest.raises(CompressError, match="unknown augmentation.s. rotate; choose from shift, mirror"):
        augmenter(["shift", "rotate"])
    with pytest.raises(CompressError, match="unknown augmentation"):
        TrainConfig(augment=("rotate",))


def test_the_cli_offers_exactly_the_registry_and_none():
    from compress.commands.prune import command

    option = next(p for p in command.params if p.name == "augment")
    assert set(option.type.choices) == {*AUGMENTATIONS, "none"}


def test_training_with_shift_changes_the_steps_and_resumes_bit_for_bit(tmp_path):
    plain, m = make("admm")
    train(plain, m, loader(), None, TrainConfig(lr=0.05, retrain_epochs=2, seed=3))
    shifted, m = make("admm")
    train(shifted, m, loader(), None, TrainConfig(lr=0.05, retrain_epochs=2, seed=3, augment=("shift",)))
    assert not torch.equal(plain.fc.weight, shifted.fc.weight)
    assert_resume_is_exact(tmp_path, "admm", 3, augment=("shift",))

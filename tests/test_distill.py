"""Knowledge distillation: the loss against hand-computed values, its validation, and the trainer's
teacher (frozen, the model as given, carried by checkpoints so resume stays exact)."""
from __future__ import annotations

import math

import pytest
import torch

from compress.errors import CompressError
from compress.logits import Logits
from compress.train.checkpoint import load_checkpoint
from compress.train.distill import Distill, distillation_loss, frozen_copy
from compress.train.trainer import TrainConfig, train
from tests.test_prune_train import assert_resume_is_exact, loader, make


def test_loss_matches_hand_computed_values():
    s = torch.tensor([[0.0, 0.0]])  # student p = (1/2, 1/2)
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher p = (3/4, 1/4) at T = 1
    y = torch.tensor([0])
    ce = math.log(2)
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    got = distillation_loss(s, t, y, Distill(0.5, 1.0))
    assert got.item() == pytest.approx(0.5 * ce + 0.5 * kl1, rel=1e-6)
    # T = 2: teacher p = (sqrt 3, 1) / (sqrt 3 + 1); the soft term is scaled by T^2 = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    got = distillation_loss(s, t, y, Distill(0.25, 2.0))
    assert got.item() == pytest.approx(0.75 * ce + 0.25 * 4 * kl2, rel=1e-6)


def test_off_is_the_plain_cross_entropy_and_a_perfect_student_has_no_soft_loss():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.randint(0, 4, (5,), generator=g)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.equal(distillation_loss(s, t, y, Distill(0.0)), ce)
    assert torch.equal(distillation_loss(s, None, y, Distill(0.7)), ce)
    assert distillation_loss(t, t, y, Distill(1.0, 3.0)).abs().item() < 1e-6


@pytest.mark.parametrize("alpha,temperature,message", [
    (1.5, 4.0, r"distillation weight must be in \[0, 1\], got 1.5"),
    (-0.1, 4.0, r"distillation weight must be in \[0, 1\], got -0.1"),
    (0.5, 0.0, "distillation temperature must be > 0, got 0.0"),
])
def test_bad_settings_are_clear_errors(alpha, temperature, message):
    with pytest.raises(CompressError, match=message):
        Distill(alpha, temperature)


def test_frozen_copy_is_detached_from_the_student():
    net, _ = make("default")
    teacher = frozen_copy(Logits(net))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        net.fc.weight.add_(1.0)
    assert not torch.equal(teacher.net.fc.weight, net.fc.weight)


def test_distillation_changes_the_steps_and_leaves_the_teacher_as_given(tmp_path):
    ckpt = str(tmp_path / "run.ckpt")
    start, _ = make("default")
    before = {k: v.clone() for k, v in start.state_dict().items()}
    results = {}
    for alpha in (0.0, 0.9):
        net, m = make("admm")
        train(net, m, loader(), None, TrainConfig(lr=0.05, retrain_epochs=1, distill=Distill(alpha, 2.0),
                                                    checkpoint=ckpt))
        results[alpha] = net.fc.weight.detach().clone()
    teacher = load_checkpoint(ckpt)["task"]["teacher"]
    assert all(torch.equal(teacher[f"net.{k}"], v) for k, v in before.items())
    assert not torch.equal(results[0.0], results[0.9])


def test_resume_with_distillation_is_bit_exact_and_refuses_a_mismatched_setting(tmp_path):
    # the resumed net starts from another init: the teacher too must come from the checkpoint
    ckpt = assert_resume_is_exact(tmp_path, "admm", 2, distill=Distill(0.5, 2.0))
    net, m = make("admm")
    with pytest.raises(CompressError, match="was written with --distill; resume with the same setting"):
        train(net, m, loader(), None, TrainConfig(lr=0.05, retrain_epochs=2, seed=3), resume=ckpt)

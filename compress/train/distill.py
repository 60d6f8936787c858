"""Knowledge distillation from the unpruned model (Hinton, Vinyals, Dean 2015, "Distilling the
Knowledge in a Neural Network", arXiv 1503.02531), an option of every method's training loss.

    loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL( softmax(t / T) || softmax(s / T) )

``s`` are the logits of the model being pruned, ``t`` those of a frozen copy of the model as it was
loaded (the dense teacher). The ``T^2`` factor keeps the soft term's gradient on the scale of the hard
term's as ``T`` changes (Hinton et al., section 2). ``alpha = 0`` is the plain cross-entropy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError


@dataclass(frozen=True)
class Distill:
    alpha: float = 0.0  # weight of the soft (teacher) term; 0 = off
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise CompressError(f"distillation weight must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise CompressError(f"distillation temperature must be > 0, got {self.temperature}")

    @property
    def enabled(self) -> bool:
        return self.alpha > 0


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor,
                      distill: Distill) -> torch.Tensor:
    """``(1 - alpha) CE(logits, y) + alpha T^2 KL(p_teacher^T || p_student^T)``, batch mean; the plain
    cross-entropy when distillation is off (``teacher_logits`` None or ``alpha`` 0)."""
    hard = F.cross_entropy(logits, y)
    if teacher_logits is None or not distill.enabled:
        return hard
    alpha, t = distill.alpha, float(distill.temperature)
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True)
    return (1 - alpha) * hard + alpha * t * t * soft


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with no gradients: the teacher, as the model is now."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher

"""What is trained and how it is scored: the objective of a batch and the test outputs.

The trainer's loop is the same for every front door; a *task* supplies the rest:

    module                  the trainable ``nn.Module`` (what DDP wraps)
    loss(model, batch)      objective of one batch and its counts ({"correct", "seen"})
    evaluate()              test outputs by name ({"accuracy": a, ...}), or None without test data
    accuracy_key            the output that is top-1 accuracy ("accuracy"; a Caffe net's Accuracy top),
                            or None when the test outputs have none (read it with :func:`top1`)

:class:`ClassifierTask` trains a classifier on ``(x, y)`` batches with cross-entropy on its logits
(optionally distilled from a frozen copy, and with training-batch augmentation); the Caffe front door
(``compress train``) has its own task whose objective is the train net's weighted loss layers.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from compress.data.augment import augmenter
from compress.logits import Logits
from compress.train.batchnorm import recalibrate
from compress.train.distill import Distill, distillation_loss, frozen_copy


def top1(task: Any, outputs: dict[str, float] | None) -> float | None:
    """The top-1 accuracy among a task's test ``outputs`` (None without outputs or an accuracy output)."""
    key = getattr(task, "accuracy_key", "accuracy")
    return None if not outputs or key is None else outputs.get(key)


def autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def evaluate(model: nn.Module, loader: Iterable | None, device: torch.device, amp: bool = False,
             max_batches: int | None = None) -> float | None:
    """Top-1 accuracy of ``model`` (logits) on ``loader`` (:func:`compress.evaluate.evaluate`)."""
    return None if loader is None else test_outputs(model, loader, device, amp, max_batches)["accuracy"]


def test_outputs(model: nn.Module, loader: Iterable, device: torch.device, amp: bool = False,
                 max_batches: int | None = None) -> dict[str, float]:
    """``{"accuracy": top-1, "loss": mean cross-entropy}`` of ``model`` (logits) on ``loader``; under DDP
    with a sharded loader the counts are summed over the ranks."""
    from compress.evaluate import evaluate as run

    with autocast(device, amp):
        r = run(model, loader, device=device, max_batches=max_batches)
    return {"accuracy": r.top1, "loss": r.loss}


class ClassifierTask:
    """Cross-entropy on the logits of ``net`` over ``(x, y)`` batches; top-1 on ``test_data``.

    With ``distill`` the loss takes soft targets from a frozen copy of ``net`` as it is now (the
    teacher; its state rides in checkpoints via :meth:`state_dict`). ``augment`` names training-batch
    augmentations (:mod:`compress.data.augment`). ``max_eval_batches`` caps evaluation (smoke runs).
    ``calibration`` = ``(training loader, batches)``: every evaluation first re-estimates the BatchNorm
    statistics over those batches (:mod:`compress.train.batchnorm`).
    """

    accuracy_key = "accuracy"

    def __init__(self, net: nn.Module, test_data: Iterable | None, device: torch.device, *,
                 amp: bool = False, distill: Distill | None = None, augment: tuple[str, ...] = (),
                 max_eval_batches: int | None = None,
                 calibration: tuple[Iterable | None, int] = (None, 0)) -> None:
        self.module = Logits(net)
        self.test_data, self.device, self.amp = test_data, device, amp
        self.distill = distill or Distill()
        self.teacher = frozen_copy(self.module) if self.distill.enabled else None
        self.augment = augmenter(augment)
        self.max_eval_batches = max_eval_batches
        self.calibration = calibration

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, int]]:
        x, y = batch
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.augment is not None:
            x = self.augment(x)
        with autocast(self.device, self.amp):
            logits = model(x)
            with torch.no_grad():
                teacher = None if self.teacher is None else self.teacher(x).float()
        loss = distillation_loss(logits.float(), teacher, y, self.distill)
        return loss, {"correct": int((logits.detach().argmax(1) == y).sum()), "seen": len(y)}

    def evaluate(self) -> dict[str, float] | None:
        if self.test_data is None:
            return None
        loader, batches = self.calibration
        if loader is not None:
            recalibrate(self.module, loader, self.device, batches)
        return test_outputs(self.module, self.test_data, self.device, self.amp, self.max_eval_batches)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict() if self.teacher is not None else None}

    def load_state_dict(self, state: dict[str, Any], where: str = "task") -> None:
        from compress.errors import CompressError
        from compress.savedstate import Fields, load_module_state

        teacher = Fields(state, where).state.get("teacher")
        if (teacher is None) != (self.teacher is None):
            how = "without" if self.teacher else "with"
            raise CompressError(f"{where}: the checkpoint was written {how} --distill; resume with the same "
                                "setting")
        if self.teacher is not None:
            load_module_state(self.teacher, teacher, f"{where}.teacher")

"""What is trained and how it is scored: the objective of a batch and the test outputs.

The trainer's loop is the same for every front door; a *task* supplies the rest:

    module                  the trainable ``nn.Module`` (what DDP wraps)
    loss(model, batch)      objective of one batch and its counts ({"correct", "seen"})
    evaluate()              test outputs by name ({"accuracy": a, ...}), or None without test data

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
from torch.utils.data import DistributedSampler

from compress.data.augment import augmenter
from compress.prune.distill import Distill, distillation_loss, frozen_copy
from compress.prune.distributed import DistContext


class Logits(nn.Module):
    """The net's logits: a Caffe net ending in Softmax is trained on the Softmax's bottom blob."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        nodes = getattr(net, "nodes", None)
        self.blob = nodes[-1].bottoms[0] if nodes and nodes[-1].type == "Softmax" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blob is None:
            return self.net(x)
        return self.net.forward_blobs(x)[self.blob]


def autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable | None, device: torch.device, amp: bool = False,
             max_batches: int | None = None, dist: DistContext | None = None) -> float | None:
    """Top-1 accuracy of ``model`` (logits) on ``loader``; restores the train/eval flag after.
    Under DDP with a sharded test loader the counts are summed over the ranks."""
    if loader is None:
        return None
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                correct += (model(x).argmax(1) == y).sum()
            seen += len(y)
    finally:
        model.train(was_training)
    if dist is not None and dist.enabled and isinstance(getattr(loader, "sampler", None), DistributedSampler):
        counts = torch.stack([correct.double(), torch.tensor(float(seen), device=device, dtype=torch.double)])
        torch.distributed.all_reduce(counts)
        correct, seen = counts[0], int(counts[1])
    return float(correct) / seen if seen else None


class ClassifierTask:
    """Cross-entropy on the logits of ``net`` over ``(x, y)`` batches; top-1 on ``test_data``.

    With ``distill`` the loss takes soft targets from a frozen copy of ``net`` as it is now (the
    teacher; its state rides in checkpoints via :meth:`state_dict`). ``augment`` names training-batch
    augmentations (:mod:`compress.data.augment`). ``max_eval_batches`` caps evaluation (smoke runs).
    """

    def __init__(self, net: nn.Module, test_data: Iterable | None, device: torch.device, *,
                 amp: bool = False, distill: Distill | None = None, augment: tuple[str, ...] = (),
                 max_eval_batches: int | None = None, dist: DistContext | None = None) -> None:
        self.module = Logits(net)
        self.test_data, self.device, self.amp = test_data, device, amp
        self.distill = distill or Distill()
        self.teacher = frozen_copy(self.module) if self.distill.enabled else None
        self.augment = augmenter(augment)
        self.max_eval_batches, self.dist = max_eval_batches, dist

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
        acc = evaluate(self.module, self.test_data, self.device, self.amp, self.max_eval_batches, self.dist)
        return None if acc is None else {"accuracy": acc}

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict() if self.teacher is not None else None}

    def load_state_dict(self, state: dict[str, Any], where: str) -> None:
        from compress.errors import CompressError

        if (state.get("teacher") is None) != (self.teacher is None):
            raise CompressError(f"checkpoint {where} was written {'without' if self.teacher else 'with'} "
                                f"--distill; resume with the same setting")
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])

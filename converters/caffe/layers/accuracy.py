"""Accuracy and Silence: the training-only layers that compute no loss, after BVLC's ``accuracy_layer.cpp``
(the CPU layer of 2017 on: ties count against the true class) and ``silence_layer.cpp``."""
from __future__ import annotations

import torch
from torch import nn

from converters.caffe.layers.base import register
from converters.caffe.layers.loss import LabelledLayer, ignore_label_of
from converters.caffe.shapes.accuracy import accuracy_axis, silence_checks


class Accuracy(LabelledLayer):
    """Top-k accuracy: a position is right when fewer than ``top_k`` other classes score ``>=`` the true
    class (ties count against it, as in Caffe's CPU layer); with two tops, also the per-class accuracy."""

    def __init__(self, name: str, top_k: int, axis: int, ignore_label: int | None, per_class: bool) -> None:
        super().__init__(name, "Accuracy", axis, ignore_label)
        self.top_k = top_k
        self.per_class = per_class

    @torch.no_grad()
    def forward(self, x: torch.Tensor, label: torch.Tensor):
        scores, outer, inner = self._split(x.detach(), label)
        classes = scores.shape[1]
        idx, valid = self._labels(label, outer, inner, classes)
        true = scores.gather(1, idx.unsqueeze(1))
        right = (scores >= true).sum(dim=1) <= self.top_k  # the true class itself is one of them
        if valid is not None:
            right &= valid
        count = torch.tensor(float(outer * inner), device=x.device) if valid is None else \
            valid.sum().to(torch.float32)
        hits = right.sum().to(torch.float32)
        accuracy = torch.where(count > 0, hits / count.clamp_min(1.0), torch.zeros_like(hits)).to(x.dtype)
        if not self.per_class:
            return accuracy
        zeros = torch.zeros(classes, dtype=x.dtype, device=x.device)
        counted = torch.ones_like(right) if valid is None else valid
        nums = zeros.scatter_add(0, idx.reshape(-1), counted.reshape(-1).to(x.dtype))
        wins = zeros.scatter_add(0, idx.reshape(-1), right.reshape(-1).to(x.dtype))
        per_class = torch.where(nums > 0, wins / nums.clamp_min(1.0), zeros)
        return accuracy, per_class

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, axis={self.axis}, ignore_label={self.ignore_label}"


class Silence(nn.Module):
    """Consumes its bottoms and produces nothing (used to keep unused tops out of the net's outputs)."""

    def forward(self, *bottoms: torch.Tensor) -> tuple[()]:
        return ()


@register("Accuracy")
def build_accuracy(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    axis = accuracy_axis(layer, [tuple(b.shape) for b in bottoms])
    p = layer.accuracy_param
    return Accuracy(layer.name, int(p.top_k), axis, ignore_label_of(p), per_class=len(layer.top) == 2)


@register("Silence")
def build_silence(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    silence_checks(layer)
    return Silence()

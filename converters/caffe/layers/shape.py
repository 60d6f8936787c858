"""Blob plumbing: Concat, Flatten, Reshape, Split. No arithmetic, only Caffe's shape rules (checked and
computed by ``converters/caffe/shapes/shape.py``, shared with the torch-free shape inference)."""
from __future__ import annotations

import torch
from torch import nn

from converters.caffe.layers.base import register
from converters.caffe.shapes.shape import concat_axis, flatten_axes, reshape_params, reshape_target, split


class CaffeConcat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


@register("Concat")
def build_concat(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    return CaffeConcat(concat_axis(layer, [tuple(b.shape) for b in bottoms]))


class CaffeFlatten(nn.Module):
    def __init__(self, axis: int, end_axis: int) -> None:
        super().__init__()
        self.axis = axis
        self.end_axis = end_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.axis, self.end_axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, end_axis={self.end_axis}"


@register("Flatten")
def build_flatten(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    return CaffeFlatten(*flatten_axes(layer, [tuple(b.shape) for b in bottoms]))


class CaffeReshape(nn.Module):
    """Caffe's Reshape: dims ``[axis, axis + num_axes)`` of the bottom are replaced by ``shape``,
    where ``0`` copies the bottom dim at the same position and one ``-1`` is inferred."""

    def __init__(self, shape: tuple[int, ...], axis: int, num_axes: int) -> None:
        super().__init__()
        self.shape = shape
        self.axis = axis
        self.num_axes = num_axes

    def target_shape(self, bottom: tuple[int, ...]) -> tuple[int, ...]:
        """Caffe's ``ReshapeLayer::Reshape``; a ValueError says which of its checks fails."""
        return reshape_target(bottom, self.shape, self.axis, self.num_axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.target_shape(tuple(x.shape)))

    def extra_repr(self) -> str:
        return f"shape={self.shape}, axis={self.axis}, num_axes={self.num_axes}"


@register("Reshape")
def build_reshape(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    return CaffeReshape(*reshape_params(layer, [tuple(b.shape) for b in bottoms]))


class CaffeSplit(nn.Module):
    def __init__(self, tops: int) -> None:
        super().__init__()
        self.tops = tops

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.tops

    def extra_repr(self) -> str:
        return f"tops={self.tops}"


@register("Split")
def build_split(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    return CaffeSplit(len(split(layer, [tuple(b.shape) for b in bottoms]).tops))

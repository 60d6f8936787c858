"""Blob plumbing: Concat, Flatten, Reshape, Split. No arithmetic, only Caffe's shape rules."""
from __future__ import annotations

import math

import torch
from torch import nn

from converters.caffe.layers.base import layer_error, register
from converters.caffe.layers.common import MAX_AXES, canonical_axis
from converters.caffe.names import listed


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
    p = layer.concat_param
    if not bottoms:
        raise layer_error(layer, "expected at least 1 bottom, found none")
    ndim = bottoms[0].dim()
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis  # concat_dim: the legacy name
    axis = canonical_axis(layer, axis, ndim)
    shapes = [tuple(b.shape) for b in bottoms]
    for s in shapes:
        if len(s) != ndim or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
            raise layer_error(layer, f"bottoms must agree on every axis but {axis}, found shapes {shapes}")
    return CaffeConcat(axis)


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
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    p, ndim = layer.flatten_param, bottoms[0].dim()
    axis = canonical_axis(layer, p.axis, ndim)
    end = canonical_axis(layer, p.end_axis, ndim, "end_axis")
    if end < axis:
        raise layer_error(layer, f"end_axis {p.end_axis} comes before axis {p.axis}")
    return CaffeFlatten(axis, end)


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
        n = len(bottom)
        start = self.axis if self.axis >= 0 else n + self.axis + 1
        if not 0 <= start <= n:
            raise ValueError(f"axis {self.axis} out of range for a {n}-D bottom")
        end = n if self.num_axes == -1 else start + self.num_axes
        if end > n:
            raise ValueError(f"axis {self.axis} + num_axes {self.num_axes} runs past the {n}-D bottom")
        for i, d in enumerate(self.shape):
            if d == 0 and start + i >= n:
                raise ValueError(f"shape dim {i} is 0 (copy the bottom's axis {start + i}), but the bottom "
                                 f"has {n} axes")
        middle = [bottom[start + i] if d == 0 else d for i, d in enumerate(self.shape)]
        out = list(bottom[:start]) + middle + list(bottom[end:])
        if len(out) > MAX_AXES:
            raise ValueError(f"the top would have {len(out)} axes, at most {MAX_AXES} are allowed")
        total = math.prod(bottom)
        if -1 in middle:
            known = math.prod(d for d in out if d != -1)
            if known == 0 or total % known:
                raise ValueError(f"cannot infer the -1: the bottom's {total} values are not a multiple of "
                                 f"the other dims' product {known}")
            out[start + middle.index(-1)] = total // known
        if math.prod(out) != total:
            raise ValueError(f"the new shape has {math.prod(out)} values, the bottom {_shape(bottom)} has "
                             f"{total}")
        return tuple(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.target_shape(tuple(x.shape)))

    def extra_repr(self) -> str:
        return f"shape={self.shape}, axis={self.axis}, num_axes={self.num_axes}"


@register("Reshape")
def build_reshape(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    p = layer.reshape_param
    shape = tuple(int(d) for d in p.shape.dim)
    if sum(d == -1 for d in shape) > 1 or any(d < -1 for d in shape):
        raise layer_error(layer, f"shape may hold at most one -1 and no other negative dim, found "
                                 f"{_shape(shape)}")
    if p.num_axes < -1:
        raise layer_error(layer, f"num_axes must be -1 or non-negative, found {p.num_axes}")
    if layer.top and layer.bottom and layer.top[0] == layer.bottom[0]:
        raise layer_error(layer, "Reshape cannot be computed in place (top = bottom), as in Caffe")
    module = CaffeReshape(shape, int(p.axis), int(p.num_axes))
    try:
        module.target_shape(tuple(int(s) for s in bottoms[0].shape))
    except ValueError as e:
        raise layer_error(layer, f"shape {_shape(shape)}, axis {p.axis}, num_axes {p.num_axes}: "
                                 f"{e}") from None
    return module


def _shape(dims) -> str:
    """Dims as ``[1, 2, 3]``, cut after 16 of them."""
    return f"[{listed(dims, 16)}]"


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
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    return CaffeSplit(max(1, len(layer.top)))

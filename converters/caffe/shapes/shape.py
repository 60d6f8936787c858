"""Blob plumbing: Concat, Flatten, Reshape, Split. No arithmetic, only Caffe's shape rules."""
from __future__ import annotations

import math

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import MAX_AXES, canonical_axis
from converters.caffe.names import listed
from converters.caffe.shapes.base import LayerShapes, Shape, one_bottom, register


def concat_axis(layer, bottoms: list[Shape]) -> int:
    p = layer.concat_param
    if not bottoms:
        raise layer_error(layer, "expected at least 1 bottom, found none")
    ndim = len(bottoms[0])
    axis = p.concat_dim if p.HasField("concat_dim") else p.axis  # concat_dim: the legacy name
    axis = canonical_axis(layer, axis, ndim)
    shapes = [tuple(b) for b in bottoms]
    for s in shapes:
        if len(s) != ndim or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
            raise layer_error(layer, f"bottoms must agree on every axis but {axis}, found shapes {shapes}")
    return axis


@register("Concat")
def concat(layer, bottoms: list[Shape]) -> LayerShapes:
    axis = concat_axis(layer, bottoms)
    top = list(bottoms[0])
    top[axis] = sum(b[axis] for b in bottoms)
    return LayerShapes((tuple(top),))


def flatten_axes(layer, bottoms: list[Shape]) -> tuple[int, int]:
    """(first, last) axis flattened, both canonical."""
    x = one_bottom(layer, bottoms)
    p, ndim = layer.flatten_param, len(x)
    axis = canonical_axis(layer, p.axis, ndim)
    end = canonical_axis(layer, p.end_axis, ndim, "end_axis")
    if end < axis:
        raise layer_error(layer, f"end_axis {p.end_axis} comes before axis {p.axis}")
    return axis, end


@register("Flatten")
def flatten(layer, bottoms: list[Shape]) -> LayerShapes:
    axis, end = flatten_axes(layer, bottoms)
    x = bottoms[0]
    return LayerShapes(((*x[:axis], math.prod(x[axis:end + 1]), *x[end + 1:]),))


def reshape_target(bottom: Shape, shape: Shape, axis: int, num_axes: int) -> Shape:
    """Caffe's ``ReshapeLayer::Reshape``: dims ``[axis, axis + num_axes)`` of ``bottom`` replaced by
    ``shape``, where ``0`` copies the bottom dim at the same position and one ``-1`` is inferred; a
    ValueError says which of its checks fails."""
    n = len(bottom)
    start = axis if axis >= 0 else n + axis + 1
    if not 0 <= start <= n:
        raise ValueError(f"axis {axis} out of range for a {n}-D bottom")
    end = n if num_axes == -1 else start + num_axes
    if end > n:
        raise ValueError(f"axis {axis} + num_axes {num_axes} runs past the {n}-D bottom")
    for i, d in enumerate(shape):
        if d == 0 and start + i >= n:
            raise ValueError(f"shape dim {i} is 0 (copy the bottom's axis {start + i}), but the bottom "
                             f"has {n} axes")
    middle = [bottom[start + i] if d == 0 else d for i, d in enumerate(shape)]
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
        raise ValueError(f"the new shape has {math.prod(out)} values, the bottom {dims(bottom)} has "
                         f"{total}")
    return tuple(out)


def reshape_params(layer, bottoms: list[Shape]) -> tuple[Shape, int, int]:
    """(shape, axis, num_axes) of a Reshape layer, checked, the bottom's reshape included."""
    x = one_bottom(layer, bottoms)
    p = layer.reshape_param
    shape = tuple(int(d) for d in p.shape.dim)
    if sum(d == -1 for d in shape) > 1 or any(d < -1 for d in shape):
        raise layer_error(layer, f"shape may hold at most one -1 and no other negative dim, found "
                                 f"{dims(shape)}")
    if p.num_axes < -1:
        raise layer_error(layer, f"num_axes must be -1 or non-negative, found {p.num_axes}")
    if layer.top and layer.bottom and layer.top[0] == layer.bottom[0]:
        raise layer_error(layer, "Reshape cannot be computed in place (top = bottom), as in Caffe")
    try:
        reshape_target(tuple(int(s) for s in x), shape, int(p.axis), int(p.num_axes))
    except ValueError as e:
        raise layer_error(layer, f"shape {dims(shape)}, axis {p.axis}, num_axes {p.num_axes}: "
                                 f"{e}") from None
    return shape, int(p.axis), int(p.num_axes)


@register("Reshape")
def reshape(layer, bottoms: list[Shape]) -> LayerShapes:
    shape, axis, num_axes = reshape_params(layer, bottoms)
    return LayerShapes((reshape_target(bottoms[0], shape, axis, num_axes),))


def dims(values) -> str:
    """Dims as ``[1, 2, 3]``, cut after 16 of them."""
    return f"[{listed(values, 16)}]"


@register("Split")
def split(layer, bottoms: list[Shape]) -> LayerShapes:
    x = one_bottom(layer, bottoms)
    return LayerShapes((x,) * max(1, len(layer.top)))

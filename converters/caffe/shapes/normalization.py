"""BatchNorm and Scale. BatchNorm's blobs are Caffe's three statistics ``(C,), (C,), (1,)``; Scale's are its
scale (with one bottom; with two, the second bottom is the scale) and bias, shaped like the bottom's axes
``axis .. axis + num_axes``. Both tops have the (first) bottom's shape."""
from __future__ import annotations

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import canonical_axis
from converters.caffe.shapes.base import LayerShapes, Shape, register


def batchnorm_channels(layer, bottoms: list[Shape]) -> int:
    if len(bottoms) != 1 or len(bottoms[0]) < 2:
        raise layer_error(layer, f"expected one bottom of at least 2 dimensions (N, C, ...), found "
                                 f"{[tuple(b) for b in bottoms]}")
    return int(bottoms[0][1])


@register("BatchNorm")
def batchnorm(layer, bottoms: list[Shape]) -> LayerShapes:
    c = batchnorm_channels(layer, bottoms)
    return LayerShapes((bottoms[0],), ((c,), (c,), (1,)))


def scale_geometry(layer, bottoms: list[Shape]) -> tuple[int, Shape]:
    """(canonical axis, shape of the scale) of a Scale layer, checked against its bottoms."""
    p = layer.scale_param
    if len(bottoms) not in (1, 2):
        raise layer_error(layer, f"expected 1 or 2 bottoms, found {len(bottoms)}")
    x = tuple(bottoms[0])
    axis = canonical_axis(layer, p.axis, len(x))
    if len(bottoms) == 2:
        shape = tuple(int(s) for s in bottoms[1])
    else:
        if p.num_axes < -1:
            raise layer_error(layer, f"num_axes must be -1 or non-negative, found {p.num_axes}")
        end = len(x) if p.num_axes == -1 else axis + p.num_axes
        if end > len(x):
            raise layer_error(layer, f"axis {axis} + num_axes {p.num_axes} exceeds the bottom's "
                                     f"{len(x)} axes")
        shape = tuple(int(s) for s in x[axis:end])
    if tuple(x[axis:axis + len(shape)]) != shape:
        raise layer_error(layer, f"scale shape {shape} does not match bottom shape {x} from axis {axis}")
    return axis, shape


@register("Scale")
def scale(layer, bottoms: list[Shape]) -> LayerShapes:
    _, shape = scale_geometry(layer, bottoms)
    learned = [shape] if len(bottoms) == 1 else []
    return LayerShapes((bottoms[0],), (*learned, *[shape] * bool(layer.scale_param.bias_term)))

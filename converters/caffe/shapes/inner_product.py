"""InnerProduct: the bottom flattened from ``axis`` times a ``(out, in)`` weight (``(in, out)`` stored when
``transpose``), plus a bias ``(out,)``; the top keeps the axes before ``axis``."""
from __future__ import annotations

import math
from dataclasses import dataclass

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import canonical_axis
from converters.caffe.shapes.base import LayerShapes, Shape, register


@dataclass(frozen=True)
class InnerProductGeometry:
    axis: int  # canonical
    in_features: int
    out_features: int
    bias: bool
    transpose: bool


def inner_product_geometry(layer, bottoms: list[Shape]) -> InnerProductGeometry:
    p = layer.inner_product_param
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    if not p.HasField("num_output") or p.num_output == 0:
        raise layer_error(layer, "inner_product_param.num_output must be set to a positive number")
    x = bottoms[0]
    axis = canonical_axis(layer, p.axis, len(x))
    return InnerProductGeometry(axis, math.prod(x[axis:]), int(p.num_output), bool(p.bias_term),
                                bool(p.transpose))


@register("InnerProduct")
def inner_product(layer, bottoms: list[Shape]) -> LayerShapes:
    g = inner_product_geometry(layer, bottoms)
    weight = (g.in_features, g.out_features) if g.transpose else (g.out_features, g.in_features)
    top = (*bottoms[0][:g.axis], g.out_features)
    return LayerShapes((top,), (weight, *[(g.out_features,)] * g.bias))

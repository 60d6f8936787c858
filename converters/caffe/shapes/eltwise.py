"""Eltwise: PROD, SUM (with one ``coeff`` per bottom) or MAX of equally shaped bottoms; the top has their
shape."""
from __future__ import annotations

from converters.caffe.layers.base import layer_error
from converters.caffe.shapes.base import LayerShapes, Shape, register

OPERATIONS = {0: "PROD", 1: "SUM", 2: "MAX"}


def eltwise_params(layer, bottoms: list[Shape]) -> tuple[str, tuple[float, ...] | None]:
    """(operation, coeff or None) of ``layer``, checked against its bottoms."""
    p = layer.eltwise_param
    if len(bottoms) < 2:
        raise layer_error(layer, f"expected at least 2 bottoms, found {len(bottoms)}")
    shapes = [tuple(b) for b in bottoms]
    if len(set(shapes)) != 1:
        raise layer_error(layer, f"all bottoms must have the same shape, found {shapes}")
    op = OPERATIONS.get(int(p.operation))
    if op is None:
        raise layer_error(layer, f"unknown operation {p.operation} (expected PROD, SUM or MAX)")
    coeff = tuple(float(c) for c in p.coeff) or None
    if coeff is not None:
        if op != "SUM":
            raise layer_error(layer, f"coeff is only allowed with operation SUM, found {op}")
        if len(coeff) != len(bottoms):
            raise layer_error(layer, f"expected one coeff per bottom ({len(bottoms)}), found {len(coeff)}")
    return op, coeff


@register("Eltwise")
def eltwise(layer, bottoms: list[Shape]) -> LayerShapes:
    eltwise_params(layer, bottoms)
    return LayerShapes((bottoms[0],))

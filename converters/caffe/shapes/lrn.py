"""LRN: the top has the bottom's shape; Caffe accepts odd ``local_size`` only, on a 4-D bottom."""
from __future__ import annotations

from converters.caffe.layers.base import layer_error
from converters.caffe.shapes.base import LayerShapes, Shape, register

REGIONS = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}


def lrn_params(layer, bottoms: list[Shape]) -> tuple[int, str]:
    """(local size, region) of ``layer``, checked."""
    p = layer.lrn_param
    if len(bottoms) != 1 or len(bottoms[0]) != 4:
        raise layer_error(layer, f"expected one 4-D (N, C, H, W) bottom, found shapes "
                                 f"{[tuple(b) for b in bottoms]}")
    size = int(p.local_size)
    if size % 2 != 1:
        raise layer_error(layer, f"local_size must be odd (Caffe supports only odd sizes), found {size}")
    region = REGIONS.get(int(p.norm_region))
    if region is None:
        raise layer_error(layer, f"unknown norm_region {p.norm_region}")
    return size, region


@register("LRN")
def lrn(layer, bottoms: list[Shape]) -> LayerShapes:
    lrn_params(layer, bottoms)
    return LayerShapes((bottoms[0],))

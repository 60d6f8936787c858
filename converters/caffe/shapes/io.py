"""Input and data layers have no shape function: the plan turns them into net inputs
(``netinit.find_inputs``), as the builder does; they are registered so that the two registries agree."""
from __future__ import annotations

from converters.caffe.layers.io import INPUT_TYPES, not_a_module
from converters.caffe.shapes.base import LayerShapes, Shape, register


@register(*INPUT_TYPES)
def input_layer(layer, bottoms: list[Shape]) -> LayerShapes:
    raise not_a_module(layer)

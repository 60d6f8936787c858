"""Element-wise activations and Softmax: the top has the bottom's shape; PReLU holds one slope per channel
(axis 1), or one shared slope (a blob of shape ``()``)."""
from __future__ import annotations

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import canonical_axis
from converters.caffe.shapes.base import LayerShapes, Shape, one_bottom, register, same

register("ReLU", "Sigmoid", "TanH")(same)


def dropout_ratio(layer) -> float:
    ratio = layer.dropout_param.dropout_ratio
    if not 0.0 <= ratio < 1.0:
        raise layer_error(layer, f"dropout_ratio must be in [0, 1), found {ratio}")
    return float(ratio)


@register("Dropout")
def dropout(layer, bottoms: list[Shape]) -> LayerShapes:
    x = one_bottom(layer, bottoms)
    dropout_ratio(layer)
    return LayerShapes((x,))


def softmax_axis(layer, bottoms: list[Shape]) -> int:
    return canonical_axis(layer, layer.softmax_param.axis, len(one_bottom(layer, bottoms)))


@register("Softmax")
def softmax(layer, bottoms: list[Shape]) -> LayerShapes:
    softmax_axis(layer, bottoms)
    return LayerShapes((bottoms[0],))


def prelu_channels(layer, bottoms: list[Shape]) -> int:
    x = one_bottom(layer, bottoms)
    return int(x[1]) if len(x) >= 2 else 1


@register("PReLU")
def prelu(layer, bottoms: list[Shape]) -> LayerShapes:
    channels = prelu_channels(layer, bottoms)
    blob = () if layer.prelu_param.channel_shared else (channels,)
    return LayerShapes((bottoms[0],), (blob,))

"""Accuracy (a scalar top, and with a second top the per-class accuracy, one per class) and Silence
(no tops): training-only layers, kept by the phase nets only."""
from __future__ import annotations

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import canonical_axis
from converters.caffe.shapes.base import LayerShapes, Shape, register
from converters.caffe.shapes.loss import check_counts, check_labels


def accuracy_axis(layer, bottoms: list[Shape]) -> int:
    check_counts(layer, bottoms, 2, (1, 2))
    p = layer.accuracy_param
    x = bottoms[0]
    axis = canonical_axis(layer, p.axis, len(x), "accuracy_param.axis")
    if p.top_k > x[axis]:
        raise layer_error(layer, f"top_k must be at most the number of classes ({x[axis]}), found {p.top_k}")
    return axis


@register("Accuracy")
def accuracy(layer, bottoms: list[Shape]) -> LayerShapes:
    axis = accuracy_axis(layer, bottoms)
    check_labels(layer, bottoms, axis)
    return LayerShapes(((), (bottoms[0][axis],))[:len(layer.top)])


def silence_checks(layer) -> None:
    if layer.top:
        raise layer_error(layer, f"a Silence layer has no tops, found {list(layer.top)}")


@register("Silence")
def silence(layer, bottoms: list[Shape]) -> LayerShapes:
    silence_checks(layer)
    return LayerShapes(())

"""The loss layers (SoftmaxWithLoss, SigmoidCrossEntropyLoss, EuclideanLoss): two bottoms with the same
first dimension, a scalar top (shape ``()``); SoftmaxWithLoss's optional second top is the softmax, of
the predictions' shape. Only the phase nets keep them (the deploy plan drops training-only layers)."""
from __future__ import annotations

import math

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import canonical_axis
from converters.caffe.shapes.base import LayerShapes, Shape, register
from converters.errors import ConversionError


def check_counts(layer, bottoms: list, n_bottoms: int, tops: tuple[int, int]) -> None:
    if len(bottoms) != n_bottoms:
        raise layer_error(layer, f"expected {n_bottoms} bottoms, found {len(bottoms)}")
    if not tops[0] <= len(layer.top) <= tops[1]:
        want = str(tops[0]) if tops[0] == tops[1] else f"{tops[0]} or {tops[1]}"
        raise layer_error(layer, f"expected {want} top(s), found {len(layer.top)}")


def same_first_dim(layer, bottoms: list[Shape]) -> None:
    """``LossLayer::Reshape``: the data and label should have the same first dimension."""
    a, b = (tuple(s) for s in bottoms)
    if len(a) == 0 or len(b) == 0 or a[0] != b[0]:
        raise layer_error(layer, f"the two bottoms must have the same first dimension, found {a} and {b}")


def label_count_problem(x: Shape, labels: int, axis: int) -> str | None:
    """What is wrong with ``labels`` label values for predictions of shape ``x`` (one per position
    outside ``axis``), or None."""
    outer, inner = math.prod(x[:axis]), math.prod(x[axis + 1:])
    if labels != outer * inner:
        return (f"{labels} labels for predictions of shape {tuple(x)} (expected {outer * inner}: one per "
                f"position outside axis {axis})")
    return None


def check_labels(layer, bottoms: list[Shape], axis: int) -> None:
    """The check Caffe's loss and accuracy layers make of the label count when they first run."""
    problem = label_count_problem(bottoms[0], math.prod(bottoms[1]), axis)
    if problem:
        raise ConversionError(f"layer {layer.name!r} ({layer.type}): {problem}")


def softmax_loss_axis(layer, bottoms: list[Shape]) -> int:
    check_counts(layer, bottoms, 2, (1, 2))
    same_first_dim(layer, bottoms)
    return canonical_axis(layer, layer.softmax_param.axis, len(bottoms[0]), "softmax_param.axis")


@register("SoftmaxWithLoss")
def softmax_loss(layer, bottoms: list[Shape]) -> LayerShapes:
    axis = softmax_loss_axis(layer, bottoms)
    check_labels(layer, bottoms, axis)
    return LayerShapes(((), bottoms[0])[:len(layer.top)])


def sigmoid_cross_entropy_checks(layer, bottoms: list[Shape]) -> None:
    check_counts(layer, bottoms, 2, (1, 1))
    same_first_dim(layer, bottoms)


@register("SigmoidCrossEntropyLoss")
def sigmoid_cross_entropy_loss(layer, bottoms: list[Shape]) -> LayerShapes:
    sigmoid_cross_entropy_checks(layer, bottoms)
    x, target = bottoms
    if math.prod(x) != math.prod(target):
        raise ConversionError(f"layer {layer.name!r} ({layer.type}): inputs must have the same count, found "
                              f"{tuple(x)} and {tuple(target)}")
    return LayerShapes(((),))


def euclidean_checks(layer, bottoms: list[Shape]) -> None:
    check_counts(layer, bottoms, 2, (1, 1))
    same_first_dim(layer, bottoms)
    a, b = bottoms
    if math.prod(a) // a[0] != math.prod(b) // b[0]:
        raise layer_error(layer, f"inputs must have the same dimension, found {tuple(a)} and {tuple(b)}")


@register("EuclideanLoss")
def euclidean_loss(layer, bottoms: list[Shape]) -> LayerShapes:
    euclidean_checks(layer, bottoms)
    return LayerShapes(((),))

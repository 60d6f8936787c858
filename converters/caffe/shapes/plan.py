"""A net's every blob shape and parameter count without torch: the torch builder's ``plan_net`` (steps 1-4
of ``builder.py``) with a pure shape function per layer (``base.py``) in place of meta-device modules.

The same steps in the same order, with the same shared code (``netinit.py``): phase filtering, inputs
(legacy ``input`` fields, ``Input`` and data layers), training-only layers dropped (the warning
included), every type checked at once, then per layer its bottoms, its tops, its shapes and its
fillers (``Filler.check``, as the builder's meta initialization checks them). What it does not do is
the builder's memory guard, which measures each layer's torch temporaries: :meth:`ShapePlan.memory_bytes`
is an estimate of the same sum (parameters, every blob, the largest layer's temporaries), for a caller
to decide whether a net is near the limit where the guard's exact count matters.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.fillers import caffe_blob_fillers
from converters.caffe.netinit import (
    BuildReport,
    check_blobs,
    check_bottoms,
    check_tops,
    output_blobs,
    prepare,
)
from converters.caffe.shapes.base import LayerShapes, Shape, check_supported, layer_shapes
from converters.caffe.shapes.conv import conv_geometry
from converters.caffe.shapes.lrn import lrn_params

FLOAT_BYTES = 4


@dataclass(frozen=True)
class ShapeNode:
    """A layer of the plan: its graph (as ``LayerNode``), its top shapes and its Caffe blob shapes."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    top_shapes: tuple[Shape, ...]
    blob_shapes: tuple[Shape, ...]

    @property
    def params(self) -> int:
        return LayerShapes(self.top_shapes, self.blob_shapes).params


@dataclass
class ShapePlan:
    name: str  # the net's name, "net" when it has none (as CaffeNet names it)
    inputs: dict[str, Shape]
    input_layers: list[tuple[str, list[str]]]
    layers: list  # the kept LayerParameters, in order
    nodes: list[ShapeNode]
    shapes: dict[str, Shape]  # every blob, at its last producer
    report: BuildReport
    deploy_layers: list

    @property
    def outputs(self) -> list[str]:
        """The net's output blobs, as ``CaffeNet.outputs``."""
        return output_blobs(self.nodes)

    def blob_shapes(self) -> dict[str, list[Shape]]:
        """{layer: its Caffe blob shapes} of the layers that have blobs."""
        return {n.name: list(n.blob_shapes) for n in self.nodes if n.blob_shapes}

    def param_count(self) -> int:
        """Elements of all Caffe blobs (weights and biases) of the net (``NetPlan.param_count``)."""
        return sum(n.params for n in self.nodes)

    def check_blobs(self, blobs: Mapping, source: str) -> None:
        """Caffe's checks of trained ``blobs`` ({layer: arrays with a ``shape``}) against the definition,
        with the builder's messages (``netinit.check_blobs``); fills ``report.ignored``."""
        check_blobs(self.layers, self.blob_shapes(), blobs, source, self.report)

    def memory_bytes(self) -> int:
        """About what the builder's memory guard counts: every parameter and blob as float32, plus the
        largest layer's temporaries (its outputs, and a convolution's columns or an LRN's padded copy)."""
        blobs = sum(math.prod(s) for s in self.shapes.values())  # an in-place top replaces its blob
        shapes = dict(self.inputs)
        peak = 0
        for layer, node in zip(self.layers, self.nodes, strict=True):
            bottoms = [shapes[b] for b in node.bottoms]
            peak = max(peak, _temporaries(layer, node, bottoms))
            shapes.update(zip(node.tops, node.top_shapes, strict=True))
        return FLOAT_BYTES * (self.param_count() + blobs + peak)


def plan_shapes(net, blobs: Mapping | None = None, phase: str = "TEST", *,
                input_shapes: Mapping[str, Shape] | None = None, keep_training: bool = False) -> ShapePlan:
    """The shapes of ``net`` (a current-format ``NetParameter``) as ``builder.plan_net`` infers them, and
    the same errors for the same definitions (a shape the torch module would refuse is refused in this
    module's words). ``blobs`` only serves to read an open input channel count off the first
    convolution's weights (anything with a ``shape`` will do); check trained blobs with
    :meth:`ShapePlan.check_blobs`."""
    prepared = prepare(net, blobs, phase, input_shapes=input_shapes, keep_training=keep_training)
    layers = prepared.layers
    check_supported([(layer.name, layer.type) for layer in layers])
    shapes: dict[str, Shape] = dict(prepared.inputs)
    producer = {name: "an input" for name in prepared.inputs}
    nodes = []
    for layer in layers:
        check_bottoms(layer, shapes)
        check_tops(layer, producer)
        out = layer_shapes(layer, [shapes[b] for b in layer.bottom])
        if out.blobs:
            _check_fillers(layer, out.blobs)
        for name, shape in zip(layer.top, out.tops, strict=True):
            shapes[name] = shape
            producer[name] = f"layer {layer.name!r}"
        nodes.append(ShapeNode(layer.name, layer.type, tuple(layer.bottom), tuple(layer.top), out.tops,
                               out.blobs))
    return ShapePlan(net.name or "net", prepared.inputs, prepared.input_layers, layers, nodes, shapes,
                     prepared.report, prepared.deploy_layers)


def _check_fillers(layer, blobs: tuple[Shape, ...]) -> None:
    """The fillers Caffe would apply to the layer's blobs, checked as the builder checks them."""
    try:
        for filler, shape in zip(caffe_blob_fillers(layer), blobs, strict=True):
            filler.check(shape)
    except ValueError as e:
        raise layer_error(layer, " ".join(str(e).split())) from None


def _temporaries(layer, node: ShapeNode, bottoms: list[Shape]) -> int:
    """Elements a layer's torch forward allocates besides what it keeps, about (``footprint.py``): its
    outputs, a convolution's columns and padded input, an LRN's squared and padded copies."""
    out = sum(math.prod(s) for s in node.top_shapes)
    if layer.type in ("Convolution", "Deconvolution"):
        g = conv_geometry(layer, bottoms)
        (kh, kw), x, y = g.kernel, bottoms[0], node.top_shapes[0]
        if layer.type == "Deconvolution":
            return out + y[1] * kh * kw * x[2] * x[3]
        return out + x[1] * kh * kw * y[2] * y[3] + x[1] * (x[2] + 2 * g.pad[0]) * (x[3] + 2 * g.pad[1])
    if layer.type == "LRN":
        n, c, h, w = bottoms[0]
        size = int(layer.lrn_param.local_size)
        if lrn_params(layer, bottoms)[1] == "ACROSS_CHANNELS":
            return out + 2 * n * (c + size) * h * w
        return out + 2 * n * c * (h + size) * (w + size)
    return out

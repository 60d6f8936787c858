"""The part of Caffe's ``Net::Init`` that needs no torch: which layers a phase keeps, what the inputs
are, which layers are training-only, and whether a caffemodel's blobs fit the definition.

Both the torch builder (``builder.py``: modules on the meta device) and the torch-free shape inference
(``shapes/``: ``compress info``, ``compress zoo list``) start from :func:`prepare` and end with
:func:`check_blobs`, so they keep the same layers, inputs and messages:

1. Phase filtering: a layer's ``include``/``exclude`` rules are checked against the net state
   (phase, level, stages) exactly as Caffe's ``StateMeetsRule``.
2. Inputs: the legacy ``input`` + ``input_dim``/``input_shape`` fields, ``Input`` layers, and the
   data layers of train_val nets (``Data``, ``ImageData``, ``MemoryData``...), which give way to an
   input blob of the shape their parameters imply (``batch_size``, ``crop_size``, ...). A channel
   count the definition leaves open (images in an LMDB) is read off the first Convolution's weights;
   a shape that still cannot be known is an error asking for a deploy definition or ``input_shapes``.
3. Training-only layers (losses, ``Accuracy``, ``Silence``) and every layer fed by a label blob are
   dropped, with a warning naming them: the result is the deploy net.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import MAX_AXES
from converters.caffe.layers.io import DATA_TYPES, data_shape, input_param_shapes, label_shapes
from converters.caffe.names import listed, shown
from converters.errors import ConversionError

log = logging.getLogger("converters.caffe")

TRAINING_ONLY_TYPES = frozenset({"Accuracy", "Silence", "HDF5Output"})  # plus every "*Loss" type
_PHASES = {"TRAIN": 0, "TEST": 1}


@dataclass
class BuildReport:
    """What the builder did besides building: shown by the CLI, kept as ``CaffeNet.build_report``."""

    dropped: list[str] = field(default_factory=list)  # "loss (SoftmaxWithLoss)": training-only layers
    ignored: list[str] = field(default_factory=list)  # caffemodel layers with blobs the net lacks
    initialized: list[str] = field(default_factory=list)  # layers whose weights were initialized
    transform: dict = field(default_factory=dict)  # the data layer's transform_param, if any
    memory_bytes: int = 0  # parameters + blobs + the largest layer's temporaries, at the declared shapes


@dataclass
class Prepared:
    """Steps 1-3: the layers to build, in order, and the inputs they start from."""

    inputs: dict[str, tuple[int, ...]]
    input_layers: list[tuple[str, list[str]]]  # (layer name, tops) of the deploy net's input layers
    layers: list  # the kept LayerParameters, in order
    deploy_layers: list  # the layers of the deploy definition (``layers`` unless keep_training)
    report: BuildReport


def prepare(net, blobs: Mapping | None = None, phase: str = "TEST", *,
            input_shapes: Mapping[str, tuple[int, ...]] | None = None,
            keep_training: bool = False) -> Prepared:
    """Steps 1-3 for ``net`` (a current-format ``NetParameter``). ``blobs`` ({layer: arrays}, anything
    with a ``shape``) only serves to read an input's open channel count off the first convolution's
    weights. ``keep_training`` keeps the phase net itself (``phase.py``): every top of a data layer
    (the label too) is an input, and losses, ``Accuracy`` and the layers fed by labels stay."""
    report = BuildReport()
    layers = filter_phase(net, phase)
    check_unique_names(layers)
    inputs, input_layers, labels = find_inputs(net, layers, blobs, dict(input_shapes or {}), report,
                                               labels_as_inputs=keep_training)
    if keep_training:
        deploy_layers = drop_training_only(layers, labels, BuildReport())
        layers = [layer for layer in layers if layer.type != "Input" and layer.type not in DATA_TYPES]
    else:
        layers = deploy_layers = drop_training_only(layers, labels, report)
        if report.dropped:
            log.warning("dropped training-only layers: %s", ", ".join(report.dropped))
    return Prepared(inputs, input_layers, layers, deploy_layers, report)


# -- 1. phase filtering ----------------------------------------------------------------------------

def filter_phase(net, phase: str) -> list:
    """The layers of ``net`` whose include/exclude rules the net state of ``phase`` meets, in order."""
    if phase not in _PHASES:
        raise ConversionError(f"phase must be one of {', '.join(_PHASES)}, found {phase!r}")
    state_phase = _PHASES[phase]
    level = net.state.level if net.HasField("state") else 0
    stages = set(net.state.stage) if net.HasField("state") else set()
    kept = []
    for layer in net.layer:
        if layer.include and layer.exclude:
            raise layer_error(layer, "specify either include rules or exclude rules, not both (as Caffe "
                                     "requires)")
        if layer.include:
            ok = any(_meets(rule, state_phase, level, stages) for rule in layer.include)
        else:
            ok = not any(_meets(rule, state_phase, level, stages) for rule in layer.exclude)
        if ok:
            kept.append(layer)
    return kept


def _meets(rule, phase: int, level: int, stages: set[str]) -> bool:
    """Caffe's ``Net::StateMeetsRule``."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def check_unique_names(layers) -> None:
    seen: set[str] = set()
    for layer in layers:
        if not layer.name:
            raise ConversionError(f"a layer of type {shown(layer.type)} (tops {listed(layer.top)}) has no "
                                  "name; layers are matched to their weights by name")
        if layer.name in seen:
            raise layer_error(layer, "a second layer with this name in the same phase; names must be unique")
        seen.add(layer.name)


# -- 2. inputs -------------------------------------------------------------------------------------

def find_inputs(net, layers, blobs, overrides, report, labels_as_inputs=False):
    """(inputs {blob: shape}, deploy input layers [(layer name, tops)], label blobs). The tops after a
    data layer's first (its label) are inputs too with ``labels_as_inputs``, else only listed as labels."""
    shapes: dict[str, tuple[int | None, ...]] = {}
    where: dict[str, str] = {}
    input_layers: list[tuple[str, list[str]]] = []
    labels: set[str] = set()

    legacy = list(net.input)
    if legacy:
        if net.input_shape:
            if len(net.input_shape) != len(legacy):
                raise ConversionError(f"net {shown(net.name)}: {len(legacy)} input(s) {listed(legacy)} but "
                                      f"{len(net.input_shape)} input_shape(s)")
            dims = [tuple(int(d) for d in s.dim) for s in net.input_shape]
        else:
            if len(net.input_dim) != 4 * len(legacy):
                raise ConversionError(f"net {shown(net.name)}: {len(legacy)} input(s) {listed(legacy)} need "
                                      f"{4 * len(legacy)} input_dim values (4 each), "
                                      f"found {len(net.input_dim)}")
            dims = [tuple(int(d) for d in net.input_dim[4 * i:4 * i + 4]) for i in range(len(legacy))]
        for name, dim in zip(legacy, dims, strict=True):
            _declare(shapes, where, name, dim, f"the legacy input {shown(name)}")
        input_layers.append(("input", legacy))

    for layer in layers:
        if layer.type == "Input":
            for top, dim in zip(layer.top, input_param_shapes(layer), strict=True):
                _declare(shapes, where, top, dim, f"layer {shown(layer.name)} (Input) top {shown(top)}")
            input_layers.append((layer.name, list(layer.top)))
        elif layer.type in DATA_TYPES:
            if not layer.top:
                raise layer_error(layer, "a data layer without tops")
            top = layer.top[0]
            dim, origin = data_shape(layer)
            if top not in overrides and None in dim:
                dim = _infer_channels(layer, top, dim, layers, blobs)
            if top not in overrides and None in dim:
                known = "x".join("?" if d is None else str(d) for d in dim)
                raise layer_error(layer, f"the input shape cannot be known from the definition ({known}; "
                                         f"the data comes from {origin}); give a deploy prototxt with an "
                                         f"Input layer, or the input shape (input_shapes / --input-shape)")
            _declare(shapes, where, top, dim, f"layer {shown(layer.name)} ({layer.type}) top {shown(top)}")
            input_layers.append((layer.name, [top]))
            labels.update(layer.top[1:])
            if labels_as_inputs:
                for extra, extra_dim in zip(layer.top[1:], label_shapes(layer, dim[0]), strict=True):
                    if extra not in overrides and extra_dim is None:
                        raise layer_error(layer, f"the shape of top {shown(extra)} cannot be known from the "
                                                 f"definition; give it (input_shapes)")
                    shapes[extra] = extra_dim
                    where[extra] = f"layer {shown(layer.name)} ({layer.type}) top {shown(extra)}"
            if layer.HasField("transform_param") and not report.transform:
                t = layer.transform_param
                report.transform = {"scale": t.scale, "mean_value": list(t.mean_value),
                                    "mean_file": t.mean_file or None, "crop_size": t.crop_size}

    for name, dim in overrides.items():
        if name not in shapes:
            raise ConversionError(f"input shape given for {shown(name)}, but the net's inputs are "
                                  f"{listed(shapes)}")
        shapes[name], where[name] = tuple(int(d) for d in dim), f"the input shape given for {shown(name)}"
    if not shapes:
        raise ConversionError(f"net {shown(net.name)} declares no input: expected an Input layer, `input` "
                              "with `input_dim`/`input_shape`, or a data layer")
    for name, dim in shapes.items():
        if not dim or any(d is None or d <= 0 for d in dim):
            raise ConversionError(f"{where[name]}: every dimension of an input shape must be positive, "
                                  f"found [{listed(dim)}]")
        if len(dim) > MAX_AXES:
            raise ConversionError(f"{where[name]}: an input shape has at most {MAX_AXES} axes (Caffe's "
                                  f"kMaxBlobAxes), found {len(dim)}")
    return {k: tuple(v) for k, v in shapes.items()}, input_layers, labels


def _declare(shapes: dict, where: dict, blob: str, dim, what: str) -> None:
    """Record an input blob; a blob declared twice (a legacy ``input`` and an ``Input`` layer, two
    data layers) has two producers, which Caffe refuses."""
    if blob in shapes:
        raise ConversionError(f"{what}: blob {shown(blob)} is already declared by {where[blob]}; "
                              "an input is declared once")
    shapes[blob], where[blob] = dim, what


def _infer_channels(layer, top, dim, layers, blobs):
    """Fill an open channel count from the weights of the first Convolution reading ``top``."""
    if dim[1] is not None or not blobs:
        return dim
    for consumer in layers:
        if top in consumer.bottom and consumer.type == "Convolution" and blobs.get(consumer.name):
            w = blobs[consumer.name][0]
            if len(w.shape) == 4:
                channels = int(w.shape[1]) * max(int(consumer.convolution_param.group), 1)
                log.info("layer %r (%s): %d input channels, from the weights of %r", layer.name, layer.type,
                         channels, consumer.name)
                return (dim[0], channels, *dim[2:])
    return dim


# -- 3. training-only layers -----------------------------------------------------------------------

def drop_training_only(layers, labels: set[str], report: BuildReport) -> list:
    kept, tainted = [], set(labels)
    for layer in layers:
        if layer.type == "Input" or layer.type in DATA_TYPES:
            continue
        if (layer.type in TRAINING_ONLY_TYPES or layer.type.endswith("Loss")
                or any(b in tainted for b in layer.bottom)):
            report.dropped.append(f"{layer.name} ({layer.type})")
            tainted.update(layer.top)
            continue
        kept.append(layer)
    return kept


# -- the graph -------------------------------------------------------------------------------------

def check_bottoms(layer, shapes: Mapping[str, object]) -> None:
    """Every bottom of ``layer`` must be a blob produced before it (``shapes``: the known blobs)."""
    for b in layer.bottom:
        if b not in shapes:
            raise layer_error(layer, f"bottom blob {shown(b)} is not produced by any earlier layer or "
                                     f"input (known blobs: {listed(shapes)})")


def check_tops(layer, producer: dict[str, str]) -> None:
    """Caffe's ``Net::AppendTop``: a blob has one producer, unless a layer rewrites it in place, i.e.
    its top ``i`` is its own bottom ``i``."""
    for i, top in enumerate(layer.top):
        in_place = i < len(layer.bottom) and layer.bottom[i] == top
        if top in layer.top[:i]:
            raise layer_error(layer, f"top blob {shown(top)} is listed twice")
        if top in producer and not in_place:
            raise layer_error(layer, f"top blob {shown(top)} is already produced by {producer[top]}; a "
                                     f"blob has one producer (only an in-place layer, top {i} = bottom "
                                     f"{i}, may rewrite it)")


def check_top_count(layer, produced: int) -> None:
    if produced != len(layer.top):
        raise layer_error(layer, f"declares {len(layer.top)} top(s) {listed(layer.top)}, the converter "
                                 f"produced {produced}")


def output_blobs(nodes, inputs=()) -> list[str]:
    """Blobs produced and not consumed afterwards, in order of production (Caffe's net outputs);
    ``inputs`` that no layer consumes count too (Caffe's phase nets display an unused label).
    ``nodes``: anything with ``bottoms`` and ``tops`` (``LayerNode``)."""
    available: dict[str, None] = dict.fromkeys(inputs)
    for node in nodes:
        for b in node.bottoms:
            available.pop(b, None)
        for t in node.tops:
            available.pop(t, None)
            available[t] = None
    return list(available)


def numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def fmt_shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


# -- 5. weights ------------------------------------------------------------------------------------

def check_blobs(layers, expected: Mapping[str, list[tuple[int, ...]]], blobs: Mapping, source: str,
                report: BuildReport) -> None:
    """Caffe's ``CopyTrainedLayersFrom`` checks, before anything is adopted: blobs are matched by layer
    name; a count or shape mismatch is an error naming layer, blob, expected and found shapes (legacy
    4-D ``(1, 1, out, in)`` blobs are accepted as Caffe does); a definition layer with blobs but no
    weights in ``blobs`` is an error; ``blobs``' layers the definition lacks are ignored (listed in
    ``report.ignored``). ``expected``: {layer: blob shapes}; ``blobs``: {layer: arrays with a shape}."""
    missing = []
    for layer in layers:
        want = expected.get(layer.name, [])
        found = blobs.get(layer.name)
        if found is None:
            if want:
                missing.append(f"{layer.name} ({layer.type}: {len(want)} blob{'s' * (len(want) != 1)} "
                               f"{', '.join(fmt_shape(s) for s in want)})")
            continue
        if len(found) != len(want):
            raise layer_error(layer, f"expected {len(want)} blob{'s' * (len(want) != 1)}, {source} "
                                     f"has {len(found)}")
        for i, (shape, arr) in enumerate(zip(want, found, strict=True)):
            have = tuple(int(d) for d in arr.shape)
            if not same_blob_shape(tuple(shape), have):
                raise layer_error(layer, f"blob {i}: expected shape {fmt_shape(shape)} (from the "
                                         f"definition), {source} has {fmt_shape(have)}")
    if missing:
        raise ConversionError(f"{source} has no weights for layer{'s' * (len(missing) > 1)} "
                              f"{'; '.join(missing)} (is it the model of this definition?)")
    names = {layer.name for layer in layers}
    report.ignored = [name for name, b in blobs.items() if b and name not in names]
    if report.ignored:
        log.warning("ignored layers of %s that the definition lacks: %s", source, ", ".join(report.ignored))


def same_blob_shape(want: tuple[int, ...], have: tuple[int, ...]) -> bool:
    """Caffe's ``Blob::ShapeEquals``: legacy blobs of up to 4 axes compare as 4-D padded with ones."""
    if want == have:
        return True
    if len(want) <= 4 and len(have) <= 4:
        return (1,) * (4 - len(want)) + want == (1,) * (4 - len(have)) + have
    return False


# -- the deploy definition -------------------------------------------------------------------------

def deploy_netdef(net, plan) -> str:
    """The deploy prototxt text of ``plan`` (a :class:`Prepared` or anything with its ``input_layers``,
    ``inputs`` and ``deploy_layers``): its data inputs as ``Input`` layers of the planned shapes
    (labels are not inputs of a deploy net), then the layers that are not training-only."""
    layers = plan.layers if plan.deploy_layers is None else plan.deploy_layers
    return _netdef(net, plan.input_layers, plan.inputs, layers)


def _netdef(net, input_layers, inputs, layers) -> str:
    """Deploy prototxt text: inputs as ``Input`` layers, then the kept layers without blobs or rules."""
    from google.protobuf import text_format

    from converters.caffe.proto import caffe_pb2

    out = caffe_pb2.NetParameter()
    if net.name:
        out.name = net.name
    taken = {layer.name for layer in layers}
    for name, tops in input_layers:
        layer = out.layer.add()
        while name in taken:  # the legacy inputs' layer is called "input": keep names unique
            name = f"{name}_input"
        taken.add(name)
        layer.name = name
        layer.type = "Input"
        layer.top.extend(tops)
        for top in tops:
            layer.input_param.shape.add().dim.extend(inputs[top])
    for src in layers:
        layer = out.layer.add()
        layer.CopyFrom(src)
        for f in ("blobs", "include", "exclude", "phase", "loss_weight", "propagate_down"):
            layer.ClearField(f)
    return text_format.MessageToString(out)

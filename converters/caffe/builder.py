"""Build a :class:`CaffeNet` from a net definition (``NetParameter``) and, optionally, its blobs.

The steps follow Caffe's own ``Net::Init`` and ``Net::CopyTrainedLayersFrom``:

1. Phase filtering: a layer's ``include``/``exclude`` rules are checked against the net state
   (phase, level, stages) exactly as Caffe's ``StateMeetsRule``.
2. Inputs: the legacy ``input`` + ``input_dim``/``input_shape`` fields, ``Input`` layers, and the
   data layers of train_val nets (``Data``, ``ImageData``, ``MemoryData``...), which give way to an
   input blob of the shape their parameters imply (``batch_size``, ``crop_size``, ...). A channel
   count the definition leaves open (images in an LMDB) is read off the first Convolution's weights;
   a shape that still cannot be known is an error asking for a deploy definition or ``input_shapes``.
3. Training-only layers (losses, ``Accuracy``, ``Silence``) and every layer fed by a label blob are
   dropped, with a warning naming them: the result is the deploy net.
4. Every remaining type is checked at once (one error lists all unknown types), then each layer is
   built on the ``meta`` device and run on meta tensors for shape inference. The bytes of all
   parameters and blobs are added up as it goes; a net that would need more than the machine's
   memory is refused before anything is allocated.
5. Blobs are matched by layer name: caffemodel layers the definition lacks are ignored (and
   listed), a count or shape mismatch is an error naming layer, blob, expected and found shapes
   (legacy 4-D ``(1, 1, out, in)`` blobs are accepted as Caffe does), a definition layer with no
   weights in the caffemodel is an error. Loaded arrays are adopted as parameters without a copy.
   Without blobs, weights are initialized by each layer's ``reset_parameters``: Caffe's fillers
   where the prototxt names them, PyTorch's defaults otherwise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch
from torch import nn

from converters.caffe.footprint import allocated_bytes, workspace_bytes
from converters.caffe.layers.base import CaffeBlobs, builder_for, check_supported, layer_error
from converters.caffe.layers.common import MAX_AXES
from converters.caffe.layers.io import DATA_TYPES, data_shape, input_param_shapes, label_shapes
from converters.caffe.memory import Available, MemoryGuard, available_memory
from converters.caffe.names import listed, shown
from converters.caffe.net import CaffeNet, LayerNode
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


def build_net(net, blobs: dict | None = None, phase: str = "TEST", *,
              input_shapes: dict[str, tuple[int, ...]] | None = None,
              memory_limit: int | None = None, source: str = "the caffemodel") -> CaffeNet:
    """Build the deploy :class:`CaffeNet` of ``net`` (a current-format ``NetParameter``).

    ``blobs``: layer name -> list of arrays (numpy or torch) in Caffe layout, e.g.
    ``read_caffemodel(path).blobs``; ``None`` initializes the weights instead. ``input_shapes``
    overrides or completes input shapes by blob name. ``memory_limit`` (bytes) defaults to the memory
    this process can still allocate (``memory.available_memory``: RAM, cgroup and rlimits).
    ``source`` names the blobs' origin in error messages.
    """
    plan = plan_net(net, blobs, phase, input_shapes=input_shapes, memory_limit=memory_limit)
    _materialize(plan.layers, plan.modules, blobs, source, plan.report)
    result = CaffeNet(net.name or "net", plan.inputs, plan.nodes, plan.modules, output_blobs(plan.nodes),
                      deploy_netdef(net, plan))
    result.blob_shapes = plan.shapes
    result.build_report = plan.report
    return result.eval()


@dataclass
class NetPlan:
    """Steps 1-4 of the build: the deploy layers, their modules on the meta device, every blob's shape."""

    inputs: dict[str, tuple[int, ...]]
    input_layers: list[tuple[str, list[str]]]
    layers: list  # the kept LayerParameters, in order
    modules: dict[str, nn.Module]  # on the meta device
    nodes: list[LayerNode]
    shapes: dict[str, tuple[int, ...]]
    report: BuildReport
    deploy_layers: list | None = None  # the layers of the deploy definition (``layers`` unless keep_training)

    def param_count(self) -> int:
        """Elements of all Caffe blobs (weights and biases) of the net."""
        return sum(_numel(s) for m in self.modules.values() if isinstance(m, CaffeBlobs)
                   for s in m.caffe_blob_shapes())


def plan_net(net, blobs: dict | None = None, phase: str = "TEST", *,
             input_shapes: dict[str, tuple[int, ...]] | None = None,
             memory_limit: int | None = None, keep_training: bool = False) -> NetPlan:
    """Everything :func:`build_net` knows before allocating weights (no memory used beyond the proto).
    ``blobs`` only serves to read an input's channel count off the first convolution's weights, and
    marks the layers whose weights are already in memory (the guard does not count them again).

    ``keep_training`` plans the phase net itself (``converters/caffe/phase.py``) instead of the deploy
    net: every top of a data layer (the label too) is an input, and losses, ``Accuracy`` and the
    layers fed by labels stay."""
    report = BuildReport()
    layers = _filter_phase(net, phase)
    _check_unique_names(layers)
    inputs, input_layers, labels = _inputs(net, layers, blobs, dict(input_shapes or {}), report,
                                           labels_as_inputs=keep_training)
    if keep_training:
        deploy_layers = _drop_training_only(layers, labels, BuildReport())
        layers = [layer for layer in layers if layer.type != "Input" and layer.type not in DATA_TYPES]
    else:
        layers = deploy_layers = _drop_training_only(layers, labels, report)
        if report.dropped:
            log.warning("dropped training-only layers: %s", ", ".join(report.dropped))
    check_supported([(layer.name, layer.type) for layer in layers])
    limit = (Available(memory_limit, "the memory limit given") if memory_limit is not None
             else available_memory())
    modules, shapes, nodes = _infer(layers, inputs, limit, set(blobs or ()), report)
    return NetPlan(inputs, input_layers, layers, modules, nodes, shapes, report, deploy_layers)


# -- 1. phase filtering ----------------------------------------------------------------------------

def _filter_phase(net, phase: str) -> list:
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


def _check_unique_names(layers) -> None:
    seen: set[str] = set()
    for layer in layers:
        if not layer.name:
            raise ConversionError(f"a layer of type {shown(layer.type)} (tops {listed(layer.top)}) has no "
                                  "name; layers are matched to their weights by name")
        if layer.name in seen:
            raise layer_error(layer, "a second layer with this name in the same phase; names must be unique")
        seen.add(layer.name)


# -- 2. inputs -------------------------------------------------------------------------------------

def _inputs(net, layers, blobs, overrides, report, labels_as_inputs=False):
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

def _drop_training_only(layers, labels: set[str], report: BuildReport) -> list:
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


# -- 4. shape inference and the memory guard -------------------------------------------------------

def _infer(layers, inputs, limit: Available, loaded: set[str], report: BuildReport):
    """Build every layer on the meta device, infer every blob's shape, and refuse a net whose load
    and forward pass would not fit in ``limit``. The count follows the forward pass: parameters (but
    not those of ``loaded`` layers, already in memory), every blob (the executor keeps them all), and
    at each layer what its forward pass or weight initialization allocates on top of that."""
    shapes: dict[str, tuple[int, ...]] = {}
    producer: dict[str, str] = {name: "an input" for name in inputs}
    alive: dict[str, int] = {}
    guard = MemoryGuard(limit)
    for name, shape in inputs.items():
        shapes[name] = shape
        alive[name] = _numel(shape) * 4
        guard.add(alive[name], f"input blob {shown(name)} {_fmt_shape(shape)}")
    modules: dict[str, nn.Module] = {}
    nodes: list[LayerNode] = []
    peak = guard.total
    for layer in layers:
        for b in layer.bottom:
            if b not in shapes:
                raise layer_error(layer, f"bottom blob {shown(b)} is not produced by any earlier layer or "
                                         f"input (known blobs: {listed(shapes)})")
        _check_tops(layer, producer)
        bottoms = [torch.empty(shapes[b], device="meta") for b in layer.bottom]
        module, tops, forward_bytes, init_bytes = _build_one(layer, bottoms)
        what = f"layer {shown(layer.name)} ({layer.type})"
        nbytes = sum(t.numel() * t.element_size() for t in chain(module.parameters(), module.buffers()))
        if nbytes and layer.name not in loaded:
            guard.add(nbytes, f"the parameters of {what}")
            guard.check(init_bytes, f"the weight initialization of {what}", transient=True)
        guard.check(forward_bytes, f"the forward pass of {what}", transient=True)
        peak = max(peak, guard.total + forward_bytes + (nbytes if layer.name in loaded else 0))
        for name, t in zip(layer.top, tops, strict=True):
            size = t.numel() * t.element_size()
            guard.add(size - alive.get(name, 0), f"blob {shown(name)} {_fmt_shape(t.shape)} ({what})")
            alive[name] = size
            shapes[name] = tuple(t.shape)
            producer[name] = f"layer {shown(layer.name)}"
        modules[layer.name] = module
        nodes.append(LayerNode(layer.name, layer.type, tuple(layer.bottom), tuple(layer.top)))
    report.memory_bytes = max(peak, guard.total)
    return modules, shapes, nodes


def _check_tops(layer, producer: dict[str, str]) -> None:
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


def _build_one(layer, bottoms):
    """(module on the meta device, its tops, bytes its forward allocates, bytes its weight
    initialization allocates). Fillers are checked here, by initializing the meta module."""
    shown_shapes = ", ".join(_fmt_shape(b.shape) for b in bottoms) or "none"
    try:
        with torch.device("meta"):
            module = builder_for(layer.type)(layer, bottoms)
            with torch.no_grad():
                out, forward_bytes = allocated_bytes(lambda: module(*bottoms))
    except ConversionError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError, OverflowError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise layer_error(layer, f"cannot be built for bottom shape(s) {shown_shapes}: {msg}") from None
    tops = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    if len(tops) != len(layer.top):
        raise layer_error(layer, f"declares {len(layer.top)} top(s) {listed(layer.top)}, the converter "
                                 f"produced {len(tops)}")
    try:
        with torch.device("meta"), torch.no_grad():
            _, init_bytes = allocated_bytes(lambda: _reset(module))
    except ValueError as e:  # a filler Caffe refuses (type, std, min/max, shape)
        raise layer_error(layer, " ".join(str(e).split())) from None
    return module, tops, forward_bytes + workspace_bytes(module, bottoms, tops), init_bytes


def _numel(shape) -> int:
    return int(np.prod([int(d) for d in shape], dtype=object)) if len(shape) else 1


def _fmt_shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape) if len(shape) else "scalar"


def output_blobs(nodes: list[LayerNode], inputs=()) -> list[str]:
    """Blobs produced and not consumed afterwards, in order of production (Caffe's net outputs);
    ``inputs`` that no layer consumes count too (Caffe's phase nets display an unused label)."""
    available: dict[str, None] = dict.fromkeys(inputs)
    for node in nodes:
        for b in node.bottoms:
            available.pop(b, None)
        for t in node.tops:
            available.pop(t, None)
            available[t] = None
    return list(available)


# -- 5. weights ------------------------------------------------------------------------------------

def _materialize(layers, modules, blobs, source: str, report: BuildReport) -> None:
    missing = []
    for layer in layers:
        module = modules[layer.name]
        expected = [tuple(s) for s in module.caffe_blob_shapes()] if isinstance(module, CaffeBlobs) else []
        found = blobs.get(layer.name) if blobs is not None else None
        if blobs is None or (found is None and not expected):
            if expected:
                report.initialized.append(layer.name)
            _initialize(module)
            continue
        if found is None:
            missing.append(f"{layer.name} ({layer.type}: {len(expected)} blob{'s' * (len(expected) != 1)} "
                           f"{', '.join(_fmt_shape(s) for s in expected)})")
            continue
        if len(found) != len(expected):
            raise layer_error(layer, f"expected {len(expected)} blob{'s' * (len(expected) != 1)}, {source} "
                                     f"has {len(found)}")
        tensors = []
        for i, (want, arr) in enumerate(zip(expected, found, strict=True)):
            have = tuple(int(d) for d in arr.shape)
            if not same_blob_shape(want, have):
                raise layer_error(layer, f"blob {i}: expected shape {_fmt_shape(want)} (from the "
                                         f"definition), {source} has {_fmt_shape(have)}")
            tensors.append(_adopt(arr).reshape(want))
            bad = nonfinite(tensors[-1])
            if bad:
                raise layer_error(layer, f"blob {i}: {bad} in {source}")
        module.set_caffe_blobs(tensors)
        if _has_meta(module):  # the module copies instead of adopting: give it memory, set again
            module.to_empty(device="cpu")
            module.set_caffe_blobs(tensors)
    if missing:
        raise ConversionError(f"{source} has no weights for layer{'s' * (len(missing) > 1)} "
                              f"{'; '.join(missing)} (is it the model of this definition?)")
    if blobs is not None:
        names = {layer.name for layer in layers}
        report.ignored = [name for name, b in blobs.items() if b and name not in names]
        if report.ignored:
            log.warning("ignored layers of %s that the definition lacks: %s", source,
                        ", ".join(report.ignored))


def same_blob_shape(want: tuple[int, ...], have: tuple[int, ...]) -> bool:
    """Caffe's ``Blob::ShapeEquals``: legacy blobs of up to 4 axes compare as 4-D padded with ones."""
    if want == have:
        return True
    if len(want) <= 4 and len(have) <= 4:
        return (1,) * (4 - len(want)) + want == (1,) * (4 - len(have)) + have
    return False


def nonfinite(t: torch.Tensor) -> str | None:
    """What is wrong with a parameter blob holding NaN or infinity (a damaged or diverged model, whose
    every output would be meaningless), or None when every value is finite."""
    bad = t.numel() - int(torch.isfinite(t).sum())
    if not bad:
        return None
    return f"{bad:,} of {t.numel():,} values are NaN or infinite (a model's parameters must be finite)"


def _adopt(arr) -> torch.Tensor:
    """A float32 CPU tensor sharing ``arr``'s memory where possible (no copy for reader output)."""
    if isinstance(arr, torch.Tensor):
        return arr.detach().to(device="cpu", dtype=torch.float32)
    arr = np.asarray(arr)
    if arr.dtype != np.float32 or not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = np.array(arr, dtype=np.float32, order="C")
    return torch.from_numpy(arr)


def _has_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in chain(module.parameters(), module.buffers()))


def _initialize(module: nn.Module) -> None:
    """Allocate a meta-built module on the CPU and initialize it (fillers or PyTorch defaults)."""
    if not _has_meta(module):
        return
    module.to_empty(device="cpu")
    with torch.no_grad():
        for t in chain(module.parameters(), module.buffers()):
            t.zero_()
    _reset(module)


def _reset(module: nn.Module) -> None:
    # The outermost reset wins: a converter's own reset_parameters applies Caffe's fillers, and
    # resetting its children after it would overwrite them with PyTorch's defaults.
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for child in module.children():
        _reset(child)


# -- the deploy definition -------------------------------------------------------------------------

def deploy_netdef(net, plan: NetPlan) -> str:
    """The deploy prototxt text of ``plan``: its data inputs as ``Input`` layers of the planned shapes
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

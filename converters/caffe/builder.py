"""Build a :class:`CaffeNet` from a net definition (``NetParameter``) and, optionally, its blobs.

The steps follow Caffe's own ``Net::Init`` and ``Net::CopyTrainedLayersFrom``; 1-3 and the checks of 5
need no torch and live in ``netinit.py`` (the torch-free shape inference of ``shapes/`` shares them):

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
   memory is refused before anything is allocated. When the torch-free shape functions (``shapes/``)
   accept every layer and estimate the net at under half the memory available, their shapes are used
   and the meta pass is skipped: running modules on meta tensors imports torch's symbolic-shape and
   compiler packages (sympy, dynamo: 1-2 s of every command that builds a net), and the guard's exact
   count cannot refuse such a net. Otherwise (an error to word, a net near the limit) the meta pass
   decides, as before.
5. Blobs are matched by layer name: caffemodel layers the definition lacks are ignored (and
   listed), a count or shape mismatch is an error naming layer, blob, expected and found shapes
   (legacy 4-D ``(1, 1, out, in)`` blobs are accepted as Caffe does), a definition layer with no
   weights in the caffemodel is an error. Loaded arrays are adopted as parameters without a copy.
   Without blobs, weights are initialized by each layer's ``reset_parameters``: Caffe's fillers
   where the prototxt names them, PyTorch's defaults otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
from torch import nn

from converters.caffe.footprint import allocated_bytes, workspace_bytes
from converters.caffe.layers.base import CaffeBlobs, builder_for, check_supported, layer_error
from converters.caffe.memory import Available, MemoryGuard, available_memory
from converters.caffe.names import shown
from converters.caffe.net import CaffeNet, LayerNode
from converters.caffe.netinit import (  # noqa: F401  (same_blob_shape, deploy_netdef: re-exported)
    BuildReport,
    check_blobs,
    check_bottoms,
    check_top_count,
    check_tops,
    deploy_netdef,
    fmt_shape,
    numel,
    output_blobs,
    prepare,
    same_blob_shape,
)
from converters.errors import ConversionError


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
        return sum(numel(s) for m in self.modules.values() if isinstance(m, CaffeBlobs)
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
    prepared = prepare(net, blobs, phase, input_shapes=input_shapes, keep_training=keep_training)
    inputs, input_layers, layers = prepared.inputs, prepared.input_layers, prepared.layers
    deploy_layers, report = prepared.deploy_layers, prepared.report
    check_supported([(layer.name, layer.type) for layer in layers])
    limit = (Available(memory_limit, "the memory limit given") if memory_limit is not None
             else available_memory())
    known = _known_shapes(prepared, net.name, limit)
    modules, shapes, nodes = _infer(layers, inputs, limit, set(blobs or ()), report, known)
    return NetPlan(inputs, input_layers, layers, modules, nodes, shapes, report, deploy_layers)


# -- 4. shape inference and the memory guard -------------------------------------------------------

def _known_shapes(prepared, name: str, limit: Available) -> dict[str, tuple] | None:
    """{layer: its top shapes} from the torch-free shape functions, when they accept every layer (and its
    fillers) and the net's estimated footprint is under half of ``limit``; else None."""
    from converters.caffe.shapes.base import layer_shapes
    from converters.caffe.shapes.plan import ShapeNode, ShapePlan, _check_fillers

    shapes, nodes = dict(prepared.inputs), []
    try:
        for layer in prepared.layers:
            out = layer_shapes(layer, [shapes[b] for b in layer.bottom])
            if out.blobs:
                _check_fillers(layer, out.blobs)
            shapes.update(zip(layer.top, out.tops, strict=True))
            nodes.append(ShapeNode(layer.name, layer.type, tuple(layer.bottom), tuple(layer.top), out.tops,
                                   out.blobs))
    except (ConversionError, KeyError):  # the meta pass words the error
        return None
    plan = ShapePlan(name or "net", prepared.inputs, prepared.input_layers, prepared.layers, nodes, shapes,
                     prepared.report, prepared.deploy_layers)
    estimate = plan.memory_bytes()
    if 2 * estimate > limit.nbytes:
        return None
    prepared.report.memory_bytes = estimate
    return {node.name: node.top_shapes for node in nodes}


def _infer(layers, inputs, limit: Available, loaded: set[str], report: BuildReport,
           known: dict[str, tuple] | None = None):
    """Build every layer on the meta device, infer every blob's shape, and refuse a net whose load
    and forward pass would not fit in ``limit``. The count follows the forward pass: parameters (but
    not those of ``loaded`` layers, already in memory), every blob (the executor keeps them all), and
    at each layer what its forward pass or weight initialization allocates on top of that. ``known``:
    every layer's top shapes (:func:`_known_shapes`), so that no layer runs on meta tensors."""
    shapes: dict[str, tuple[int, ...]] = {}
    producer: dict[str, str] = {name: "an input" for name in inputs}
    alive: dict[str, int] = {}
    guard = MemoryGuard(limit)
    for name, shape in inputs.items():
        shapes[name] = shape
        alive[name] = numel(shape) * 4
        guard.add(alive[name], f"input blob {shown(name)} {fmt_shape(shape)}")
    modules: dict[str, nn.Module] = {}
    nodes: list[LayerNode] = []
    peak = guard.total
    for layer in layers:
        check_bottoms(layer, shapes)
        check_tops(layer, producer)
        bottoms = [torch.empty(shapes[b], device="meta") for b in layer.bottom]
        if known is not None:
            module, tops, forward_bytes, init_bytes = _build_known(layer, bottoms, known[layer.name])
        else:
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
            guard.add(size - alive.get(name, 0), f"blob {shown(name)} {fmt_shape(t.shape)} ({what})")
            alive[name] = size
            shapes[name] = tuple(t.shape)
            producer[name] = f"layer {shown(layer.name)}"
        modules[layer.name] = module
        nodes.append(LayerNode(layer.name, layer.type, tuple(layer.bottom), tuple(layer.top)))
    if known is None:
        report.memory_bytes = max(peak, guard.total)
    return modules, shapes, nodes


def _build_known(layer, bottoms, top_shapes):
    """``_build_one`` for a layer whose top shapes are known: the module built on the meta device, the
    tops as meta tensors; nothing runs (the estimate counted the temporaries)."""
    with torch.device("meta"):
        module = builder_for(layer.type)(layer, bottoms)
    return module, [torch.empty(s, device="meta") for s in top_shapes], 0, 0


def _build_one(layer, bottoms):
    """(module on the meta device, its tops, bytes its forward allocates, bytes its weight
    initialization allocates). Fillers are checked here, by initializing the meta module."""
    shown_shapes = ", ".join(fmt_shape(b.shape) for b in bottoms) or "none"
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
    check_top_count(layer, len(tops))
    try:
        with torch.device("meta"), torch.no_grad():
            _, init_bytes = allocated_bytes(lambda: _reset(module))
    except ValueError as e:  # a filler Caffe refuses (type, std, min/max, shape)
        raise layer_error(layer, " ".join(str(e).split())) from None
    return module, tops, forward_bytes + workspace_bytes(module, bottoms, tops), init_bytes


# -- 5. weights ------------------------------------------------------------------------------------

def _materialize(layers, modules, blobs, source: str, report: BuildReport) -> None:
    expected = {layer.name: ([tuple(s) for s in modules[layer.name].caffe_blob_shapes()]
                             if isinstance(modules[layer.name], CaffeBlobs) else []) for layer in layers}
    if blobs is not None:
        check_blobs(layers, expected, blobs, source, report)
    for layer in layers:
        module = modules[layer.name]
        found = blobs.get(layer.name) if blobs is not None else None
        if found is None:  # no blobs given, or a layer without blobs (check_blobs refused the others)
            if blobs is None and expected[layer.name]:
                report.initialized.append(layer.name)
            _initialize(module)
            continue
        tensors = [_adopt(arr).reshape(want) for want, arr in zip(expected[layer.name], found, strict=True)]
        for i, t in enumerate(tensors):
            bad = nonfinite(t)
            if bad:
                raise layer_error(layer, f"blob {i}: {bad} in {source}")
        module.set_caffe_blobs(tensors)
        if _has_meta(module):  # the module copies instead of adopting: give it memory, set again
            to_cpu(module)
            module.set_caffe_blobs(tensors)


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


def to_cpu(module: nn.Module) -> None:
    """``module.to_empty(device="cpu")``: fresh CPU memory, uninitialized, of each tensor's size and strides.
    ``to_empty`` goes through ``torch.empty_like``, whose meta-tensor path is Python that imports torch's
    symbolic-shape package (sympy, about a second); ``empty_strided`` allocates directly."""
    module._apply(lambda t: torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="cpu"))


def _has_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in chain(module.parameters(), module.buffers()))


def _initialize(module: nn.Module) -> None:
    """Allocate a meta-built module on the CPU and initialize it (fillers or PyTorch defaults)."""
    if not _has_meta(module):
        return
    to_cpu(module)
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

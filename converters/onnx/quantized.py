"""Export a quantized CaffeNet to ONNX with its weights stored as packed integers.

The net holds dequantized weights (``q * s``, float32, exactly on each layer's grid). The export is the
ordinary one (:func:`converters.onnx.export.to_onnx_model`: Caffe names, native LRN, metadata), raised
to the opset the storage types need, after which every quantized ``<layer>.weight`` initializer is
replaced by integers and a few nodes that rebuild the same float tensor under the same name:

- dense: ``<layer>.weight_q`` (INT2/INT4/INT8 codes, the weight's shape) and ``<layer>.weight_scale``
  (float32, one per slice along axis 0, or a scalar) into ``DequantizeLinear(axis=0)``;
- sparse (:mod:`converters.onnx.lowbit`): ``<layer>.weight_q`` (the nonzero codes and fillers, 1-D),
  ``<layer>.weight_skip`` (UINT2/UINT4/UINT8 skip counts), ``<layer>.weight_scale`` and
  ``<layer>.weight_shape`` into one ``compress.SparseDequantize`` node, a model-local ONNX function
  (written once; onnxruntime inlines it): positions ``CumSum(skip + 1) - 1``, each entry's scale
  ``Gather(scale, position // slice)``, the codes dequantized with those scales (``Cast`` and ``Mul``,
  which onnxruntime folds at load, see :func:`sparse_dequantize_function`), ``ScatterElements`` into
  ``ConstantOfShape`` zeros, ``Reshape`` to the weight's shape.

Either way the only float tensors left in the file are the biases, the scales and any layer that was not
quantized; the graph computes ``q * s`` in float32, the very values the PyTorch model holds,
so onnxruntime and PyTorch agree to the rounding of the convolutions themselves. The codes are
recovered from the weights (``round(w / s)``) and the product is checked bit for bit before anything is
written: a weight that is not on its grid is an error, never silently re-rounded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters.atomic import atomic_write_bytes, check_output_path
from converters.caffe.names import shown
from converters.errors import ConversionError
from converters.onnx import lowbit
from converters.onnx.export import ExportResult, metadata_props, to_onnx_model
from converters.onnx.lrn import rewrite_lrn

TORCH_OPSET = 20  # what the TorchScript exporter writes; higher opsets are reached by onnx's converter


@dataclass(frozen=True)
class WeightGrid:
    """A layer's grid as plain data: ``bits`` and float32 ``scales`` (length 1: per tensor; else one per
    slice along axis 0 of the weight), zero point 0."""

    bits: int
    scales: np.ndarray

    def scale_for(self, shape: tuple[int, ...]) -> np.ndarray:
        s = np.asarray(self.scales, dtype=np.float32).reshape(-1)
        return s.reshape(()) if s.size == 1 else s.reshape((-1,) + (1,) * (len(shape) - 1))


@dataclass(frozen=True)
class QuantExportResult(ExportResult):
    layers: dict[str, lowbit.Encoding] = field(default_factory=dict)  # Caffe layer -> how it is stored
    opset: int = 0
    forms: dict[str, object] = field(default_factory=dict)  # Caffe layer -> its run-time fast.Form


def required_opset(grids: dict[str, WeightGrid]) -> int:
    """The lowest opset whose DequantizeLinear and Cast take every layer's storage type."""
    return max([TORCH_OPSET] + [lowbit.weight_storage(g.bits).min_opset for g in grids.values()])


def export_quantized_onnx(net, path: str | Path, grids: dict[str, WeightGrid], *, meta: dict | None = None,
                          opset: int | None = None, sparse: bool = True, batch_size: int = 1,
                          dynamic_batch: bool = True, form: str = "fast",
                          lrn: str = "native") -> QuantExportResult:
    """Export ``net`` (a CaffeNet holding dequantized weights) with the weights of ``grids`` (keyed by
    Caffe layer name) stored as packed integers, dense or sparse, whichever is smaller; ``form`` says how
    they run (:func:`quantize_initializers`), ``lrn`` how an LRN is written (:func:`converters.onnx.lrn.
    rewrite_lrn`)."""
    path = check_output_path(path)
    need = required_opset(grids)
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        opset = need
    elif opset < need:
        widths = sorted({g.bits for g in grids.values() if lowbit.weight_storage(g.bits).min_opset > opset})
        raise ConversionError(f"opset {opset} is too old for {'/'.join(map(str, widths))}-bit weights: "
                              f"their packed type (and DequantizeLinear of it) needs opset {need}")
    if opset > newest:
        raise ConversionError(f"opset {opset} is newer than this onnx ({onnx.__version__}) knows ({newest})")
    model, notes = to_onnx_model(net, opset=min(opset, TORCH_OPSET), batch_size=batch_size,
                                 dynamic_batch=dynamic_batch)
    if opset > TORCH_OPSET:
        model = _raise_opset(model, opset)
    dense_bytes = model.ByteSize()
    notes = [*notes, *rewrite_lrn(model, lrn)]
    stored = quantize_initializers(model, grids, opset, sparse=sparse, form=form)
    layers = {name: enc for name, (enc, _) in stored.items()}
    forms = {name: f for name, (_, f) in stored.items()}
    del model.graph.value_info[:]  # the exporter's intermediate shapes: hints onnxruntime re-derives
    props = metadata_props(net, meta or {}, notes)
    props["quantization"] = json.dumps({name: f"{grids[name].bits}-bit {enc.kind}"
                                        for name, enc in layers.items()}, separators=(",", ":"))
    props["runtime_form"] = json.dumps({name: f.kind for name, f in forms.items()}, separators=(",", ":"))
    helper.set_model_props(model, props)
    standard = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(standard))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise ConversionError(f"{net.name}: quantized ONNX fails onnx.checker: {first}") from None
    data = model.SerializeToString()
    atomic_write_bytes(path, data)
    notes = [*notes, *(f"{n}.weight: {grids[n].bits}-bit, {e.describe()}, {e.payload_bytes} B; "
                       f"{forms[n].describe()}" for n, e in layers.items())]
    return QuantExportResult(str(path), len(data), dense_bytes, (), props, tuple(notes), layers, opset, forms)


def _raise_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        first = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise ConversionError(f"cannot raise the exported graph to opset {opset}: {first}") from None


def quantize_initializers(model: onnx.ModelProto, grids: dict[str, WeightGrid], opset: int, *,
                          sparse: bool = True, form: str = "fast") -> dict[str, tuple]:
    """Replace each ``<layer>.weight`` initializer of ``grids`` by packed codes and decoding nodes
    (in place, decoding nodes first in the graph); returns each layer's ``(encoding, run-time form)``.
    ``form`` "fast": the run-time forms of :mod:`converters.onnx.fast` (decoded at load; MatMulNBits for
    large low-bit InnerProducts), "pack": dense codes through ``DequantizeLinear`` (which onnxruntime
    dequantizes at every run)."""
    from converters.onnx import fast

    if form not in FORMS:
        raise ConversionError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for v in n.input:
            readers.setdefault(v, []).append(n)
    nodes: list[onnx.NodeProto] = []
    added: list[TensorProto] = []
    replaced: dict[str, list[onnx.NodeProto]] = {}  # node name -> the nodes that take its place
    out: dict[str, lowbit.Encoding] = {}
    forms: dict[str, fast.Form] = {}
    functions: set[str] = set()
    for layer, grid in grids.items():
        name = f"{layer}.weight"
        if name not in inits:
            raise ConversionError(f"layer {shown(layer)}: no initializer {shown(name)} in the exported graph")
        w = numpy_helper.to_array(inits[name])
        codes = grid_codes(w, grid, layer)
        enc = lowbit.choose_encoding(codes, grid.bits, opset, sparse=sparse)
        users = readers.get(name, [])
        gemm = users[0] if len(users) == 1 and list(users[0].input[1:2]) == [name] else None
        f = fast.choose_form(layer, grid.bits, codes.shape, gemm) if form == "fast" else \
            fast.Form("dequantize", "DequantizeLinear at every run") if enc.kind == "dense" else \
            fast.Form("float", "decoded to float32 at load")
        if f.kind == "nbits":
            new_inits, new_nodes, matmul = fast.nbits_layer(gemm, name, codes, grid.bits, grid.scales,
                                                            enc.index_bits if enc.kind == "sparse" else None)
            replaced[gemm.name] = [matmul]
        elif enc.kind == "sparse":
            new_inits, new_nodes = _sparse(name, codes, grid, enc)
            functions.add(SPARSE_OP)
        elif f.kind == "dequantize":
            new_inits, new_nodes = _dense(name, codes, grid, enc)
        else:
            q = lowbit.pack(codes, lowbit.weight_storage(grid.bits), f"{name}_q")
            scale_inits, new_nodes = fast.float_weight(name, q, grid.scales, codes.ndim)
            new_inits = [q, *scale_inits]
        added.extend(new_inits)
        nodes.extend(new_nodes)
        out[layer] = enc
        forms[layer] = f
    kept = [i for i in graph.initializer if not (i.name.endswith(".weight") and i.name[:-7] in out)]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    existing = [m for n in graph.node for m in replaced.get(n.name, [n])]
    del graph.node[:]
    graph.node.extend(nodes + existing)
    if SPARSE_OP in functions:
        model.functions.append(sparse_dequantize_function(opset))
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    if any(f.kind == "nbits" for f in forms.values()):
        model.opset_import.append(helper.make_opsetid(fast.MS_DOMAIN, 1))
    return {layer: (enc, forms[layer]) for layer, enc in out.items()}


FORMS = ("fast", "pack")


def grid_codes(w: np.ndarray, grid: WeightGrid, layer: str) -> np.ndarray:
    """The integer codes of ``w`` on ``grid``, checked: ``float32(q) * s`` must give ``w`` bit for bit."""
    s = grid.scale_for(w.shape)
    n = np.asarray(grid.scales).size
    if n != 1 and (w.ndim == 0 or w.shape[0] != n):
        raise ConversionError(f"layer {shown(layer)}: {n} scales do not fit a weight of shape "
                              f"{list(w.shape)}")
    levels = (1 << (grid.bits - 1)) - 1
    q = np.rint(w.astype(np.float64) / s.astype(np.float64))
    back = q.astype(np.float32) * s
    bad = int(np.count_nonzero((back != w) | (np.abs(q) > levels)))
    if bad:
        raise ConversionError(f"layer {shown(layer)}: {bad} of {w.size} weights are not on the "
                              f"{grid.bits}-bit grid of their scales (the weights must be the dequantized "
                              "values q * s)")
    return q.astype(np.int64)


def _dense(name: str, codes: np.ndarray, grid: WeightGrid, enc: lowbit.Encoding):
    q = lowbit.pack(codes, lowbit.weight_storage(grid.bits), f"{name}_q")
    s = np.asarray(grid.scales, dtype=np.float32).reshape(-1)
    scale_inits, nodes = lowbit.scales(f"{name}_scale", s.reshape(()) if s.size == 1 else s)
    nodes.append(helper.make_node("DequantizeLinear", [q.name, f"{name}_scale"], [name],
                                  name=f"{name}/DequantizeLinear", axis=0))
    return [q, *scale_inits], nodes


def _sparse_tensors(name: str, codes: np.ndarray, grid: WeightGrid, enc: lowbit.Encoding):
    flat = codes.reshape(-1)
    nonzero = np.flatnonzero(flat)
    skips, real = lowbit.encode_positions(nonzero, enc.index_bits)
    values = np.zeros(skips.size, dtype=np.int64)
    values[real] = flat[nonzero]
    q = lowbit.pack(values, lowbit.weight_storage(grid.bits), f"{name}_q")
    skip = lowbit.pack(skips, lowbit.index_storage(enc.index_bits), f"{name}_skip")
    scale_inits, scale_nodes = lowbit.scales(f"{name}_scale", np.asarray(grid.scales).reshape(-1))
    shape = numpy_helper.from_array(np.array(codes.shape, dtype=np.int64), f"{name}_shape")
    return q, skip, (scale_inits, scale_nodes), shape


def _sparse(name: str, codes: np.ndarray, grid: WeightGrid, enc: lowbit.Encoding):
    q, skip, (scale_inits, nodes), shape = _sparse_tensors(name, codes, grid, enc)
    nodes.append(helper.make_node(SPARSE_OP, [q.name, skip.name, f"{name}_scale", shape.name], [name],
                                  name=name, domain=DOMAIN))
    return [q, skip, *scale_inits, shape], nodes


DOMAIN, SPARSE_OP = "compress", "SparseDequantize"


def sparse_dequantize_function(opset: int) -> onnx.FunctionProto:
    """``compress.SparseDequantize(q, skip, scale, shape) -> weight``, a model-local ONNX function
    (onnxruntime inlines it) so that each sparse layer costs one node:

        positions = CumSum(Cast(skip) + 1) - 1
        weight = Reshape(ScatterElements(zeros(prod(shape)), positions,
                         Cast(q) * Gather(scale, positions // (prod(shape) / len(scale)))), shape)

    ``Cast(q) * s`` is ``DequantizeLinear(q, s)`` (zero point 0) to the bit, written out because
    onnxruntime keeps a ``DequantizeLinear`` for run time (its QDQ fusions) and so would rebuild the
    dense weight at every inference; the plain ops fold into a constant once, when the session loads,
    so a sparse quantized model runs as fast as the float one (the dense weight is in memory either way).
    """
    n = helper.make_node

    def const(out: str, value: int) -> onnx.NodeProto:
        return n("Constant", [], [out], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [const("one", 1), const("zero", 0),
             n("Cast", ["skip"], ["skip64"], to=TensorProto.INT64),
             n("Add", ["skip64", "one"], ["steps"]),
             n("CumSum", ["steps", "zero"], ["ends"]),
             n("Sub", ["ends", "one"], ["positions"]),
             n("ReduceProd", ["shape"], ["numel"], keepdims=1),
             n("Shape", ["scale"], ["scales"]),
             n("Div", ["numel", "scales"], ["per_scale"]),
             n("Div", ["positions", "per_scale"], ["channel"]),
             n("Gather", ["scale", "channel"], ["entry_scale"], axis=0),
             n("Cast", ["q"], ["codes"], to=TensorProto.FLOAT),  # exact: small integers
             n("Mul", ["codes", "entry_scale"], ["values"]),  # = DequantizeLinear(q, entry_scale)
             n("ConstantOfShape", ["numel"], ["zeros"]),  # float32 zeros by default
             n("ScatterElements", ["zeros", "positions", "values"], ["flat"], axis=0),
             n("Reshape", ["flat", "shape"], ["weight"])]
    return helper.make_function(DOMAIN, SPARSE_OP, ["q", "skip", "scale", "shape"], ["weight"], nodes,
                                [helper.make_opsetid("", opset)],
                                doc_string="kept codes and skip counts -> the dequantized dense weight")


def decode_weights(model: onnx.ModelProto, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The float weights a quantized graph computes, by running its decoding nodes in onnxruntime:
    ``{"<layer>.weight": array}`` for ``names`` (default: every weight built from stored codes, by
    DequantizeLinear, SparseDequantize or Cast). A layer in the MatMulNBits form has no float weight in the
    graph: its ``B``, scales and zero points are what :func:`decode_values` gives for
    ``<layer>.weight_nbits_{B,scales,zp}``."""
    produced = {o: n for n in model.graph.node for o in n.output}
    if names is None:
        stored = {i.name for i in model.graph.initializer}
        names = [o for n in model.graph.node for o in n.output
                 if o.endswith(".weight") and _decoded(o, produced, stored)]
    return decode_values(model, names)


def decode_values(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """The values ``names`` of ``model`` that depend on stored tensors only, computed by onnxruntime (a
    stored tensor itself is read as it is)."""
    import onnxruntime as ort

    stored = {i.name: i for i in model.graph.initializer}
    direct = {v: numpy_helper.to_array(stored[v]) for v in names if v in stored}
    names = [v for v in names if v not in stored]
    if not names:
        return direct
    produced = {o: n for n in model.graph.node for o in n.output}
    stack, seen = list(names), set()
    while stack:
        n = produced.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(n.input)
    order = [n for n in model.graph.node if n.name in seen]
    used = {i for n in order for i in n.input}
    outputs = [onnx.ValueInfoProto(name=v) for v in names]  # types: onnxruntime infers them
    inits = [i for i in model.graph.initializer if i.name in used]
    graph = helper.make_graph(order, "decode", [], outputs, inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            functions=list(model.functions))
    session = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    return {**direct, **dict(zip(names, session.run(names, {}), strict=True))}


def _decoded(value: str, produced: dict[str, onnx.NodeProto], stored: set[str]) -> bool:
    """Whether ``value`` is computed from stored codes (DequantizeLinear, SparseDequantize, or a Cast of an
    integer initializer)."""
    stack, seen = [value], set()
    while stack:
        n = produced.get(stack.pop())
        if n is None or n.name in seen:
            continue
        if n.op_type in ("DequantizeLinear", SPARSE_OP) or (n.op_type == "Cast" and n.input[0] in stored):
            return True
        seen.add(n.name)
        stack.extend(n.input)
    return False

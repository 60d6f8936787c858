"""Full QDQ export: int8 weights *and* activations, in the form onnxruntime fuses into its integer kernels.

onnxruntime (QDQ format, CPU execution provider, default graph optimizations) turns
``DequantizeLinear(x) -> Conv/Gemm (weight and bias from DequantizeLinear) -> QuantizeLinear`` into
``QLinearConv`` / ``QGemm`` (uint8 activations, int8 weights: its U8S8 kernels), and drops the Q/DQ pair
around a ``MaxPool``, ``Flatten`` or ``Reshape`` whose input and output share one scale and zero point (they
run on uint8). This module writes that form from a float graph (:func:`to_qdq`):

- each quantized weight: its grid's integer codes (per-channel scales along the output axis, zero point 0),
  stored as the weight-only export stores them (packed at the grid's width, dense or sparse: as small) and
  widened to INT8 at load by operators on constants, which onnxruntime folds before its QDQ fusions; a
  2-8-bit grid's codes are int8 values, so they run on the int8 kernels as they are;
- each bias: int32 codes on the scale ``s_x * s_w[c]`` (what the kernel accumulates in), rounded;
- activations: uint8, asymmetric, per tensor: ``s = (hi - lo) / 255``, ``zp = round(-lo / s)``, the range
  ``[lo, hi]`` widened to hold 0 (so zero padding is exact); quantized are the input and the output of
  every quantized Conv/Gemm, and through MaxPool/Flatten/Reshape chains the value before them, with the same
  parameters as the value after (the max of quantized values is quantized: exact);
- a ``Relu`` that alone reads a quantized Conv/Gemm's output is dropped: its range starts at 0, so the
  output's QuantizeLinear (zero point 0) clamps exactly as the ReLU did.

Everything else (LRN, Softmax, Eltwise...) stays float32 between a DequantizeLinear and a QuantizeLinear.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RANGE_PRESERVING = ("MaxPool", "Flatten", "Reshape")
LEVELS = 255  # uint8


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """``(scale, zero_point)`` of the uint8 grid over ``[lo, hi]`` widened to hold 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        return 1.0, 0
    scale = np.float32((hi - lo) / LEVELS)
    zp = int(np.clip(np.round(-lo / scale), 0, LEVELS))
    return float(scale), zp


def to_qdq(model: onnx.ModelProto, weights: dict[str, tuple[np.ndarray, np.ndarray, int]],
           ranges: dict[str, tuple[float, float]], opset: int) -> list[str]:
    """Rewrite ``model`` (in place) into full QDQ form. ``weights``: ``{initializer name: (int codes,
    per-output-channel float32 scales, grid bits)}`` of the Conv/Gemm weights to quantize; ``ranges``:
    ``{value name: (lo, hi)}`` of the activations (calibrated); ``opset`` the model's. Returns notes naming
    what stays float."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for v in n.input:
            readers.setdefault(v, []).append(n)
    outputs = {o.name for o in graph.output}
    compute = [n for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1
               and n.input[1] in weights and _plain(n)]
    notes: list[str] = []
    dropped: set[str] = set()
    for n in compute:  # Conv/Gemm -> Relu: the output's Q does the clamping
        y = n.output[0]
        users = readers.get(y, [])
        if len(users) == 1 and users[0].op_type == "Relu" and y not in outputs:
            relu = users[0]
            n.output[0] = relu.output[0]
            dropped.add(relu.name)
            producer[relu.output[0]] = n
    nodes = [n for n in graph.node if n.name not in dropped]
    params: dict[str, tuple[float, int]] = {}

    def want(v: str) -> tuple[float, int] | None:
        """The parameters of value ``v``, quantizing the chain of range-preserving ops before it too."""
        if v in params:
            return params[v]
        p = producer.get(v)
        if p is not None and p.op_type in RANGE_PRESERVING and p.input[0] not in inits:
            up = want(p.input[0])
            if up is not None:
                params[v] = up
                return up
        if v not in ranges:
            return None
        params[v] = activation_params(*ranges[v])
        return params[v]

    missing = []
    for n in compute:
        for v in (n.input[0], n.output[0]):
            if v not in outputs and want(v) is None:
                missing.append(v)
    if missing:
        raise ValueError(f"no calibrated range for {', '.join(sorted(set(missing)))}")
    new_inits: list[TensorProto] = []
    head: list[onnx.NodeProto] = []
    kinds = {_weight(n, weights[n.input[1]], params, inits, new_inits, head, opset) for n in compute}
    if "sparse" in kinds:
        from converters.onnx.quantized import DOMAIN, sparse_dequantize_function

        model.functions.append(sparse_dequantize_function(opset))
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    qdq: dict[str, list[onnx.NodeProto]] = {}  # value -> its Q and DQ nodes, placed after its producer
    rename: dict[str, str] = {}
    for v, (scale, zp) in params.items():
        s = numpy_helper.from_array(np.array(scale, np.float32), f"{v}_scale")
        z = numpy_helper.from_array(np.array(zp, np.uint8), f"{v}_zero_point")
        new_inits += [s, z]
        qdq[v] = [helper.make_node("QuantizeLinear", [v, s.name, z.name], [f"{v}_quantized"], name=f"{v}/Q"),
                  helper.make_node("DequantizeLinear", [f"{v}_quantized", s.name, z.name],
                                   [f"{v}_dequantized"], name=f"{v}/DQ")]
        rename[v] = f"{v}_dequantized"
    ordered: list[onnx.NodeProto] = list(head)
    for v in (i.name for i in graph.input):
        ordered += qdq.get(v, [])
    for n in nodes:
        for i, v in enumerate(n.input):
            if v in rename:
                n.input[i] = rename[v]
        ordered.append(n)
        for v in n.output:
            ordered += qdq.get(v, [])
    del graph.node[:]
    graph.node.extend(ordered)
    quantized = {n.input[1] for n in compute}
    kept = [i for i in graph.initializer if i.name not in quantized
            and not any(n.input[2:3] == [i.name] for n in compute)]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    constant = {i.name for i in graph.initializer}
    for n in nodes:  # values built from constants only (an LRN's window): folded at load
        if all(v in constant for v in n.input if v):
            constant.update(n.output)
    integer = {id(n) for n in compute}
    floats = sorted({n.op_type for n in nodes if id(n) not in integer and n.op_type not in RANGE_PRESERVING
                     and not all(v in constant for v in n.input if v)})
    if floats:
        notes.append(f"int8 activations: {len(compute)} Conv/Gemm layers run on onnxruntime's integer "
                     f"kernels; {', '.join(floats)} stay{'s' if len(floats) == 1 else ''} float32 between "
                     "DequantizeLinear and QuantizeLinear")
    notes.append("the activations are rounded to their calibrated uint8 grids: the outputs differ from the "
                 "model file's float activations by about one grid step (compress verify against it reports "
                 "that difference; compress eval measures the file's accuracy)")
    return notes


def _plain(n: onnx.NodeProto) -> bool:
    if n.op_type == "Conv":
        return True
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    return a.get("transB", 0) == 1 and a.get("transA", 0) == 0 and a.get("alpha", 1.0) == 1.0 \
        and a.get("beta", 1.0) == 1.0


def _weight(n: onnx.NodeProto, stored: tuple[np.ndarray, np.ndarray, int], params: dict,
            graph_inits: dict[str, TensorProto], inits: list, nodes: list, opset: int) -> str:
    """The weight (and bias) of ``n`` as integer codes through DequantizeLinear (added to ``inits`` and
    ``nodes``); the bias on the scale ``s_x * s_w`` the kernel accumulates in. The codes are stored as the
    weight-only export stores them (:func:`converters.onnx.lowbit.choose_encoding`: packed at the grid's
    width, dense or sparse) and widened to INT8 by operators on constants, which onnxruntime folds at load,
    before its QDQ fusions. Returns the storage's kind ("dense" or "sparse")."""
    from converters.onnx import lowbit
    from converters.onnx.quantized import SPARSE_OP, WeightGrid, _sparse

    codes, scales, bits = stored
    name = n.input[1]
    out = codes.shape[0]
    s = np.asarray(scales, np.float32).reshape(-1)
    s = np.full(out, s[0], np.float32) if s.size == 1 else s
    enc = lowbit.choose_encoding(codes, bits, opset)
    storage = lowbit.weight_storage(bits)
    mk = helper.make_node
    if enc.kind == "sparse":  # the codes as float (scale 1), then int8
        q_inits, q_nodes = _sparse(f"{name}_codes", codes, WeightGrid(bits, np.ones(1, np.float32)), enc)
        inits += q_inits
        nodes += q_nodes
        assert q_nodes[0].op_type == SPARSE_OP
        nodes.append(mk("Cast", [f"{name}_codes"], [f"{name}_q"], name=f"{name}/CastInt8",
                        to=TensorProto.INT8))
    elif storage.bits == 8:
        inits.append(numpy_helper.from_array(codes.astype(np.int8), f"{name}_q"))
    else:
        packed = lowbit.pack(codes, storage, f"{name}_packed")
        inits.append(packed)
        nodes.append(mk("Cast", [packed.name], [f"{name}_q"], name=f"{name}/CastInt8", to=TensorProto.INT8))
    ws = numpy_helper.from_array(s, f"{name}_scale")
    wz = numpy_helper.from_array(np.zeros(out, np.int8), f"{name}_zero_point")
    inits += [ws, wz]
    nodes.append(mk("DequantizeLinear", [f"{name}_q", ws.name, wz.name], [name], name=f"{name}/DQ", axis=0))
    if len(n.input) > 2 and n.input[2]:
        bias = n.input[2]
        b = numpy_helper.to_array(graph_inits[bias]).astype(np.float64).reshape(-1)
        bs = (np.float32(params[n.input[0]][0]) * s).astype(np.float32)
        bq = np.clip(np.round(b / bs.astype(np.float64)), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        inits += [numpy_helper.from_array(bq, f"{bias}_q"), numpy_helper.from_array(bs, f"{bias}_scale"),
                  numpy_helper.from_array(np.zeros(out, np.int32), f"{bias}_zero_point")]
        nodes.append(mk("DequantizeLinear", [f"{bias}_q", f"{bias}_scale", f"{bias}_zero_point"], [bias],
                        name=f"{bias}/DQ", axis=0))
    return enc.kind


def export_qdq_onnx(net, path, grids: dict, ranges: dict[str, tuple[float, float]], *,
                    meta: dict | None = None, lrn: str = "fast", opset: int | None = None):
    """Write ``net`` (a CaffeNet holding dequantized weights on ``grids``, keyed by Caffe layer) in full QDQ
    form to ``path``. ``ranges``: ``{Caffe input blob or layer name: (lo, hi)}`` of its activations.
    Returns an :class:`~converters.onnx.export.ExportResult`."""
    from converters.atomic import atomic_write_bytes, check_output_path
    from converters.errors import ConversionError
    from converters.onnx.export import ExportResult, metadata_props, to_onnx_model
    from converters.onnx.lrn import rewrite_lrn
    from converters.onnx.quantized import TORCH_OPSET, _raise_opset, grid_codes, required_opset

    path = check_output_path(path)
    opset = max(opset or 0, required_opset(grids))
    values: dict[str, str] = {}
    model, notes = to_onnx_model(net, opset=min(opset, TORCH_OPSET), layer_values=values)
    if opset > TORCH_OPSET:
        model = _raise_opset(model, opset)
    notes = [*notes, *rewrite_lrn(model, lrn)]
    dense_bytes = model.ByteSize()
    by_value = {values.get(k, k): v for k, v in ranges.items()}
    inits = {i.name: i for i in model.graph.initializer}
    weights = {}
    for layer, grid in grids.items():
        name = f"{layer}.weight"
        if name not in inits:
            raise ConversionError(f"layer {layer}: no initializer {name} in the exported graph")
        weights[name] = (grid_codes(numpy_helper.to_array(inits[name]), grid, layer),
                         np.asarray(grid.scales, np.float32), grid.bits)
    try:
        notes += to_qdq(model, weights, by_value, opset)
    except ValueError as e:
        raise ConversionError(f"{getattr(net, 'name', 'net')}: {e}") from None
    del model.graph.value_info[:]
    helper.set_model_props(model, metadata_props(net, meta or {}, notes))
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    atomic_write_bytes(path, data)
    return ExportResult(str(path), len(data), dense_bytes, (), {}, tuple(notes))

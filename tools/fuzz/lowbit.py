"""Mutated low-bit ONNX files (``compress export`` of a quantized model), run through ``eval`` and
``verify --against`` the model file they came from.

The graph is edited where a packed export differs from a float one: the scales of ``DequantizeLinear``
(NaN, infinite, zero, negative, one too few), the packed codes (dims, element type), attributes
(``axis`` out of range, a ``group`` that does not divide, kernel sizes, pads), node types and inputs,
the input shape, the opset (INT2 needs 25), the ``compress_meta`` record (a NaN preprocessing mean),
and, in the sparse seed, the nodes of the ``compress.SparseDequantize`` function; or the bytes are cut
and flipped. Many such files pass ``onnx.checker`` and fail only when onnxruntime runs them.
"""
from __future__ import annotations

import json
import random

import numpy as np

from tools.fuzz import seeds
from tools.fuzz.case import Case, mutate_bytes

FLOATS = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e38, 3.4e38, 1e-45, -0.0]
INTS = [0, -1, 1, 2, 3, 4, 5, 7, 100, 2 ** 31 - 1, -(2 ** 31), 2 ** 40]


def generate(rng: random.Random) -> Case:
    import onnx

    kind = rng.choice(seeds.QUANTIZED)
    model_file, onnx_file = seeds.quantized(kind)
    if rng.random() < 0.1:
        data, what = mutate_bytes(rng, onnx_file)
        what = f"bytes-{what}"
    else:
        model = onnx.load_from_string(onnx_file)
        what = rng.choice(list(_OPS))
        what = _OPS[what](rng, model) or what
        data = model.SerializeToString()
    command = rng.choice(["eval", "verify"])
    argv = {"eval": ("eval", "q.onnx", "--data", seeds.eval_data(), "--limit", "64", "--batch-size", "32"),
            "verify": ("verify", "q.onnx", "--against", "q.pt", "--batch-size", "4", "--repeats", "1"),
            }[command]
    files = {"q.onnx": data, **({"q.pt": model_file} if command == "verify" else {})}
    return Case("lowbit-onnx", f"{kind}:{what}>{command}", files, argv=argv)


def _nodes(model) -> list:
    return list(model.graph.node) + [n for f in model.functions for n in f.node]


def _initializer(rng, model, suffix: str):
    found = [i for i in model.graph.initializer if i.name.endswith(suffix)]
    return rng.choice(found) if found else None


def _scale(rng, model):
    from onnx import numpy_helper

    init = _initializer(rng, model, "_scale")
    if init is None:
        return "scale-none"
    a = numpy_helper.to_array(init).copy()
    kind = rng.choice(["value", "value", "short", "long", "scalar", "2-d"])
    if kind == "value":
        a.reshape(-1)[rng.randrange(a.size)] = rng.choice(FLOATS)
    elif kind == "short":
        a = a.reshape(-1)[:-1]
    elif kind == "long":
        a = np.concatenate([a.reshape(-1), a.reshape(-1)[:1]])
    elif kind == "scalar":
        a = a.reshape(-1)[:1].reshape(())
    else:
        a = a.reshape(1, -1)
    init.CopyFrom(numpy_helper.from_array(a.astype(np.float32), init.name))
    return f"scale-{kind}"


def _codes(rng, model):
    from onnx import TensorProto

    init = _initializer(rng, model, "_q") or _initializer(rng, model, "_skip")
    if init is None:
        return "codes-none"
    kind = rng.choice(["dims", "dims", "type", "raw"])
    if kind == "dims" and init.dims:
        dims = list(init.dims)
        i = rng.randrange(len(dims))
        dims[i] = rng.choice([0, 1, dims[i] + 1, dims[i] - 1, dims[i] * 2])
        del init.dims[:]
        init.dims.extend(dims)
    elif kind == "type":
        init.data_type = rng.choice([TensorProto.INT2, TensorProto.INT4, TensorProto.UINT4, TensorProto.INT8,
                                     TensorProto.FLOAT, TensorProto.UINT2])
    else:
        init.raw_data = init.raw_data[: rng.randrange(len(init.raw_data) + 1)]
    return f"codes-{kind}"


def _bias(rng, model):
    from onnx import numpy_helper

    init = _initializer(rng, model, ".bias")
    if init is None:
        return "bias-none"
    a = numpy_helper.to_array(init).copy()
    a.reshape(-1)[rng.randrange(a.size)] = rng.choice(FLOATS)
    init.CopyFrom(numpy_helper.from_array(a, init.name))
    return "bias"


_ATTRIBUTED = ("DequantizeLinear", "Conv", "MaxPool", "Gemm", "Flatten", "Softmax", "ScatterElements",
               "Gather", "CumSum")
_ADDED = {"DequantizeLinear": ["axis", "block_size"], "Conv": ["group"], "Softmax": ["axis"],
          "Flatten": ["axis"]}


def _attribute(rng, model):
    from onnx import helper

    nodes = [n for n in _nodes(model) if n.op_type in _ATTRIBUTED]
    node = rng.choice(nodes)
    names = [a.name for a in node.attribute] + _ADDED.get(node.op_type, [])
    if not names:
        return f"attr-{node.op_type}-none"
    name = rng.choice(names)
    old = next((a for a in node.attribute if a.name == name), None)
    if old is not None and old.ints:
        value = [rng.choice(INTS) if rng.random() < 0.5 else v for v in old.ints]
    elif old is not None and old.type == old.FLOAT:
        value = float(rng.choice(FLOATS))
    else:
        value = rng.choice(INTS)
    if old is not None:
        node.attribute.remove(old)
    node.attribute.append(helper.make_attribute(name, value))
    return f"attr-{node.op_type}.{name}"


def _op_type(rng, model):
    node = rng.choice(_nodes(model))
    old = node.op_type
    node.op_type = rng.choice(["QuantizeLinear", "DequantizeLinear", "ConvTranspose", "MatMul", "Sigmoid",
                               "Identity", "Relu", "NoSuchOp", "Conv", "AveragePool"])
    return f"op-{old}->{node.op_type}"


def _rewire(rng, model):
    node = rng.choice(_nodes(model))
    names = [i.name for i in model.graph.initializer] + [o for n in model.graph.node for o in n.output]
    if node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(names + ["nope", ""])
    return "rewire"


def _graph(rng, model):
    kind = rng.choice(["drop-node", "dup-node", "input-dims", "input-type", "output", "opset"])
    g = model.graph
    if kind == "drop-node":
        del g.node[rng.randrange(len(g.node))]
    elif kind == "dup-node":
        g.node.append(g.node[rng.randrange(len(g.node))])
    elif kind == "input-dims":
        dims = g.input[0].type.tensor_type.shape.dim
        d = dims[rng.randrange(len(dims))]
        d.dim_value = rng.choice([0, 1, 2, 3, 27, 56, 10 ** 6])
    elif kind == "input-type":
        g.input[0].type.tensor_type.elem_type = rng.choice([2, 6, 10, 11])  # uint8, int32, float16, double
    elif kind == "output":
        g.output[0].name = rng.choice(["nope", g.node[0].output[0]])
    else:
        opset = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
        opset.version = rng.choice([13, 19, 20, 21, 24, 26, 99])
    return f"graph-{kind}"


def _meta(rng, model):
    props = {p.key: p for p in model.metadata_props}
    prop = props.get("compress_meta")
    if prop is None:
        prop = model.metadata_props.add(key="compress_meta", value="{}")
    try:
        meta = json.loads(prop.value)
    except ValueError:
        meta = {}
    kind = rng.choice(["nan-mean", "inf-scale", "bad-json", "list", "long", "huge"])
    pre = {"scale": 0.00390625, "mean": None, "channel_order": "gray"}
    if kind == "nan-mean":
        meta["preprocess"] = {**pre, "mean": [float("nan")]}
    elif kind == "inf-scale":
        meta["preprocess"] = {**pre, "scale": float("inf")}
    elif kind == "huge":
        meta["preprocess"] = {**pre, "scale": 10 ** 400}
    elif kind == "long":
        meta["preprocess"] = {**pre, "channel_order": "x" * 100000}
    prop.value = {"bad-json": "{not json", "list": "[1, 2]"}.get(kind) or json.dumps(meta)
    return f"meta-{kind}"


_OPS = {"scale": _scale, "scale2": _scale, "codes": _codes, "bias": _bias, "attribute": _attribute,
        "attribute2": _attribute, "op-type": _op_type, "rewire": _rewire, "graph": _graph, "meta": _meta}

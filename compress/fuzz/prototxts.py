"""Mutated prototxts: token, value and graph mutations of LeNet, AlexNet, a V1 LeNet, a train_val net and
a net that uses every supported layer type.

* token: a token of the text deleted, duplicated, swapped, replaced, or junk (braces, colons, NUL,
  bytes that are not UTF-8) inserted; the text cut short;
* value: a number set to a boundary value (``2147483648``, ``nan``, ``-1``...), a string to a colliding,
  reserved or long name, an enum to another identifier;
* graph (on the parsed ``NetParameter``): layers duplicated, dropped, swapped, renamed (``c.1`` next
  to ``c_1``), retyped, rewired (a bottom to another blob, a top shared with another layer, in place),
  new layers of any type with random parameters, any parameter field set to a boundary value (from
  caffe.proto's descriptors), fillers with random parameters, the input re-declared the legacy way,
  phase rules, the whole net rewritten in the V1 format.
"""
from __future__ import annotations

import random
import re

from compress.fuzz import seeds, values
from compress.fuzz.case import Case, mutate_bytes

_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[A-Za-z_][\w.]*|'
                    r'-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\S')
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PARAM_OF = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
             "InnerProduct": "inner_product_param", "Pooling": "pooling_param", "LRN": "lrn_param",
             "ReLU": "relu_param", "Softmax": "softmax_param", "Concat": "concat_param",
             "Eltwise": "eltwise_param", "Reshape": "reshape_param", "Flatten": "flatten_param",
             "BatchNorm": "batch_norm_param", "Scale": "scale_param", "PReLU": "prelu_param",
             "Dropout": "dropout_param", "Input": "input_param"}


def generate(rng: random.Random) -> Case:
    name, text = _pick(rng)
    done = []
    kinds = rng.choices(["token", "value", "graph"], weights=[2, 3, 5], k=rng.choice([1, 1, 2, 3]))
    for kind in sorted(kinds, key=lambda k: k != "graph"):  # graph mutations need parsable text
        text, what = {"token": _token, "value": _value, "graph": _graph}[kind](rng, text)
        done.append(what)
    data = text.encode("utf-8", errors="surrogateescape")
    if rng.random() < 0.05:
        data, kind = mutate_bytes(rng, data)
        done.append(kind)
    return Case("prototxt", f"{name}:" + "+".join(done), {"net.prototxt": data}, "net.prototxt")


def _pick(rng: random.Random) -> tuple[str, str]:
    name = rng.choices(["lenet", "sink", "lenet-v1", "train-val", "alexnet"], weights=[35, 35, 12, 13, 5])[0]
    text = {"lenet": seeds.lenet_prototxt, "sink": lambda: seeds.KITCHEN_SINK,
            "lenet-v1": lambda: seeds.lenet_v1()[1], "train-val": lambda: seeds.TRAIN_VAL,
            "alexnet": seeds.alexnet_prototxt}[name]()
    return name, text


# -- token and value mutations ---------------------------------------------------------------------

def _token(rng: random.Random, text: str) -> tuple[str, str]:
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if not spans:
        return text, "token-none"
    a, b = rng.choice(spans)
    kind = rng.choice(["delete", "duplicate", "swap", "replace", "junk", "cut"])
    if kind == "delete":
        return text[:a] + text[b:], "token-delete"
    if kind == "duplicate":
        return text[:b] + " " + text[a:b] + text[b:], "token-duplicate"
    if kind == "swap":
        c, d = rng.choice(spans)
        if c < a:
            (a, b), (c, d) = (c, d), (a, b)
        if c < b:
            return text, "token-swap-none"
        return text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:], "token-swap"
    if kind == "replace":
        c, d = rng.choice(spans)
        return text[:a] + text[c:d] + text[b:], "token-replace"
    if kind == "junk":
        junk = rng.choice(["{", "}", ":", "::", "\x00", "\udcff", "\\", '"', "'", "#", "<", "0x", "1e999"])
        return text[:a] + junk + text[a:], "token-junk"
    return text[:a], "token-cut"


def _value(rng: random.Random, text: str) -> tuple[str, str]:
    kind = rng.choice(["number", "number", "string", "enum"])
    if kind == "number":
        spans = [m.span() for m in _NUMBER.finditer(text)]
        if spans:
            a, b = rng.choice(spans)
            v = values.int_value(rng) if rng.random() < 0.6 else values.float_value(rng)
            return text[:a] + _number_text(v) + text[b:], "value-number"
    if kind == "string":
        spans = [m.span() for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"', text)]
        if spans:
            a, b = rng.choice(spans)
            return text[:a] + _quote(values.name_value(rng)) + text[b:], "value-string"
    spans = [m.span(1) for m in re.finditer(r":\s*([A-Z][A-Z_]+)\b", text)]
    if spans:
        a, b = rng.choice(spans)
        new = rng.choice(["MAX", "AVE", "STOCHASTIC", "SUM", "PROD", "WITHIN_CHANNEL", "TRAIN", "TEST",
                          "FAN_OUT", "AVERAGE", "CONVOLUTION", "NOPE", "true", "3"])
        return text[:a] + new + text[b:], "value-enum"
    return text, "value-none"


def _number_text(v) -> str:
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    return str(v)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


# -- graph mutations -------------------------------------------------------------------------------

def _graph(rng: random.Random, text: str) -> tuple[str, str]:
    from google.protobuf import text_format

    from converters.caffe.prototxt import parse_net_text

    try:
        net = parse_net_text(text)
    except ValueError:
        return text, "graph-unparsable"
    op = rng.choice(list(_GRAPH_OPS))
    try:
        _GRAPH_OPS[op](rng, net)
    except (ValueError, TypeError):  # a value protobuf refuses (out of the field's range)
        return text, f"graph-{op}-refused"
    if op == "to-v1":
        return _to_v1(net), "graph-to-v1"
    return text_format.MessageToString(net), f"graph-{op}"


def _blobs_of(net) -> list[str]:
    names = list(net.input)
    for layer in net.layer:
        names += [t for t in layer.top if t not in names]
    return names or ["data"]


def _any_layer(rng, net):
    return rng.choice(net.layer) if net.layer else net.layer.add(name="x", type="ReLU", bottom=["data"],
                                                                 top=["x"])


def _dup(rng, net) -> None:
    src = _any_layer(rng, net)
    new = net.layer.add()
    new.CopyFrom(src)
    if rng.random() < 0.5:
        new.name = src.name + "_copy"  # same tops, another name: two producers of one blob
    _move_last(rng, net)


def _drop(rng, net) -> None:
    if net.layer:
        del net.layer[rng.randrange(len(net.layer))]


def _swap(rng, net) -> None:
    if len(net.layer) > 1:
        i, j = rng.randrange(len(net.layer)), rng.randrange(len(net.layer))
        a, b = type(net.layer[i])(), type(net.layer[j])()
        a.CopyFrom(net.layer[i])
        b.CopyFrom(net.layer[j])
        net.layer[i].CopyFrom(b)
        net.layer[j].CopyFrom(a)


def _rename(rng, net) -> None:
    layer = _any_layer(rng, net)
    layer.name = values.name_value(rng)
    if rng.random() < 0.5 and len(net.layer) > 1:  # a pair that maps to one attribute: c.1 / c_1
        other = rng.choice(net.layer)
        a, b = rng.choice([("c.1", "c_1"), ("a.b", "a_b"), ("x.y.z", "x_y.z"), ("forward", "layer_forward")])
        layer.name, other.name = a, b


def _retype(rng, net) -> None:
    layer = _any_layer(rng, net)
    layer.type = rng.choice(values.TYPES)
    if rng.random() < 0.5:
        _random_params(rng, layer)


def _rewire(rng, net) -> None:
    layer = _any_layer(rng, net)
    blobs = _blobs_of(net)
    kind = rng.choice(["bottom", "top", "in-place", "extra-bottom", "no-top"])
    if kind == "bottom" and layer.bottom:
        layer.bottom[rng.randrange(len(layer.bottom))] = rng.choice([*blobs, "nope", "label"])
    elif kind == "top" and layer.top:
        layer.top[rng.randrange(len(layer.top))] = rng.choice(blobs)
    elif kind == "in-place" and layer.bottom and layer.top:
        layer.top[0] = layer.bottom[0]
    elif kind == "extra-bottom":
        layer.bottom.append(rng.choice(blobs))
    else:
        del layer.top[:]


def _add(rng, net) -> None:
    blobs = _blobs_of(net)
    layer = net.layer.add(name=rng.choice([f"new{rng.randrange(100)}", values.name_value(rng)]),
                          type=rng.choice(values.TYPES[:20]))
    layer.bottom.extend(rng.sample(blobs, k=min(len(blobs), rng.choice([1, 1, 2]))))
    layer.top.append(rng.choice([layer.name or "t", f"t{rng.randrange(100)}", *layer.bottom[:1]]))
    _random_params(rng, layer)


def _set_param(rng, net) -> None:
    layer = _any_layer(rng, net)
    _random_params(rng, layer, count=rng.randint(1, 3))


def _filler(rng, net) -> None:
    layers = [l for l in net.layer if l.type in ("Convolution", "Deconvolution", "InnerProduct")]
    if not layers:
        return
    layer = rng.choice(layers)
    param = getattr(layer, _PARAM_OF[layer.type])
    filler = getattr(param, rng.choice(["weight_filler", "bias_filler"]))
    filler.type = rng.choice(["constant", "gaussian", "uniform", "xavier", "msra", "bilinear",
                              "positive_unitball", "nope", ""])
    for name in rng.sample(["value", "min", "max", "mean", "std", "sparse", "variance_norm"], k=2):
        field = filler.DESCRIPTOR.fields_by_name[name]
        _set_scalar(rng, filler, field)


def _legacy_input(rng, net) -> None:
    kind = rng.choice(["again", "dims", "count"])
    net.input.append(rng.choice(["data", *_blobs_of(net)[:2]]))
    if kind == "again":  # the Input layer's blob declared a second time the legacy way
        net.input_shape.add().dim.extend([1, 1, 28, 28])
    elif kind == "dims":
        net.input_dim.extend(max(-(2**31), min(values.int_value(rng), 2**31 - 1))
                             for _ in range(rng.choice([3, 4, 5])))
    else:
        net.input_shape.add().dim.extend([values.int_value(rng) for _ in range(rng.randint(0, 40))])


def _input_dims(rng, net) -> None:
    inputs = [l for l in net.layer if l.type == "Input"]
    if not inputs:
        return
    shape = inputs[0].input_param.shape[0] if inputs[0].input_param.shape else \
        inputs[0].input_param.shape.add()
    dims = list(shape.dim)
    if dims and rng.random() < 0.7:
        dims[rng.randrange(len(dims))] = rng.choice([0, -1, 3, 64, 4096, 65536, 2**31, 2**40])
    else:
        dims = [rng.choice([1, 2, 3, 28]) for _ in range(rng.choice([0, 1, 2, 3, 5, 33]))]
    del shape.dim[:]
    shape.dim.extend(dims)


def _phase(rng, net) -> None:
    layer = _any_layer(rng, net)
    rule = (layer.include if rng.random() < 0.5 else layer.exclude).add()
    rule.phase = rng.choice([0, 1])
    if rng.random() < 0.3:
        rule.min_level = rng.choice([-1, 0, 1, 2**31 - 1])
    if rng.random() < 0.3:
        rule.stage.append("deploy")


def _noop(rng, net) -> None:
    return None


_GRAPH_OPS = {"dup": _dup, "drop": _drop, "swap": _swap, "rename": _rename, "retype": _retype,
              "rewire": _rewire, "add": _add, "param": _set_param, "filler": _filler,
              "legacy-input": _legacy_input, "input-dims": _input_dims, "phase": _phase, "to-v1": _noop}


def _move_last(rng, net) -> None:
    """Move the last layer to a random position."""
    if len(net.layer) < 2:
        return
    layers = [type(l)() for l in net.layer]
    for copy, layer in zip(layers, net.layer, strict=True):
        copy.CopyFrom(layer)
    last = layers.pop()
    layers.insert(rng.randrange(len(layers) + 1), last)
    del net.layer[:]
    net.layer.extend(layers)


def _random_params(rng, layer, count: int = 2) -> None:
    """Set ``count`` random scalar fields of the layer's parameter message to boundary values."""
    name = _PARAM_OF.get(layer.type) or rng.choice(sorted(set(_PARAM_OF.values())))
    msg = getattr(layer, name)
    msg.SetInParent()
    for _ in range(count):
        field = rng.choice(list(msg.DESCRIPTOR.fields))
        if field.message_type is not None:
            sub = getattr(msg, field.name)
            sub = sub.add() if _repeated(field) else sub
            sub.SetInParent()
            if sub.DESCRIPTOR.fields:
                _set_scalar(rng, sub, rng.choice(list(sub.DESCRIPTOR.fields)))
        else:
            _set_scalar(rng, msg, field)


def _repeated(field) -> bool:
    return getattr(field, "is_repeated", None) or getattr(field, "label", None) == 3


def _set_scalar(rng, msg, field) -> None:
    t = field.type
    if field.message_type is not None:
        return
    if field.enum_type is not None:
        value = rng.choice([v.number for v in field.enum_type.values])
    elif t in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
        value = values.float_value(rng)
    elif t == field.TYPE_BOOL:
        value = rng.random() < 0.5
    elif t == field.TYPE_STRING:
        value = values.name_value(rng)
    elif t == field.TYPE_BYTES:
        value = b"\xff"
    else:
        value = values.int_value(rng)
        bits = 32 if t in (field.TYPE_INT32, field.TYPE_UINT32, field.TYPE_SINT32) else 64
        unsigned = t in (field.TYPE_UINT32, field.TYPE_UINT64)
        lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        value = min(max(value, lo), hi)
    try:
        if _repeated(field):
            getattr(msg, field.name).append(value)
        else:
            setattr(msg, field.name, value)
    except (ValueError, TypeError):
        pass


def _to_v1(net) -> str:
    """The net as V1 text (``layers`` with enum types); types V1 lacks stay as an unknown enum name."""
    from converters.caffe.upgrade import V1_TYPES

    enum = {v: k for k, v in V1_TYPES.items()}
    out = []
    for layer in net.layer:
        if layer.type == "Input":
            continue
        body = _layer_text(layer)
        body = re.sub(r'^type: "([^"]*)"$', lambda m: f"type: {enum.get(m.group(1), 'NONE')}", body,
                      flags=re.M)
        out.append("layers {\n" + body + "}\n")
    head = _header_text(net)
    return head + "".join(out)


def _layer_text(layer) -> str:
    from google.protobuf import text_format

    copy = type(layer)()
    copy.CopyFrom(layer)
    for f in ("param", "phase", "propagate_down", "loss_weight"):
        copy.ClearField(f)
    return text_format.MessageToString(copy)


def _header_text(net) -> str:
    from google.protobuf import text_format

    copy = type(net)()
    copy.CopyFrom(net)
    copy.ClearField("layer")
    inputs = [l for l in net.layer if l.type == "Input"]
    text = text_format.MessageToString(copy)
    for layer in inputs:  # V1 has no Input layer: the legacy declaration
        for top, shape in zip(layer.top, layer.input_param.shape, strict=False):
            text += f'input: "{top}"\n' + "".join(f"input_dim: {d}\n" for d in shape.dim)
    return text

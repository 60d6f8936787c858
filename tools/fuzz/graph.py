"""Graph mutations of a net definition, on the parsed ``NetParameter``: layers duplicated, dropped,
swapped, renamed (``c.1`` next to ``c_1``, names equal to the net's attributes), retyped, rewired (a bottom
to another blob, a top shared with another layer, in place), new layers of any type with random
parameters, any parameter field set to a boundary value (caffe.proto's descriptors say which fields
exist and their types), fillers with random parameters, the input re-declared the legacy way, phase
rules, the whole net rewritten in the V1 format.
"""
from __future__ import annotations

import random
import re

from tools.fuzz import values

_PARAM_OF = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
             "InnerProduct": "inner_product_param", "Pooling": "pooling_param", "LRN": "lrn_param",
             "ReLU": "relu_param", "Softmax": "softmax_param", "Concat": "concat_param",
             "Eltwise": "eltwise_param", "Reshape": "reshape_param", "Flatten": "flatten_param",
             "BatchNorm": "batch_norm_param", "Scale": "scale_param", "PReLU": "prelu_param",
             "Dropout": "dropout_param", "Input": "input_param"}


def mutate_graph(rng: random.Random, text: str) -> tuple[str, str]:
    """One graph mutation of ``text``: (new text, its name); unparsable text is returned as it is."""
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
        set_scalar(rng, filler, field)


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
                set_scalar(rng, sub, rng.choice(list(sub.DESCRIPTOR.fields)))
        else:
            set_scalar(rng, msg, field)


def _repeated(field) -> bool:
    return getattr(field, "is_repeated", None) or getattr(field, "label", None) == 3


def set_scalar(rng, msg, field) -> None:
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

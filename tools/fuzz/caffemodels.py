"""Mutated caffemodels, at the wire level: the zoo LeNet in the current and in the V1 format.

The file is parsed into a field tree (``wire.py``, driven by caffe.proto's descriptors) and 1-3
mutations are applied: a varint set to a boundary value, a string (layer name, type, bottom, top)
replaced by a colliding, reserved, long or non-UTF-8 name, a blob's shape or data changed (dims whose
product wraps int64, data one float short, NaN, unpacked or double data), a field dropped, duplicated,
renumbered or given another wire type, layers dropped, duplicated or swapped, a V1 layer mixed into a
current net; or the serialized bytes are cut, flipped, overwritten. Half the cases pass the
prototxt, half leave the definition to be found (the zoo net whose blobs match).
"""
from __future__ import annotations

import random
import struct

from tools.fuzz import seeds, values, wire
from tools.fuzz.case import Case, mutate_bytes

_LAYER, _V1_LAYER = 100, 2


def generate(rng: random.Random, v1: bool) -> Case:
    from converters.caffe.proto import caffe_pb2

    if v1:
        data, prototxt = seeds.lenet_v1()
    else:
        data, prototxt = seeds.lenet_caffemodel(), seeds.lenet_prototxt()
    done = []
    if rng.random() < 0.85:
        tree = wire.parse(data, caffe_pb2.NetParameter.DESCRIPTOR)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            op = rng.choice(list(_TREE_OPS))
            if _TREE_OPS[op](rng, tree):
                done.append(op)
        data = wire.serialize(tree)
    if not done or rng.random() < 0.15:
        data, kind = mutate_bytes(rng, data)
        done.append(kind)
    files = {"m.caffemodel": data}
    with_prototxt = rng.random() < 0.5
    if with_prototxt:
        files["net.prototxt"] = prototxt.encode()
    return Case("caffemodel-v1" if v1 else "caffemodel", "+".join(done), files, "m.caffemodel",
                "net.prototxt" if with_prototxt else None)


# -- tree mutations (each returns whether it changed something) -------------------------------------

def _fields(tree, pred):
    return [(f, path) for f, path in wire.walk(tree) if pred(f, path)]


def _layers(tree):
    return [f for f in tree if f.number in (_LAYER, _V1_LAYER) and f.is_message]


def _set_varint(rng, tree) -> bool:
    found = _fields(tree, lambda f, _: f.wire == wire.VARINT)
    if not found:
        return False
    rng.choice(found)[0].value = values.int_value(rng)
    return True


def _set_string(rng, tree) -> bool:
    def is_text(f, path):
        parent = path[-1].descriptor if path else None
        d = parent.fields_by_number.get(f.number) if parent is not None else None
        return d is not None and d.type == d.TYPE_STRING
    found = _fields(tree, is_text)
    if not found:
        return False
    f = rng.choice(found)[0]
    if rng.random() < 0.3:  # another existing string: a layer named like another, a bottom rewired
        f.value = rng.choice(found)[0].value
    else:
        f.value = values.name_bytes(rng)
    return True


def _blobs(tree):
    return [f for f, _ in wire.walk(tree) if f.is_message and f.descriptor is not None
            and f.descriptor.name == "BlobProto"]


def _blob_shape(rng, tree) -> bool:
    blobs = _blobs(tree)
    if not blobs:
        return False
    blob = rng.choice(blobs)
    dims = rng.choice([[2**32, 2**32], [2**31, 2**33], [0], [-1, 5], [2**63 - 1, 2], [1] * 40, [],
                       [values.int_value(rng) for _ in range(rng.randint(1, 5))]])
    blob.value = [f for f in blob.value if f.number not in (1, 2, 3, 4, 7)]
    if rng.random() < 0.5:
        shape = wire.Field(7, wire.LEN, [wire.Field(1, wire.LEN, b"".join(wire.varint(d) for d in dims))])
        blob.value.append(shape)
    else:  # the legacy num/channels/height/width fields
        blob.value += [wire.Field(i + 1, wire.VARINT, d) for i, d in enumerate(dims[:4])]
    return True


def _blob_data(rng, tree) -> bool:
    blobs = _blobs(tree)
    if not blobs:
        return False
    blob = rng.choice(blobs)
    data = [f for f in blob.value if f.number == 5 and f.wire == wire.LEN]
    if not data:
        return False
    f = data[0]
    kind = rng.choice(["short", "odd", "empty", "nan", "unpacked", "double", "twice"])
    if kind == "short":
        f.value = f.value[:-4]
    elif kind == "odd":
        f.value = f.value[:-rng.randint(1, 3)]
    elif kind == "empty":
        f.value = b""
    elif kind == "nan":
        f.value = struct.pack("<f", rng.choice([float("nan"), float("inf")])) * (len(f.value) // 4)
    elif kind == "unpacked" and len(f.value) <= 4096:
        blob.value.remove(f)
        blob.value += [wire.Field(5, wire.I32, f.value[i:i + 4]) for i in range(0, len(f.value), 4)]
    elif kind == "double":
        floats = struct.unpack(f"<{len(f.value) // 4}f", f.value)
        blob.value.append(wire.Field(8, wire.LEN, struct.pack(f"<{len(floats)}d", *floats)))
    else:
        blob.value.append(wire.Field(5, wire.LEN, f.value))
    return True


def _drop_field(rng, tree) -> bool:
    found = [(f, path) for f, path in wire.walk(tree) if path]
    if not found:
        return False
    f, path = rng.choice(found)
    path[-1].value.remove(f)
    return True


def _dup_field(rng, tree) -> bool:
    found = [(f, path) for f, path in wire.walk(tree) if path and not (f.is_message and f.number == 7)]
    if not found:
        return False
    f, path = rng.choice(found)
    siblings = path[-1].value
    siblings.insert(rng.randrange(len(siblings) + 1), wire.Field(f.number, f.wire, f.value, f.descriptor))
    return True


def _renumber(rng, tree) -> bool:
    f, _ = rng.choice(list(wire.walk(tree)))
    f.number = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 100, 101, 106, 117, 1000, 536870911])
    return True


def _rewire(rng, tree) -> bool:
    f, path = rng.choice(list(wire.walk(tree)))
    replacement = rng.choice([wire.VARINT, wire.LEN, wire.I32, wire.I64])
    value = {wire.VARINT: values.int_value(rng) & ((1 << 64) - 1), wire.LEN: b"\x08\x01",
             wire.I32: b"\x00\x00\x80\x7f", wire.I64: b"\x00" * 8}[replacement]
    siblings = path[-1].value if path else tree
    siblings[siblings.index(f)] = wire.Field(f.number, replacement, value)
    return True


def _layer_op(rng, tree) -> bool:
    layers = _layers(tree)
    if not layers:
        return False
    kind = rng.choice(["drop", "dup", "swap", "mix"])
    a = rng.choice(layers)
    if kind == "drop":
        tree.remove(a)
    elif kind == "dup":
        tree.insert(tree.index(a) + rng.randint(0, 2), _copy(a))
    elif kind == "swap":
        b = rng.choice(layers)
        i, j = tree.index(a), tree.index(b)
        tree[i], tree[j] = b, a
    else:  # a layer of the other format: current and V1 mixed in one net
        other = _V1_LAYER if a.number == _LAYER else _LAYER
        tree.append(wire.Field(other, wire.LEN, wire.serialize(a.value)))
    return True


def _unknown_field(rng, tree) -> bool:
    layers = _layers(tree)
    if not layers:
        return False
    rng.choice(layers).value.append(wire.Field(rng.choice([99, 150, 5000, 19000]), wire.LEN, b"junk"))
    return True


def _copy(f: wire.Field) -> wire.Field:
    value = [_copy(c) for c in f.value] if f.is_message else f.value
    return wire.Field(f.number, f.wire, value, f.descriptor)


_TREE_OPS = {
    "varint": _set_varint, "string": _set_string, "blob-shape": _blob_shape, "blob-data": _blob_data,
    "drop-field": _drop_field, "dup-field": _dup_field, "renumber": _renumber, "wire-type": _rewire,
    "layers": _layer_op, "unknown-field": _unknown_field,
}

"""The protobuf wire format as an editable tree, so caffemodels can be mutated field by field.

``parse(data, descriptor)`` splits a message into :class:`Field` s; a length-delimited field whose
descriptor says it is a message is parsed recursively (``caffe_pb2`` descriptors drive it: a layer's
``blobs`` become BlobProtos, its ``convolution_param`` a ConvolutionParameter...), every other field
keeps its raw value. ``serialize`` writes the tree back byte for byte, so an unmutated tree gives the
input again, and a mutated one differs exactly where the mutation went: a varint, a string, a
length, a field number, a wire type.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from converters.caffe.writer import varint

VARINT, I64, LEN, I32 = 0, 1, 2, 5


@dataclass
class Field:
    number: int
    wire: int
    value: int | bytes | list[Field]  # varint; raw bytes (LEN, I32, I64); sub-fields of a message
    descriptor: object = field(default=None, repr=False, compare=False)  # message type of sub-fields

    @property
    def is_message(self) -> bool:
        return isinstance(self.value, list)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return value, pos
        shift += 7


def parse(data: bytes, descriptor=None) -> list[Field]:
    """Fields of the message ``data``; raises ValueError if it is not well-formed wire data."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(data, pos)
        elif wire == LEN:
            n, pos = read_varint(data, pos)
            if pos + n > len(data):
                raise ValueError("length past the end")
            value, pos = data[pos:pos + n], pos + n
        elif wire in (I64, I32):
            n = 8 if wire == I64 else 4
            if pos + n > len(data):
                raise ValueError("fixed field past the end")
            value, pos = data[pos:pos + n], pos + n
        else:
            raise ValueError(f"wire type {wire}")
        sub = _message_type(descriptor, number) if wire == LEN else None
        if sub is not None:
            try:
                fields.append(Field(number, wire, parse(value, sub), sub))
                continue
            except ValueError:
                pass
        fields.append(Field(number, wire, value))
    return fields


def serialize(fields: list[Field]) -> bytes:
    out = bytearray()
    for f in fields:
        out += varint((f.number << 3) | f.wire)
        if f.is_message:
            body = serialize(f.value)
            out += varint(len(body)) + body
        elif f.wire == VARINT:
            out += varint(int(f.value))
        elif f.wire == LEN:
            out += varint(len(f.value)) + f.value
        else:
            out += f.value
    return bytes(out)


def walk(fields: list[Field], path: tuple = ()):
    """Every field of the tree with its path of enclosing fields (outermost first)."""
    for f in fields:
        yield f, path
        if f.is_message:
            yield from walk(f.value, (*path, f))


def _message_type(descriptor, number: int):
    if descriptor is None:
        return None
    d = descriptor.fields_by_number.get(number)
    return d.message_type if d is not None and d.message_type is not None else None

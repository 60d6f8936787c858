"""Write a ``.caffemodel``: a current-format ``NetParameter`` whose layers carry their blobs.

The blob floats are written as packed ``data`` fields straight from each array's memory, so the
file is streamed with no intermediate copy of the weights (filling a repeated float field with
``.extend`` takes seconds per large blob). Each blob gets a ``BlobShape`` with the array's shape.
The bytes are those protobuf itself would serialize (fields in number order), so Caffe, OpenCV's
``readNetFromCaffe`` and :func:`converters.caffe.reader.read_caffemodel` all read the file.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import numpy as np

from converters.atomic import atomic_open, check_output_path
from converters.caffe.names import shown
from converters.errors import ConversionError


def _tag(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def varint(v: int) -> bytes:
    """A protobuf varint; a negative int is written as protobuf writes it (ten bytes, two's complement)."""
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


_LAYER_TAG = _tag(100, 2)
_BLOBS_TAG = _tag(7, 2)
_DATA_TAG = _tag(5, 2)
_BLOBS_FIELD = 7  # LayerParameter.blobs


def write_caffemodel(path: str | os.PathLike, net,
                     blobs: Mapping[str, Sequence[np.ndarray]]) -> None:
    """Write ``net``'s layer definitions with ``blobs`` (layer name -> arrays or tensors) to ``path``.

    ``net`` is a ``caffe_pb2.NetParameter`` (V1 nets are upgraded first). A layer named in ``blobs``
    gets those blobs (float32, shape as given) in place of any it carries; other layers are written
    as they are. Blobs for a layer the net lacks are an error. The file appears atomically.
    """
    from converters.caffe.upgrade import upgrade_net

    check_output_path(path)
    net = upgrade_net(net, where="write_caffemodel")
    names = [layer.name for layer in net.layer]
    unknown = [name for name in blobs if name not in names]
    if unknown:
        raise ConversionError(f"blobs given for layers the net does not define: {', '.join(unknown)} "
                              f"(net layers: {', '.join(names)})")
    header = type(net)()
    header.CopyFrom(net)
    header.ClearField("layer")
    header.ClearField("layers")
    with atomic_open(path, "wb") as f:
        f.write(header.SerializeToString())
        for layer in net.layer:
            _write_layer(f, layer, blobs.get(layer.name))


def _write_layer(f: BinaryIO, layer, arrays: Sequence | None) -> None:
    if arrays is None:
        body = layer.SerializeToString()
        f.write(_LAYER_TAG + varint(len(body)) + body)
        return
    # Protobuf's own order: the fields numbered below blobs (7), the blobs, then the rest.
    low, high = type(layer)(), type(layer)()
    low.CopyFrom(layer)
    high.CopyFrom(layer)
    for field, _ in layer.ListFields():
        if field.number <= _BLOBS_FIELD:
            high.ClearField(field.name)
        if field.number >= _BLOBS_FIELD:
            low.ClearField(field.name)
    low_bytes, high_bytes = low.SerializeToString(), high.SerializeToString()
    blobs = [_Blob.of(layer.name, i, a) for i, a in enumerate(arrays)]
    total = len(low_bytes) + sum(b.field_size for b in blobs) + len(high_bytes)
    f.write(_LAYER_TAG + varint(total) + low_bytes)
    for blob in blobs:
        blob.write(f)
    f.write(high_bytes)


class _Blob:
    """One BlobProto as the bytes around its data: ``data`` (field 5, packed), then ``shape`` (7)."""

    def __init__(self, data: np.ndarray, shape_bytes: bytes):
        self.data = data.reshape(-1)
        self.data_head = (_DATA_TAG + varint(data.nbytes)) if data.nbytes else b""
        self.shape_bytes = shape_bytes
        self.size = len(self.data_head) + data.nbytes + len(shape_bytes)
        self.field_size = len(_BLOBS_TAG) + len(varint(self.size)) + self.size

    @classmethod
    def of(cls, layer: str, index: int, array) -> _Blob:
        from converters.caffe.proto import caffe_pb2

        if hasattr(array, "detach"):  # a torch.Tensor, without importing torch here
            array = array.detach().cpu().numpy()
        array = np.asarray(array)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ConversionError(f"layer {shown(layer)} blob {index}: expected a numeric array, "
                                  f"found dtype {array.dtype}")
        data = np.asarray(array, dtype="<f4", order="C")  # keeps 0-d shapes (ascontiguousarray does not)
        blob = caffe_pb2.BlobProto()
        blob.shape.SetInParent()
        blob.shape.dim.extend(data.shape)
        return cls(data, blob.SerializeToString())

    def write(self, f: BinaryIO) -> None:
        f.write(_BLOBS_TAG + varint(self.size) + self.data_head)
        if self.data.nbytes:
            f.write(memoryview(self.data).cast("B"))
        f.write(self.shape_bytes)

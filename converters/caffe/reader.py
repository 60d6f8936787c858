"""Read a binary ``.caffemodel`` fast and lean, with a hand-written scan of the protobuf wire format.

A ``.caffemodel`` is a ``NetParameter``; nearly all of its bytes are the packed float ``data`` of the
layers' ``BlobProto`` blobs. Parsing the whole message with protobuf holds the file bytes and the
decoded message at once (about 2x the file), and converting repeated fields costs time on older
protobuf. Here the scan walks NetParameter -> layer (field 100, or V1 ``layers`` field 2) -> blobs
(field 7, V1 field 6) -> BlobProto, reads each blob's floats straight from the file into its own
``np.empty`` array (``readinto``, no intermediate bytes), and hands only the small non-blob bytes of
each layer to ``ParseFromString``. Peak memory stays near 1x the blob data.

Every length is checked against the file size and its enclosing message, so a truncated or corrupt
file raises :class:`ConversionError` naming the layer and blob instead of returning garbage. Blob data
is allocated only while it fits in the memory this process can still get (``memory.py``); text fields
must be UTF-8 (protobuf's C++ does not check proto2 strings, Python hands them back as bytes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from converters.caffe.memory import available_memory, format_bytes
from converters.caffe.names import non_utf8_field, shown
from converters.errors import ConversionError

# Field numbers (BVLC caffe.proto).
_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_NAME, _LAYER_BLOBS = 1, 7
_V1_NAME, _V1_BLOBS = 4, 6
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA, _BLOB_DIFF, _BLOB_SHAPE, _BLOB_DOUBLE_DATA, _BLOB_DOUBLE_DIFF = 5, 6, 7, 8, 9

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_INT_MAX = 2**31 - 1
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group",
               5: "32-bit"}


@dataclass(frozen=True)
class CaffeModel:
    """A caffemodel split into its definition and its weights.

    ``net``: ``caffe_pb2.NetParameter`` in the current format (V1 upgraded), with no blobs.
    ``blobs``: layer name -> the layer's blobs in Caffe order, float32, shaped as recorded
    (BlobShape dims, else the legacy num/channels/height/width 4-D shape). Layers without blobs
    are absent.
    """

    net: object
    blobs: dict[str, list[np.ndarray]]


def read_caffemodel(path: str | os.PathLike) -> CaffeModel:
    """Read ``path``; a missing file raises FileNotFoundError, a bad one ConversionError."""
    from converters.caffe.proto import caffe_pb2
    from converters.caffe.upgrade import upgrade_net

    path = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        scan = _Scanner(f, size, path)
        try:
            net, blobs = scan.net(caffe_pb2)
        except _WireError as e:
            raise ConversionError(scan.describe(e)) from None
    return CaffeModel(net=upgrade_net(net, where=path), blobs=blobs)


class _WireError(Exception):
    """Raised inside the scan; turned into a ConversionError with the scan's context."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


class _Scanner:
    def __init__(self, f: BinaryIO, size: int, path: str):
        self.f, self.size, self.path = f, size, path
        self.where = ""  # "layer 'fc6' blob 0", for messages
        self.memory = available_memory()
        self.allocated = 0  # bytes of blob data read so far

    # -- messages ------------------------------------------------------------------------------

    def net(self, caffe_pb2):
        net = caffe_pb2.NetParameter()
        rest: list[bytes] = []
        blobs: dict[str, list[np.ndarray]] = {}
        top = self._fields(0, self.size, (_NET_LAYER, _NET_V1_LAYERS), declared=False)
        for field, wire, key_off, off, end in top:
            if field in (_NET_LAYER, _NET_V1_LAYERS):
                v1 = field == _NET_V1_LAYERS
                self._expect(wire, _LEN, "layers (V1)" if v1 else "layer", key_off)
                index = len(net.layers) + len(net.layer)  # the layer's position, for messages
                msg = net.layers.add() if v1 else net.layer.add()
                name, layer_blobs = self._layer(msg, off, end, v1, index)
                if layer_blobs:
                    if name in blobs:
                        raise _WireError("corrupt", f"two layers named {shown(name)} carry blobs")
                    blobs[name] = layer_blobs
                self.where = ""
            else:
                rest.append(self._read(key_off, end - key_off))
        if rest:
            head = caffe_pb2.NetParameter()
            self._parse(head, b"".join(rest), "the net's header fields")
            self._check_text(head, "the net's header: ")
            head.MergeFrom(net)  # header fields first, then the layers in file order
            net = head
        return net, blobs

    def _layer(self, msg, start: int, end: int, v1: bool, index: int):
        name_field, blobs_field = (_V1_NAME, _V1_BLOBS) if v1 else (_LAYER_NAME, _LAYER_BLOBS)
        name = None
        self.where = f"layer #{index}"
        chunks: list[bytes] = []
        blobs: list[np.ndarray] = []
        for field, wire, key_off, off, field_end in self._fields(start, end, (blobs_field,)):
            if field == blobs_field:
                self._expect(wire, _LEN, "blobs", key_off)
                self.where = f"{self._layer_where(name, index)} blob {len(blobs)}"
                blobs.append(self._blob(off, field_end))
                self.where = self._layer_where(name, index)
                continue
            raw = self._read(key_off, field_end - key_off)
            chunks.append(raw)
            if field == name_field and wire == _LEN and name is None:
                name = raw[off - key_off:].decode("utf-8", errors="replace")
                self.where = self._layer_where(name, index)
        self._parse(msg, b"".join(chunks), f"the definition of {self.where}")
        self._check_text(msg)
        return (name if name is not None else f"#{index}"), blobs

    @staticmethod
    def _layer_where(name: str | None, index: int) -> str:
        return f"layer {shown(name)}" if name is not None else f"layer #{index}"

    def _check_text(self, msg, what: str = "") -> None:
        bad = non_utf8_field(msg)
        if bad:
            raise _WireError("corrupt", f"{what}the text field {bad} is not UTF-8")

    def _blob(self, start: int, end: int) -> np.ndarray:
        legacy = [None, None, None, None]  # num, channels, height, width
        shape = None
        floats: list[np.ndarray] = []
        doubles: list[np.ndarray] = []
        for field, wire, key_off, off, field_end in self._fields(start, end):
            n = field_end - off
            if _BLOB_NUM <= field <= _BLOB_WIDTH:
                self._expect(wire, _VARINT, "num/channels/height/width", key_off)
                legacy[field - 1] = _signed(self._varint_at(off, field_end)[0])
            elif field == _BLOB_SHAPE:
                self._expect(wire, _LEN, "shape", key_off)
                from converters.caffe.proto import caffe_pb2

                blob_shape = caffe_pb2.BlobShape()
                self._parse(blob_shape, self._read(off, n), f"the shape of {self.where}")
                shape = tuple(blob_shape.dim)
            elif field == _BLOB_DATA and wire == _LEN:
                floats.append(self._array(off, n, np.dtype("<f4")))
            elif field == _BLOB_DATA and wire == _I32:
                floats.append(np.frombuffer(self._read(off, 4), "<f4"))
            elif field == _BLOB_DOUBLE_DATA and wire == _LEN:
                doubles.append(self._array(off, n, np.dtype("<f8")))
            elif field == _BLOB_DOUBLE_DATA and wire == _I64:
                doubles.append(np.frombuffer(self._read(off, 8), "<f8"))
            elif field in (_BLOB_DATA, _BLOB_DOUBLE_DATA):
                self._expect(wire, _LEN, "data" if field == _BLOB_DATA else "double_data", key_off)
            # diff, double_diff and unknown fields are skipped without reading them.

        # Caffe's Blob::FromProto: double_data wins when present.
        parts = doubles or floats
        data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, "<f4")
        if data.dtype != np.float32:
            data = data.astype(np.float32)
        if any(v is not None for v in legacy):
            shape = tuple(v or 0 for v in legacy)
        elif shape is None:  # Caffe would take shape () here; a 1-D blob is the useful reading
            shape = (data.size,)
        count = _count(shape)
        if count != data.size:
            raise _WireError("mismatch", f"shape {_dims(shape)} needs {count:,} values, found {data.size:,}")
        return data.reshape(shape)

    # -- wire format ---------------------------------------------------------------------------

    def _fields(self, start: int, end: int, descend: tuple[int, ...] = (), declared: bool = True):
        """Yield (field, wire type, key offset, payload offset, payload end) of a message.

        Length-delimited fields numbered in ``descend`` are yielded even when they run past the end
        of the file: the caller scans into them and reports the truncation at the innermost place.
        ``declared``: ``end`` is a length the file declares (false for the top level, the file's end).
        """
        pos = start
        while pos < end:
            if pos >= self.size:
                raise _WireError("truncated", f"needs {end - start} bytes at offset {start}, "
                                 f"file ends after {self.size} bytes")
            key_off = pos
            key, pos = self._varint_at(pos, end)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise _WireError("corrupt", f"field number 0 at offset {key_off}")
            if wire == _VARINT:
                _, field_end = self._varint_at(pos, end)
                off = pos
            elif wire == _LEN:
                length, off = self._varint_at(pos, end)
                field_end = off + length
            elif wire in (_I64, _I32):
                off, field_end = pos, pos + (8 if wire == _I64 else 4)
            else:
                kind = _WIRE_NAMES.get(wire, "invalid")
                raise _WireError("corrupt", f"unsupported wire type {wire} ({kind}) for field {field} "
                                 f"at offset {key_off}")
            self._check(off, field_end - off, end if declared else None, wire == _LEN and field in descend)
            yield field, wire, key_off, off, field_end
            pos = field_end

    def _check(self, off: int, n: int, end: int | None, may_be_cut: bool) -> None:
        if end is not None and off + n > end:
            raise _WireError("corrupt", f"a field of {n} bytes at offset {off} runs past the end of its "
                             f"message at offset {end}")
        if off + n > self.size and not may_be_cut:
            raise _WireError("truncated", f"needs {n} bytes at offset {off}, "
                             f"file ends after {self.size} bytes")

    def _varint_at(self, pos: int, end: int) -> tuple[int, int]:
        self.f.seek(pos)
        buf = self.f.read(min(10, end - pos, self.size - pos))
        value = shift = 0
        for i, byte in enumerate(buf):
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + i + 1
            shift += 7
        if len(buf) == 10:
            raise _WireError("corrupt", f"bad varint (more than 10 bytes) at offset {pos}")
        if pos + len(buf) >= self.size:
            raise _WireError("truncated", f"a varint at offset {pos} is cut off, "
                             f"file ends after {self.size} bytes")
        raise _WireError("corrupt", f"a varint at offset {pos} runs past the end of its message "
                         f"at offset {end}")

    def _read(self, off: int, n: int) -> bytes:
        self.f.seek(off)
        return self.f.read(n)

    def _array(self, off: int, n: int, dtype: np.dtype) -> np.ndarray:
        if n % dtype.itemsize:
            raise _WireError("corrupt", f"packed {dtype.itemsize * 8}-bit values of {n} bytes "
                             f"at offset {off} (not a multiple of {dtype.itemsize})")
        if self.allocated + n > self.memory.nbytes:
            raise _WireError("memory", f"{format_bytes(self.allocated + n)} of blob data would not fit in "
                             f"the {format_bytes(self.memory.nbytes)} available to this process "
                             f"({self.memory.bound}); refused before reading")
        try:
            arr = np.empty(n // dtype.itemsize, dtype)
        except MemoryError:
            raise _WireError("memory", f"no memory for {format_bytes(n)} of blob data") from None
        self.allocated += n
        self.f.seek(off)
        got = self.f.readinto(memoryview(arr).cast("B"))
        if got != n:  # the file shrank under us
            raise _WireError("truncated", f"needs {n} bytes at offset {off}, read {got}")
        return arr

    def _expect(self, wire: int, expected: int, what: str, key_off: int) -> None:
        if wire != expected:
            raise _WireError("corrupt", f"field '{what}' at offset {key_off} has wire type {wire} "
                             f"({_WIRE_NAMES.get(wire, 'invalid')}), expected {_WIRE_NAMES[expected]}")

    def _parse(self, msg, data: bytes, what: str) -> None:
        from google.protobuf.message import DecodeError

        try:
            msg.MergeFromString(data)
        except DecodeError as e:
            raise _WireError("corrupt", f"{what} cannot be decoded ({e})") from None

    def describe(self, e: _WireError) -> str:
        where = f"{self.where} " if self.where else ""
        if e.kind == "truncated":
            return f"truncated caffemodel {self.path}: {where}{e.detail}"
        if e.kind == "mismatch":
            return f"corrupt caffemodel {self.path}: {where}{e.detail}"
        if e.kind == "memory":
            return f"caffemodel {self.path}: {where}{e.detail}"
        where = f"{self.where}: " if self.where else ""
        return f"corrupt caffemodel {self.path}: {where}{e.detail}{self._hint()}"

    def _hint(self) -> str:
        self.f.seek(0)
        head = self.f.read(256)
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            return ""
        if text.isprintable() or all(c.isprintable() or c in "\t\r\n" for c in text):
            return " (this looks like a text file; expected a binary .caffemodel, not a .prototxt)"
        return ""


def _count(shape: tuple[int, ...]) -> int:
    """Caffe's ``Blob::Reshape`` checks: at most 32 axes, no negative dim, at most INT_MAX values
    (checked exactly, axis by axis, so that dims whose product wraps int64 cannot slip through)."""
    if len(shape) > 32:
        raise _WireError("corrupt", f"shape {_dims(shape)} has {len(shape)} axes, at most 32 (Caffe's "
                         "kMaxBlobAxes)")
    count = 1
    for d in shape:
        if d < 0:
            raise _WireError("corrupt", f"negative dimension in shape {_dims(shape)}")
        if count and d > _INT_MAX // count:
            raise _WireError("corrupt", f"shape {_dims(shape)} holds more than {_INT_MAX:,} values "
                             "(Caffe's limit for a blob)")
        count *= d
    return count


def _dims(shape: tuple[int, ...]) -> str:
    dims = [str(d) for d in shape]
    return "(" + ", ".join(dims[:8]) + (f", ... {len(dims)} dims" if len(dims) > 8 else "") + ")"


def _signed(v: int) -> int:
    """A varint as a two's-complement int64 (negative int32/int64 values take 10 bytes)."""
    return v - (1 << 64) if v >= 1 << 63 else v


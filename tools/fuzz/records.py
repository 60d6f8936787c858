"""Mutated LMDB records, run through ``compress train`` in the LeNet set-up (``lenet_setup.py``).

One record of the train or test LMDB (the first more often: it decides the layer's shape) is changed
as a Datum (``channels``, ``height``, ``width`` at boundary values, ``data`` one byte short or long,
``float_data`` holding NaN, a label outside the classes, ``encoded`` set on raw pixels), or, in the
PNG-encoded set-up, as an image file (a header that declares 60000 x 60000 or 2^31 - 1 x 1 pixels,
flipped bytes, another format or channel count, 16-bit pixels); or the record's bytes are mutated, or
the LMDB keeps one record or none.
"""
from __future__ import annotations

import io
import random
import struct
import zlib

from tools.fuzz import lenet_setup, values
from tools.fuzz.case import Case, mutate_bytes
from tools.fuzz.training import bounded, case


def generate(rng: random.Random) -> Case:
    return bounded(_case, rng)


def _case(rng: random.Random) -> Case:
    encoded = rng.random() < 0.5
    train, test = (list(r) for r in lenet_setup.records(encoded))
    which, records = ("train", train) if rng.random() < 0.8 else ("test", test)
    op = rng.choice(["datum", "datum", "image" if encoded else "datum", "bytes", "db"])
    if op == "db":
        kind = rng.choice(["empty", "one"])
        records[:] = [] if kind == "empty" else records[:1]
    else:
        i = 0 if rng.random() < 0.4 else rng.randrange(len(records))
        kind = {"datum": _datum, "image": _image, "bytes": _bytes}[op](rng, records, i)
    name = f"{which}_lmdb/data.mdb"
    what = f"{'png' if encoded else 'raw'}:{which}:{op}-{kind}"
    return case("lmdb", what, {name: lenet_setup.lmdb_file(records)}, encoded=encoded)


def _parse(raw: bytes):
    from converters.caffe.proto import caffe_pb2

    datum = caffe_pb2.Datum()
    datum.ParseFromString(raw)
    return datum


def _datum(rng: random.Random, records: list[bytes], i: int) -> str:
    datum = _parse(records[i])
    kind = rng.choice(["shape", "shape", "data", "float", "label", "encoded"])
    if kind == "shape":
        field = rng.choice(["channels", "height", "width"])
        setattr(datum, field, max(-(2 ** 31), min(values.int_value(rng), 2 ** 31 - 1)))
        kind = f"shape-{field}"
    elif kind == "data":
        datum.data = rng.choice([datum.data[:-1], datum.data + b"\x00", b"", datum.data * 2])
    elif kind == "float":
        n = len(datum.data) if not datum.encoded else 784
        datum.ClearField("data")
        datum.encoded = False
        datum.channels, datum.height, datum.width = 1, 28, 28
        value = rng.choice([0.5, float("nan"), float("inf"), 3e38, -1.0])
        datum.float_data.extend([value] * rng.choice([n, n - 1]))
    elif kind == "label":
        datum.label = rng.choice([-1, 10, 11, 2 ** 31 - 1, -(2 ** 31)])
    else:
        datum.encoded = not datum.encoded
    records[i] = datum.SerializeToString()
    return kind


def _image(rng: random.Random, records: list[bytes], i: int) -> str:
    import numpy as np

    datum = _parse(records[i])
    kind = rng.choice(["header", "header", "flip", "cut", "format", "channels", "16-bit", "empty"])
    buf = bytearray(datum.data)
    if kind == "header":
        w, h = rng.choice([(60000, 60000), (20000, 20000), (2 ** 31 - 1, 1), (0, 0), (2 ** 20 + 1, 2),
                           (28, 280)])
        buf[16:24] = struct.pack(">II", w, h)
        if rng.random() < 0.8:  # a consistent header: its CRC recomputed
            buf[29:33] = struct.pack(">I", zlib.crc32(bytes(buf[12:29])))
        kind = f"header-{w}x{h}"
    elif kind == "flip":
        buf = bytearray(mutate_bytes(rng, bytes(buf))[0])
    elif kind == "cut":
        del buf[rng.randrange(len(buf)):]
    elif kind == "format":
        fmt = rng.choice(["JPEG", "BMP", "GIF", "TIFF", "WEBP"])
        buf = bytearray(_encode(np.full((28, 28), 128, np.uint8), fmt))
        kind = f"format-{fmt}"
    elif kind == "channels":
        buf = bytearray(lenet_setup.png(np.zeros((28, 28, rng.choice([3, 4])), np.uint8)))
    elif kind == "16-bit":
        buf = bytearray(_encode(np.full((28, 28), 40000, np.uint16), "PNG"))
    else:
        buf = bytearray()
    datum.data = bytes(buf)
    records[i] = datum.SerializeToString()
    return kind


def _bytes(rng: random.Random, records: list[bytes], i: int) -> str:
    records[i], kind = mutate_bytes(rng, records[i])
    return kind


def _encode(pixels, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()

"""Caffe's ``Datum`` record: one image and its label, as the Data layer reads it from a database.

A Datum holds either raw pixels (``data``: C*H*W uint8 bytes in C, H, W order, or ``float_data``:
C*H*W floats; ``data`` wins when both are present, as in ``DataTransformer::Transform``) or an
encoded image (``encoded: true``, ``data`` = the JPEG/PNG file's bytes), which Caffe decodes with
``cv::imdecode`` in the file's own channels, or in colour / grey when ``transform_param`` sets
``force_color`` / ``force_gray`` (``src/caffe/util/io.cpp``: ``DecodeDatumToCVMat*``).
"""
from __future__ import annotations

import numpy as np

from compress.data.caffe.image import imdecode, to_chw
from compress.errors import CompressError


def decode_mode(force_color: bool, force_gray: bool, where: str) -> str:
    """The ``imdecode`` mode for encoded records: "color", "gray", or the file's own ("unchanged")."""
    if force_color and force_gray:
        raise CompressError(f"{where}: transform_param sets both force_color and force_gray; "
                            "Caffe accepts at most one")
    return "color" if force_color else "gray" if force_gray else "unchanged"


def parse_datum(raw: bytes, where: str):
    """The ``caffe_pb2.Datum`` in ``raw``; anything else is an error naming ``where``."""
    from google.protobuf.message import DecodeError

    from converters.caffe.proto import caffe_pb2

    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(raw)
    except DecodeError as e:
        raise CompressError(f"{where}: not a serialized Datum ({e})") from None
    return datum


def datum_pixels(datum, mode: str, where: str) -> np.ndarray:
    """The record's image as (C, H, W): uint8 for raw bytes and decoded images, float32 for float_data.

    ``mode`` applies to encoded records only (Caffe ignores force_color/force_gray for raw ones)."""
    if datum.encoded:
        return to_chw(imdecode(datum.data, mode, where))
    shape = (datum.channels, datum.height, datum.width)
    if min(shape) <= 0:
        raise CompressError(f"{where}: Datum shape {chw_text(shape)} must be positive in every dimension")
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        if len(datum.data) != count:
            raise CompressError(f"{where}: Datum {chw_text(shape)} needs {count} bytes of data, found "
                                f"{len(datum.data)}")
        return np.frombuffer(datum.data, np.uint8).reshape(shape)
    if len(datum.float_data) != count:
        raise CompressError(f"{where}: Datum {chw_text(shape)} needs {count} values (data or float_data), "
                            f"found {len(datum.float_data)} float_data and no data")
    return np.asarray(datum.float_data, np.float32).reshape(shape)


def decode_record(raw: bytes, mode: str, where: str) -> tuple[np.ndarray, int]:
    """(pixels (C, H, W), label) of one serialized Datum."""
    datum = parse_datum(raw, where)
    return datum_pixels(datum, mode, where), int(datum.label)


LABEL_TAG = 0x28  # field 5 (label), varint


def decode_alike(values: list[bytes]) -> tuple[np.ndarray, np.ndarray] | None:
    """Every record at once, ``(images (N, C, H, W) uint8, labels int64)``, when they are raw Datums
    serialized alike: the first record's bytes up to its pixels (the shape fields, the data field's tag
    and length), then the pixels, then a label field of one byte (labels 0-127) and nothing after it, as
    ``convert_mnist_data``, ``convert_imageset`` and this tool's writer lay them out. Each such record
    parses to the first one's fields with its own pixels and label (a later field wins in protobuf), so
    the result is what :func:`decode_record` gives record by record, without a parse per record.
    None when any record differs: decode them one by one then."""
    first = values[0]
    try:
        datum = parse_datum(first, "")
    except CompressError:
        return None
    count = datum.channels * datum.height * datum.width
    head = len(first) - count - 2
    if (datum.encoded or len(datum.float_data) or count <= 0 or len(datum.data) != count or head <= 0
            or first[head:head + count] != datum.data
            or first[head + count:] != bytes((LABEL_TAG, datum.label)) or not 0 <= datum.label < 0x80):
        return None
    size = len(first)
    if any(len(v) != size for v in values):
        return None
    rows = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), size)
    heads = rows[:, :head]
    if not ((heads == heads[0]).all() and (rows[:, -2] == LABEL_TAG).all() and (rows[:, -1] < 0x80).all()):
        return None
    images = rows[:, head:head + count].reshape(len(values), datum.channels, datum.height, datum.width)
    return images.copy(), rows[:, -1].astype(np.int64)


def chw_text(shape) -> str:
    """``1x28x28``: a shape as Caffe's messages write it."""
    return "x".join(str(int(d)) for d in shape)

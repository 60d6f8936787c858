"""``mean.binaryproto``: the mean image of a Caffe data set, one ``BlobProto``.

Caffe's ``compute_image_mean`` writes it with the legacy 4-D shape (1, C, H, W); newer tools write a
``BlobShape``. Both read as a (C, H, W) float32 array.
"""
from __future__ import annotations

import os

import numpy as np

from converters.atomic import atomic_write_bytes
from converters.errors import ConversionError


def read_mean(path: str | os.PathLike) -> np.ndarray:
    """Read a mean file as (C, H, W) float32; a missing file raises FileNotFoundError."""
    from google.protobuf.message import DecodeError

    from converters.caffe.proto import caffe_pb2

    with open(path, "rb") as f:
        raw = f.read()
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(raw)
    except DecodeError as e:
        raise ConversionError(f"{path}: not a BlobProto (mean.binaryproto): {e}") from None
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    data = np.array(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float32)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if not shape or count != data.size:
        raise ConversionError(f"{path}: mean blob of shape {shape} needs {count} values, found {data.size}")
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise ConversionError(f"{path}: expected a mean image of shape (C, H, W) or (1, C, H, W), "
                              f"found {shape}")
    return data.reshape(shape)


def write_mean(path: str | os.PathLike, mean: np.ndarray) -> None:
    """Write a (C, H, W) mean as Caffe's compute_image_mean does (legacy num=1, C, H, W)."""
    from converters.caffe.proto import caffe_pb2

    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 3:
        raise ConversionError(f"mean image must be (C, H, W), found shape {mean.shape}")
    blob = caffe_pb2.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1], width=mean.shape[2])
    blob.data.extend(mean.reshape(-1))
    atomic_write_bytes(path, blob.SerializeToString())

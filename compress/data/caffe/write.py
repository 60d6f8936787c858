"""Write Datum LMDBs the way Caffe's tools do (``examples/mnist/convert_mnist_data.cpp``,
``tools/convert_imageset.cpp``), for tests and for users who hold arrays rather than a database.

Keys are ``%08d`` from ``00000000`` in the order given; each value is a serialized ``Datum``:
``channels``/``height``/``width``, ``data`` = the raw uint8 pixels in C, H, W order (or
``float_data`` for float images), and ``label``; or, for an encoded image, ``data`` = the file's bytes
and ``encoded: true``. For MNIST arrays the bytes are exactly ``convert_mnist_data``'s. The database
is written into a temporary folder beside the target and renamed into place when complete.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from compress.errors import CompressError

_CHUNK = 1000  # records per transaction, as convert_mnist_data commits
_INITIAL_MAP = 64 << 20


def datum_bytes(image: np.ndarray | None = None, label: int = 0, *, encoded: bytes | None = None) -> bytes:
    """One serialized Datum: raw ``image`` (C, H, W) uint8 -> ``data``, float -> ``float_data``;
    or the bytes of an ``encoded`` image file."""
    from converters.caffe.proto import caffe_pb2

    if (image is None) == (encoded is None):
        raise ValueError("give exactly one of image and encoded")
    if encoded is not None:
        return caffe_pb2.Datum(data=bytes(encoded), label=int(label), encoded=True).SerializeToString()
    image = np.asarray(image)
    if image.ndim != 3:
        raise CompressError(f"a Datum image must be (C, H, W), found shape {image.shape}")
    datum = caffe_pb2.Datum(channels=image.shape[0], height=image.shape[1], width=image.shape[2],
                            label=int(label))
    if image.dtype == np.uint8:
        datum.data = np.ascontiguousarray(image).tobytes()
    else:
        datum.float_data.extend(image.astype(np.float32).reshape(-1).tolist())
    return datum.SerializeToString()


def write_lmdb(path: str | os.PathLike, values: Iterable[bytes], *, overwrite: bool = False) -> int:
    """Store ``values`` under keys ``%08d`` in a new LMDB folder ``path``, atomically; returns the count.

    An existing ``path`` is an error unless ``overwrite`` (convert_mnist_data refuses it too)."""
    import lmdb

    path = Path(path)
    if not path.parent.is_dir():
        raise CompressError(f"output directory does not exist: {path.parent}")
    if path.exists() and not overwrite:
        raise CompressError(f"{path} already exists; remove it or pass overwrite")
    tmp = _new_dir(path, "tmp")
    try:
        env = lmdb.open(str(tmp), map_size=_INITIAL_MAP, subdir=True)
        try:
            count = 0
            chunk: list[bytes] = []
            for value in values:
                chunk.append(value)
                if len(chunk) == _CHUNK:
                    count = _commit(env, chunk, count)
                    chunk = []
            count = _commit(env, chunk, count)
        finally:
            env.close()
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def write_datum_lmdb(path: str | os.PathLike, images: np.ndarray, labels, *,
                     overwrite: bool = False) -> int:
    """An LMDB of raw Datums from ``images`` (N, C, H, W) or (N, H, W) and ``labels`` (N,)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    labels = np.asarray(labels)
    if images.ndim != 4 or labels.shape != (len(images),):
        raise CompressError(f"expected images (N, C, H, W) and labels (N,), found {images.shape} and "
                            f"{labels.shape}")
    return write_lmdb(path, (datum_bytes(img, lab) for img, lab in zip(images, labels, strict=True)),
                      overwrite=overwrite)


def _commit(env, chunk: list[bytes], start: int) -> int:
    import lmdb

    while True:
        try:
            with env.begin(write=True) as txn:
                for i, value in enumerate(chunk, start):
                    txn.put(b"%08d" % i, value, append=True)
            return start + len(chunk)
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def _replace_dir(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.rename(tmp, path)
        return
    trash = _new_dir(path, "old")
    os.rename(path, trash / "old")
    os.rename(tmp, path)
    with contextlib.suppress(OSError):
        shutil.rmtree(trash)


def _new_dir(path: Path, suffix: str) -> Path:
    """A fresh hidden folder beside ``path``, with the permissions the umask gives (unlike mkdtemp)."""
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.{suffix}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(candidate)
            return candidate

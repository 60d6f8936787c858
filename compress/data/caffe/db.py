"""Datum records of an LMDB, in key order, read as Caffe's Data layer reads them.

BVLC ``src/caffe/layers/data_layer.cpp`` opens ``data_param.source`` (``db_lmdb.cpp``: a folder
holding ``data.mdb``, read-only), starts at the first key and takes the next record for every image,
going back to the first key after the last (``Next()``: "Restarting data prefetching from start").
There is no shuffling and, in Caffe 1.0, no ``rand_skip``.

:class:`LmdbRecords` serves records by position (position ``p`` is the ``p mod N``-th key), either
from memory, when the decoded images fit ``memory_limit`` (read and decoded once: a batch is then
one indexing operation), or streamed through an LMDB cursor. Both give the same images.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from compress.data.caffe.datum import decode_alike, decode_record, parse_datum
from compress.errors import CompressError
from converters.caffe.names import shown, shown_path

DEFAULT_MEMORY_LIMIT = 2 << 30  # bytes of decoded images kept in memory per layer
BACKENDS = {1: "LMDB", 0: "LEVELDB"}  # DataParameter.DB
Check = Callable[[tuple[int, ...], str], None]  # (C, H, W) of a record, where -> raises if unusable


def key_text(key: bytes) -> str:
    return key.decode("ascii", "backslashreplace")


_OPEN: dict[str, list] = {}  # real path -> [environment, users]: LMDB allows one per process


def open_lmdb(path: str, where: str):
    """Open ``path`` read-only like Caffe's ``LMDB::Open``; errors name ``where`` and the folder.

    Layers reading the same LMDB share one environment (each with its own transaction and cursor);
    give it back with :func:`close_lmdb`."""
    import lmdb

    cwd = f" (relative paths resolve against the working directory {os.getcwd()})" \
        if not os.path.isabs(path) else ""
    if not os.path.exists(path):
        raise CompressError(f"{where}: no LMDB folder {shown_path(path)}{cwd}")
    if not os.path.isdir(path):
        raise CompressError(f"{where}: {shown_path(path)} is a file; an LMDB is a folder holding data.mdb")
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        raise CompressError(f"{where}: {shown_path(path)} has no data.mdb, so it is not an LMDB"
                            + (" (it looks like a LevelDB: set data_param.backend to LEVELDB "
                               "only if you can read LevelDB, which this tool cannot)"
                               if os.path.isfile(os.path.join(path, "CURRENT")) else ""))
    real = os.path.realpath(path)
    if real not in _OPEN:
        try:
            env = lmdb.open(path, readonly=True, lock=False, subdir=True)
        except lmdb.Error as e:
            raise CompressError(f"{where}: cannot open LMDB {shown_path(path)}: {e}") from None
        _OPEN[real] = [env, 0]
    _OPEN[real][1] += 1
    env = _OPEN[real][0]
    if env.stat()["entries"] == 0:
        close_lmdb(env)
        raise CompressError(f"{where}: LMDB {shown_path(path)} has no records")
    return env


def close_lmdb(env) -> None:
    """Give back an environment from :func:`open_lmdb`; the last user closes it."""
    real = os.path.realpath(env.path())
    entry = _OPEN.get(real)
    if entry is None or entry[0] is not env:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _OPEN[real]
        env.close()


class LmdbRecords:
    """The records of one LMDB by position, wrapping at the end; decoded in ``mode`` (see datum.py)."""

    def __init__(self, path: str, mode: str, where: str):
        self.path, self.mode, self.where = path, mode, where
        self.env = open_lmdb(path, where)
        self.entries = int(self.env.stat()["entries"])
        self._txn = self.env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._cursor.first()
        self._pos = 0  # the cursor's position (streaming)
        self._check: Check = lambda chw, where: None
        key, value = self._cursor.item()
        self.first_image, _ = self._decode(key, value)
        self.first_encoded = bool(parse_datum(value, self.where).encoded)
        self._images: np.ndarray | list[np.ndarray] | None = None
        self._labels: np.ndarray | None = None

    def prepare(self, check: Check, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> bool:
        """Install the per-record ``check``; load every record into memory if the decoded images are
        estimated (from the first) to fit ``memory_limit`` bytes. Returns whether it did."""
        self._check = check
        if self.entries * self.first_image.nbytes > memory_limit:
            return False
        alike = decode_alike([value for value in self._txn.cursor().iternext(keys=False, values=True)])
        if alike is not None and self._checked(alike[0]):
            self._images, self._labels = alike
            self.close()
            return True
        images: list[np.ndarray] = []
        labels = np.empty(self.entries, np.int64)
        for i, (key, value) in enumerate(self._txn.cursor().iternext()):
            img, labels[i] = self._decode(key, value)
            images.append(img)
        uniform = all(img.shape == images[0].shape and img.dtype == images[0].dtype for img in images)
        self._images = np.stack(images) if uniform else images
        self._labels = labels
        self.close()
        return True

    def _checked(self, images: np.ndarray) -> bool:
        """Whether the check passes for images of this shape (else the records are decoded one by one, so
        that the error names the first record refused)."""
        try:
            self._check(images.shape[1:], self.where)
        except CompressError:
            return False
        return True

    def close(self) -> None:
        """Release the database (records already in memory stay readable)."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = self._cursor = None
            close_lmdb(self.env)

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter shutdown the modules it needs may be gone
            pass

    @property
    def in_memory(self) -> bool:
        """Whether every record was decoded into memory (else each batch is read from the LMDB)."""
        return self._labels is not None

    def read(self, start: int, count: int,
             stride: int = 1) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
        """Records ``start, start+stride, ...`` (mod entries): (images stacked (B, C, H, W) when they share
        a shape, else a list of (C, H, W)), labels int64 (B,)."""
        start %= self.entries
        if self._labels is not None:
            return self._read_memory(start, count, stride)
        return self._read_stream(start, count, stride)

    def _read_memory(self, start: int, count: int, stride: int):
        if stride == 1 and start + count <= self.entries:
            idx = slice(start, start + count)
        else:
            idx = (start + stride * np.arange(count)) % self.entries
        labels = self._labels[idx].copy()  # the caller may own it (a tensor over it can be changed)
        if isinstance(self._images, np.ndarray):
            return self._images[idx], labels
        order = range(self.entries)[idx] if isinstance(idx, slice) else idx.tolist()
        return [self._images[i] for i in order], labels

    def _read_stream(self, start: int, count: int, stride: int):
        self._step((start - self._pos) % self.entries)  # a resumed run walks there: a cursor only steps
        images, labels = [], np.empty(count, np.int64)
        for i in range(count):
            img, labels[i] = self._decode(*self._cursor.item())
            images.append(img)
            self._step(1 if i == count - 1 else stride)  # the records of other ranks are not decoded
        if all(img.shape == images[0].shape and img.dtype == images[0].dtype for img in images):
            return np.stack(images), labels
        return images, labels

    def _step(self, count: int) -> None:
        """Move the cursor ``count`` records on, from the last key to the first."""
        for _ in range(count):
            if not self._cursor.next():
                self._cursor.first()
            self._pos = (self._pos + 1) % self.entries

    def _decode(self, key: bytes, value: bytes) -> tuple[np.ndarray, int]:
        where = f"{self.where}: record {shown(key_text(key))} of {shown_path(self.path)}"
        img, label = decode_record(value, self.mode, where)
        self._check(img.shape, where)
        return img, label

"""A model file's contents without its tensor data and without torch: the dict ``torch.save`` wrote, each
tensor replaced by its shape and dtype.

What ``compress info`` needs of a model file is its net definition and its blobs' shapes, and importing
torch costs seconds where reading those costs milliseconds. This reader is ``pickle.Unpickler`` held
to what a model file's pickle is (``compress/archive.py`` has already refused any other global): the
opcodes that torch's own ``weights_only`` unpickler accepts, minus the ones ``torch.save`` never writes
for plain data (``BUILD``, ``NEWOBJ``, sets), and globals resolved to this module's own stand-ins
(never to the named callables), so nothing but building dicts, lists, tuples and strings runs. A
tensor becomes a :class:`BlobSkeleton` after the checks ``torch.load`` would make of it: its storage
record exists with the declared byte count, and its view lies inside that storage.

Anything else raises :class:`Unreadable`; its caller then loads the file with torch, which accepts or
refuses it in its own words. So this reader never decides a file is bad, only that it is beyond it.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import zipfile
from dataclasses import dataclass

from compress.archive import PICKLE_LIMIT

# torch storage type -> (dtype, bytes per element): the float storages compress/archive.py allows
STORAGES = {"FloatStorage": ("float32", 4), "DoubleStorage": ("float64", 8), "HalfStorage": ("float16", 2),
            "BFloat16Storage": ("bfloat16", 2)}
# opcodes of a torch.save of plain data that torch's weights_only unpickler also accepts
OPCODES = frozenset({
    "PROTO", "STOP", "MARK", "GLOBAL", "REDUCE", "BINPERSID", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE",
    "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "NONE", "NEWTRUE",
    "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE", "BINPUT", "LONG_BINPUT",
    "BINGET", "LONG_BINGET",
})


class Unreadable(Exception):
    """The file is not one this reader can vouch for (its caller loads it with torch instead)."""


@dataclass(frozen=True)
class BlobSkeleton:
    """A tensor of the file, without its data."""

    shape: tuple[int, ...]
    dtype: str


def read_skeleton(path: str | os.PathLike, finite: bool = False) -> dict:
    """The object pickled in the model file ``path``, tensors as :class:`BlobSkeleton`; :class:`Unreadable`
    when the file holds anything but plain data and float tensors, or a tensor torch could not rebuild.
    ``finite`` also reads every storage (numpy) and calls one holding NaN or infinity unreadable: whether
    such weights are acceptable is the loader's to say."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(pickles) != 1 or pickles[0].file_size > PICKLE_LIMIT:
                raise Unreadable("not one data.pkl of a bounded size")
            prefix = pickles[0].filename[: -len("data.pkl")]
            records = {i.filename[len(prefix) + len("data/"):]: i.file_size for i in infos
                       if i.filename.startswith(prefix + "data/")}
            data = zf.read(pickles[0])
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, NotImplementedError) as e:
        raise Unreadable(f"the archive: {e}") from None
    _check_opcodes(data)
    reader = _Reader(io.BytesIO(data), records)
    try:
        result = reader.load()
    except Unreadable:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed pickle: torch.load says what is wrong with it
        raise Unreadable(f"the pickle: {type(e).__name__}: {e}") from None
    if finite:
        _check_finite(path, prefix, reader.storages)
    return result


def _check_finite(path, prefix: str, storages: dict[str, str]) -> None:
    import numpy as np

    try:
        with zipfile.ZipFile(path) as zf:
            for key, dtype in storages.items():
                raw = zf.read(f"{prefix}data/{key}")
                if dtype == "bfloat16":  # the upper half of a float32
                    values = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
                else:
                    values = np.frombuffer(raw, {"float32": "<f4", "float64": "<f8", "float16": "<f2"}[dtype])
                if not np.isfinite(values).all():
                    raise Unreadable(f"storage {key!r} holds NaN or infinity")
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, NotImplementedError) as e:
        raise Unreadable(f"the archive: {e}") from None


def _check_opcodes(data: bytes) -> None:
    try:
        for op, _, _ in pickletools.genops(data):
            if op.name not in OPCODES:
                raise Unreadable(f"opcode {op.name}")
    except Unreadable:
        raise
    except Exception as e:  # noqa: BLE001 - pickletools raises ValueError and more on malformed data
        raise Unreadable(f"the pickle's opcodes: {e}") from None


@dataclass(frozen=True)
class _Storage:
    dtype: str
    numel: int


@dataclass(frozen=True)
class _StorageType:
    name: str


class _Reader(pickle.Unpickler):
    def __init__(self, file, records: dict[str, int]) -> None:
        super().__init__(file)
        self.records = records
        self.storages: dict[str, str] = {}  # key -> dtype of every storage the pickle refers to

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return _ordered_dict
        if module == "torch" and name in STORAGES:
            return _StorageType(name)
        raise Unreadable(f"global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and type(pid[4]) is int):
            raise Unreadable(f"persistent id {pid!r:.80}")
        dtype, size = STORAGES[pid[1].name]
        if pid[4] < 0 or self.records.get(pid[2]) != pid[4] * size:
            raise Unreadable(f"storage {pid[2]!r}: no record of {pid[4] * size} bytes")
        self.storages[pid[2]] = dtype
        return _Storage(dtype, pid[4])


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    ints = all(type(d) is int and d >= 0 for d in (*size, *stride, offset)) if (
        isinstance(size, tuple) and isinstance(stride, tuple)) else False
    if (not isinstance(storage, _Storage) or not ints or len(size) != len(stride) or metadata is not None
            or hooks):
        raise Unreadable("a tensor other than a dense view of a float storage")
    if all(size) and offset + sum((d - 1) * s for d, s in zip(size, stride, strict=True)) >= storage.numel:
        raise Unreadable("a tensor view past the end of its storage")
    return BlobSkeleton(tuple(size), storage.dtype)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    if not isinstance(data, BlobSkeleton):
        raise Unreadable("a parameter of something other than a tensor")
    return data


def _ordered_dict(*args):
    if args:
        raise Unreadable("an OrderedDict built with arguments")
    return {}

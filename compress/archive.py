"""A model file inspected before it is unpickled: what it is, what its pickle names, what it expands to.

A model file is the zip archive ``torch.save`` writes: ``<archive>/data.pkl`` (the pickled dict),
``<archive>/data/<key>`` (one entry per tensor storage) and a few small records. ``torch.load(...,
weights_only=True)`` already refuses to run code, but it reads first and explains afterwards (with
advice to pass ``weights_only=False``, exactly wrong for a file that is not a model). So the loader
looks first, with nothing but ``zipfile`` and ``pickletools`` (which parse, never execute):

* a file that is not a zip archive is described (``compress/filekind.py``) and refused;
* the pickle's globals (``GLOBAL``/``STACK_GLOBAL``/``INST``) must be the few a model file holds:
  ``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter``, float storages, ``OrderedDict``.
  A sparse or meta tensor, another dtype, or anything that would call code (``os.system``,
  ``builtins.exec``...) is named and refused, unloaded;
* the dict must carry ``"format": "compress-model"`` and a ``netdef``; the net definition is read
  out of the pickle's opcodes and planned on the meta device, and the archive's storages may
  expand to at most twice the bytes of the weights it declares (plus 1 MiB): a deflated 512 MB
  storage in a 4 MB file is a zip bomb, refused before it is inflated.
"""
from __future__ import annotations

import os
import pickletools
import zipfile
import zlib
from dataclasses import dataclass

from compress.errors import CompressError

# (module, name) of the globals a compress model file's pickle holds, and why others are refused.
ALLOWED_GLOBALS = frozenset({
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"), ("torch", "FloatStorage"), ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"), ("torch", "BFloat16Storage"),
})
_TENSOR_KINDS = {
    "_rebuild_sparse_tensor": "a sparse tensor", "_rebuild_sparse_csr_tensor": "a sparse tensor",
    "_rebuild_meta_tensor_no_storage": "a tensor on the meta device (no data)",
    "_rebuild_device_tensor_from_numpy": "a tensor on another device",
    "_rebuild_qtensor": "a quantized tensor", "_rebuild_nested_tensor": "a nested tensor",
    "_rebuild_wrapper_subclass": "a tensor subclass", "_rebuild_from_type_v2": "a tensor subclass",
}
PICKLE_LIMIT = 64 << 20  # data.pkl holds text and small numbers; its size is bounded before reading
SLACK = 1 << 20


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect_model_file` found: the netdef text and the bytes the storages expand to."""

    netdef: str
    storage_bytes: int


def inspect_model_file(path: str | os.PathLike, expected: str) -> Inspection:
    """Check ``path`` as described in the module docstring; a CompressError says what is wrong.
    ``expected`` ends every "this is not a model file" message (what the caller accepts)."""
    from compress.filekind import describe_file

    path = str(path)
    try:
        is_zip = zipfile.is_zipfile(path)
    except _ZIP_ERRORS as e:  # end records that name another disk (a zip64 locator) raise here
        raise _damaged(path, e) from None
    if not is_zip:
        _refuse_raw_pickle(path, expected)
        raise CompressError(f"{path}: {describe_file(path)}, not a model file; {expected}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(pickles) != 1:
                raise CompressError(f"{path}: a zip archive, but not one written by torch.save (no single "
                                    f"data.pkl); not a model file; {expected}")
            info = pickles[0]
            if info.file_size > PICKLE_LIMIT:
                raise CompressError(f"{path}: corrupt model file: its pickle expands to {info.file_size:,} "
                                    f"bytes (a model file's is a few KB, at most {PICKLE_LIMIT:,})")
            data = zf.read(info)
    except CompressError:
        raise
    except _ZIP_ERRORS as e:
        raise _damaged(path, e) from None
    prefix = info.filename[: -len("data.pkl")]
    storage = sum(i.file_size for i in infos if i.filename.startswith(prefix + "data/"))
    strings = scan_pickle(data, path)
    netdef = _value_after(strings, "netdef")
    if _value_after(strings, "format") != "compress-model" or netdef is None:
        raise CompressError(f"{path}: a PyTorch file, but not a compress model file (it lacks format "
                            f"'compress-model' and a net definition); {expected}")
    return Inspection(netdef, storage)


# What zipfile raises on a damaged archive (RuntimeError: an encrypted entry).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OSError,
               RuntimeError, zlib.error)


def _damaged(path: str, e: BaseException) -> CompressError:
    return CompressError(f"{path}: a damaged zip archive ({_first_line(e)}); not a readable model file")


def _refuse_raw_pickle(path: str, expected: str) -> None:
    """A whole file that parses as a pickle (any protocol, text ones included): name what it would
    call, or say it is a pickle; return when it is not one."""
    if os.path.getsize(path) > PICKLE_LIMIT:
        return
    with open(path, "rb") as f:
        data = f.read()
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a pickle: pickletools raises ValueError and more
        return
    if not ops or ops[-1][0].name != "STOP" or ops[-1][2] + 1 != len(data):
        return
    scan_pickle(data, path)
    raise CompressError(f"{path}: a Python pickle, not a model file (a PyTorch file in the legacy format, "
                        f"or another pickle; it is never unpickled, as that could run code); {expected}")


def check_expansion(path: str, inspection: Inspection, declared_bytes: int) -> None:
    """Refuse storages that expand to more than the net definition's weights can account for."""
    bound = 2 * declared_bytes + SLACK
    if inspection.storage_bytes > bound:
        raise CompressError(f"{path}: corrupt model file: its tensors expand to {inspection.storage_bytes:,} "
                            f"bytes, but its net definition declares {declared_bytes:,} bytes of weights "
                            f"(at most {bound:,} accepted); refused before unpacking")


def scan_pickle(data: bytes, path: str) -> list[str]:
    """The strings a pickle pushes, in order, after checking every global it names against
    :data:`ALLOWED_GLOBALS`. Parses opcodes only (``pickletools.genops``); nothing is executed."""
    strings: list[str] = []
    stack: list[object] = []  # recent pushes, enough to name a STACK_GLOBAL's module and name
    memo: dict[int, object] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                _check_global(module, attr, path)
            elif name == "STACK_GLOBAL":
                module, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                if not isinstance(module, str) or not isinstance(attr, str):
                    raise CompressError(f"{path}: refused: its pickle names a callable indirectly; a model "
                                        "file never does (the file was not unpickled)")
                _check_global(module, attr, path)
            elif name.startswith("EXT"):
                raise CompressError(f"{path}: refused: its pickle uses the copyreg extension registry; a "
                                    "model file never does (the file was not unpickled)")
            if isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
                strings.append(str(arg))
                stack.append(arg)
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = stack[-1] if stack else None
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo.get(int(arg)))
            else:
                stack.append(None)
            del stack[:-4]
    except CompressError:
        raise
    except Exception as e:  # noqa: BLE001 - pickletools raises ValueError and more on malformed data
        raise CompressError(f"{path}: corrupt model file: its pickle cannot be parsed "
                            f"({_first_line(e)})") from None
    return strings


def _check_global(module: str, attr: str, path: str) -> None:
    if (module, attr) in ALLOWED_GLOBALS:
        return
    shown = f"{module}.{attr}"[:120]
    if module.startswith("torch"):
        kind = _TENSOR_KINDS.get(attr) or (f"a {attr.removesuffix('Storage').lower()} tensor"
                                           if attr.endswith("Storage") else f"a reference to {shown}")
        raise CompressError(f"{path}: not a model file compress can load: it holds {kind} ({shown}); a "
                            "model file's blobs are dense float32 tensors")
    raise CompressError(f"{path}: refused: its pickle calls {shown}, which would run code when "
                        "unpickled; a model file never does (the file was not unpickled)")


def _value_after(strings: list[str], key: str) -> str | None:
    """The string pushed right after ``key`` (a dict item's value), if any."""
    for i, s in enumerate(strings[:-1]):
        if s == key:
            return strings[i + 1]
    return None


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:200]

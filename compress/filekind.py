"""Say what a file appears to be, from its first bytes, for "this is not a model" messages.

Given ``README.md``, an ``.onnx``, a ``.png`` or random bytes where a model is expected, a user should
read what the file is and what would be accepted, not a loader's internals. The signatures are the
formats' own magic numbers (PNG, JPEG, GIF, zip, gzip, bzip2, xz, NumPy, HDF5, PDF, ELF, pickle);
ONNX and binary caffemodels have no magic and are recognised by their first protobuf fields; text is
told apart by decoding it (a Caffe net definition by its ``layer {`` blocks).
"""
from __future__ import annotations

import os

_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "an empty zip archive"), (b"\x1f\x8b", "a gzip file"),
    (b"BZh", "a bzip2 file"), (b"\xfd7zXZ\x00", "an xz file"), (b"\x93NUMPY", "a NumPy array (.npy)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras or Caffe HDF5 model?)"), (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable (ELF)"),
]
_HEAD = 4096


def describe_file(path: str | os.PathLike) -> str:
    """A short phrase, e.g. ``a PNG image`` or ``an ONNX model (...)``; never raises for a readable file."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    suffix = os.path.splitext(str(path))[1].lower()
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return ("a Python pickle (a PyTorch file in the legacy format, or another pickle; it is never "
                "unpickled, as that could run code)")
    if suffix == ".onnx" or _looks_onnx(head):
        return ("an ONNX model (compress writes ONNX but does not read it back: give the model file or "
                ".caffemodel it was exported from)")
    if b"\xa2\x06" in head[:8] or (head[:1] == b"\x0a" and b"\xa2\x06" in head[:256]):
        return "a binary Caffe model under another name (name it .caffemodel, with its .prototxt beside it)"
    text = _text(head)
    if text is None:
        return "binary data of no format compress knows"
    stripped = text.lstrip()
    if "layer {" in text or "layers {" in text or stripped.startswith(("name:", "input:")):
        return "a Caffe net definition in text form (name it .prototxt)"
    if stripped.startswith(("{", "[")):
        return "a JSON or other text file"
    if suffix in (".md", ".markdown") or stripped.startswith("#"):
        return "a text file (Markdown)"
    return "a text file"


def _text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not merely a multi-byte character cut at the end of the head
            return None
        text = head[: e.start].decode("utf-8")
    return text if all(c.isprintable() or c in "\t\r\n\f" for c in text) else None


def _looks_onnx(head: bytes) -> bool:
    """An ONNX ``ModelProto`` starts with ``ir_version`` (field 1, varint) and usually names its producer."""
    return head[:1] == b"\x08" and head[1:2] < b"\x20" and any(
        word in head[:256] for word in (b"pytorch", b"onnx", b"tf2onnx", b"skl2onnx", b"keras"))


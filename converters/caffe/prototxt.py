"""Caffe text-format files: net definitions (``.prototxt``) and solvers.

Every net comes back in the current format (``layer`` with string types); V1 nets are upgraded
(converters/caffe/upgrade.py). Syntax errors and fields that stock Caffe does not know (a fork's
additions) are reported as ``file:line:column: what``.
"""
from __future__ import annotations

import os
import re

from converters.caffe.names import cut, shown
from converters.caffe.upgrade import upgrade_net
from converters.errors import ConversionError

_LOCATION = re.compile(r"^\d+:\d+\s*:\s*")


def parse_net_text(text: str, filename: str = "<string>"):
    """Parse prototxt ``text`` into a current-format ``caffe_pb2.NetParameter``."""
    from converters.caffe.proto import caffe_pb2

    try:
        net = _parse(text, caffe_pb2.NetParameter(), filename)
    except ConversionError:
        if prototxt_kind(text) == "solver":
            raise ConversionError(f"{filename}: this is a Caffe solver, not a net definition; "
                                  f"{_solver_net(text)}") from None
        raise
    return upgrade_net(net, where=filename)


def _solver_net(text: str) -> str:
    m = re.search(r'^\s*(net|train_net)\s*:\s*"([^"]*)"', text, re.M)
    if m:
        return f"its net is {cut(m.group(2))!r} ({m.group(1)}): give that (or the deploy prototxt) instead"
    return "its net is inline (net_param): give a net definition file instead"


def read_net_text(path: str | os.PathLike):
    """Read a ``.prototxt`` net definition; a missing file raises FileNotFoundError."""
    return parse_net_text(_read_text(path), filename=str(path))


def parse_solver_text(text: str, filename: str = "<string>"):
    """Parse ``solver.prototxt`` text into ``caffe_pb2.SolverParameter`` (inline nets upgraded)."""
    from converters.caffe.proto import caffe_pb2

    solver = _parse(text, caffe_pb2.SolverParameter(), filename)
    for field in ("net_param", "train_net_param"):
        if solver.HasField(field):
            getattr(solver, field).CopyFrom(upgrade_net(getattr(solver, field), where=filename))
    for i, net in enumerate(solver.test_net_param):
        solver.test_net_param[i].CopyFrom(upgrade_net(net, where=filename))
    return solver


def read_solver_text(path: str | os.PathLike):
    return parse_solver_text(_read_text(path), filename=str(path))


def _read_text(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        hint = " (a binary .caffemodel given where a text .prototxt is expected?)" if b"\0" in raw else ""
        raise ConversionError(f"{path}:{line}: not UTF-8 text: byte 0x{raw[e.start]:02x}{hint}") from None


def _parse(text: str, message, filename: str):
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        what = _LOCATION.sub("", str(e))
        m = re.search(r'Message type "([\w.]+)" has no field named "(\w+)"', what)
        if m:
            what = (f"unknown field {shown(m.group(2))} in {m.group(1).removeprefix('caffe.')} "
                    "(not in BVLC Caffe's caffe.proto; a field from a Caffe fork?)")
        what = cut(what)
        line, col = e.GetLine(), e.GetColumn()
        loc = f"{filename}:{line}:{col}" if line is not None else filename
        raise ConversionError(f"{loc}: {what}") from None


_SOLVER_FIELDS = frozenset({
    "net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param", "base_lr", "lr_policy",
    "max_iter", "test_iter", "test_interval", "snapshot_prefix", "solver_mode", "solver_type", "momentum",
    "weight_decay", "display", "iter_size"})
_NET_FIELDS = frozenset({"layer", "layers", "input", "input_shape", "input_dim", "force_backward"})


def prototxt_kind(text: str) -> str | None:
    """``"solver"`` or ``"net"`` from the top-level field names of a Caffe text file (None: neither).

    One linear pass (strings and comments skipped, braces counted): it runs on text that failed to parse,
    which may be anything."""
    names, depth, i, n = set(), 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif c == "{":
            depth, i = depth + 1, i + 1
        elif c == "}":
            depth, i = depth - 1, i + 1
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            k = j
            while k < n and text[k] in " \t\r\n":
                k += 1
            if depth == 0 and k < n and text[k] in ":{":
                names.add(text[i:j])
            i = j
        else:
            i += 1
    if names & _NET_FIELDS:
        return "net"
    if names & _SOLVER_FIELDS:
        return "solver"
    return None

"""The most recent ``compress prune`` output in a directory (``compress report --per-layer``, no MODEL).

A prune output is a model file (``format: compress-model``) whose meta records a ``method``. Only the
meta is read: the file is opened with ``mmap`` so the weights are not loaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from compress.errors import CompressError

SUFFIXES = (".pt", ".pth")


def read_meta(path: str | os.PathLike) -> dict | None:
    """The meta dict of a compress model file, or None when ``path`` is not one."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # any unreadable / foreign file is simply not a candidate
        return None
    if not isinstance(data, dict) or data.get("format") != "compress-model":
        return None
    meta = data.get("meta")
    try:
        meta = json.loads(meta) if isinstance(meta, str) else meta
    except json.JSONDecodeError:
        return None
    return meta if isinstance(meta, dict) else None


def latest_pruned(directory: str | os.PathLike = ".") -> Path:
    """The newest (by modification time) pruned model file directly in ``directory``."""
    directory = Path(directory)
    files = [p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file()]
    for p in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        meta = read_meta(p)
        if meta and meta.get("method"):
            return p
    raise CompressError(
        f"no pruned model file (*.pt written by `compress prune`) in {directory.resolve()}; "
        "pass the MODEL to report"
    )

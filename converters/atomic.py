"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash, a Ctrl-C or an error mid-write leaves the previous file (or nothing) in place, never a
truncated one. Every output and checkpoint of the tool goes through here.

Before any work is done, :func:`check_output_path` (one output) and :func:`check_output_paths` (all of
a command's outputs at once) refuse what cannot end well: a missing directory, a directory that does
not accept new files (``/proc``, read-only mounts or permissions; probed by creating and removing a
temporary file there), a path that is a directory or a device, and an output that is one of the
command's inputs (same resolved path, or the same file through a hard link), which writing would
destroy. Errors name the user's path, never the temporary file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from converters.errors import OutputPathError

PathLike = str | os.PathLike


def check_output_path(path: PathLike, *, inputs: Iterable[PathLike | None] = ()) -> Path:
    """Refuse an output that cannot be written or would replace one of ``inputs``, before any work.

    ``inputs`` are the files the command reads (None entries and names that are not files, such as
    zoo names, are harmless). Returns ``path`` as a Path.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise OutputPathError(f"output directory {why}: {parent}")
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: output path is a directory")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"cannot write {path}: it exists and is not a regular file")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            if str(source) == str(path):
                raise OutputPathError(f"refusing to overwrite the input {path}; write the output to "
                                      "another file")
            raise OutputPathError(f"refusing to write {path}: it is the same file as the input {source}; "
                                  "write the output to another file")
    _probe_directory(path)
    return path


def check_output_paths(outputs: Iterable[PathLike | None], *,
                       inputs: Iterable[PathLike | None] = ()) -> list[Path]:
    """:func:`check_output_path` for each of a command's outputs (None entries skipped), which must
    also be distinct files: one output would otherwise silently replace another."""
    inputs = list(inputs)
    checked: list[Path] = []
    for out in outputs:
        if out is None:
            continue
        path = check_output_path(out, inputs=inputs)
        for earlier in checked:
            if _same_file(path, earlier):
                raise OutputPathError(f"two outputs would be written to the same file: {earlier} and {path}")
        checked.append(path)
    return checked


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: equal resolved paths (symlinks, ``..``), or, when both
    exist, the same inode (hard links, case-insensitive file systems)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:  # an unreadable component: not provably the same file
        return False


def _probe_directory(path: Path) -> None:
    """Create and remove a temporary file beside ``path``: the only reliable test that the directory
    takes new files (``os.access`` says yes to root on read-only mounts and on ``/proc``)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    os.close(fd)
    os.unlink(tmp)


def _cannot_write(path: Path, e: OSError) -> OutputPathError:
    reason = e.strerror or type(e).__name__
    return OutputPathError(f"cannot write {path}: its directory {path.parent} does not accept new files "
                           f"({reason})")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file in the target's directory; on success rename it to ``path``.

    Failures to create, write or rename the temporary file are reported against ``path``."""
    path = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    try:
        with os.fdopen(fd, mode) as f:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):  # the write itself failed (ENOSPC...)
            raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)

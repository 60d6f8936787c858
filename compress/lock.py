"""One run per output: a lock file ``<output>.lock`` held while a command writes ``output``.

Two runs given the same ``-o`` would otherwise both "succeed": the last writer wins and the log beside the
output mixes both runs' epochs. :func:`output_lock` creates the lock with ``O_EXCL`` and writes who holds it
(pid, host, the process's start time, the command line, when); a second run finds it and is refused with one
line naming the first. A lock whose holder is gone (same host, and no process with that pid and start time)
is stale: it is taken over, and the taking over is said on stderr. A lock from another host cannot be
checked and is never taken over. The lock is removed when the run ends, however it ends.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from compress.errors import CompressError

SUFFIX = ".lock"


def lock_path(output: str | os.PathLike) -> Path:
    return Path(f"{output}{SUFFIX}")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
            "command": " ".join(sys.argv)[:300],
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(holder: dict) -> bool | None:
    """Whether the holder still runs: True/False on this host, None when it cannot be told."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    start = holder.get("start")
    return start is None or _start_time(pid) in (None, start)  # a reused pid has another start time


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "an unreadable lock"
    cmd = str(holder.get("command", ""))
    cmd = cmd if len(cmd) <= 80 else cmd[:77] + "..."
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
            + (f": {cmd}" if cmd else ""))


def _create(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return True


def acquire(output: str | os.PathLike) -> Path:
    """Take ``<output>.lock`` or raise one line naming the run that holds it."""
    path, me = lock_path(output), _me()
    if _create(path, me):
        return path
    holder = _read(path)
    alive = _alive(holder) if holder is not None else False
    if holder is not None and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
        alive = True  # this very process holds it (two outputs of one command that are one file)
    if alive is not False:
        where = " (on another host: it cannot be checked)" if alive is None else ""
        raise CompressError(f"{output} is being written by another run{where}, {_describe(holder)}; wait for "
                            f"it to finish, or remove {path} if that run is gone")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if not _create(path, me):  # another run took it over in between
        raise CompressError(f"{output} is being written by another run, {_describe(_read(path))}")
    print(f"took over the stale lock {path} of a run that is gone ({_describe(holder)})",
          file=sys.stderr, flush=True)
    return path


def release(path: Path) -> None:
    """Remove a lock this process holds (and only such a lock)."""
    holder = _read(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def output_lock(outputs: Iterable[str | os.PathLike | None], enabled: bool = True) -> Iterator[None]:
    """Hold ``<output>.lock`` for every output given (None entries skipped) while the block runs."""
    held: list[Path] = []
    try:
        if enabled:
            for output in dict.fromkeys(o for o in outputs if o is not None):
                held.append(acquire(output))
        yield
    finally:
        for path in reversed(held):
            release(path)

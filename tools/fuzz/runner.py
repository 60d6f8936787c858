"""Run one call in a forked child under memory and time limits, and classify how it ended.

The child inherits the parent's imports (torch is imported once, before any fork), sets
``RLIMIT_AS`` to its current address space plus ``memory`` bytes and ``RLIMIT_CPU`` past the time
limit, runs the call, and writes a small JSON verdict into a pipe. The parent kills it when the wall
time runs out. The outcomes:

=========  =================================================================================
ok         the call returned (and its own checks passed)
clean      a CompressError/ConversionError (or a file OSError) with a one-line message
other      any other exception, or a message that is empty, several lines or too long
mismatch   the call returned, but a check on its result failed (e.g. forward shapes)
memory     MemoryError, an allocator failure, or the child killed by the kernel's OOM killer
timeout    still running at the time limit
signal     the child died of a signal (a crash in native code)
code       the input ran code: the marker file its payload would write exists
=========  =================================================================================
"""
from __future__ import annotations

import faulthandler
import json
import os
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = ("ok", "clean", "other", "mismatch", "memory", "timeout", "signal", "code")
CLEAN = frozenset({"ok", "clean"})
MAX_MESSAGE = 1000  # a "clean" message is one line of at most this many characters
_RESULT_LIMIT = 4000  # bytes of verdict a child sends (below the pipe buffer: it never blocks)


@dataclass(frozen=True)
class Limits:
    memory: int = 2 << 30  # bytes the child may add to its address space
    timeout: float = 60.0  # wall-clock seconds


@dataclass
class Verdict:
    outcome: str
    detail: str = ""  # the exception type and message, or what a check found
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Mismatch(Exception):
    """Raised by a call's own checks on its result: reported as ``mismatch``."""


def classify_exception(e: BaseException) -> Verdict:
    """The verdict for an exception a call raised (see the table in the module docstring)."""
    from compress.errors import CompressError
    from converters.errors import ConversionError, OutputPathError

    text = str(e)
    detail = f"{type(e).__name__}: {text}"[:_RESULT_LIMIT // 2]
    if isinstance(e, Mismatch):
        return Verdict("mismatch", text[:_RESULT_LIMIT // 2])
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and _allocator_failure(text)):
        return Verdict("memory", detail)
    expected = isinstance(e, (CompressError, ConversionError, OutputPathError)) or (
        isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)) and e.filename)
    if not expected:
        return Verdict("other", detail)
    if not text.strip() or "\n" in text.strip() or len(text) > MAX_MESSAGE:
        return Verdict("other", f"not one clear line ({len(text)} characters): {detail[:300]}")
    return Verdict("clean", detail)


def _allocator_failure(text: str) -> bool:
    low = text.lower()
    return any(s in low for s in ("can't allocate memory", "cannot allocate memory", "out of memory",
                                  "std::bad_alloc", "not enough memory"))


def run_limited(call: Callable[[], object], limits: Limits = Limits(),
                marker: str | os.PathLike | None = None) -> Verdict:
    """Run ``call()`` in a forked child (see the module docstring) and return its verdict."""
    child = start(call, limits)
    while True:
        verdict = child.poll()
        if verdict is not None:
            break
        time.sleep(0.01)
    if marker is not None and Path(marker).exists():
        return Verdict("code", f"the marker {marker} was written", verdict.seconds)
    return verdict


class Child:
    """A forked call in progress; :meth:`poll` returns its verdict once it has ended (or timed out)."""

    def __init__(self, pid: int, fd: int, limits: Limits):
        self.pid, self.fd, self.limits = pid, fd, limits
        self.start = time.monotonic()
        self.data = b""
        self.killed = False

    def poll(self) -> Verdict | None:
        self._read()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        elapsed = time.monotonic() - self.start
        if pid == 0:
            if elapsed > self.limits.timeout and not self.killed:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
            return None
        self._read()
        os.close(self.fd)
        if self.killed:
            return Verdict("timeout", f"still running after {self.limits.timeout:.0f} s", elapsed)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGXCPU:
                return Verdict("timeout", "CPU time limit (SIGXCPU)", elapsed)
            if sig == signal.SIGKILL:
                return Verdict("memory", "killed by SIGKILL (the OOM killer?)", elapsed)
            return Verdict("signal", f"died of {name}", elapsed)
        try:
            result = json.loads(self.data.decode("utf-8", errors="replace"))
        except ValueError:
            return Verdict("other", f"the child exited with status {os.WEXITSTATUS(status)} and no verdict",
                           elapsed)
        return Verdict(result["outcome"], result.get("detail", ""), elapsed, result.get("extra", {}))

    def _read(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return
            self.data += chunk


def start(call: Callable[[], object], limits: Limits = Limits()) -> Child:
    """Fork a child that runs ``call()`` under ``limits``; the parent gets a :class:`Child` to poll."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return Child(pid, read_fd, limits)
    os.close(read_fd)
    faulthandler.disable()  # a crash is an outcome here, not a traceback dump on the parent's stderr
    _silence()
    code = 0
    try:
        _apply_limits(limits)
        verdict = _verdict_of(call)
        payload = {"outcome": verdict.outcome, "detail": verdict.detail, "extra": verdict.extra}
        os.write(write_fd, json.dumps(payload).encode()[:_RESULT_LIMIT])
    except BaseException:  # noqa: BLE001 - the child must never return into the parent's code
        code = 3
    finally:
        os._exit(code)


def _silence() -> None:
    """Send the child's standard output and error to /dev/null: native libraries (libpng, onnxruntime)
    write their own complaints there, which would interleave with the campaign's report."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _verdict_of(call: Callable[[], object]) -> Verdict:
    try:
        result = call()
    except BaseException as e:  # noqa: BLE001 - every way a call can end is an outcome to record
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            return Verdict("other", f"{type(e).__name__}: {e}")
        return classify_exception(e)
    return Verdict("ok", extra=result if isinstance(result, dict) else {})


def _apply_limits(limits: Limits) -> None:
    import torch

    torch.set_num_threads(1)
    used = _vm_size()
    resource.setrlimit(resource.RLIMIT_AS, (used + limits.memory, used + limits.memory))
    cpu = int(limits.timeout) + 10
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")

"""How much memory this process may still allocate, and the guard that refuses a net before it does.

A net definition declares its sizes (input shapes, ``num_output``, ``local_size``, ``pad``...), so a
few bytes of prototxt can ask for terabytes. The builder adds up what loading and one forward pass
will allocate (``converters/caffe/footprint.py``) and :class:`MemoryGuard` refuses the net, before
anything is allocated, when that exceeds what the process can actually get. That is the smallest of:

* ``MemAvailable`` of ``/proc/meminfo`` (free memory plus what the kernel can reclaim), else the
  machine's physical memory;
* the memory cgroup's limit minus its usage (cgroup v2 ``memory.max``/``memory.current``, v1
  ``memory.limit_in_bytes``/``memory.usage_in_bytes``; reclaimable ``inactive_file`` pages count as
  free), for the process's own cgroup and each parent up to the mount;
* ``RLIMIT_AS`` minus the process's address space (``VmSize``) and ``RLIMIT_DATA`` minus its data
  segment (``VmData``), the limits ``ulimit -v`` / ``-d`` set and a fork-per-case fuzzer uses;

less 10% headroom: the estimate counts tensors, not the interpreter or the allocator's overhead, and a
net planned to the last byte of an address-space limit fails in its first large allocation.

No torch here: the caffemodel reader uses it before reading large blobs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from converters.errors import ConversionError

_UNLIMITED = 1 << 62
HEADROOM = 0.1  # share of the available memory the guard leaves free


@dataclass(frozen=True)
class Available:
    """``nbytes`` the process may still allocate, and what bounds it (for messages)."""

    nbytes: int
    bound: str


def available_memory() -> Available:
    """The memory this process can still allocate (see the module docstring), less :data:`HEADROOM`
    for what no estimate sees (the interpreter, the allocator's rounding and arenas); never negative."""
    candidates = [_meminfo(), *_cgroup(), *_rlimits()]
    best = min((c for c in candidates if c is not None), key=lambda c: c.nbytes,
               default=Available(_UNLIMITED, "no known limit"))
    return Available(max(int(best.nbytes * (1 - HEADROOM)), 0), best.bound)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class MemoryGuard:
    """Adds up planned allocations and refuses, naming the largest, once they exceed ``limit``.

    ``limit`` is an :class:`Available` (from :func:`available_memory`, or a caller's explicit cap).
    """

    def __init__(self, limit: Available):
        self.limit = limit
        self.total = 0
        self.largest = (0, "")

    def add(self, nbytes: int, what: str) -> None:
        self.total += nbytes
        self.check(nbytes, what)

    def check(self, nbytes: int, what: str, transient: bool = False) -> None:
        """Refuse when ``total`` (plus ``nbytes`` held only for a moment, if ``transient``) exceeds
        the limit; ``what`` names the allocation in the message when it is the largest so far."""
        if nbytes > self.largest[0]:
            self.largest = (nbytes, what)
        need = self.total + (nbytes if transient else 0)
        if need > self.limit.nbytes:
            size, name = self.largest
            raise ConversionError(
                f"the declared shapes need {format_bytes(need)} or more for parameters, blobs and the "
                f"forward pass, over the {format_bytes(self.limit.nbytes)} available to this process "
                f"({self.limit.bound}); the largest is {name} at {format_bytes(size)}; refused before "
                "allocating")


# -- the sources --------------------------------------------------------------------------------

def _meminfo() -> Available | None:
    fields = _key_values("/proc/meminfo")
    if "MemAvailable" in fields:
        return Available(fields["MemAvailable"] * 1024, "MemAvailable of /proc/meminfo")
    try:
        return Available(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory")
    except (ValueError, OSError, AttributeError):
        return None


def _rlimits() -> list[Available]:
    try:
        import resource
    except ImportError:  # not a POSIX system
        return []
    status = _key_values("/proc/self/status")
    out = []
    for name, used_key in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        soft, _ = resource.getrlimit(getattr(resource, name))
        if soft != resource.RLIM_INFINITY and soft >= 0:
            out.append(Available(soft - status.get(used_key, 0) * 1024, f"{name} {format_bytes(soft)}"))
    return out


def _cgroup() -> list[Available]:
    """Room under the memory limit of this process's cgroup and of each parent cgroup."""
    out = []
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            out += _room("/sys/fs/cgroup", path, "memory.max", "memory.current", "inactive_file", "v2")
        elif "memory" in controllers.split(","):
            out += _room("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes",
                         "total_inactive_file", "v1")
    return out


def _room(mount: str, path: str, limit_file: str, usage_file: str, reclaimable: str, version: str):
    out = []
    parts = [p for p in path.split("/") if p]
    # The process's own cgroup and its parents; inside a container the mount is the cgroup itself.
    for depth in range(len(parts), -1, -1):
        where = os.path.join(mount, *parts[:depth])
        limit = _read_int(os.path.join(where, limit_file))
        if limit is None or limit >= _UNLIMITED:
            continue
        usage = _read_int(os.path.join(where, usage_file)) or 0
        usage -= _key_values(os.path.join(where, "memory.stat")).get(reclaimable, 0)
        out.append(Available(limit - max(usage, 0), f"cgroup {version} memory limit {format_bytes(limit)}"))
    return out


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return _UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _key_values(path: str) -> dict[str, int]:
    """``key: value [kB]`` or ``key value`` lines as ints (``/proc/meminfo``, ``memory.stat``)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":") if ":" in line else line.partition(" ")
                words = value.split()
                if words and words[0].isdigit():
                    out[key.strip()] = int(words[0])
    except OSError:
        pass
    return out

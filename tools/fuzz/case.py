"""One fuzz case: the files to write, what to load, and the byte-level mutations every target shares."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "MARKER"  # the file a malicious payload writes into its case directory when it runs


@dataclass(frozen=True)
class Case:
    """``files`` are written into the case directory (names may hold folders: ``train_lmdb/data.mdb``).
    Without ``argv``, ``model`` (and ``prototxt``) are the names within it handed to ``load_model``;
    with it, the command line ``compress <argv>`` runs in the directory (``commands.py``). ``writes``:
    what that command writes when it succeeds; ``may_leave``: a pattern of files that may stay even
    after an error (the snapshots a training run wrote before it failed). ``mutation`` names what was done to
    the seed, for the report."""

    target: str
    mutation: str
    files: dict[str, bytes]
    model: str = ""
    prototxt: str | None = None
    payload: bool = False  # the input would write MARKER if it ran code
    argv: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    may_leave: str = ""  # a regular expression matched against the whole relative path
    notes: dict = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        for name, data in self.files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One byte-level mutation of ``data`` (truncate, flip bits, overwrite, insert, delete, append)."""
    kind = rng.choice(["truncate", "bitflip", "overwrite", "insert", "delete", "append"])
    buf = bytearray(data)
    n = len(buf)
    if kind == "truncate" and n:
        del buf[rng.randrange(n):]
    elif kind == "bitflip" and n:
        for _ in range(rng.randint(1, 8)):
            i = _position(rng, n)
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == "overwrite" and n:
        i = _position(rng, n)
        buf[i:i + 4] = bytes(rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)]) for _ in range(4))
    elif kind == "insert":
        i = _position(rng, n + 1)
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "delete" and n:
        i = _position(rng, n)
        del buf[i:i + rng.randint(1, 64)]
    else:
        buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        kind = "append"
    return bytes(buf), kind


def _position(rng: random.Random, n: int) -> int:
    """Mostly near the start (headers, lengths, names), sometimes anywhere."""
    return rng.randrange(min(n, 512)) if rng.random() < 0.6 else rng.randrange(n)

"""Caffe's random draws for the data layers, on a seeded MT19937 whose state can be saved and restored.

Caffe's ``rng_t`` is ``boost::mt19937``; the data transformer draws ``Rand(n) = rng() % n``
(``src/caffe/data_transformer.cpp``) and ImageData shuffles its list with ``caffe::shuffle``
(``include/caffe/util/rng.hpp``: Fisher-Yates from the end, each index drawn by
``boost::uniform_int<>(0, i)``). :class:`CaffeRng` produces the same raw 32-bit stream as
``std::mt19937(seed)`` / ``boost::mt19937(seed)`` (numpy's legacy ``RandomState`` is that generator)
and maps it to draws with Caffe's own formulas, so given the seed Caffe gave a layer's generator the
draws would coincide. That seed is not knowable, though: Caffe derives it from its global generator
after the weight fillers and every earlier layer's set-up consumed an implementation-defined amount of
it (and, for HDF5Data, shuffles with ``std::random_shuffle`` on the C library's ``rand()``). Runs of
this package are reproducible from their own seed; Caffe's exact random crops, mirrors and shuffles
are not reproduced.
"""
from __future__ import annotations

from collections.abc import MutableSequence

import numpy as np
import torch

from compress.errors import CompressError
from compress.savedstate import Fields

_U32 = 1 << 32
_N = 624  # words of the mt19937 state


class CaffeRng:
    """A seeded ``mt19937`` with Caffe's ``Rand(n)`` and ``shuffle``; ``state_dict`` restores it exactly."""

    def __init__(self, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise CompressError(f"data layer seed must be an integer, found {seed!r}")
        self._rs = np.random.RandomState(int(seed) % _U32)

    def raw(self, count: int) -> np.ndarray:
        """The next ``count`` raw 32-bit outputs (``rng()`` in Caffe), as int64."""
        return self._rs.randint(0, _U32, size=count, dtype=np.uint32).astype(np.int64)

    def rand(self, n: int | np.ndarray, count: int | None = None) -> np.ndarray | int:
        """Caffe's ``Rand(n) = rng() % n``: one int, or ``count`` of them (``n`` may be per draw)."""
        if count is None:
            return int(self.raw(1)[0] % n)
        return self.raw(count) % n

    def uniform_int(self, high: int) -> int:
        """``boost::uniform_int<>(0, high)(rng)``: bucketed rejection sampling on the 32-bit stream."""
        if high == 0:
            return 0
        bucket = int(_buckets(np.array([high]))[0])
        while True:
            result = int(self.raw(1)[0]) // bucket
            if result <= high:
                return result

    def shuffle(self, items: MutableSequence) -> None:
        """``caffe::shuffle`` in place: for i = n-1 .. 1 swap item i with item ``uniform_int(0, i)``.

        The draws are made in bulk; a rejection (probability below i / 2**32 per draw) rewinds the
        generator to it and continues one draw at a time, so the stream consumed is exactly boost's.
        """
        highs = np.arange(len(items) - 1, 0, -1, dtype=np.int64)
        picks = np.empty_like(highs)
        done = 0
        while done < len(highs):
            rest = highs[done:]
            saved = self._rs.get_state()
            results = self.raw(len(rest)) // _buckets(rest)
            bad = np.flatnonzero(results > rest)
            take = len(rest) if len(bad) == 0 else int(bad[0])
            picks[done:done + take] = results[:take]
            if take < len(rest):  # rewind to the rejected draw and redo that index by the book
                self._rs.set_state(saved)
                self.raw(take)
                picks[done + take] = self.uniform_int(int(rest[take]))
                take += 1
            done += take
        for i, j in zip(highs.tolist(), picks.tolist(), strict=True):
            items[i], items[j] = items[j], items[i]

    def state_dict(self) -> dict:
        """The generator state as tensors and ints (loadable with ``torch.load(weights_only=True)``)."""
        _, keys, pos, _, _ = self._rs.get_state()
        return {"mt19937": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)}

    def load_state_dict(self, state: dict, where: str = "data layer state") -> None:
        fields = Fields(state, where)
        keys = fields.tensor("mt19937", (_N,), torch.int64, 0, _U32 - 1)
        pos = fields.integer("pos", 0, _N)
        self._rs.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, 0, 0.0))


def _buckets(highs: np.ndarray) -> np.ndarray:
    """boost's bucket size for ``uniform_int(0, high)`` on a 32-bit engine (brange = 2**32 - 1)."""
    brange = _U32 - 1
    bucket = brange // (highs + 1)
    return bucket + (brange % (highs + 1) == highs)

"""A Caffe data layer as a batch source: the feeder interface, its registry and :func:`build_feeder`.

A feeder stands for one data layer of one net (the TRAIN net and the TEST net each build their own,
as Caffe instantiates the layer once per net): it keeps that layer's cursor for the whole run, so
successive test passes read successive slices of the test set when ``test_iter * batch_size`` is
smaller than it, exactly as Caffe's TEST-phase data layer does. Every call of
:meth:`Feeder.next_batch` returns ``{top name: tensor}``:

- ``Data``/``ImageData``: the first top float32 (N, C, H, W) after ``transform_param``; the label top
  (when declared) int64 (N,), the record's integer label. Caffe's label blob holds the same values as
  floats; int64 is what PyTorch's losses take.
- ``HDF5Data``: every top float32, shaped (N, ...) as its dataset, as Caffe converts them (a label
  dataset used by a classification loss is then float: truncate it as Caffe's ``static_cast<int>``).

:meth:`Feeder.state_dict` holds plain ints and tensors (``torch.save`` / ``torch.load(...,
weights_only=True)``); :meth:`Feeder.load_state_dict` continues the same batches bit for bit.
Paths in the layer (``source``, ``mean_file``, ``root_folder``) are used as Caffe uses them: relative
to the current working directory.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from compress.data.caffe.db import DEFAULT_MEMORY_LIMIT
from compress.data.caffe.rng import CaffeRng
from compress.errors import CompressError
from compress.savedstate import Fields, found
from converters.caffe.names import shown

PHASES = ("TRAIN", "TEST")
FEEDERS: dict[str, type[Feeder]] = {}
_NOT_SUPPORTED = ("MemoryData", "DummyData", "WindowData", "Input", "Python")


def register_feeder(layer_type: str) -> Callable[[type[Feeder]], type[Feeder]]:
    """Register a :class:`Feeder` subclass for the Caffe layer type ``layer_type``."""

    def deco(cls: type[Feeder]) -> type[Feeder]:
        if layer_type in FEEDERS:
            raise RuntimeError(f"data layer type {layer_type!r} registered twice")
        cls.layer_type = layer_type
        FEEDERS[layer_type] = cls
        return cls

    return deco


class Feeder(ABC):
    """One data layer's batches. Subclasses fill in ``_setup``, ``_next``, ``_state``, ``_load_state``."""

    layer_type: ClassVar[str] = ""
    top_counts: ClassVar[tuple[int, int | None]] = (1, 2)  # (min, max) tops; None: no maximum

    def __init__(self, layer, phase: str = "TRAIN", *, seed: int = 0,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT):
        self.name, self.phase = layer.name, phase
        self.where = f"layer {shown(layer.name)} ({layer.type})"
        if phase not in PHASES:
            raise CompressError(f"{self.where}: phase must be one of {', '.join(PHASES)}, found "
                                f"{shown(phase)}")
        self.tops = tuple(layer.top)
        low, high = self.top_counts
        if len(self.tops) < low or (high is not None and len(self.tops) > high):
            expected = f"{low}" if low == high else f"{low} to {high}" if high else f"at least {low}"
            raise CompressError(f"{self.where}: has {len(self.tops)} top(s), expected {expected}")
        self.rng = CaffeRng(seed)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.rank, self.world = 0, 1
        self._setup(layer, memory_limit)

    def shard(self, rank: int, world: int) -> Feeder:
        """Read only this rank's share of the records, as Caffe 1.0's data layers do under several solvers
        (``DataLayer::Skip``): of the records in the layer's order, rank ``r`` of ``world`` keeps those at
        positions ``r, r + world, r + 2 world, ...``, so the ranks' batches together are ``world`` batches'
        worth of distinct records. The saved state is rank 0's (every rank's is rank 0's moved on by its
        rank), so a run resumes on the same number of ranks from the one file rank 0 writes."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of {world}")
        self.rank, self.world = rank, world
        self._skip(rank)
        return self

    def _skip(self, count: int) -> None:
        """Move on ``count`` records without reading them (for :meth:`shard`)."""
        if count:
            raise CompressError(f"{self.where}: {self.layer_type} cannot be read in shares by several ranks")

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next batch, ``{top name: tensor}``; advances the cursor and the random generator."""
        return {top: torch.from_numpy(a) for top, a in zip(self.tops, self._next(), strict=True)}

    def state_dict(self) -> dict:
        """Cursor and generator state: what :meth:`load_state_dict` needs to continue exactly (of a
        sharded feeder, only rank 0's is saved: every rank resumes from it)."""
        return {"layer": self.name, "type": self.layer_type, "phase": self.phase,
                "rng": self.rng.state_dict(), **self._state()}

    def load_state_dict(self, state: dict, where: str = "data state") -> None:
        """Continue from :meth:`state_dict`'s ``state`` (``where``: its place in a checkpoint, for messages);
        every field is checked against this layer and its source before anything changes."""
        fields = Fields(state, where)
        mine = (self.name, self.layer_type, self.phase)
        theirs = tuple(state.get(k) for k in ("layer", "type", "phase"))
        if mine != theirs:
            raise CompressError(f"{where}: {self.where}: the saved data state is for layer "
                                f"{found(theirs[0])} ({found(theirs[1])}, {found(theirs[2])}), not this "
                                f"layer in {self.phase}")
        rng = CaffeRng(0)
        rng.load_state_dict(fields.get("rng"), fields.at("rng"))
        self._load_state(fields)
        self.rng = rng
        self._skip(self.rank)  # the state is rank 0's

    @abstractmethod
    def _setup(self, layer, memory_limit: int) -> None:
        """Open the source, validate the parameters, fill ``self.shapes``."""

    @abstractmethod
    def _next(self) -> list[np.ndarray]:
        """One array per top, in ``self.tops`` order."""

    @abstractmethod
    def _state(self) -> dict:
        """The cursor (plain ints and tensors)."""

    @abstractmethod
    def _load_state(self, state: Fields) -> None:
        """Restore the cursor saved by :meth:`_state`, each field checked; refuse a state from a
        different source."""

    def _positive(self, value: int, field: str) -> int:
        if value <= 0:
            raise CompressError(f"{self.where}: {field} must be positive, found {value}")
        return int(value)


def build_feeder(layer, phase: str = "TRAIN", *, seed: int = 0,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT) -> Feeder:
    """The feeder of a data ``LayerParameter`` (types: ``Data`` with an LMDB, ``ImageData``,
    ``HDF5Data``) in ``phase`` ("TRAIN": random crops; "TEST": centre crops).

    ``seed`` starts the layer's own generator (give each layer its own); ``memory_limit`` bounds the
    decoded images a layer keeps in memory (beyond it, records are read and decoded per batch).
    """
    cls = FEEDERS.get(layer.type)
    if cls is None:
        what = "is not supported as a training data source" if layer.type in _NOT_SUPPORTED else \
            "is not a data layer type"
        raise CompressError(f"layer {shown(layer.name)} ({layer.type}): {layer.type} {what}; supported: "
                            f"{', '.join(sorted(FEEDERS))}")
    return cls(layer, phase, seed=seed, memory_limit=memory_limit)

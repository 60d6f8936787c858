"""``Data``: Datum records of an LMDB, in key order, through ``transform_param`` (BVLC ``data_layer.cpp``).

Batch ``b`` holds records ``b*N .. b*N+N-1`` (mod the record count): the cursor runs on across
batches and wraps at the end, never shuffles. Sharded over ``W`` ranks (:meth:`Feeder.shard`), rank ``r``'s
batch ``b`` holds records ``r + W*(b*N + i)`` (mod the record count), as Caffe's ``Skip`` keeps them.
The output shape comes from the first record
(``InferBlobShape``): its channels, and ``crop_size`` or its height and width. Only the LMDB backend
is read; ``backend`` defaults to LEVELDB in ``caffe.proto``, so a layer must say ``backend: LMDB``.
"""
from __future__ import annotations

import logging

import numpy as np

from compress.data.caffe.datum import decode_mode
from compress.data.caffe.db import BACKENDS, LmdbRecords
from compress.data.caffe.feeder import Feeder, register_feeder
from compress.data.caffe.transform import Transformer, transform_config
from compress.errors import CompressError
from compress.savedstate import Fields
from converters.caffe.names import shown, shown_path

log = logging.getLogger("compress.data.caffe")
LMDB = 1


@register_feeder("Data")
class DataFeeder(Feeder):
    """A ``Data`` layer over an LMDB of Datum records."""

    def _setup(self, layer, memory_limit: int) -> None:
        p = layer.data_param
        if p.backend != LMDB:
            default = "" if p.HasField("backend") else " (caffe.proto's default when backend is not set)"
            raise CompressError(f"{self.where}: data_param.backend is {BACKENDS.get(p.backend, p.backend)}"
                                f"{default}; only LMDB is supported: set `backend: LMDB` for an LMDB, or "
                                "convert a LevelDB to LMDB")
        if not p.source:
            raise CompressError(f"{self.where}: data_param.source is not set")
        self.batch_size = self._positive(p.batch_size, "data_param.batch_size")
        cfg = transform_config(layer, self.where)
        mode = decode_mode(cfg.force_color, cfg.force_gray, self.where)
        self.transformer = Transformer(cfg, self.phase, self.where)
        self.records = LmdbRecords(p.source, mode, f"{self.where}: data_param.source")
        if mode != "unchanged" and not self.records.first_encoded:
            log.warning("%s: force_color/force_gray apply to encoded records only; Caffe ignores them for "
                        "the raw records of %r, and so does this", self.where, p.source)
        chw = self.transformer.setup(self.records.first_image.shape,
                                     f"{self.where}: first record of {shown_path(p.source)}")
        self.records.prepare(self.transformer.check, memory_limit)
        self.shapes = {self.tops[0]: (self.batch_size, *chw)}
        if len(self.tops) > 1:
            self.shapes[self.tops[1]] = (self.batch_size,)
        self.position = 0

    def _next(self) -> list[np.ndarray]:
        images, labels = self.records.read(self.position, self.batch_size, self.world)
        self._skip(self.batch_size * self.world)
        return [self.transformer(images, self.rng), labels][: len(self.tops)]

    def _skip(self, count: int) -> None:
        self.position = (self.position + count) % self.records.entries

    def _state(self) -> dict:
        return {"position": self.position, "entries": self.records.entries}

    def _load_state(self, state: Fields) -> None:
        entries = state.integer("entries", 1)
        if entries != self.records.entries:
            raise CompressError(f"{state.where}: {self.where}: the saved data state is for an LMDB of "
                                f"{entries} records, {shown(self.records.path)} has {self.records.entries}")
        self.position = state.integer("position", 0, entries - 1)

"""Caffe's data layers as batch sources for training from a ``train_val.prototxt``.

``build_feeder(layer, phase, seed=...)`` turns a data ``LayerParameter`` (``Data`` over an LMDB,
``ImageData``, ``HDF5Data``) into a :class:`Feeder` whose ``next_batch()`` returns
``{top name: tensor}`` exactly as the layer would fill its tops in Caffe (BVLC ``data_layer.cpp``,
``image_data_layer.cpp``, ``hdf5_data_layer.cpp``, ``data_transformer.cpp``), with ``shapes`` for the
net builder and ``state_dict()``/``load_state_dict()`` for an exact resume. ``write_datum_lmdb`` and
``python -m compress.data.caffe.mnist_lmdb OUTDIR`` write Datum LMDBs as Caffe's converters do.

Files: feeder.py (interface, registry), data_layer.py, image_data.py, hdf5_data.py (one per layer
type), transform.py (``transform_param``), db.py (LMDB records), datum.py (``Datum``), image.py and
resize.py (OpenCV-compatible decoding and resizing), rng.py (seeded mt19937 with Caffe's draws),
write.py (LMDB writer), mnist_lmdb.py (the MNIST LMDBs of the LeNet reference run).
"""
from __future__ import annotations

from compress.data.caffe import data_layer, hdf5_data, image_data  # noqa: F401  (register the layer types)
from compress.data.caffe.db import DEFAULT_MEMORY_LIMIT
from compress.data.caffe.feeder import FEEDERS, Feeder, build_feeder
from compress.data.caffe.write import datum_bytes, write_datum_lmdb, write_lmdb

__all__ = ["DEFAULT_MEMORY_LIMIT", "FEEDERS", "Feeder", "build_feeder", "datum_bytes", "write_datum_lmdb",
           "write_lmdb"]

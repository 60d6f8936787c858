"""A Caffe LMDB folder given to ``--data``: its Datum records read as Caffe's ``Data`` layer reads them.

The folder (``data.mdb`` inside) is one split of a Caffe data set, e.g. ``mnist_test_lmdb``: every record
in key order, decoded as the Data layer decodes it (raw pixels or an encoded image), then Caffe's
``transform_param`` in the TEST phase made from the model's recorded preprocessing: ``(pixel - mean) *
scale``, no mirror, and no crop. The records must have the net's input shape (C, H, W): a crop, a mean file
or any other ``transform_param`` the model does not record lives in the net's train_val, so for those the
error says to evaluate with ``--solver`` (the TEST phase's own data layers). Training reads a solver's data
layers (``compress prune --solver``), so an LMDB folder serves the test split only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compress.data.base import (
    ArrayDataset,
    Loaded,
    Preprocess,
    Request,
    check_classes,
    parse_preprocess,
    register_layout,
)
from compress.errors import CompressError


def is_lmdb_dir(root: Path) -> bool:
    return (root / "data.mdb").is_file()


@register_layout("lmdb", is_lmdb_dir, "a Caffe LMDB folder of Datum records (one split: the test set)")
def load_lmdb_dir(root: Path, req: Request) -> Loaded:
    from compress.data.caffe import build_feeder
    from converters.caffe.proto import caffe_pb2

    where = str(root)
    if req.preprocess is None:
        raise CompressError(f"{where}: a Caffe LMDB holds raw pixels, and this model records no "
                            "preprocessing (scale, mean): that transform_param lives in its train_val net, "
                            "so evaluate with --solver SOLVER.prototxt (its TEST data layers)")
    pp = parse_preprocess(req.preprocess, Preprocess(), where)
    if isinstance(pp.mean, str) or pp.resize is not None:
        what = "a mean file" if isinstance(pp.mean, str) else "a resize"
        raise CompressError(f"{where}: the model's preprocessing ({what}) is done by its net's "
                            "transform_param; evaluate with --solver SOLVER.prototxt")
    layer = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    layer.data_param.source = str(root)
    layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    layer.data_param.batch_size = 1
    layer.transform_param.scale = pp.scale
    if pp.mean is not None:
        layer.transform_param.mean_value.extend(pp.mean)
    feeder = build_feeder(layer, "TEST")
    chw = feeder.shapes["data"][1:]
    if tuple(chw) != tuple(req.chw):
        crop = " (a crop_size)" if chw[1:] > tuple(req.chw)[1:] else ""
        raise CompressError(f"{where}: records are {tuple(chw)} (C, H, W) but the net takes "
                            f"{tuple(req.chw)}; the transform_param that makes one from the other{crop} "
                            "lives in the net's train_val: evaluate with --solver SOLVER.prototxt")
    images, labels = feeder.records.read(0, feeder.records.entries)
    if isinstance(images, list):
        raise CompressError(f"{where}: records of different sizes; evaluate with --solver SOLVER.prototxt")
    x = torch.from_numpy(feeder.transformer(images, feeder.rng))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    if len(y) and int(y.min()) < 0:
        raise CompressError(f"{where}: labels must be >= 0, found {int(y.min())}")
    found = int(y.max()) + 1 if len(y) else 0
    test = ArrayDataset(x, y)
    return Loaded(ArrayDataset(x[:0], y[:0]), test, f"lmdb:{root}",
                  check_classes(found, req.num_classes, where), pp,
                  {"source": "lmdb", "root": str(root), "records": int(len(y)), "single_split": "test"},
                  classes_found=found)


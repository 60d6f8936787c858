"""The seeds of the training targets: a LeNet set-up as a Caffe user has it, and the state it snapshots.

BVLC's ``lenet_solver.prototxt`` and ``lenet_train_test.prototxt`` (the reference run's, in
``../shared/reference/caffe_train/lenet``) cut down to a few iterations of batches of 8, over two tiny
LMDBs of Datum records written as ``convert_mnist_data`` writes them (raw pixels), or as
``convert_imageset --encoded`` does (PNG files), and the ``.solverstate.pt`` that ``compress train``
snapshots after 2 of its 4 iterations. Paths are relative to the case directory, Caffe's working
directory; snapshots go beside the solver (``lenet_iter_N.*``).
"""
from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path

TRAIN_VAL = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "train_lmdb" batch_size: 8 backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "test_lmdb" batch_size: 8 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" }
  bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" }
  bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "train_val.prototxt"
test_iter: 2
test_interval: 2
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 1
max_iter: 4
snapshot: 2
snapshot_prefix: "lenet"
solver_mode: CPU
random_seed: 1
"""

TRAIN_RECORDS, TEST_RECORDS = 24, 16
STATE = "lenet_iter_2.solverstate.pt"  # what the seed state is called in a case
# The snapshots a run writes, whatever the (mutated) snapshot_prefix: they may stay after a later error.
SNAPSHOTS = r".*_iter_\d+\.(caffemodel|solverstate\.pt)"


@functools.cache
def records(encoded: bool) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(train, test) serialized Datums: random 1x28x28 digits, labels 0..9 in turn; raw or PNG."""
    import numpy as np

    from compress.data.caffe.write import datum_bytes

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (TRAIN_RECORDS + TEST_RECORDS, 1, 28, 28), dtype=np.uint8)
    values = tuple(datum_bytes(encoded=png(img[0]), label=i % 10) if encoded else datum_bytes(img, i % 10)
                   for i, img in enumerate(images))
    return values[:TRAIN_RECORDS], values[TRAIN_RECORDS:]


def png(pixels) -> bytes:
    """``pixels`` (H, W) or (H, W, C) uint8 as a PNG file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def lmdb_file(values) -> bytes:
    """The ``data.mdb`` of an LMDB holding ``values`` under keys ``%08d`` (as Caffe's tools write)."""
    from compress.data.caffe.write import write_lmdb

    with tempfile.TemporaryDirectory() as d:
        write_lmdb(Path(d) / "db", values)
        return (Path(d) / "db" / "data.mdb").read_bytes()


@functools.cache
def files(encoded: bool = False) -> dict[str, bytes]:
    """The set-up's files, by their names in a case directory."""
    train, test = records(encoded)
    return {"solver.prototxt": SOLVER.encode(), "train_val.prototxt": TRAIN_VAL.encode(),
            "train_lmdb/data.mdb": lmdb_file(train), "test_lmdb/data.mdb": lmdb_file(test)}


@functools.cache
def state() -> bytes:
    """The resumable state ``compress train`` snapshots after iteration 2 of the raw set-up."""
    from compress.solver.train import SolverTrainConfig, train_solver

    before = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)  # Caffe's paths are relative to the working directory (contextlib.chdir: 3.11)
        try:
            for name, data in files().items():
                Path(name).parent.mkdir(exist_ok=True)
                Path(name).write_bytes(data)
            train_solver(SolverTrainConfig("solver.prototxt", progress=False, device="cpu"))
            return Path(STATE).read_bytes()
        finally:
            os.chdir(before)

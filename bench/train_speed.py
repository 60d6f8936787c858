"""``compress train`` on Caffe's LeNet solver against a plain PyTorch loop doing the same steps.

    python bench/train_speed.py [--iters 300] [--rounds 3] [--threads 1,2]

Both train BVLC's LeNet (batch 64; SGD, momentum 0.9, weight decay 5e-4, ``inv`` policy) on MNIST:
``compress train`` reads the solver and the train_val over an LMDB (built once from the project's MNIST,
or from random digits when the MNIST file is missing) through the whole front door (data layer feeder,
TRAIN-phase net with its loss layer, Caffe's solver, per-iteration JSON log, display off); the plain
loop runs an ``nn.Sequential`` LeNet on in-memory tensors with ``F.cross_entropy`` and
``torch.optim.SGD``. They alternate ``--rounds`` times per thread count so that load from other
processes hits both alike; the median iterations per second and their ratio are printed.
Goal: ``compress train`` within 10% of the plain loop (real Caffe 1.0 on this CPU: 32-35 it/s with one
BLAS thread, 23-26 with two; a plain PyTorch loop 32-35 / 48-51).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TRAIN_VAL = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """net: "train_val.prototxt"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 0
max_iter: {iters}
snapshot: 0
snapshot_after_train: false
random_seed: 1
"""


def _images() -> tuple[np.ndarray, np.ndarray]:
    try:
        from compress.data.caffe.mnist_lmdb import mnist_uint8

        return mnist_uint8()["train"]
    except Exception as e:  # noqa: BLE001  (no MNIST file: random digits, said so)
        print(f"(MNIST unavailable: {e}; using random digits)")
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 60000)


def _plain_lenet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Conv2d(20, 50, 5),
                         nn.MaxPool2d(2, 2, ceil_mode=True), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                         nn.Linear(500, 10))


def plain_loop(x: torch.Tensor, y: torch.Tensor, iters: int) -> float:
    """Iterations per second of the same steps on in-memory tensors (already scaled)."""
    net = _plain_lenet()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    for i in range(iters):
        j = (i * 64) % (len(x) - 64)
        for g in opt.param_groups:
            g["lr"] = 0.01 * (1 + 1e-4 * i) ** -0.75
        loss = F.cross_entropy(net(x[j:j + 64]), y[j:j + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return iters / (time.perf_counter() - start)


def compress_train(workdir: Path, iters: int) -> float:
    """Iterations per second of ``train_solver`` (set-up excluded: timed from its first logged step)."""
    from compress.solver.train import SolverTrainConfig, train_solver

    (workdir / "solver.prototxt").write_text(SOLVER.format(iters=iters))
    log = workdir / "log.jsonl"
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        marks = {}

        import compress.solver.observer as observer

        original = observer.CaffeObserver.step

        def step(self, trainer, it, loss, rate, info):
            if it in (0, iters - 1):
                marks[it] = time.perf_counter()
            original(self, trainer, it, loss, rate, info)

        observer.CaffeObserver.step = step
        try:
            train_solver(SolverTrainConfig("solver.prototxt", log=str(log), progress=False))
        finally:
            observer.CaffeObserver.step = original
        assert len([json.loads(line) for line in log.read_text().splitlines()]) == iters
        return (iters - 1) / (marks[iters - 1] - marks[0])
    finally:
        os.chdir(cwd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    from compress.data.caffe import write_datum_lmdb

    images, labels = _images()
    x = torch.from_numpy(images[:, None].astype(np.float32) * np.float32(0.00390625))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_datum_lmdb(work / "train_lmdb", images, labels)
        (work / "train_val.prototxt").write_text(TRAIN_VAL)
        print(f"LeNet batch 64, {args.iters} iterations, {args.rounds} rounds (median it/s)")
        print(f"{'threads':>7} {'plain loop':>11} {'compress train':>15} {'ratio':>7}")
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            plain, ours = [], []
            for _ in range(args.rounds):
                plain.append(plain_loop(x, y, args.iters))
                ours.append(compress_train(work, args.iters))
            p, o = statistics.median(plain), statistics.median(ours)
            print(f"{threads:>7} {p:>11.1f} {o:>15.1f} {o / p:>7.3f}")


if __name__ == "__main__":
    main()

"""CaffeSolver against real Caffe 1.0: the LeNet run in ../shared/reference/caffe_train (skipped without it).

The net is the zoo's deploy LeNet built by the converters from Caffe's own initial weights, the batches
are MNIST's first 20 x 64 training images in order (what Caffe's LMDB holds), the loss is Softmax cross
entropy: only the solver is new here. Issue 9's bars: loss within 1e-4 relative at each of the first
20 iterations, lr within 1e-5, weights after 20 iterations within 1e-4 (max |diff| / max |w| per blob).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress.solver import CaffeSolver, Learnable, SolverConfig

ROOT = Path(__file__).resolve().parents[1]


def test_first_20_sgd_iterations_match_real_caffe(caffe_lenet):
    from compress.data.mnist import mnist_arrays
    from converters import caffe
    from converters.caffe.reader import read_caffemodel

    ref = json.loads((caffe_lenet / "reference.json").read_text())
    net = caffe.load(ROOT / "zoo" / "lenet.prototxt", caffe_lenet / "init.caffemodel",
                     input_shapes={"data": (64, 1, 28, 28)})
    logits_blob = net.nodes[-1].bottoms[0]  # the deploy net ends in Softmax; train on its input
    x_train, y_train, _, _ = mnist_arrays()
    cfg = SolverConfig(base_lr=0.01, lr_policy="inv", gamma=0.0001, power=0.75, momentum=0.9,
                       weight_decay=0.0005, max_iter=2000)  # the reference solver.prototxt
    layers = ("conv1", "conv2", "ip1", "ip2")
    opt = CaffeSolver([Learnable(getattr(net.layer(n), k), mult, 1, f"{n}/{i}")
                       for n in layers for i, (k, mult) in enumerate((("weight", 1), ("bias", 2)))], cfg)
    for it in range(20):
        opt.zero_grad()
        logits = net.forward_blobs(x_train[64 * it: 64 * it + 64])[logits_blob]
        loss = F.cross_entropy(logits, y_train[64 * it: 64 * it + 64])
        loss.backward()
        opt.step()
        assert loss.item() == pytest.approx(ref["loss"][str(it)], rel=1e-4), it
        assert opt.last_rate == pytest.approx(ref["lr"][str(it)], rel=1e-5), it
    want = read_caffemodel(caffe_lenet / "early_iter_20.caffemodel").blobs
    for name in layers:
        for k, (got, w) in enumerate(zip(net.layer(name).get_caffe_blobs(), want[name], strict=True)):
            got = np.asarray(torch.as_tensor(got).detach(), dtype=np.float32).reshape(w.shape)
            assert np.abs(got - w).max() / np.abs(w).max() < 1e-4, (name, k)

"""Tiny Caffe nets for tests, and a writer of random-weight caffemodels for them.

    from tests.nets import TINY, write_net
    prototxt, caffemodel = write_net(tmp_path, TINY, seed=0)
    net = converters.caffe.load(prototxt, caffemodel)

``write_net`` writes the prototxt text as given (current or V1 format, train_val or deploy) and a
caffemodel with deterministic random weights written by ``converters.caffe.save``, so the pair can
be read by OpenCV's ``readNetFromCaffe`` as well as by ``converters.caffe.load``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

# conv -> relu (in place) -> max pool -> InnerProduct -> softmax. Input 1x2x8x8.
TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""

# The same net as a V1 definition with the legacy `input` + `input_dim` declaration.
TINY_V1 = """
name: "tiny_v1"
input: "data"
input_dim: 1 input_dim: 2 input_dim: 8 input_dim: 8
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1" inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "ip1" top: "prob" }
"""

# A train_val net: phase-dependent data layers, a label, loss and accuracy layers.
TINY_TRAIN_VAL = """
name: "tiny_train_val"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 crop_size: 8 }
        data_param { source: "train_lmdb" batch_size: 64 } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 crop_size: 8 } data_param { source: "test_lmdb" batch_size: 4 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""

# Two inputs, a Split, an Eltwise and two outputs (forward returns a dict).
TWO_HEADS = """
name: "two_heads"
input: "a"
input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }
input: "b"
input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }
layer { name: "split" type: "Split" bottom: "a" top: "a1" top: "a2" }
layer { name: "sum" type: "Eltwise" bottom: "a1" bottom: "b" top: "sum" eltwise_param { operation: SUM } }
layer { name: "conv" type: "Convolution" bottom: "a2" top: "conv"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip" inner_product_param { num_output: 3 } }
"""


def random_blobs(net, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Deterministic random blobs (Caffe layout) for every layer of ``net`` that has blobs.

    Weights are uniform in +-1/sqrt(fan in) so activations stay O(1) through a few layers;
    BatchNorm gets a positive variance and a scale factor of 1, so every blob is valid.
    """
    from converters.caffe.layers.base import CaffeBlobs

    rng = np.random.default_rng(seed)
    out = {}
    for node in net.nodes:
        module = net.layer(node.name)
        if not isinstance(module, CaffeBlobs):
            continue
        blobs = []
        for i, shape in enumerate(module.caffe_blob_shapes()):
            if node.type == "BatchNorm":
                value = [rng.normal(size=shape), rng.uniform(0.5, 1.5, size=shape), np.ones(shape)][i]
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                value = rng.uniform(-1, 1, size=shape) / np.sqrt(fan_in)
            blobs.append(np.asarray(value, dtype=np.float32))
        out[node.name] = blobs
    return out


def write_net(tmp_path, prototxt_text: str, seed: int = 0, name: str = "net",
              input_shapes: dict | None = None) -> tuple[Path, Path]:
    """Write ``<name>.prototxt`` (the text as given) and ``<name>.caffemodel`` with random weights.

    ``input_shapes`` completes inputs the text leaves open (a train_val Data layer's channels).
    """
    from converters import caffe

    tmp_path = Path(tmp_path)
    prototxt = tmp_path / f"{name}.prototxt"
    caffemodel = tmp_path / f"{name}.caffemodel"
    prototxt.write_text(prototxt_text)
    net = caffe.load(prototxt, input_shapes=input_shapes)
    for layer, blobs in random_blobs(net, seed).items():
        net.layer(layer).set_caffe_blobs([torch.from_numpy(b) for b in blobs])
    caffe.save(net, caffemodel)
    return prototxt, caffemodel


class Tiny(nn.Module):
    """A plain PyTorch CNN (conv 1->4 3x3, fc 64->3) for pruning tests: any nn.Module can be pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv1(x)).flatten(1))


class ctrl_c_after_saves:
    """Within this context a training run is interrupted (as by Ctrl-C) right after its ``n``-th
    checkpoint decision (``_Trainer._maybe_save``), whether or not a checkpoint was due."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        from compress.train import trainer

        self.original, calls = trainer._Trainer._maybe_save, {"n": 0}
        original, n = self.original, self.n

        def save_then_stop(trainer_self):
            original(trainer_self)
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt

        trainer._Trainer._maybe_save = save_then_stop
        return self

    def __exit__(self, *exc):
        from compress.train import trainer

        trainer._Trainer._maybe_save = self.original
        return False


# --- coupled channels (structured pruning): residual sums, concats, depthwise, BatchNorm, flatten ----------

def _conv(name, bottom, n, k=3, pad=1, group=1, top=None, bias=True):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            f"convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} group: {group} "
            f"bias_term: {'true' if bias else 'false'} }} }}\n")


def _bn(name, blob):
    """BatchNorm + Scale in place, as Caffe ResNets write them."""
    return (f'layer {{ name: "{name}/bn" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }}\n'
            f'layer {{ name: "{name}/scale" type: "Scale" bottom: "{blob}" top: "{blob}" '
            f"scale_param {{ bias_term: true }} }}\n")


def _relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def _head(classes=5, bottom="feat", pool=True):
    text = ""
    if pool:
        text += (f'layer {{ name: "gap" type: "Pooling" bottom: "{bottom}" top: "gap" '
                 f"pooling_param {{ pool: AVE global_pooling: true }} }}\n")
        bottom = "gap"
    return text + (f'layer {{ name: "fc" type: "InnerProduct" bottom: "{bottom}" top: "fc" '
                   f"inner_product_param {{ num_output: {classes} }} }}\n"
                   f'layer {{ name: "prob" type: "Softmax" bottom: "fc" top: "prob" }}\n')


def _input(c=3, hw=8):
    return (f'name: "s"\nlayer {{ name: "data" type: "Input" top: "data" '
            f"input_param {{ shape {{ dim: 1 dim: {c} dim: {hw} dim: {hw} }} }} }}\n")


# conv1 -> BN -> ReLU; a residual block (identity shortcut): conv2a -> BN -> ReLU -> conv2b -> BN, summed
# with conv1's output; ReLU; conv3 (1x1) -> BN -> ReLU -> global pool -> fc -> softmax. Channel sets:
# {conv1, conv2b | conv2a, conv3} (the sum), {conv2a | conv2b}, {conv3 | fc}.
RESIDUAL = (_input() + _conv("conv1", "data", 8) + _bn("conv1", "conv1") + _relu("relu1", "conv1")
            + _conv("conv2a", "conv1", 6) + _bn("conv2a", "conv2a") + _relu("relu2a", "conv2a")
            + _conv("conv2b", "conv2a", 8) + _bn("conv2b", "conv2b")
            + 'layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2b" top: "sum" }\n'
            + _relu("relu_sum", "sum") + _conv("conv3", "sum", 12, k=1, pad=0) + _bn("conv3", "conv3")
            + _relu("relu3", "conv3") + _head(bottom="conv3"))

# The same with a projection shortcut (option B, a 1x1 conv with its own BN) widening 8 -> 32 channels.
RESIDUAL_PROJ = (_input() + _conv("conv1", "data", 8) + _bn("conv1", "conv1") + _relu("relu1", "conv1")
                 + _conv("proj", "conv1", 32, k=1, pad=0, bias=False) + _bn("proj", "proj")
                 + _conv("conv2a", "conv1", 6) + _bn("conv2a", "conv2a") + _relu("relu2a", "conv2a")
                 + _conv("conv2b", "conv2a", 32, bias=False) + _bn("conv2b", "conv2b")
                 + 'layer { name: "sum" type: "Eltwise" bottom: "proj" bottom: "conv2b" top: "sum" }\n'
                 + _relu("relu_sum", "sum") + _head(bottom="sum"))

# Two branches concatenated (6 + 4 channels), read by a conv and, flattened, by an InnerProduct (a second
# output); the conv's output is pooled into the classifier.
CONCAT = (_input() + _conv("conv1", "data", 6) + _relu("relu1", "conv1")
          + _conv("conv2", "data", 4, k=1, pad=0) + _relu("relu2", "conv2")
          + 'layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "conv2" top: "cat" }\n'
          + _conv("conv3", "cat", 5) + _relu("relu3", "conv3")
          + 'layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }\n'
          + 'layer { name: "fc1" type: "InnerProduct" bottom: "flat" top: "fc1" '
            'inner_product_param { num_output: 4 } }\n'
          + _head(bottom="conv3"))

# MobileNet's depthwise-separable block: conv1 -> BN -> ReLU -> dw (group 8) -> BN -> ReLU -> pw -> BN.
DEPTHWISE = (_input() + _conv("conv1", "data", 8, bias=False) + _bn("conv1", "conv1")
             + _relu("relu1", "conv1")
             + _conv("dw", "conv1", 8, group=8, bias=False) + _bn("dw", "dw") + _relu("relu_dw", "dw")
             + _conv("pw", "dw", 32, k=1, pad=0, bias=False) + _bn("pw", "pw") + _relu("relu_pw", "pw")
             + _head(bottom="pw"))

# BatchNorm after the ReLU (cannot fold), then a conv; a conv -> BN -> flatten -> fc (BN folds; columns).
BN_AFTER_RELU = (_input() + _conv("conv1", "data", 8) + _relu("relu1", "conv1") + _bn("late", "conv1")
                 + _conv("conv2", "conv1", 6, pad=0) + _bn("conv2", "conv2")
                 + 'layer { name: "flat" type: "Flatten" bottom: "conv2" top: "flat" }\n'
                 + _head(bottom="flat", pool=False))

# MTCNN's pattern: conv -> per-channel PReLU -> pool -> conv, and a Split into two heads (both outputs).
PRELU_TWO_HEADS = (_input() + _conv("conv1", "data", 8)
                   + 'layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }\n'
                   + 'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'  # noqa: E501
                   + _conv("conv2", "pool1", 10, pad=0)
                   + 'layer { name: "prelu2" type: "PReLU" bottom: "conv2" top: "conv2" }\n'
                   + _conv("head1", "conv2", 2, k=1, pad=0)
                   + 'layer { name: "prob1" type: "Softmax" bottom: "head1" top: "prob1" }\n'
                   + _conv("head2", "conv2", 4, k=1, pad=0))

STRUCTURED = {"residual": RESIDUAL, "residual_proj": RESIDUAL_PROJ, "concat": CONCAT, "depthwise": DEPTHWISE,
              "bn_after_relu": BN_AFTER_RELU, "prelu_two_heads": PRELU_TWO_HEADS}


def random_net(text: str, seed: int = 0):
    """The net of ``text`` with :func:`random_blobs` (BatchNorm statistics included), in eval mode."""
    from converters import caffe
    from converters.caffe.prototxt import parse_net_text

    net = caffe.load(parse_net_text(text))
    for layer, blobs in random_blobs(net, seed).items():
        net.layer(layer).set_caffe_blobs([torch.from_numpy(b) for b in blobs])
    return net

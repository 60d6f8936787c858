"""The valid inputs every mutation starts from: the zoo LeNet (its caffemodel in the current and in
the V1 format, its prototxt, its model file), the zoo AlexNet definition, and a small net that uses
every supported layer type, so that mutations reach every converter."""
from __future__ import annotations

import functools
import io

# Every supported computing layer at a tiny size: Input 2x3x8x8, two branches joined by Concat and
# Eltwise, BatchNorm + Scale, LRN both regions, Deconvolution, PReLU, Reshape, Flatten, Softmax.
KITCHEN_SINK = """
name: "sink"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "split" type: "Split" bottom: "conv1" top: "a" top: "b" }
layer { name: "pool" type: "Pooling" bottom: "a" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm" type: "LRN" bottom: "pool" top: "norm"
        lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "up" type: "Deconvolution" bottom: "norm" top: "up"
        convolution_param { num_output: 4 kernel_size: 2 stride: 2 weight_filler { type: "bilinear" } } }
layer { name: "ave" type: "Pooling" bottom: "b" top: "ave"
        pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "wnorm" type: "LRN" bottom: "ave" top: "wnorm"
        lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL } }
layer { name: "sum" type: "Eltwise" bottom: "up" bottom: "wnorm" top: "sum"
        eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layer { name: "prod" type: "Eltwise" bottom: "up" bottom: "wnorm" top: "prod"
        eltwise_param { operation: PROD } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "prod" top: "cat" }
layer { name: "prelu" type: "PReLU" bottom: "cat" top: "cat" }
layer { name: "sig" type: "Sigmoid" bottom: "cat" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "sig" top: "tanh" }
layer { name: "drop" type: "Dropout" bottom: "tanh" top: "tanh" dropout_param { dropout_ratio: 0.3 } }
layer { name: "reshape" type: "Reshape" bottom: "tanh" top: "r"
        reshape_param { shape { dim: 0 dim: -1 dim: 8 } } }
layer { name: "flat" type: "Flatten" bottom: "r" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


# A train_val net: phase-dependent data layers (a label top), Accuracy and a loss that the builder drops.
TRAIN_VAL = """
name: "tv"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 } data_param { source: "train_lmdb" batch_size: 64 } }
layer { name: "mnist" type: "MemoryData" top: "data" top: "label" include { phase: TEST }
        memory_data_param { batch_size: 4 channels: 1 height: 12 width: 12 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "msra" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" variance_norm: AVERAGE } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


@functools.cache
def lenet_caffemodel() -> bytes:
    import zoo

    return zoo.get("lenet").weights.read_bytes()


@functools.cache
def lenet_prototxt() -> str:
    import zoo

    return zoo.get("lenet").prototxt.read_text()


@functools.cache
def alexnet_prototxt() -> str:
    import zoo

    return zoo.get("alexnet").prototxt.read_text()


@functools.cache
def lenet_v1() -> tuple[bytes, str]:
    """(caffemodel, prototxt) of the zoo LeNet in the V1 format (``layers`` with enum types, legacy
    ``input``/``input_dim``, 4-D num/channels/height/width blobs), as Caffe wrote them before 2015."""
    from google.protobuf import text_format

    import zoo
    from converters.caffe.proto import caffe_pb2
    from converters.caffe.reader import read_caffemodel
    from converters.caffe.upgrade import V1_TYPES

    model = read_caffemodel(zoo.get("lenet").weights)
    enum = {v: k for k, v in V1_TYPES.items()}
    net = caffe_pb2.NetParameter(name=model.net.name)
    for layer in model.net.layer:
        if layer.type == "Input":
            net.input.extend(layer.top)
            net.input_dim.extend(layer.input_param.shape[0].dim)
            continue
        v1 = net.layers.add(name=layer.name, bottom=layer.bottom, top=layer.top,
                            type=caffe_pb2.V1LayerParameter.LayerType.Value(enum[layer.type]))
        for field, value in layer.ListFields():
            if field.name.endswith("_param") and hasattr(v1, field.name):
                getattr(v1, field.name).CopyFrom(value)
        v1.blobs_lr.extend(p.lr_mult for p in layer.param)
    definition = text_format.MessageToString(net)
    for v1 in net.layers:
        for arr in model.blobs.get(v1.name, []):
            blob = v1.blobs.add()
            legacy = (1,) * (4 - arr.ndim) + tuple(arr.shape)
            blob.num, blob.channels, blob.height, blob.width = legacy
            blob.data.extend(arr.reshape(-1).tolist())
    return net.SerializeToString(), definition


@functools.cache
def lenet_model_file() -> bytes:
    """The zoo LeNet as a model file (``save_model``'s bytes)."""
    from compress.modelfile import load_model

    return save_dict(model_dict(load_model("lenet").net, {"source": "zoo:lenet"}))


def model_dict(net, meta: dict) -> dict:
    """The dict ``save_model`` writes for ``net`` (its layout, rebuilt here so mutations can edit it)."""
    import json

    import torch

    from compress.modelfile import FORMAT, VERSION
    from converters.caffe import caffe_blobs

    blobs = {name: [torch.from_numpy(a) for a in arrays] for name, arrays in caffe_blobs(net).items()}
    return {"format": FORMAT, "version": VERSION, "netdef": net.netdef, "blobs": blobs,
            "meta": json.dumps(meta)}


def save_dict(data) -> bytes:
    """``torch.save(data)`` as bytes (what a model file holds)."""
    import torch

    buf = io.BytesIO()
    torch.save(data, buf)
    return buf.getvalue()


# -- quantized models: `compress quantize` and `compress export` outputs -----------------------------

QUANTIZED = ("4bit", "2bit", "sparse-2bit")


@functools.cache
def quantized(kind: str) -> tuple[bytes, bytes]:
    """(model file, its ONNX export) of the zoo LeNet quantized by PTQ: at 4 or 2 bits, or, for
    ``sparse-2bit``, with 95% of every layer's weights zeroed first (its ONNX stores the sparse encoding,
    the ``compress.SparseDequantize`` function). The ONNX is the ``--pack`` export: DequantizeLinear
    nodes, the portable form a mutated file exercises most."""
    import tempfile
    from pathlib import Path

    import torch

    from compress.commands.export import export_model
    from compress.modelfile import load_model, save_model
    from compress.quant.api import QuantizeConfig, quantize
    from compress.quant.config import GridConfig

    with tempfile.TemporaryDirectory() as d:
        source = "lenet"
        if kind == "sparse-2bit":
            model = load_model("lenet")
            with torch.no_grad():
                for name in ("conv1", "conv2", "ip1", "ip2"):
                    w = model.net.layer(name).weight
                    w[w.abs() < w.abs().flatten().kthvalue(int(0.95 * w.numel())).values] = 0
            source = f"{d}/pruned.pt"
            save_model(source, model.net, model.meta)
        bits = 4 if kind == "4bit" else 2
        quantize(source, QuantizeConfig(grid=GridConfig(bits), output=f"{d}/q.pt", checkpoints=False))
        export_model(f"{d}/q.pt", f"{d}/q.onnx", pack=True, speed_check=False)  # the DequantizeLinear form
        return Path(d, "q.pt").read_bytes(), Path(d, "q.onnx").read_bytes()


@functools.cache
def eval_data() -> str:
    """``mnist`` where the real MNIST is installed (preprocessing applied as the model records), else
    ``synthetic``."""
    try:
        from compress.data.mnist import mnist_arrays

        mnist_arrays()  # cached: read once, before the children fork
    except Exception:  # noqa: BLE001 - any reason it cannot be read: fall back
        return "synthetic"
    return "mnist"

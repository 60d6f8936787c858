"""Upgrade old Caffe net definitions to the current format (``layer`` with string types).

Mirrors Caffe's ``UpgradeV1Net`` / ``UpgradeV1LayerParameter`` (src/caffe/util/upgrade_proto.cpp):
V1 ``layers { type: CONVOLUTION blobs_lr: 1 weight_decay: 1 ... }`` become
``layer { type: "Convolution" param { lr_mult: 1 decay_mult: 1 } ... }``; names, bottoms, tops,
include/exclude rules, blobs, loss weights and every ``*_param`` are carried over unchanged.
V0 nets (``layers { layer { ... } }``, Caffe before 2014) are refused with a clear error.
"""
from __future__ import annotations

from converters.caffe.names import shown
from converters.errors import ConversionError

# V1LayerParameter.LayerType name -> current type string (Caffe's UpgradeV1LayerType).
V1_TYPES: dict[str, str] = {
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DATA": "Data",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}


def is_v1(net) -> bool:
    return len(net.layers) > 0


def upgrade_net(net, where: str = "<net>"):
    """Return ``net`` in the current format: a new NetParameter if it had V1 ``layers``, else ``net``.

    ``where`` names the source (a file) in error messages.
    """
    if not net.layers:
        return net
    if net.layer:
        raise ConversionError(
            f"{where}: the net mixes current 'layer' ({len(net.layer)}) and V1 'layers' "
            f"({len(net.layers)}) definitions; expected one format"
        )
    from converters.caffe.proto import caffe_pb2

    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layers")
    for i, v1 in enumerate(net.layers):
        out.layer.append(upgrade_v1_layer(v1, where=f"{where}: layers #{i}"))
    return out


def upgrade_v1_layer(v1, where: str = "<layer>"):
    """One V1LayerParameter -> LayerParameter (blobs included, if any)."""
    from converters.caffe.proto import caffe_pb2

    name = v1.name or "<unnamed>"
    if v1.HasField("layer"):
        raise ConversionError(
            f"{where} ({shown(name)}): V0 layer definition (layers {{ layer {{ ... }} }}, Caffe before 2014) "
            "is not supported; upgrade it first with Caffe's upgrade_net_proto_text/_binary"
        )
    out = caffe_pb2.LayerParameter()
    if v1.HasField("name"):
        out.name = v1.name
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        enum_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
        if enum_name != "NONE":
            out.type = V1_TYPES[enum_name]
    out.blobs.extend(v1.blobs)
    out.loss_weight.extend(v1.loss_weight)

    n_param = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n_param):
        spec = out.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]

    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.message_type is not None:
            getattr(out, field.name).CopyFrom(value)
    return out

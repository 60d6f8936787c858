"""The torch-free shape inference (``converters/caffe/shapes/``) against the torch builder: the same top and
blob shapes, and the same errors, for every registered layer type in several geometries, for the zoo nets,
a V1 net and train_val nets in both phases."""
from __future__ import annotations

import re

import pytest
from google.protobuf import text_format

from converters.caffe.builder import plan_net
from converters.caffe.layers.base import builder_for
from converters.caffe.layers.base import supported_types as converter_types
from converters.caffe.proto import caffe_pb2
from converters.caffe.prototxt import parse_net_text, read_net_text
from converters.caffe.shapes.base import layer_shapes
from converters.caffe.shapes.base import supported_types as shape_types
from converters.caffe.shapes.plan import plan_shapes
from converters.errors import ConversionError
from tests.nets import TINY, TINY_TRAIN_VAL, TINY_V1, TWO_HEADS

IMAGE = (1, 2, 5, 5)
INPUT_TYPES = ("Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData")

# type -> [(parameters, bottom shapes, number of tops)]: valid geometries and refused ones.
CASES: dict[str, list[tuple[str, list[tuple[int, ...]], int]]] = {
    "Convolution": [
        ("convolution_param { num_output: 4 kernel_size: 3 }", [(1, 2, 8, 8)], 1),
        ("convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 group: 2 "
         "bias_term: false }", [(2, 4, 9, 7)], 1),
        ("convolution_param { num_output: 3 kernel_size: 3 dilation: 2 pad: 2 stride: 3 }",
         [(1, 3, 7, 8)], 1),
        ("convolution_param { num_output: 2 kernel_size: 1 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0 }",
         [(1, 1, 6, 7)], 1),
        ("convolution_param { num_output: 8 kernel_size: 3 group: 4 }", [(1, 4, 3, 3)], 1),  # depthwise
        ("convolution_param { num_output: 1 kernel_size: 5 }", [(1, 1, 4, 4)], 1),  # kernel > input
        ("convolution_param { num_output: 1 kernel_size: 3 dilation: 3 }", [(1, 1, 6, 6)], 1),
        ("convolution_param { num_output: 1 kernel_size: 5 pad: 1 }", [(1, 1, 3, 3)], 1),  # = padded input
        ("convolution_param { num_output: 4 kernel_size: 3 group: 3 }", [(1, 4, 8, 8)], 1),
        ("convolution_param { kernel_size: 3 }", [(1, 4, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_size: 3 }", [(4, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_size: 3 axis: 2 }", [(1, 4, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3 }", [(1, 4, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_size: 3 stride: 0 }", [(1, 4, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: 'gaussian' std: 0 } }",
         [(1, 2, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 weight_filler { type: 'bilinear' } }",
         [(1, 2, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_size: 3 bias_filler { type: 'nope' } }",
         [(1, 2, 8, 8)], 1),
        ("convolution_param { num_output: 4 kernel_size: 3 }", [(1, 2, 8, 8), (1, 2, 8, 8)], 1),
    ],
    "Deconvolution": [
        ("convolution_param { num_output: 4 kernel_size: 2 stride: 2 }", [(1, 2, 5, 5)], 1),
        ("convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 bias_term: false }",
         [(2, 4, 3, 5)], 1),
        ("convolution_param { num_output: 2 kernel_size: 3 dilation: 2 }", [(1, 1, 4, 4)], 1),
        ("convolution_param { num_output: 2 kernel_size: 4 stride: 2 pad: 1 "
         "weight_filler { type: 'bilinear' } }", [(1, 2, 4, 4)], 1),
        ("convolution_param { num_output: 1 kernel_size: 2 pad: 3 }", [(1, 1, 2, 2)], 1),  # negative output
        ("convolution_param { num_output: 1 kernel_size: 3 pad: 2 }", [(1, 1, 2, 2)], 1),  # zero output
        ("convolution_param { num_output: 3 kernel_size: 2 group: 2 }", [(1, 4, 2, 2)], 1),
    ],
    "InnerProduct": [
        ("inner_product_param { num_output: 5 }", [(2, 3, 4, 4)], 1),
        ("inner_product_param { num_output: 5 axis: 2 bias_term: false }", [(2, 3, 4, 4)], 1),
        ("inner_product_param { num_output: 5 axis: -1 transpose: true }", [(2, 3, 4)], 1),
        ("inner_product_param { num_output: 7 transpose: true weight_filler { type: 'msra' } }",
         [(3, 10)], 1),
        ("inner_product_param { num_output: 5 axis: 4 }", [(2, 3, 4, 4)], 1),
        ("inner_product_param { }", [(2, 3)], 1),
        ("inner_product_param { num_output: 5 weight_filler { type: 'uniform' min: 2 max: 1 } }",
         [(2, 3)], 1),
        ("inner_product_param { num_output: 5 weight_filler { type: 'gaussian' sparse: 9 } }", [(2, 3)], 1),
    ],
    "Pooling": [
        ("pooling_param { pool: MAX kernel_size: 2 stride: 2 }", [(1, 2, 5, 5)], 1),  # Caffe's ceil: 3x3
        ("pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }", [(1, 1, 6, 6)], 1),
        ("pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 2 }", [(1, 1, 6, 7)], 1),  # decrement
        ("pooling_param { pool: AVE global_pooling: true }", [(2, 3, 5, 7)], 1),
        ("pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0 }",
         [(1, 2, 6, 5)], 1),
        ("pooling_param { pool: MAX kernel_size: 2 stride: 3 }", [(1, 1, 7, 7)], 1),  # stride > kernel
        ("pooling_param { pool: AVE kernel_size: 2 stride: 3 }", [(1, 1, 8, 8)], 1),
        ("pooling_param { pool: MAX kernel_size: 4 }", [(1, 1, 2, 2)], 1),  # kernel > input
        ("pooling_param { pool: AVE kernel_size: 5 pad: 1 }", [(1, 1, 2, 2)], 1),
        ("pooling_param { pool: MAX kernel_size: 3 pad: 1 stride: 1 }", [(1, 1, 1, 1)], 1),
        ("pooling_param { pool: MAX kernel_size: 2 pad: 2 }", [(1, 1, 5, 5)], 1),
        ("pooling_param { pool: MAX global_pooling: true kernel_size: 2 }", [(1, 1, 5, 5)], 1),
        ("pooling_param { pool: STOCHASTIC kernel_size: 2 }", [(1, 1, 5, 5)], 1),
        ("pooling_param { pool: MAX }", [(1, 1, 5, 5)], 1),
        ("pooling_param { pool: MAX kernel_size: 2 }", [(1, 5, 5)], 1),
        ("pooling_param { pool: MAX global_pooling: true pad: 1 }", [(1, 1, 5, 5)], 1),
    ],
    "ReLU": [("", [IMAGE], 1), ("relu_param { negative_slope: 0.1 }", [(3, 4)], 1), ("", [(3,), (3,)], 1)],
    "Sigmoid": [("", [IMAGE], 1), ("", [(7,)], 1), ("", [], 1)],
    "TanH": [("", [IMAGE], 1), ("", [(2, 3, 4, 5, 6)], 1)],
    "Dropout": [("dropout_param { dropout_ratio: 0.3 }", [IMAGE], 1),
                ("dropout_param { dropout_ratio: 1.0 }", [IMAGE], 1)],
    "Softmax": [("", [IMAGE], 1), ("softmax_param { axis: -1 }", [(2, 3)], 1),
                ("softmax_param { axis: 4 }", [IMAGE], 1)],
    "PReLU": [("", [IMAGE], 1), ("prelu_param { channel_shared: true }", [(2, 3)], 1), ("", [(5,)], 1),
              ("prelu_param { filler { type: 'gaussian' std: -1 } }", [IMAGE], 1)],
    "LRN": [("", [(1, 3, 5, 5)], 1), ("lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }", [IMAGE], 1),
            ("lrn_param { local_size: 9 }", [(2, 4, 3, 3)], 1), ("lrn_param { local_size: 4 }", [IMAGE], 1),
            ("", [(1, 3, 5)], 1)],
    "BatchNorm": [("", [(2, 3, 4, 4)], 1), ("", [(5,)], 1),
                  ("batch_norm_param { use_global_stats: true eps: 0.001 }", [(2, 3)], 1)],
    "Scale": [("", [(2, 3, 4, 4)], 1), ("scale_param { num_axes: 2 bias_term: true }", [(2, 3, 4, 4)], 1),
              ("scale_param { axis: 0 num_axes: -1 }", [(2, 3)], 1),
              ("scale_param { bias_term: true }", [(2, 3, 4, 4), (3, 4)], 1),
              ("scale_param { axis: 2 }", [(2, 3, 4, 4), (4,)], 1),
              ("", [(2, 3, 4, 4), (4,)], 1),
              ("scale_param { num_axes: 5 }", [(2, 3, 4, 4)], 1),
              ("scale_param { num_axes: -2 }", [(2, 3)], 1),
              ("scale_param { num_axes: 0 bias_term: true }", [(2, 3)], 1),
              ("scale_param { filler { type: 'constant' value: inf } }", [(2, 3)], 1)],
    "Eltwise": [("", [IMAGE, IMAGE], 1), ("eltwise_param { operation: PROD }", [IMAGE, IMAGE, IMAGE], 1),
                ("eltwise_param { operation: MAX }", [(2, 3), (2, 3)], 1),
                ("eltwise_param { coeff: 1 coeff: -1 }", [IMAGE, IMAGE], 1),
                ("eltwise_param { operation: PROD coeff: 1 coeff: 2 }", [IMAGE, IMAGE], 1),
                ("eltwise_param { coeff: 1 }", [IMAGE, IMAGE], 1),
                ("", [(1, 2), (1, 3)], 1), ("", [IMAGE], 1)],
    "Concat": [("", [IMAGE, (1, 3, 5, 5)], 1), ("concat_param { axis: 0 }", [IMAGE, IMAGE, IMAGE], 1),
               ("concat_param { concat_dim: 3 }", [IMAGE, (1, 2, 5, 2)], 1), ("", [IMAGE], 1),
               ("", [IMAGE, (1, 3, 5, 4)], 1), ("concat_param { axis: -5 }", [IMAGE, IMAGE], 1),
               ("", [IMAGE, (1, 2, 5)], 1)],
    "Flatten": [("", [IMAGE], 1), ("flatten_param { axis: 2 end_axis: 3 }", [(2, 3, 4, 5, 6)], 1),
                ("flatten_param { axis: 0 end_axis: 1 }", [(2, 3)], 1),
                ("flatten_param { axis: 2 end_axis: 1 }", [IMAGE], 1)],
    "Reshape": [("reshape_param { shape { dim: 0 dim: -1 } }", [IMAGE], 1),
                ("reshape_param { shape { dim: 6 dim: 2 } axis: 1 num_axes: 1 }", [(2, 12, 5)], 1),
                ("reshape_param { shape { dim: 1 dim: 1 } axis: -1 num_axes: 0 }", [(2, 3)], 1),
                ("reshape_param { shape { } axis: 0 num_axes: 0 }", [(2, 3)], 1),
                ("reshape_param { shape { dim: 0 dim: 7 } }", [(2, 3, 4)], 1),
                ("reshape_param { shape { dim: -1 dim: -1 } }", [(2, 3)], 1),
                ("reshape_param { shape { dim: 0 dim: 0 dim: 0 } }", [(2, 3)], 1),
                ("reshape_param { shape { dim: 1 } axis: 3 }", [(2, 3)], 1),
                ("reshape_param { shape { dim: -1 dim: 4 } }", [(2, 3)], 1),
                ("reshape_param { shape { dim: 6 } num_axes: -3 }", [(2, 3)], 1)],
    "Split": [("", [IMAGE], 2), ("", [(3,)], 3), ("", [IMAGE], 1), ("", [IMAGE], 0)],
    "SoftmaxWithLoss": [("", [(2, 5), (2,)], 1), ("", [(2, 5), (2,)], 2), ("", [(2, 5, 3), (2, 3)], 1),
                        ("", [(2, 5, 3), (2, 2)], 1), ("", [(2, 5), (3,)], 1), ("", [(2, 5)], 1),
                        ("", [(2, 5), (2,)], 3), ("softmax_param { axis: 3 }", [(2, 5), (2,)], 1)],
    "SigmoidCrossEntropyLoss": [("", [(2, 5), (2, 5)], 1), ("", [(2, 5), (2, 4)], 1),
                                ("", [(2, 5), (2, 5)], 2)],
    "EuclideanLoss": [("", [(2, 5), (2, 5)], 1), ("", [(2, 5), (2, 5, 1)], 1), ("", [(2, 5), (2, 4)], 1)],
    "Accuracy": [("", [(2, 5), (2,)], 1), ("accuracy_param { top_k: 3 }", [(2, 5), (2,)], 2),
                 ("accuracy_param { top_k: 6 }", [(2, 5), (2,)], 1), ("", [(2, 5), (3,)], 1),
                 ("accuracy_param { axis: 2 }", [(2, 3, 4), (2, 3)], 1)],
    "Silence": [("", [IMAGE], 0), ("", [IMAGE, (3,)], 0), ("", [IMAGE], 1)],
}


def _net(text: str, bottoms: list[tuple[int, ...]], tops: int, layer_type: str):
    net = caffe_pb2.NetParameter(name="one")
    for i, shape in enumerate(bottoms):
        inp = net.layer.add(name=f"in{i}", type="Input", top=[f"b{i}"])
        inp.input_param.shape.add().dim.extend(shape)
    if not bottoms:
        inp = net.layer.add(name="in", type="Input", top=["unused"])
        inp.input_param.shape.add().dim.extend((1,))
    layer = net.layer.add(name="l", type=layer_type, bottom=[f"b{i}" for i in range(len(bottoms))],
                          top=[f"t{i}" for i in range(tops)])
    text_format.Merge(text, layer)
    return net


def _torch(net):
    """{top: shape} and the layers' blob shapes by the torch builder, or its error."""
    try:
        plan = plan_net(net, keep_training=True, memory_limit=1 << 32)
    except ConversionError as e:
        return str(e)
    blobs = {name: [tuple(s) for s in m.caffe_blob_shapes()] for name, m in plan.modules.items()
             if hasattr(m, "caffe_blob_shapes")}
    return plan.shapes, {k: v for k, v in blobs.items() if v}, plan.param_count()


def _pure(net):
    try:
        plan = plan_shapes(net, keep_training=True)
    except ConversionError as e:
        return str(e)
    return plan.shapes, plan.blob_shapes(), plan.param_count()


_RUNTIME = re.compile(r"^(.*: cannot be built for bottom shape\(s\) [^:]*): ")


def _same(torch_side, pure_side) -> None:
    """Equal results, or equal errors; where torch itself refused the module (``cannot be built ...: <torch's
    reason>``), the same prefix and a reason in the pure function's words."""
    if isinstance(torch_side, str) and isinstance(pure_side, str):
        m = _RUNTIME.match(torch_side)
        if m:
            assert pure_side.startswith(m.group(1) + ": "), (torch_side, pure_side)
        else:
            assert pure_side == torch_side
        return
    assert pure_side == torch_side


@pytest.mark.parametrize("layer_type", sorted(CASES))
def test_every_geometry_agrees_with_the_torch_builder(layer_type):
    refused = accepted = 0
    for text, bottoms, tops in CASES[layer_type]:
        net = _net(text, bottoms, tops, layer_type)
        torch_side, pure_side = _torch(net), _pure(net)
        _same(torch_side, pure_side)
        refused += isinstance(torch_side, str)
        accepted += not isinstance(torch_side, str)
    assert accepted >= 1 and (refused >= 1 or layer_type in ("TanH",))


def test_the_registries_agree_and_every_type_has_cases():
    assert shape_types() == converter_types()
    assert set(CASES) | set(INPUT_TYPES) == set(shape_types())


@pytest.mark.parametrize("layer_type", INPUT_TYPES)
def test_input_types_are_never_layers_in_either(layer_type):
    layer = caffe_pb2.LayerParameter(name="d", type=layer_type, top=["x"])
    with pytest.raises(ConversionError) as torch_error:
        builder_for(layer_type)(layer, [])
    with pytest.raises(ConversionError) as pure_error:
        layer_shapes(layer, [])
    assert str(pure_error.value) == str(torch_error.value)


def _compare_nets(net, **kwargs) -> None:
    try:
        torch_plan = plan_net(net, **kwargs)
    except ConversionError as e:
        with pytest.raises(ConversionError) as pure_error:
            plan_shapes(net, **kwargs)
        _same(str(e), str(pure_error.value))
        return
    pure = plan_shapes(net, **kwargs)
    assert pure.inputs == torch_plan.inputs and pure.shapes == torch_plan.shapes
    assert [n.name for n in pure.nodes] == [n.name for n in torch_plan.nodes]
    assert [(n.bottoms, n.tops) for n in pure.nodes] == [(n.bottoms, n.tops) for n in torch_plan.nodes]
    assert pure.param_count() == torch_plan.param_count()
    for node in pure.nodes:
        m = torch_plan.modules[node.name]
        assert list(node.blob_shapes) == ([tuple(s) for s in m.caffe_blob_shapes()]
                                          if hasattr(m, "caffe_blob_shapes") else [])
    assert pure.report == torch_plan.report or (pure.report.dropped, pure.report.transform) == (
        torch_plan.report.dropped, torch_plan.report.transform)
    assert 0.5 < pure.memory_bytes() / torch_plan.report.memory_bytes < 2
    from converters.caffe.builder import output_blobs
    assert pure.outputs == output_blobs(torch_plan.nodes)


@pytest.mark.parametrize("name", ["lenet", "alexnet", "mobilenet_v1_0.25", "mobilenet_v1_0.5", "resnet20"])
def test_zoo_nets_agree(name):
    _compare_nets(read_net_text(f"zoo/{name}.prototxt"))


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25", "resnet20"])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("keep_training", [False, True])
def test_zoo_train_val_nets_agree_in_both_phases(name, phase, keep_training):
    net = read_net_text(f"zoo/train/{name}/train_val.prototxt")
    _compare_nets(net, phase=phase, keep_training=keep_training)  # the LMDB leaves the channels open
    _compare_nets(net, phase=phase, keep_training=keep_training, input_shapes={"data": (2, 1, 28, 28)})


@pytest.mark.parametrize("text", [TINY, TINY_V1, TWO_HEADS], ids=["tiny", "tiny_v1", "two_heads"])
def test_small_nets_agree(text):
    _compare_nets(parse_net_text(text))


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_train_val_net_agrees_and_drops_the_same_layers(phase, caplog):
    net = parse_net_text(TINY_TRAIN_VAL)
    _compare_nets(net, phase=phase, input_shapes={"data": (3, 1, 8, 8)})
    _compare_nets(net, phase=phase, keep_training=True, input_shapes={"data": (3, 1, 8, 8)})
    _compare_nets(net, phase=phase)  # channels unknown: the same error
    caplog.clear()
    plan = plan_shapes(net, phase=phase, input_shapes={"data": (3, 1, 8, 8)})
    assert "dropped training-only layers" in caplog.text
    assert plan.outputs == ["ip1"] and plan.shapes["ip1"] == (3, 5)


def test_channels_read_off_the_first_convolution_weights():
    class Blob:
        shape = (4, 1, 3, 3)

    net = parse_net_text(TINY_TRAIN_VAL)
    plan = plan_shapes(net, {"conv1": [Blob()]})
    assert plan.inputs == {"data": (4, 1, 8, 8)}


def test_graph_errors_are_the_builders():
    bad = [
        TINY.replace('bottom: "pool1" top: "ip1"', 'bottom: "nothing" top: "ip1"'),
        TINY.replace('name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1"',
                     'name: "relu1" type: "ReLU" bottom: "data" top: "conv1"'),
        TINY.replace('name: "prob"', 'name: "ip1"'),
        TINY.replace('type: "Softmax"', 'type: "Normalize"').replace('type: "ReLU"', 'type: "PriorBox"'),
        TINY.replace("dim: 1 dim: 2 dim: 8 dim: 8", "dim: 1 dim: 0 dim: 8 dim: 8"),
    ]
    for text in bad:
        net = parse_net_text(text)
        with pytest.raises(ConversionError) as torch_error:
            plan_net(net)
        with pytest.raises(ConversionError) as pure_error:
            plan_shapes(net)
        assert str(pure_error.value) == str(torch_error.value)


def test_no_torch_is_imported(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom converters.caffe.prototxt import read_net_text\n"
            "from converters.caffe.shapes.plan import plan_shapes\n"
            "plan = plan_shapes(read_net_text('zoo/alexnet.prototxt'))\n"
            "assert plan.param_count() == 60965224\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

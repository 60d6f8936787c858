"""The net builder: phase filtering, inputs, training-only layers, outputs, blob matching, round trips."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from converters import caffe
from converters.caffe.builder import build_net
from converters.caffe.prototxt import parse_net_text
from converters.caffe.reader import read_caffemodel
from tests.nets import TINY, TINY_TRAIN_VAL, TINY_V1, TWO_HEADS, random_blobs, write_net

ONE_FC = """
name: "one_fc"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 1 } }
"""


def _blobs(net) -> dict[str, list[np.ndarray]]:
    return {n.name: [b.numpy().copy() for b in net.layer(n.name).get_caffe_blobs()]
            for n in net.nodes if hasattr(net.layer(n.name), "get_caffe_blobs")}


def test_hand_computed_inner_product_and_zero_copy_adoption():
    # Distinct powers of two: the output names which input reached which weight.
    w = np.array([[1, 2, 4, 8]], np.float32)
    b = np.array([0.5], np.float32)
    net = build_net(parse_net_text(ONE_FC), {"ip": [w, b]})
    x = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # flattens to 1, 0, 1, 1
    assert net(x).item() == 1 + 4 + 8 + 0.5
    assert net.ip.weight.data_ptr() == w.ctypes.data  # adopted, not copied
    assert not net.training


def test_legacy_4d_fc_blob_is_accepted():
    w = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)  # V1 InnerProduct blob (1, 1, out, in)
    net = build_net(parse_net_text(ONE_FC), {"ip": [w, np.zeros((1, 1, 1, 1), np.float32)]})
    assert tuple(net.ip.weight.shape) == (1, 4)
    assert net(torch.ones(1, 1, 2, 2)).item() == 0 + 1 + 2 + 3


def test_v1_legacy_input_and_current_input_layer_agree(tmp_path):
    proto, model = write_net(tmp_path, TINY, seed=3, name="cur")
    proto_v1 = tmp_path / "v1.prototxt"
    proto_v1.write_text(TINY_V1)
    cur, v1 = caffe.load(proto, model), caffe.load(proto_v1, model)
    assert cur.inputs == v1.inputs == {"data": (1, 2, 8, 8)}
    assert [n.name for n in v1.nodes] == ["conv1", "relu1", "pool1", "ip1", "prob"]
    x = torch.randn(1, 2, 8, 8)
    assert torch.equal(cur(x), v1(x))
    assert 'type: "Input"' in v1.netdef and "input_dim" not in v1.netdef


def test_in_place_layer_keeps_last_value(tmp_path):
    net = caffe.load(*write_net(tmp_path, TINY, seed=1))
    x = torch.randn(1, 2, 8, 8)
    blobs = net.forward_blobs(x)
    assert (blobs["conv1"] >= 0).all()  # relu1 ran in place on conv1
    assert torch.equal(blobs["conv1"], torch.relu(net.conv1(x)))
    assert net.outputs == ["prob"]


def test_split_two_inputs_and_two_outputs_give_a_dict(tmp_path):
    net = caffe.load(*write_net(tmp_path, TWO_HEADS, seed=2))
    assert net.inputs == {"a": (1, 3, 4, 4), "b": (1, 3, 4, 4)}
    assert net.outputs == ["conv", "ip"]
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    out = net(a, b)
    assert set(out) == {"conv", "ip"}
    blobs = net.forward_blobs(a=a, b=b)
    assert torch.equal(blobs["a1"], a) and torch.equal(blobs["a2"], a)
    assert torch.allclose(blobs["sum"], a + b)
    assert torch.equal(out["ip"], net.ip(a + b))


def test_train_val_phase_filtering_and_training_layers_dropped(tmp_path, caplog):
    proto, model = write_net(tmp_path, TINY_TRAIN_VAL, input_shapes={"data": (4, 1, 8, 8)})
    with caplog.at_level(logging.WARNING, logger="converters.caffe"):
        net = caffe.load(proto, model)  # channels read off conv1's weights (the LMDB is not needed)
    assert net.inputs == {"data": (4, 1, 8, 8)}  # TEST data layer: batch_size 4, crop_size 8
    assert [n.name for n in net.nodes] == ["conv1", "ip1"]
    assert net.outputs == ["ip1"]
    assert net.build_report.dropped == ["accuracy (Accuracy)", "loss (SoftmaxWithLoss)"]
    assert "accuracy (Accuracy), loss (SoftmaxWithLoss)" in caplog.text
    assert net.build_report.transform["scale"] == pytest.approx(0.00390625)
    train = caffe.load(proto, model, phase="TRAIN")
    assert train.inputs == {"data": (64, 1, 8, 8)}  # the TRAIN layer's batch size
    assert train.build_report.dropped == ["loss (SoftmaxWithLoss)"]  # accuracy is TEST-only
    assert "Data" not in net.netdef and "Loss" not in net.netdef and 'type: "Input"' in net.netdef


def test_state_rules_stage_and_level():
    text = """
    name: "staged"
    state { level: 2 stage: "deploy" }
    input: "data" input_shape { dim: 1 dim: 3 }
    layer { name: "a" type: "ReLU" bottom: "data" top: "a" include { stage: "deploy" } }
    layer { name: "b" type: "ReLU" bottom: "data" top: "b" include { stage: "train" } }
    layer { name: "c" type: "ReLU" bottom: "data" top: "c" include { min_level: 3 } }
    layer { name: "d" type: "ReLU" bottom: "data" top: "d" exclude { max_level: 1 } }
    layer { name: "e" type: "ReLU" bottom: "data" top: "e" exclude { not_stage: "train" } }
    layer { name: "f" type: "ReLU" bottom: "data" top: "f" include { phase: TRAIN } include { phase: TEST } }
    """
    net = build_net(parse_net_text(text))
    assert [n.name for n in net.nodes] == ["a", "d", "f"]


def test_round_trip_is_bit_identical(tmp_path):
    proto, model = write_net(tmp_path, TINY, seed=5)
    first = caffe.load(proto, model)
    caffe.save(first, tmp_path / "a.caffemodel", prototxt=tmp_path / "a.prototxt")
    second = caffe.load(tmp_path / "a.prototxt", tmp_path / "a.caffemodel")
    caffe.save(second, tmp_path / "b.caffemodel", prototxt=tmp_path / "b.prototxt")
    third = caffe.load(tmp_path / "b.prototxt", tmp_path / "b.caffemodel")
    for a, b in ((first, second), (second, third)):
        ba, bb = _blobs(a), _blobs(b)
        assert ba.keys() == bb.keys() == {"conv1", "ip1"}
        for name in ba:
            for x, y in zip(ba[name], bb[name], strict=True):
                assert x.dtype == y.dtype == np.float32 and x.tobytes() == y.tobytes()
    assert (tmp_path / "a.caffemodel").read_bytes() == (tmp_path / "b.caffemodel").read_bytes()
    assert (tmp_path / "a.prototxt").read_text() == (tmp_path / "b.prototxt").read_text()
    original = read_caffemodel(model).blobs
    for name, arrays in read_caffemodel(tmp_path / "b.caffemodel").blobs.items():
        assert all(np.array_equal(x, y) for x, y in zip(arrays, original[name], strict=True))


def test_caffemodel_layers_missing_from_definition_are_ignored_and_listed(tmp_path, caplog):
    proto, model = write_net(tmp_path, TINY, seed=0)
    short = tmp_path / "short.prototxt"
    short.write_text(TINY.split('layer { name: "ip1"')[0])  # a deploy prototxt cut short after pool1
    with caplog.at_level(logging.WARNING, logger="converters.caffe"):
        net = caffe.load(short, model)
    assert net.outputs == ["pool1"]
    assert net.build_report.ignored == ["ip1"]
    assert "ip1" in caplog.text


def test_without_caffemodel_weights_are_initialized_with_caffe_fillers():
    torch.manual_seed(0)
    net = caffe.load("zoo/lenet.prototxt")
    assert net.build_report.initialized == ["conv1", "conv2", "ip1", "ip2"]
    assert torch.count_nonzero(net.conv1.bias) == 0  # bias_filler constant 0
    bound = (3.0 / (1 * 5 * 5)) ** 0.5  # xavier: uniform(+-sqrt(3 / fan_in))
    w = net.conv1.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert not any(p.is_meta for p in net.parameters())


def test_random_blobs_cover_every_weighted_layer():
    net = caffe.load("zoo/lenet.prototxt")
    blobs = random_blobs(net, seed=0)
    assert list(blobs) == ["conv1", "conv2", "ip1", "ip2"]
    assert [b.shape for b in blobs["ip1"]] == [(500, 800), (500,)]
    again = random_blobs(net, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(blobs["conv2"], again["conv2"], strict=True))


def test_zoo_lenet_runs_and_matches_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    net = caffe.load("zoo/lenet.prototxt")
    for name, blobs in random_blobs(net, seed=7).items():
        net.layer(name).set_caffe_blobs([torch.from_numpy(b) for b in blobs])
    caffe.save(net, tmp_path / "lenet.caffemodel")
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ours = caffe.load("zoo/lenet.prototxt", tmp_path / "lenet.caffemodel")
    cv = cv2.dnn.readNetFromCaffe("zoo/lenet.prototxt", str(tmp_path / "lenet.caffemodel"))
    cv.setInput(x.numpy())
    for blob in ("pool2", "ip2", "prob"):  # (OpenCV names in-place tops by the producing layer)
        theirs = cv.forward(blob)
        mine = ours.forward_blobs(x)[blob].detach().numpy()
        assert mine.shape == theirs.shape
        assert np.abs(mine - theirs).max() / np.abs(theirs).max() <= 1e-5
    assert ours(x).sum().item() == pytest.approx(1.0, abs=1e-6)


def test_blob_shapes_and_summary_of_the_zoo_alexnet_definition():
    from converters.caffe.builder import plan_net
    from converters.caffe.prototxt import read_net_text

    plan = plan_net(read_net_text("zoo/alexnet.prototxt"))  # meta only: no 244 MB allocated
    assert plan.param_count() == 60_965_224
    assert plan.shapes["pool5"] == (10, 256, 6, 6) and plan.shapes["prob"] == (10, 1000)
    assert [n.name for n in plan.nodes if n.type == "LRN"] == ["norm1", "norm2"]

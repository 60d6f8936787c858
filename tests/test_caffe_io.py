"""Caffe file I/O: schema field numbers, prototxt parsing and upgrade, caffemodel read/write, mean files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from converters.caffe.binaryproto import read_mean, write_mean
from converters.caffe.proto import caffe_pb2
from converters.caffe.prototxt import parse_net_text, parse_solver_text, read_net_text
from converters.caffe.reader import read_caffemodel
from converters.caffe.upgrade import upgrade_net
from converters.caffe.writer import write_caffemodel
from converters.errors import ConversionError, OutputPathError

# BVLC's examples/mnist/lenet_train_test.prototxt as it was in the V1 format (2014).
LENET_V1 = """name: "LeNet"
layers {
  name: "mnist"
  type: DATA
  top: "data"
  top: "label"
  data_param {
    source: "examples/mnist/mnist_train_lmdb"
    backend: LMDB
    batch_size: 64
  }
  transform_param {
    scale: 0.00390625
  }
  include: { phase: TRAIN }
}
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
layers {
  name: "pool1"
  type: POOLING
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers {
  name: "ip1"
  type: INNER_PRODUCT
  bottom: "pool1"
  top: "ip1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  inner_product_param { num_output: 500 }
}
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers {
  name: "accuracy"
  type: ACCURACY
  bottom: "ip1"
  bottom: "label"
  top: "accuracy"
  include: { phase: TEST }
}
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip1" bottom: "label" top: "loss" }
"""

SMALL_NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "scale" type: "Scale" bottom: "fc" top: "fc" scale_param { bias_term: true } }
"""


def _small_blobs(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    f = np.float32
    return {
        "conv": [rng.standard_normal((2, 3, 3, 3)).astype(f), rng.standard_normal(2).astype(f)],
        "fc": [rng.standard_normal((5, 8)).astype(f), rng.standard_normal(5).astype(f)],
        "scale": [np.array(3.0, f), rng.standard_normal(1).astype(f)],  # a 0-D blob and a 1-D one
    }


def _write_small(tmp_path, name="m.caffemodel"):
    path = tmp_path / name
    write_caffemodel(path, parse_net_text(SMALL_NET), _small_blobs())
    return path


# -- schema --------------------------------------------------------------------------------------

def test_field_numbers_are_bvlcs():
    def num(msg, field):
        return msg.DESCRIPTOR.fields_by_name[field].number

    assert num(caffe_pb2.NetParameter, "layer") == 100
    assert num(caffe_pb2.NetParameter, "layers") == 2
    assert num(caffe_pb2.NetParameter, "input_dim") == 4
    assert num(caffe_pb2.NetParameter, "input_shape") == 8
    assert num(caffe_pb2.LayerParameter, "blobs") == 7
    assert num(caffe_pb2.LayerParameter, "include") == 8
    assert num(caffe_pb2.LayerParameter, "convolution_param") == 106
    assert num(caffe_pb2.LayerParameter, "batch_norm_param") == 139
    assert num(caffe_pb2.LayerParameter, "input_param") == 143
    assert num(caffe_pb2.V1LayerParameter, "blobs") == 6
    assert num(caffe_pb2.V1LayerParameter, "name") == 4
    assert num(caffe_pb2.V1LayerParameter, "include") == 32
    assert num(caffe_pb2.BlobProto, "data") == 5
    assert num(caffe_pb2.BlobProto, "shape") == 7
    assert num(caffe_pb2.BlobProto, "double_data") == 8
    assert num(caffe_pb2.ConvolutionParameter, "dilation") == 18
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["data"].GetOptions().packed
    assert caffe_pb2.V1LayerParameter.LayerType.Value("INNER_PRODUCT") == 14
    assert caffe_pb2.LRNParameter().beta == pytest.approx(0.75)
    assert caffe_pb2.BatchNormParameter().eps == pytest.approx(1e-5)


# -- prototxt ------------------------------------------------------------------------------------

def test_v1_prototxt_is_upgraded():
    net = parse_net_text(LENET_V1)
    assert len(net.layers) == 0
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("mnist", "Data"), ("conv1", "Convolution"), ("pool1", "Pooling"), ("ip1", "InnerProduct"),
        ("relu1", "ReLU"), ("accuracy", "Accuracy"), ("loss", "SoftmaxWithLoss")]
    conv1, ip1 = net.layer[1], net.layer[3]
    assert [p.lr_mult for p in conv1.param] == [1, 2]
    assert [(p.lr_mult, p.decay_mult) for p in ip1.param] == [(1, 1), (2, 0)]
    assert conv1.convolution_param.num_output == 20 and list(conv1.convolution_param.kernel_size) == [5]
    assert net.layer[0].include[0].phase == caffe_pb2.TRAIN
    assert net.layer[0].data_param.batch_size == 64
    assert net.layer[0].transform_param.scale == pytest.approx(1 / 256)
    assert net.layer[5].include[0].phase == caffe_pb2.TEST
    assert list(net.layer[4].bottom) == ["ip1"] and list(net.layer[4].top) == ["ip1"]


def test_v0_net_is_refused():
    with pytest.raises(ConversionError, match=r"V0 layer definition .* not supported"):
        parse_net_text('layers { layer { name: "conv1" type: "conv" } }')


def test_mixed_layer_formats_are_refused():
    with pytest.raises(ConversionError, match="mixes current 'layer' \\(1\\) and V1 'layers' \\(1\\)"):
        parse_net_text('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom "a"\n}\n')
    with pytest.raises(ConversionError) as err:
        read_net_text(path)
    assert str(err.value).startswith(f"{path}:5:")
    assert "Expected" in str(err.value)


def test_unknown_field_is_named(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text('layer {\n  name: "p"\n  type: "Pooling"\n'
                    '  pooling_param {\n    round_mode: FLOOR\n  }\n}\n')
    with pytest.raises(ConversionError) as err:
        read_net_text(path)
    assert str(err.value).startswith(f"{path}:5:")
    assert "unknown field 'round_mode' in PoolingParameter" in str(err.value)


def test_binary_file_as_prototxt(tmp_path):
    path = _write_small(tmp_path)
    with pytest.raises(ConversionError, match="not UTF-8 text"):
        read_net_text(path)


def test_missing_files_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_net_text(tmp_path / "nope.prototxt")
    with pytest.raises(FileNotFoundError):
        read_caffemodel(tmp_path / "nope.caffemodel")
    with pytest.raises(FileNotFoundError):
        read_mean(tmp_path / "nope.binaryproto")


def test_solver_with_inline_v1_net():
    solver = parse_solver_text('base_lr: 0.01 lr_policy: "inv" gamma: 0.0001 max_iter: 10000\n'
                               'net_param { layers { name: "r" type: RELU } }')
    assert solver.base_lr == pytest.approx(0.01) and solver.max_iter == 10000
    assert solver.net_param.layer[0].type == "ReLU"
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU  # BVLC default


# -- caffemodel round trip -----------------------------------------------------------------------

def test_round_trip_is_bit_identical(tmp_path):
    path = _write_small(tmp_path)
    model = read_caffemodel(path)
    expected = _small_blobs()
    assert list(model.blobs) == ["conv", "fc", "scale"]
    for name, arrays in expected.items():
        assert [a.shape for a in model.blobs[name]] == [a.shape for a in arrays]
        for got, want in zip(model.blobs[name], arrays, strict=True):
            assert got.dtype == np.float32
            assert got.tobytes() == want.tobytes()
    assert model.net == parse_net_text(SMALL_NET)
    assert all(len(layer.blobs) == 0 for layer in model.net.layer)


def test_writer_bytes_equal_protobuf_serialization(tmp_path):
    path = _write_small(tmp_path)
    net = parse_net_text(SMALL_NET)
    for layer in net.layer:
        for arr in _small_blobs().get(layer.name, []):
            blob = layer.blobs.add()
            blob.shape.SetInParent()
            blob.shape.dim.extend(arr.shape)
            blob.data.extend(arr.reshape(-1))
    assert path.read_bytes() == net.SerializeToString()


def test_reader_matches_parse_from_string(tmp_path):
    path = _write_small(tmp_path)
    ref = caffe_pb2.NetParameter()
    ref.ParseFromString(path.read_bytes())
    model = read_caffemodel(path)
    for layer in ref.layer:
        blobs = [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in layer.blobs]
        assert [a.tobytes() for a in model.blobs.get(layer.name, [])] == [a.tobytes() for a in blobs]
        layer.ClearField("blobs")
    assert model.net == ref


def test_writer_takes_tensors_and_replaces_blobs(tmp_path):
    net = parse_net_text(SMALL_NET)
    net.layer[1].blobs.add().data.extend([9.0])  # stale blob in the definition is replaced
    blobs = {k: [torch.from_numpy(a.copy()) for a in v] for k, v in _small_blobs(1).items()}
    write_caffemodel(tmp_path / "t.caffemodel", net, blobs)
    model = read_caffemodel(tmp_path / "t.caffemodel")
    assert np.array_equal(model.blobs["conv"][0], blobs["conv"][0].numpy())
    assert len(model.blobs["conv"]) == 2


def test_writer_refuses_unknown_layers_and_bad_paths(tmp_path):
    net = parse_net_text(SMALL_NET)
    with pytest.raises(ConversionError, match="blobs given for layers the net does not define: fc7"):
        write_caffemodel(tmp_path / "x.caffemodel", net, {"fc7": [np.zeros(3, np.float32)]})
    with pytest.raises(OutputPathError, match="output directory does not exist"):
        write_caffemodel(tmp_path / "missing" / "x.caffemodel", net, {})
    assert list(tmp_path.iterdir()) == []


def _v1_model_bytes() -> bytes:
    """A V1 caffemodel as old Caffe wrote it: `layers`, enum types, legacy 4-D shapes (FC included)."""
    net = caffe_pb2.NetParameter(name="old")
    net.input.append("data")
    net.input_dim.extend([1, 1, 2, 2])
    conv = net.layers.add(name="conv1", type=caffe_pb2.V1LayerParameter.CONVOLUTION,
                          bottom=["data"], top=["conv1"], blobs_lr=[1, 2])
    conv.convolution_param.num_output = 2
    conv.convolution_param.kernel_size.append(1)
    w = conv.blobs.add(num=2, channels=1, height=1, width=1)
    w.data.extend([0.5, -1.25])
    b = conv.blobs.add(num=1, channels=1, height=1, width=2)
    b.double_data.extend([0.1, 1e-40])  # double_data is converted to float32
    fc = net.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT,
                        bottom=["conv1"], top=["fc"])
    fc.inner_product_param.num_output = 3
    fw = fc.blobs.add(num=1, channels=1, height=3, width=8)  # old FC weights are 4-D (1, 1, out, in)
    fw.data.extend(np.arange(24, dtype=np.float32) / 7)
    fb = fc.blobs.add(num=1, channels=1, height=1, width=3)
    fb.data.extend([1, 2, 3])
    net.layers.add(name="prob", type=caffe_pb2.V1LayerParameter.SOFTMAX, bottom=["fc"], top=["prob"])
    return net.SerializeToString()


def test_v1_caffemodel(tmp_path):
    path = tmp_path / "old.caffemodel"
    path.write_bytes(_v1_model_bytes())
    model = read_caffemodel(path)
    assert [(layer.name, layer.type) for layer in model.net.layer] == [
        ("conv1", "Convolution"), ("fc", "InnerProduct"), ("prob", "Softmax")]
    assert list(model.net.input_dim) == [1, 1, 2, 2]
    assert [p.lr_mult for p in model.net.layer[0].param] == [1, 2]
    assert model.blobs["conv1"][0].reshape(-1).tolist() == [0.5, -1.25]
    assert model.blobs["conv1"][1].shape == (1, 1, 1, 2)
    assert model.blobs["conv1"][1].reshape(-1).tolist() == [np.float32(0.1), np.float32(1e-40)]
    assert model.blobs["fc"][0].shape == (1, 1, 3, 8)
    assert np.array_equal(model.blobs["fc"][0].reshape(-1), np.arange(24, dtype=np.float32) / 7)

    # Re-written in the current format, it reads back bit-identical.
    write_caffemodel(tmp_path / "new.caffemodel", model.net, model.blobs)
    again = read_caffemodel(tmp_path / "new.caffemodel")
    assert again.net == model.net
    for name in model.blobs:
        assert [a.tobytes() for a in again.blobs[name]] == [a.tobytes() for a in model.blobs[name]]
        assert [a.shape for a in again.blobs[name]] == [a.shape for a in model.blobs[name]]

    # The reader agrees with protobuf + Caffe's upgrade.
    ref = caffe_pb2.NetParameter()
    ref.ParseFromString(path.read_bytes())
    ref = upgrade_net(ref)
    for layer in ref.layer:
        layer.ClearField("blobs")
    assert ref == model.net


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    return bytes(out + bytes([v]))


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_unpacked_floats_are_read(tmp_path):
    # Protobuf writers before packed encoding emitted one (tag, float) pair per value.
    values = np.array([1.5, -2.0, 3.25], np.float32)
    blob = b"".join(_varint(5 << 3 | 5) + v.tobytes() for v in values)
    blob += _field(7, _field(1, _varint(3)))  # shape { dim: 3 } (packed dims)
    layer = _field(1, b"w") + _field(2, b"Scale") + _field(7, blob)
    path = tmp_path / "u.caffemodel"
    path.write_bytes(_field(100, layer))
    model = read_caffemodel(path)
    assert model.blobs["w"][0].tolist() == values.tolist()
    assert model.net.layer[0].type == "Scale"


# -- bad caffemodels -----------------------------------------------------------------------------

def _layer_offsets(data: bytes) -> dict[str, tuple[int, int]]:
    """Offsets of each blob's float payload, found by searching for the known floats."""
    blobs = _small_blobs()
    return {name: (data.index(arrs[0].tobytes()), arrs[0].nbytes) for name, arrs in blobs.items()
            if arrs[0].nbytes >= 16}


@pytest.mark.parametrize("where", ["conv data", "fc data", "fc blob 1", "header", "one byte"])
def test_truncated_caffemodel(tmp_path, where):
    data = _write_small(tmp_path).read_bytes()
    offsets = _layer_offsets(data)
    cut, pattern = {
        "conv data": (offsets["conv"][0] + 10, r"layer 'conv' blob 0 needs 216 bytes at offset \d+, "
                                               r"file ends after \d+ bytes"),
        "fc data": (offsets["fc"][0] + 100, "layer 'fc' blob 0 needs 160 bytes"),
        "fc blob 1": (data.index(_small_blobs()["fc"][1].tobytes()) + 3, "layer 'fc' blob 1 needs 20 bytes"),
        "header": (3, "truncated caffemodel"),
        "one byte": (len(data) - 1, "layer 'scale'"),
    }[where]
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:cut])
    with pytest.raises(ConversionError, match=pattern) as err:
        read_caffemodel(path)
    assert str(err.value).startswith(f"truncated caffemodel {path}: ")
    assert f"file ends after {cut} bytes" in str(err.value)


def test_wrong_wire_type(tmp_path):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_varint(100 << 3 | 0) + _varint(5))  # `layer` as a varint
    with pytest.raises(ConversionError, match=r"field 'layer' at offset 0 has wire type 0 \(varint\), "
                                              r"expected length-delimited"):
        read_caffemodel(path)


def test_bad_varint(tmp_path):
    path = tmp_path / "v.caffemodel"
    path.write_bytes(_field(100, _field(1, b"fc6")) + b"\xff" * 12)
    with pytest.raises(ConversionError, match=r"bad varint \(more than 10 bytes\) at offset 8"):
        read_caffemodel(path)


def test_field_past_its_message(tmp_path):
    layer = _field(1, b"fc6") + _varint(7 << 3 | 2) + _varint(50) + b"\0" * 60
    path = tmp_path / "p.caffemodel"
    path.write_bytes(_field(100, layer[:20]) + layer[20:])
    with pytest.raises(ConversionError, match="corrupt caffemodel .*: layer 'fc6': a field of 50 bytes "
                                              "at offset 10 runs past the end of its message at offset 23"):
        read_caffemodel(path)


def test_blob_count_mismatch(tmp_path):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="fc6", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend([4, 3])
    blob.data.extend(range(11))
    path = tmp_path / "c.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(ConversionError, match=r"layer 'fc6' blob 0 shape \(4, 3\) needs 12 values, found 11"):
        read_caffemodel(path)


def test_text_file_as_caffemodel(tmp_path):
    path = tmp_path / "net.caffemodel"
    path.write_text(SMALL_NET)
    with pytest.raises(ConversionError, match="looks like a text file"):
        read_caffemodel(path)


def test_opencv_loads_written_model(tmp_path):
    cv2 = pytest.importorskip("cv2")
    proto = tmp_path / "net.prototxt"
    proto.write_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 1 input_dim: 1\n'
                     'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                     'inner_product_param { num_output: 2 } }\n')
    w = np.array([[1, 2, 4], [8, 16, 32]], np.float32)
    b = np.array([0.5, 0.25], np.float32)
    write_caffemodel(tmp_path / "net.caffemodel", read_net_text(proto), {"fc": [w, b]})
    net = cv2.dnn.readNetFromCaffe(str(proto), str(tmp_path / "net.caffemodel"))
    x = np.array([1, 10, 100], np.float32).reshape(1, 3, 1, 1)
    net.setInput(x)
    out = net.forward().reshape(-1)
    assert out.tolist() == [421.5, 3368.25]


# -- mean.binaryproto ----------------------------------------------------------------------------

def test_mean_round_trip(tmp_path):
    mean = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 3
    write_mean(tmp_path / "mean.binaryproto", mean)
    blob = caffe_pb2.BlobProto.FromString((tmp_path / "mean.binaryproto").read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 2, 3, 4)  # compute_image_mean's layout
    got = read_mean(tmp_path / "mean.binaryproto")
    assert got.shape == (2, 3, 4) and got.tobytes() == mean.tobytes()


def test_mean_with_blob_shape_and_bad_count(tmp_path):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([3, 1, 2])
    blob.data.extend([104, 104, 117, 117, 123, 123])
    (tmp_path / "m.binaryproto").write_bytes(blob.SerializeToString())
    assert read_mean(tmp_path / "m.binaryproto")[:, 0, 0].tolist() == [104, 117, 123]
    blob.data.append(1)
    (tmp_path / "m.binaryproto").write_bytes(blob.SerializeToString())
    with pytest.raises(ConversionError, match=r"shape \(3, 1, 2\) needs 6 values, found 7"):
        read_mean(tmp_path / "m.binaryproto")


def test_diffs_of_a_snapshot_are_skipped(tmp_path):
    net = caffe_pb2.NetParameter()
    blob = net.layer.add(name="ip", type="InnerProduct").blobs.add()
    blob.shape.dim.extend([2])
    blob.data.extend([1, 2])
    blob.diff.extend([5, 6, 7])
    blob.double_diff.extend([8])
    (tmp_path / "s.caffemodel").write_bytes(net.SerializeToString())
    assert read_caffemodel(tmp_path / "s.caffemodel").blobs["ip"][0].tolist() == [1, 2]

"""ONNX export: onnxruntime equality, sparse initializers only where smaller, native LRN, metadata,
atomic output, and the .caffemodel route checked against OpenCV's Caffe importer."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from converters import caffe
from converters.caffe.prototxt import parse_net_text
from converters.errors import ConversionError, OutputPathError
from converters.onnx.export import export_onnx

LENET = """
name: "lenet_like"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 20 kernel_size: 5 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 50 kernel_size: 5 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 100 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""  # noqa: E501

# AlexNet's structure (LRN, grouped convs, overlapping pools, dropout) at a small size.
ALEXNET = """
name: "alexnet_like"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 67 dim: 67 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 16 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 24 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" convolution_param { num_output: 32 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4" convolution_param { num_output: 32 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5" convolution_param { num_output: 24 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 64 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 64 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""  # noqa: E501


def build(text: str, seed: int = 0):
    net = caffe.load(parse_net_text(text))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return net


def prune(net, keep: dict[str, float]) -> None:
    """Magnitude-prune each named layer's weight to the kept fraction."""
    with torch.no_grad():
        for name, frac in keep.items():
            w = net.layer(name).weight
            k = max(1, round(frac * w.numel()))
            thr = w.abs().flatten().kthvalue(w.numel() - k + 1).values
            w.mul_((w.abs() >= thr).float())


def run_ort(path, x: np.ndarray, name: str = "data") -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {name: x})[0]


def torch_out(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("text,shape", [(LENET, (3, 1, 28, 28)), (ALEXNET, (2, 3, 67, 67))],
                         ids=["lenet", "alexnet"])
def test_onnxruntime_matches_torch(tmp_path, text, shape):
    net = build(text)
    prune(net, {"conv1": 0.3, "conv2": 0.1})
    r = export_onnx(net, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)  # batch != export batch
    got, want = run_ort(r.path, x), torch_out(net, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-6
    onnx.checker.check_model(onnx.load(r.path))


def test_caffe_names_kept(tmp_path):
    net = build(ALEXNET)
    r = export_onnx(net, tmp_path / "a.onnx", sparse=False)
    m = onnx.load(r.path)
    inits = {i.name for i in m.graph.initializer}
    assert {"conv1.weight", "conv1.bias", "conv5.weight", "fc8.weight", "fc8.bias"} <= inits
    names = {n.name for n in m.graph.node}
    assert {"conv1", "relu1", "norm1", "pool1", "conv2", "prob"} <= names
    assert [i.name for i in m.graph.input] == ["data"]
    assert [o.name for o in m.graph.output] == ["prob"]


def test_identical_tensors_keep_their_own_names(tmp_path):
    net = build(LENET)
    with torch.no_grad():  # as in an untrained Caffe net: constant biases (the exporter would merge them)
        for name in ("conv1", "conv2", "ip1", "ip2"):
            net.layer(name).bias.zero_()
    m = onnx.load(export_onnx(net, tmp_path / "z.onnx").path)
    for node in m.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            layer = node.name.split("/")[0]
            assert list(node.input[1:]) == [f"{layer}.weight", f"{layer}.bias"]
    assert [i.name for i in m.graph.input] == ["data"]


def test_lrn_is_one_native_node(tmp_path):
    net = build(ALEXNET)
    r = export_onnx(net, tmp_path / "a.onnx")
    m = onnx.load(r.path)
    lrn = [n for n in m.graph.node if n.op_type == "LRN"]
    assert [n.name for n in lrn] == ["norm1", "norm2"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lrn[0].attribute}
    assert attrs["size"] == 5 and attrs["alpha"] == pytest.approx(1e-4) and attrs["bias"] == 1.0
    ops = {n.op_type for n in m.graph.node}
    assert not ops & {"Pow", "ReduceSum", "Pad", "AveragePool"}  # no primitive decomposition
    assert len(m.graph.node) < 30


@pytest.mark.parametrize("k", [1.0, 2.0])
def test_native_lrn_matches_caffe_formula(tmp_path, k):
    text = f"""
name: "lrn"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 7 dim: 3 dim: 3 }} }} }}
layer {{ name: "norm" type: "LRN" bottom: "data" top: "norm"
        lrn_param {{ local_size: 3 alpha: 0.5 beta: 0.75 k: {k} }} }}
"""
    net = caffe.load(parse_net_text(text))
    r = export_onnx(net, tmp_path / "lrn.onnx")
    x = np.random.default_rng(1).standard_normal((2, 7, 3, 3)).astype(np.float32)
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    window = sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:]  # Caffe: channels c-1..c+1
    want = x / (k + 0.5 / 3 * window) ** 0.75
    assert np.abs(run_ort(r.path, x) - want).max() < 1e-6
    assert np.abs(torch_out(net, x) - want).max() < 1e-6


def test_within_channel_lrn_exports_as_primitives(tmp_path):
    text = """
name: "lrn_within"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
layer { name: "norm" type: "LRN" bottom: "data" top: "norm"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }
"""
    net = caffe.load(parse_net_text(text))
    r = export_onnx(net, tmp_path / "w.onnx")
    assert any("WITHIN_CHANNEL" in n for n in r.notes)
    assert "WITHIN_CHANNEL" in r.metadata["notes"]
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    assert np.abs(run_ort(r.path, x) - torch_out(net, x)).max() < 1e-6


def test_sparse_only_where_smaller(tmp_path):
    net = build(LENET)
    with torch.no_grad():
        w = net.layer("ip1").weight  # 80000 weights: 95% zeros
        w[torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) < 0.95] = 0
        w2 = net.layer("conv2").weight  # 25000 weights: 50% zeros
        w2[torch.rand(w2.shape, generator=torch.Generator().manual_seed(2)) < 0.5] = 0
    r = export_onnx(net, tmp_path / "s.onnx")
    assert r.sparse_tensors == ("ip1.weight",)
    m = onnx.load(r.path)
    onnx.checker.check_model(m)
    (sp,) = m.graph.sparse_initializer
    idx = onnx.numpy_helper.to_array(sp.indices)
    assert sp.values.name == "ip1.weight" and list(sp.dims) == [100, 800]
    assert idx.dtype == np.int64 and idx.ndim == 1 and np.all(np.diff(idx) > 0)
    nnz = int(torch.count_nonzero(net.layer("ip1").weight))
    assert len(idx) == nnz
    assert "conv2.weight" in {i.name for i in m.graph.initializer}
    # smaller than dense, and within a few kB of 12 bytes per nonzero for that tensor
    assert r.bytes < r.dense_bytes
    assert r.dense_bytes - r.bytes == pytest.approx(80000 * 4 - nnz * 12, abs=200)
    dense = export_onnx(net, tmp_path / "d.onnx", sparse=False)
    assert dense.sparse_tensors == () and dense.bytes == dense.dense_bytes == r.dense_bytes
    x = np.random.default_rng(3).standard_normal((4, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(run_ort(r.path, x), run_ort(dense.path, x))  # bit-identical


def test_unpruned_model_exports_dense(tmp_path):
    r = export_onnx(build(LENET), tmp_path / "u.onnx")
    assert r.sparse_tensors == () and r.bytes == r.dense_bytes
    assert json.loads(r.metadata["layer_sparsity"])["conv1"]["sparsity"] == 0.0


def test_metadata(tmp_path):
    net = build(LENET)
    prune(net, {"ip1": 0.1})
    meta = {"method": "admm", "source": "lenet_admm.pt", "targets": {"ip1": 0.1}}
    r = export_onnx(net, tmp_path / "m.onnx", meta=meta)
    props = {p.key: p.value for p in onnx.load(r.path).metadata_props}
    assert props["method"] == "admm" and props["source"] == "lenet_admm.pt"
    assert props["compress_version"]
    layers = json.loads(props["layer_sparsity"])
    assert list(layers) == ["conv1", "conv2", "ip1", "ip2"]
    assert layers["ip1"] == {"weights": 80000, "nonzero": 8000, "sparsity": 0.9}
    assert json.loads(props["compress_meta"])["targets"] == {"ip1": 0.1}


def test_fixed_batch_and_opset(tmp_path):
    r = export_onnx(build(LENET), tmp_path / "f.onnx", batch_size=2, dynamic_batch=False, opset=13)
    m = onnx.load(r.path)
    assert m.opset_import[0].version == 13
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    with pytest.raises(ConversionError, match="opset"):
        export_onnx(build(LENET), tmp_path / "g.onnx", opset=3)


def test_missing_directory_leaves_nothing(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        export_onnx(build(LENET), tmp_path / "nope" / "m.onnx")
    assert not (tmp_path / "nope").exists()
    assert list(tmp_path.iterdir()) == []


def test_caffemodel_export_loads_in_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    net = build(LENET)
    prune(net, {"conv1": 0.5, "ip1": 0.05})
    caffe.save(net, tmp_path / "m.caffemodel", prototxt=tmp_path / "m.prototxt")
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "m.prototxt"), str(tmp_path / "m.caffemodel"))
    x = np.random.default_rng(4).standard_normal((1, 1, 28, 28)).astype(np.float32)
    cv.setInput(x)
    got = cv.forward("ip2")
    with torch.no_grad():
        want = net.forward_blobs(torch.from_numpy(x))["ip2"].numpy()
    assert np.abs(got - want).max() < 1e-5
    back = caffe.load(tmp_path / "m.prototxt", tmp_path / "m.caffemodel")
    assert torch.equal(back.layer("ip1").weight, net.layer("ip1").weight)


def _model_file(tmp_path, net, name="m.pt"):
    from compress.modelfile import save_model

    save_model(tmp_path / name, net, {"method": "magnitude", "source": "test"})
    return str(tmp_path / name)


def test_cli_sparse_export_reports_size(tmp_path, capsys):
    from compress.cli import main

    net = build(LENET)
    prune(net, {"conv2": 0.1, "ip1": 0.05})
    out = tmp_path / "m.onnx"
    assert main(["export", _model_file(tmp_path, net), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    size, original = out.stat().st_size, 4 * sum(p.numel() for p in net.parameters())
    assert f"{original / size:.2f}x smaller than the original model's float32 weights: " in text
    assert "1.00x" not in text and "conv2.weight, ip1.weight" in text
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["method"] == "magnitude"
    assert main(["export", _model_file(tmp_path, net), "-o", str(tmp_path / "d.onnx"), "--dense"]) == 0
    assert "all initializers dense" in capsys.readouterr().out
    assert out.stat().st_size < (tmp_path / "d.onnx").stat().st_size


def test_cli_missing_directory_is_one_line_error(tmp_path, capsys):
    from compress.cli import main

    model = _model_file(tmp_path, build(LENET))
    assert main(["export", model, "-o", str(tmp_path / "missing" / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: output directory does not exist") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_cli_thin_then_caffemodel(tmp_path, capsys):
    from compress.cli import main

    net = build(LENET)
    zero = [0, 3, 4, 9, 11, 17]
    with torch.no_grad():
        net.layer("conv1").weight[zero] = 0
        net.layer("conv1").bias[zero] = 0
    out = tmp_path / "t.caffemodel"
    assert main(["export", _model_file(tmp_path, net), "-o", str(out), "--to", "caffemodel", "--thin"]) == 0
    assert "thinned conv1: 20 -> 14 filters" in capsys.readouterr().out
    back = caffe.load(tmp_path / "t.prototxt", out)
    assert back.layer("conv1").weight.shape[0] == 14 and back.layer("conv2").weight.shape[1] == 14
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert float((back(x) - net(x)).abs().max()) < 1e-6

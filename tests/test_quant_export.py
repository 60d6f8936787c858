"""Packed low-bit ONNX export: onnxruntime computes on the very weights PyTorch holds (bit for bit),
agrees with the quantized net to float rounding, and the file holds integers and nothing else but
biases and scales; sparse layers store only their kept codes."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from compress.errors import CompressError
from compress.quant.config import GridConfig
from compress.quant.export import export_any
from compress.quant.ptq import ptq
from compress.quant.record import KEY, make_record
from converters.errors import ConversionError
from converters.onnx.quantized import decode_values, decode_weights
from tests.test_export import ALEXNET, LENET, build, prune, run_ort, torch_out

SHAPES = {"lenet": (3, 1, 28, 28), "alexnet": (2, 3, 67, 67)}
TEXTS = {"lenet": LENET, "alexnet": ALEXNET}


def quantized(name: str, config: GridConfig, keep: dict[str, float] | None = None):
    net = build(TEXTS[name])
    if keep:
        prune(net, keep)
    layers = ptq(net, config)
    return net, {KEY: make_record(config, "ptq", {n: q.grid for n, q in layers.items()})}


def check(net, path, shape) -> onnx.ModelProto:
    """ORT == torch to float rounding; decoded weights == the net's weights bit for bit; integer storage."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got, want = run_ort(path, x), torch_out(net, x)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    model = onnx.load(path)
    decoded = decode_weights(model)
    for name, arr in decoded.items():
        w = net.layer(name.removesuffix(".weight")).weight.detach().numpy()
        assert arr.dtype == np.float32 and np.array_equal(arr, w), name
    floats = [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    lrn = ("/alpha", "/k", "/minus_beta")  # the fast LRN's two constants (its window is built at load)
    assert all(n.endswith((".bias", ".weight_scale", *lrn)) for n in floats), floats
    assert not model.graph.sparse_initializer
    return model


@pytest.mark.parametrize("name, bits, per_channel, scale, storage", [
    ("lenet", 8, True, "max", TensorProto.INT8), ("lenet", 4, True, "mse", TensorProto.INT4),
    ("lenet", 2, False, "max", TensorProto.INT2), ("alexnet", 3, True, "mse", TensorProto.INT4),
    ("alexnet", 2, True, "mse", TensorProto.INT2)])
def test_dense_packed_export_matches_torch(tmp_path, name, bits, per_channel, scale, storage):
    net, meta = quantized(name, GridConfig(bits, per_channel=per_channel, scale=scale))
    r = export_any(net, meta, tmp_path / "q.onnx")
    model = check(net, r.path, SHAPES[name])
    weights = {i.name: i for i in model.graph.initializer if i.name.endswith(".weight_q")}
    assert len(weights) == len(r.layers) and {i.data_type for i in weights.values()} == {storage}
    assert r.opset == {TensorProto.INT8: 20, TensorProto.INT4: 21, TensorProto.INT2: 25}[storage]
    assert json.loads(r.metadata["quantization"])["conv1"].startswith(f"{bits}-bit ")
    scales = decode_values(model, ["conv1.weight_scale"])["conv1.weight_scale"]
    assert scales.size == (net.conv1.weight.shape[0] if per_channel else 1)
    # 20 per-channel scales are stored as float16 (rounded so by the quantizer) and cast at load
    stored = {i.name: i.data_type for i in model.graph.initializer}
    assert stored.get("conv1.weight_scale_f16" if per_channel else "conv1.weight_scale") == (
        TensorProto.FLOAT16 if per_channel else TensorProto.FLOAT)


def test_pruned_layers_store_only_their_kept_codes(tmp_path):
    keep = {"conv1": 0.9, "conv2": 0.1, "ip1": 0.02, "ip2": 0.2}
    net, meta = quantized("lenet", GridConfig(4, first_last_bits=8), keep)
    r = export_any(net, meta, tmp_path / "sparse.onnx")
    check(net, r.path, SHAPES["lenet"])
    assert {n: e.kind for n, e in r.layers.items()} == {"conv1": "dense", "conv2": "sparse", "ip1": "sparse",
                                                         "ip2": "sparse"}
    dense = export_any(net, meta, tmp_path / "dense.onnx", dense=True)
    check(net, dense.path, SHAPES["lenet"])
    assert {e.kind for e in dense.layers.values()} == {"dense"}
    assert r.bytes < dense.bytes / 4
    ip1 = r.layers["ip1"]  # 8,000 of 400,000 kept: 4-bit codes + 8-bit skips, a few fillers
    assert ip1.payload_bytes < 8000 * 1.6 and ip1.entries >= int((net.ip1.weight != 0).sum())


def test_mixed_widths_take_the_newest_opset_needed(tmp_path):
    net, meta = quantized("alexnet", GridConfig(2, first_last_bits=8), {"fc6": 0.05})
    r = export_any(net, meta, tmp_path / "m.onnx")
    check(net, r.path, SHAPES["alexnet"])
    assert r.opset == 25 and r.layers["conv1"].value_bits == 8 and r.layers["conv2"].value_bits == 2


def test_opset_too_old_for_the_bit_width(tmp_path):
    net, meta = quantized("lenet", GridConfig(4))
    with pytest.raises(ConversionError, match="opset 20 is too old for 4-bit weights.*opset 21"):
        export_any(net, meta, tmp_path / "old.onnx", opset=20)
    net2, meta2 = quantized("lenet", GridConfig(2, first_last_bits=8))
    with pytest.raises(ConversionError, match="opset 21 is too old for 2-bit weights.*opset 25"):
        export_any(net2, meta2, tmp_path / "old.onnx", opset=21)
    assert not list(tmp_path.iterdir())


def test_weights_off_their_grid_are_refused(tmp_path):
    net, meta = quantized("lenet", GridConfig(4))
    with torch.no_grad():
        net.conv2.weight[0, 0, 0, 0] += 1e-3
    with pytest.raises(CompressError, match="'conv2': 1 of 25000 weights are not on the recorded 4-bit grid"):
        export_any(net, meta, tmp_path / "q.onnx")
    assert not list(tmp_path.iterdir())


def test_unquantized_model_takes_the_ordinary_export(tmp_path):
    net = build(LENET)
    prune(net, {"ip1": 0.05})
    r = export_any(net, {}, tmp_path / "f.onnx")
    assert r.sparse_tensors == ("ip1.weight",)

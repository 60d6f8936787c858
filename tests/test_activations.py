"""Activation quantization: min-max calibration of every layer's output, the full QDQ export that
onnxruntime fuses into QLinearConv/QGemm (uint8 activations, int8 weights), and the refusals: no real data,
another width. The accuracy on MNIST is measured in bench/deploy_speed.py and docs/DEPLOY.md."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compress.cli import main
from compress.modelfile import save_model
from compress.quant.activations import NEEDS_REAL_DATA, activation_record, calibrate
from compress.quant.config import GridConfig
from compress.quant.export import export_any
from compress.quant.record import KEY, describe
from converters.onnx.qdq import activation_params
from tests.test_export import run_ort, torch_out
from tests.test_quant_export import SHAPES, quantized


def _batches(name: str, n: int = 4):
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand((8, *SHAPES[name][1:]), generator=gen), torch.zeros(8, dtype=torch.long))
            for _ in range(n)]


def _int8(name: str, keep=None):
    net, meta = quantized(name, GridConfig(8), keep)
    ranges, images = calibrate(net, _batches(name))
    meta[KEY]["activations"] = activation_record(8, ranges, images, "test")
    return net, meta


def _fused(path: str) -> list[str]:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = path + ".opt.onnx"
    ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]


def test_activation_grid_holds_zero_and_spans_the_range():
    assert activation_params(0.0, 2.55) == (pytest.approx(0.01), 0)
    scale, zp = activation_params(-1.0, 1.55)
    assert scale == pytest.approx(0.01) and zp == 100  # -1.0 is code 0, 0.0 is code 100
    assert activation_params(0.5, 2.55)[1] == 0  # widened to hold 0
    assert activation_params(-2.55, -1.0) == (pytest.approx(0.01), 255)
    assert activation_params(0.0, 0.0) == (1.0, 0)


def test_calibration_records_min_and_max_of_every_layer_and_the_input():
    net, _ = quantized("lenet", GridConfig(8))
    batches = _batches("lenet")
    ranges, images = calibrate(net, batches, images=20)
    assert images == 20  # stops within the third batch
    x = torch.cat([b[0] for b in batches])[:20]
    assert ranges["data"] == [float(x.min()), float(x.max())]
    with torch.no_grad():
        want = net.layer("conv1")(x)
    assert ranges["conv1"] == pytest.approx([float(want.min()), float(want.max())])
    assert set(ranges) == {"data", *(n.name for n in net.nodes)}


@pytest.mark.parametrize("name", ["lenet", "alexnet"])
def test_full_qdq_runs_on_the_integer_kernels_close_to_the_float_model(tmp_path, name):
    net, meta = _int8(name, {"conv2": 0.3} if name == "alexnet" else None)
    path = export_any(net, meta, tmp_path / "q.onnx").path
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "Relu" not in ops  # the output's QuantizeLinear clamps at zero
    fused = _fused(path)
    convs = sum(t in ("QLinearConv",) for t in fused)
    assert convs == (2 if name == "lenet" else 5) and fused.count("QGemm") == (2 if name == "lenet" else 3)
    assert "Conv" not in fused or name == "alexnet"  # AlexNet's LRN window stays a float Conv
    x = _batches(name)[0][0][:2].numpy()
    got, want = run_ort(path, x), torch_out(net, x)
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_int8_export_with_native_lrn_and_what_stays_float(tmp_path):
    net, meta = _int8("alexnet")
    r = export_any(net, meta, tmp_path / "q.onnx", lrn="native")
    assert any("LRN" in n and "Softmax" in n and "stay float32" in n for n in r.notes)
    assert "8-bit activations (minmax calibration)" in describe(meta[KEY])


def test_activations_need_real_data_and_eight_bits(tmp_path, capsys):
    out = str(tmp_path / "q.pt")
    for extra in ([], ["--data", "synthetic"]):
        assert main(["quantize", "lenet", "--bits", "8", "--activations", "8", *extra, "-o", out]) == 1
        err = capsys.readouterr().err.strip()
        assert err == f"Error: {NEEDS_REAL_DATA}"
    assert main(["quantize", "lenet", "--bits", "8", "--activations", "4", "--data", "mnist", "-o", out]) == 1
    assert "--activations must be 8" in capsys.readouterr().err


def test_cli_exports_an_activation_quantized_model_file(tmp_path, capsys):
    net, meta = _int8("lenet")
    model = str(tmp_path / "q.pt")
    save_model(model, net, meta)
    assert main(["export", model, "-o", str(tmp_path / "q.onnx"), "--no-speed-check"]) == 0
    assert "int8 activations: 4 Conv/Gemm layers" in capsys.readouterr().out
    assert "QLinearConv" in _fused(str(tmp_path / "q.onnx"))


@pytest.mark.parametrize("bits, keep", [(4, None), (2, None), (4, {"conv2": 0.1, "ip1": 0.05})])
def test_low_bit_and_sparse_codes_stay_packed_and_still_fuse(tmp_path, bits, keep):
    """The codes are stored as the weight-only export stores them; onnxruntime widens them to int8 at load
    and still runs QLinearConv/QGemm."""
    net, meta = quantized("lenet", GridConfig(bits), keep)
    ranges, images = calibrate(net, _batches("lenet"))
    meta[KEY]["activations"] = activation_record(8, ranges, images, "test")
    path = export_any(net, meta, tmp_path / "q.onnx").path
    stored = {i.name: i.data_type for i in onnx.load(path).graph.initializer}
    if keep:
        assert "ip1.weight_codes_skip" in stored
    else:
        assert stored["ip1.weight_packed"] == {4: onnx.TensorProto.INT4, 2: onnx.TensorProto.INT2}[bits]
    fused = _fused(path)
    assert fused.count("QLinearConv") == 2 and fused.count("QGemm") == 2
    eight = export_any(*_int8("lenet"), tmp_path / "i8.onnx")
    assert tmp_path.joinpath("q.onnx").stat().st_size < 0.7 * eight.bytes
    x = _batches("lenet")[0][0][:2].numpy()
    got, want = run_ort(path, x), torch_out(net, x)
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_batchnorm_nets_with_slashed_layer_names_quantize_their_activations(tmp_path):
    """MobileNet-style names ("conv1/bn", "dw/scale"): every layer keeps its own output value in the export,
    so each calibrated range lands on its value (once, every layer's nodes were filed under the part of the
    name before the first "/" and no range was found for a BatchNorm net's convolutions)."""
    from compress.quant.ptq import ptq
    from converters.onnx.export import to_onnx_model
    from tests.nets import DEPTHWISE, random_net

    net = random_net(DEPTHWISE)
    values: dict[str, str] = {}
    to_onnx_model(net, layer_values=values)
    assert values["dw"] == "/dw/Conv_output_0" and values["dw/bn"].startswith("/dw/bn/")
    assert values["dw/scale"].startswith("/dw/scale/") and values["conv1"] == "/conv1/Conv_output_0"
    from compress.quant.record import make_record

    grids = {n: q.grid for n, q in ptq(net, GridConfig(8)).items()}
    meta = {KEY: make_record(GridConfig(8), "ptq", grids)}
    gen = torch.Generator().manual_seed(0)
    shape = tuple(net.inputs["data"])[1:]
    batches = [(torch.rand((8, *shape), generator=gen), torch.zeros(8)) for _ in range(4)]
    ranges, images = calibrate(net, batches)
    meta[KEY]["activations"] = activation_record(8, ranges, images, "test")
    out = str(tmp_path / "int8.onnx")
    export_any(net, meta, out)
    assert {"QLinearConv"} <= set(_fused(out))
    x = batches[0][0][:2].numpy()
    got, want = run_ort(out, x), torch_out(net, x)
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()

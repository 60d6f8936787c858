"""The default export's run-time forms: quantized weights decoded once at load (no DequantizeLinear left to
run), large low-bit InnerProducts as MatMulNBits (its B, scales and zero points give back the model's weights
bit for bit), LRN as squares and a window convolution (tests/test_onnx_lrn.py checks its values); --pack and
--native-lrn keep the portable forms, and an onnxruntime too old for the fast form is one line. Speed is
measured in bench/, not here."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import converters.onnx.fast as fast
from compress.cli import main
from compress.commands.export import PACK_COST
from compress.modelfile import save_model
from compress.quant.config import GridConfig
from compress.quant.export import export_any
from converters.onnx.quantized import decode_values, decode_weights
from converters.onnx.speed import bench
from tests.test_export import run_ort, torch_out
from tests.test_quant_export import SHAPES, quantized


def _x(name: str) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPES[name]).astype(np.float32)


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _close(path, net, name: str) -> None:
    got, want = run_ort(str(path), _x(name)), torch_out(net, _x(name))
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("bits, keep", [(8, None), (4, None), (2, None), (4, {"conv2": 0.1, "ip1": 0.05})])
def test_the_default_decodes_every_weight_at_load(tmp_path, bits, keep):
    net, meta = quantized("lenet", GridConfig(bits), keep)
    r = export_any(net, meta, tmp_path / "q.onnx")
    assert "DequantizeLinear" not in _ops(r.path)
    assert {f.kind for f in r.forms.values()} == {"float"}  # LeNet's layers are below MatMulNBits' size
    _close(r.path, net, "lenet")
    decoded = decode_weights(onnx.load(r.path))
    assert sorted(decoded) == sorted(f"{n}.weight" for n in r.forms)
    for name, arr in decoded.items():
        assert np.array_equal(arr, net.layer(name.removesuffix(".weight")).weight.detach().numpy()), name
    packed = {i.data_type for i in onnx.load(r.path).graph.initializer if i.name.endswith(".weight_q")}
    assert packed == {{8: TensorProto.INT8, 4: TensorProto.INT4, 2: TensorProto.INT2}[bits]}
    pack = export_any(net, meta, tmp_path / "p.onnx", form="pack")
    assert abs(pack.bytes - r.bytes) < 0.01 * r.bytes  # as small either way
    if keep is None:
        assert _ops(pack.path).count("DequantizeLinear") == 4


@pytest.mark.parametrize("name, bits, keep", [
    ("lenet", 4, None), ("lenet", 2, None), ("lenet", 3, {"ip1": 0.05, "ip2": 0.3}),
    ("lenet", 2, {"ip1": 0.05}), ("alexnet", 4, {"fc6": 0.1, "fc7": 0.2})])
def test_matmulnbits_reads_the_models_own_weights(tmp_path, monkeypatch, name, bits, keep):
    monkeypatch.setattr(fast, "NBITS_MIN_WEIGHTS", 0)  # every InnerProduct takes the form
    net, meta = quantized(name, GridConfig(bits), keep)
    r = export_any(net, meta, tmp_path / "q.onnx")
    fcs = [n for n, f in r.forms.items() if f.kind == "nbits"]
    assert fcs == [n for n in r.forms if n.startswith(("ip", "fc"))]
    assert _ops(r.path).count("MatMulNBits") == len(fcs) and "Gemm" not in _ops(r.path)
    _close(r.path, net, name)
    model = onnx.load(r.path)
    for layer in fcs:
        p = f"{layer}.weight_nbits"
        v = decode_values(model, [f"{p}_B", f"{p}_scales", f"{p}_zp"])
        w = net.layer(layer).weight.detach().numpy()
        got = fast.nbits_reference(v[f"{p}_B"], v[f"{p}_scales"], v[f"{p}_zp"], w.shape[1])
        assert np.array_equal(got, w), layer


def test_eight_bit_inner_products_stay_float_and_say_why(tmp_path, monkeypatch):
    monkeypatch.setattr(fast, "NBITS_MIN_WEIGHTS", 0)
    net, meta = quantized("lenet", GridConfig(8))
    r = export_any(net, meta, tmp_path / "q.onnx")
    assert r.forms["ip1"].kind == "float" and "no fast MatMulNBits kernel" in r.forms["ip1"].why
    assert "MatMulNBits" not in _ops(r.path)


def test_cli_pack_native_lrn_and_old_onnxruntime(tmp_path, capsys, monkeypatch):
    net, meta = quantized("alexnet", GridConfig(4))
    model = str(tmp_path / "q.pt")
    save_model(model, net, meta)
    out = tmp_path / "q.onnx"
    assert main(["export", model, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert PACK_COST not in text and "decoded to float32 at load" in text and "LRN as squares" in text
    assert "DequantizeLinear" not in _ops(out) and "LRN" not in _ops(out)
    assert bench([str(out)], batches=(1,), rounds=1, memory=False).files[0].dequantized_per_run == ()
    packed = tmp_path / "p.onnx"
    assert main(["export", model, "-o", str(packed), "--pack", "--native-lrn"]) == 0
    assert PACK_COST in capsys.readouterr().out
    assert "DequantizeLinear" in _ops(packed) and "LRN" in _ops(packed)
    assert len(bench([str(packed)], batches=(1,), rounds=1, memory=False).files[0].dequantized_per_run) == 8
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.19.2")
    assert main(["export", model, "-o", str(tmp_path / "old.onnx")]) == 1
    err = capsys.readouterr().err
    assert "needs onnxruntime >= 1.20" in err and "1.19.2" in err and "--pack" in err
    assert not (tmp_path / "old.onnx").exists()
    assert main(["export", model, "-o", str(tmp_path / "old.onnx"), "--pack"]) == 0


def test_export_checks_a_compressed_models_speed(tmp_path, capsys):
    net, meta = quantized("lenet", GridConfig(4))
    model = str(tmp_path / "q.pt")
    save_model(model, net, meta)
    assert main(["export", model, "-o", str(tmp_path / "q.onnx"), "--json"]) == 0
    import json

    speed = json.loads(capsys.readouterr().out)["speed"]
    assert sorted(speed["speedups"]) == ["1", "32"] and all(v > 0 for v in speed["speedups"].values())
    assert main(["export", model, "-o", str(tmp_path / "q.onnx"), "--no-speed-check"]) == 0
    assert "speed against" not in capsys.readouterr().out
    assert main(["export", "lenet", "-o", str(tmp_path / "d.onnx")]) == 0  # nothing compressed: no check
    assert "speed against" not in capsys.readouterr().out
    assert main(["export", model, "-o", str(tmp_path / "q.caffemodel"), "--speed-check"]) == 1
    assert "--speed-check applies to onnx output only" in capsys.readouterr().err


def test_the_speed_verdict_allows_for_noise():
    from compress.speedcheck import SpeedCheck

    check = SpeedCheck({1: 0.5, 32: 0.95}, threads=1)
    assert check.slower == {1: 0.5} and check.warning("q.onnx") == (
        "q.onnx runs 2.00x slower at batch 1 than the dense float32 export of the same model")
    fine = SpeedCheck({1: 1.0, 32: 2.0}, 1)
    assert fine.warning("q.onnx") is None
    assert "the same speed at batch 1, 2.00x faster at batch 32" in fine.describe()


def test_a_slow_thinned_export_names_its_odd_widths():
    """Thinning 64 filters to 61 costs onnxruntime's blocked kernels more than it saves (the Fashion-MNIST
    QGT MobileNet: 1.29x slower at batch 1, --no-thin at float32 speed): the warning says so."""
    from compress.commands.export import ExportSummary, render
    from compress.speedcheck import SpeedCheck

    def text(speedups, thinned):
        return render(ExportSummary({"q.onnx": 1000}, None, (), thinned, {}, quantized=True,
                                    speed=SpeedCheck(speedups, 1)))

    slow = text({1: 0.77}, {"conv3/sep": (64, 61), "conv2/sep": (32, 31), "fc": (10, 9), "conv4": (64, 32)})
    assert "warning: q.onnx runs 1.30x slower at batch 1" in slow
    assert ("hint: thinning left 2 layer(s) at widths that are not multiples of 8 (conv3/sep 61, "
            "conv2/sep 31), which onnxruntime's blocked kernels run slower; --align 8 or 16 keeps "
            "thinned widths at multiples of 8 or 16, --no-thin the original widths") in slow
    assert "hint:" not in text({1: 1.2}, {"conv3/sep": (64, 61)})  # not slower: nothing to explain
    assert "hint:" not in text({1: 0.5}, {"conv4": (64, 32)})  # slower, but not for this reason

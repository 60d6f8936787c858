"""``compress bench``: files side by side (ratios to the first), load and memory in a fresh process, the
profile's operators, weights dequantized on every run; bad input is one line. Speed itself is measured in
bench/, never asserted here."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.cli import main
from compress.commands.bench import parse_batches, render
from converters.errors import ConversionError
from converters.onnx.speed import bench


def _gemm_model(path, *, dequantize: bool = False, batch: int | str = "N") -> str:
    """y = x @ W^T with W (16, 8) stored as float, or as INT8 codes through a DequantizeLinear."""
    w = np.arange(128, dtype=np.float32).reshape(16, 8) / 128
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 16])
    nodes, inits = [], []
    if dequantize:
        inits += [numpy_helper.from_array(np.rint(w * 127).astype(np.int8), "w_q"),
                  numpy_helper.from_array(np.array(1 / 127, np.float32), "w_scale")]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="w/dq"))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes.append(helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1))
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def test_files_are_measured_side_by_side_against_the_first(tmp_path):
    a = _gemm_model(tmp_path / "a.onnx")
    b = _gemm_model(tmp_path / "b.onnx", dequantize=True)
    r = bench([a, b], batches=(1, 4), threads=1, rounds=3)
    assert [f.path for f in r.files] == [a, b] and r.batches == (1, 4) and r.threads == 1
    first, second = r.files
    assert [lat.batch for lat in first.latencies] == [1, 4]
    assert all(lat.speedup == 1.0 for lat in first.latencies)
    for lat in second.latencies:
        base = next(x for x in first.latencies if x.batch == lat.batch)
        assert lat.speedup == pytest.approx(base.p50_ms / lat.p50_ms)
        assert lat.p90_ms >= lat.p50_ms > 0 and lat.throughput == pytest.approx(lat.batch / lat.p50_ms * 1e3)
    assert first.load_s > 0 and first.peak_rss > first.session_rss > 0
    assert first.bytes == (tmp_path / "a.onnx").stat().st_size
    assert first.ops and first.ops[0].op_type in ("Gemm", "FusedGemm", "MatMul")
    assert first.dequantized_per_run == () and second.dequantized_per_run == ("w",)
    assert 0 < second.dequantize_share <= 1
    text = render(r)
    assert "1 weight(s) dequantized on every run (w)" in text and f"than {a}" in text


def test_bench_command_json(tmp_path, capsys):
    a = _gemm_model(tmp_path / "a.onnx")
    rc = main(["bench", a, a, "--batch", "2", "--rounds", "2", "--threads", "1", "--no-memory", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)
    assert data["schema"] == "compress.bench/1" and data["threads"] == 1 and data["batches"] == [2]
    assert [f["latencies"][0]["batch"] for f in data["files"]] == [2, 2]


@pytest.mark.parametrize("text, want", [("1,32", (1, 32)), ("8", (8,)), ("1, 1,4", (1, 4))])
def test_batch_list(text, want):
    assert parse_batches(text) == want


@pytest.mark.parametrize("argv, expected", [
    (["--batch", "0"], "--batch"), (["--batch", "a,b"], "--batch")])
def test_bad_batches_are_usage_errors(tmp_path, capsys, argv, expected):
    a = _gemm_model(tmp_path / "a.onnx")
    rc = main(["bench", a, *argv])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err


def test_bad_files_are_one_line(tmp_path, capsys):
    fixed = _gemm_model(tmp_path / "fixed.onnx", batch=1)
    with pytest.raises(ConversionError, match=r"fixed\.onnx: input 'x' has a fixed batch of 1, not 32"):
        bench([fixed], batches=(32,), rounds=1, memory=False, profile=False)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for path, text in ((tmp_path / "junk.onnx", "onnxruntime cannot load it"),
                       (tmp_path / "missing.onnx", "missing.onnx")):
        rc = main(["bench", str(path), "--rounds", "1"])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("Error:")]
        assert rc == 1 and len(lines) == 1 and text in lines[0] and "Traceback" not in err, err

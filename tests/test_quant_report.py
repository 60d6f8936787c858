"""Reports of quantized models: bits, storage and size per layer, and the seed's quantization table
(one row per model; Size = the exported ONNX file)."""
from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from compress.cli import main
from compress.commands.report import report_model
from compress.modelfile import load_model, save_model
from compress.report.quant_table import QuantTableRow, quant_table, render_quant_table
from compress.report.render import render
from tests.nets import TINY, write_net


@pytest.fixture
def models(tmp_path):
    """A float model, its pruned copy, and 4-bit / 2-bit (8-bit first/last) quantizations of that."""
    _, caffemodel = write_net(tmp_path, TINY, seed=0, name="tiny")
    base = load_model(caffemodel)
    pruned = tmp_path / "pruned.pt"
    with torch.no_grad():
        w = base.net.ip1.weight
        w[w.abs() < w.abs().quantile(0.9)] = 0.0  # 10% of ip1 kept
    save_model(pruned, base.net, {**base.meta, "method": "magnitude", "accuracy_after": 0.5})
    q4, q2 = tmp_path / "q4.pt", tmp_path / "q2.pt"
    assert main(["quantize", str(pruned), "--bits", "4", "-o", str(q4)]) == 0
    assert main(["quantize", str(pruned), "--bits", "2", "--keep-first-last-8bit", "--layer", "*",
                 "-o", str(q2)]) == 0
    return {"float": str(caffemodel), "pruned": str(pruned), "q4": str(q4), "q2": str(q2)}


def test_per_layer_bits_and_sizes(models, capsys):
    capsys.readouterr()
    report = report_model(models["q4"])
    q = {r.name: r for r in report.quantization.layers}
    assert (q["conv1"].bits, q["ip1"].bits) == (4, 4)
    assert q["conv1"].storage == "INT4 dense" and q["conv1"].weight_bytes == 72 // 2
    assert q["conv1"].scale_bytes == 4 * 4 and q["conv1"].bias_bytes == 4 * 4
    nonzero = {r.name: r.nonzero for r in report.rows}
    assert q["ip1"].storage.startswith("INT4 values + UINT")  # 10% of 320 weights: kept codes + skips
    assert q["ip1"].weight_bytes < 320 // 2 and nonzero["ip1"] <= 32
    text = render(report, "markdown")
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert header[-3:] == ["Bits", "Stored as", "Size (KB)"]
    assert "Quantization: 4-bit per-channel mse grid, ptq" in text
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert rows[0]["bits"] == "4" and int(rows[-1]["bytes"]) == report.quantization.bytes
    d = json.loads(render(report, "json"))
    assert d["quantization"]["layers"][1]["bits"] == 4
    assert json.loads(render(report_model(models["float"]), "json"))["quantization"] is None


def test_quant_table_rows(models, tmp_path):
    rows = quant_table([models["float"], models["q4"], models["q2"]])
    assert [r.method for r in rows] == ["baseline", "PTQ", "PTQ"]
    assert [r.bits for r in rows] == ["32", "4", "2 (8 first/last)"]
    assert rows[0].accuracy is None and rows[0].accuracy_source is None
    # Size is the file `compress export` writes
    out = tmp_path / "q4.onnx"
    assert main(["export", models["q4"], "-o", str(out)]) == 0
    assert rows[1].size_bytes == out.stat().st_size
    pruned = quant_table([models["pruned"]])[0]
    assert (pruned.method, pruned.accuracy, pruned.accuracy_source) == ("baseline", 0.5, "recorded (PyTorch)")


def test_quant_table_renderers():
    rows = [QuantTableRow("mobilenet_v1_0.5", "baseline", "32", 3_224_000, 0.918, "x", 0.5, 0.98765, 0.9,
                          0.91, "macro over 10 classes, one vs rest"),
            QuantTableRow("q2.pt", "PTQ", "2", 115_630, None, None)]
    md = render_quant_table(rows, "markdown").splitlines()
    assert md[0] == "| Method | alpha | num_bits | Size (KB) | Accuracy | AUC | AP | f1 |"  # the seed's
    assert md[2] == "| baseline | 0.5 | 32 | 3224.0 | 91.80% | 0.9877 | 0.9000 | 0.9100 |"
    assert md[3] == "| PTQ | - | 2 | 115.6 | - | - | - | - |"
    assert "Rows: 1. mobilenet_v1_0.5; 2. q2.pt." in md
    assert "AUC, AP, f1: macro over 10 classes, one vs rest." in md
    parsed = list(csv.DictReader(io.StringIO(render_quant_table(rows, "csv"))))
    assert parsed[1]["size_bytes"] == "115630" and parsed[1]["accuracy"] == ""
    assert parsed[0]["alpha"] == "0.5"
    d = json.loads(render_quant_table(rows, "json"))
    assert d["schema"] == "compress.quant-table/1" and d["rows"][0]["accuracy"] == 0.918
    assert d["rows"][0]["auc"] == 0.98765


def test_cli_quant_table_and_its_misuse(models, tmp_path, capsys):
    capsys.readouterr()
    assert main(["report", models["float"], models["q4"], "--quant-table", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model,method,bits,size_bytes,accuracy,accuracy_source,alpha,auc,ap,f1,averaging"
    assert len(lines) == 3
    assert main(["report", models["float"], models["q4"]]) == 2
    assert "several only with --quant-table" in capsys.readouterr().err
    assert main(["report", models["q4"], "--data", "mnist"]) == 2
    assert "--data and --limit apply to --quant-table" in capsys.readouterr().err


def test_quant_table_measures_the_exported_file_through_compress_eval(models):
    """--data goes through compress.evaluate on the exported ONNX file: synthetic labels are random,
    so the row has no accuracy and says why (the images did run through onnxruntime)."""
    row = quant_table([models["q4"]], data="synthetic", limit=8)[0]
    assert row.accuracy is None
    assert row.accuracy_source == "onnxruntime, synthetic test (8): random labels, no accuracy"

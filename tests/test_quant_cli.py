"""``compress quantize`` end to end (quantize -> export -> verify, caffemodel) and its bad input:
one line, exit 1, nothing written."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from compress.cli import main
from compress.modelfile import load_model, save_model
from compress.quant.grid import LayerGrid, off_grid
from compress.quant.record import read_grids
from tests.nets import TINY, write_net


@pytest.fixture
def tiny(tmp_path):
    _, caffemodel = write_net(tmp_path, TINY, seed=0, name="tiny")
    return str(caffemodel)


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def fails(capsys, tmp_path, argv: list[str], *expected: str) -> str:
    before = set(tmp_path.iterdir())
    rc, _, err = run(capsys, argv)
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], lines[0]
    assert set(tmp_path.iterdir()) == before  # nothing written, no temporary left
    return lines[0]


def test_quantize_export_verify(capsys, tmp_path, tiny):
    q = tmp_path / "q.pt"
    rc, out, err = run(capsys, ["quantize", tiny, "--bits", "4", "--scale", "mse", "-o", str(q)])
    assert rc == 0, err
    assert "conv1" in out and "ip1" in out and f"wrote {q}" in out
    model = load_model(q)
    rec = model.meta["quantization"]
    assert (rec["bits"], rec["method"], rec["scale"], rec["per_channel"]) == (4, "ptq", "mse", True)
    assert len(rec["layers"]["conv1"]["scales"]) == 4 and rec["layers"]["ip1"]["zero_point"] == 0
    grids = read_grids(model.meta, model.net)
    assert set(grids) == {"conv1", "ip1"}
    onnx_path = tmp_path / "q.onnx"
    rc, out, err = run(capsys, ["export", str(q), "-o", str(onnx_path)])
    assert rc == 0, err
    assert "conv1.weight: 4-bit" in out and "sparse initializers" not in out
    rc, out, err = run(capsys, ["verify", str(onnx_path), "--against", str(q), "--json"])
    assert rc == 0, err
    assert json.loads(out)["max_abs_err"] < 1e-5


def test_caffemodel_export_writes_the_dequantized_weights(capsys, tmp_path, tiny):
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", tiny, "--bits", "3", "--per-tensor", "-o", str(q)])[0] == 0
    cm = tmp_path / "q.caffemodel"
    assert run(capsys, ["export", str(q), "--to", "caffemodel", "-o", str(cm)])[0] == 0
    back = load_model(cm).net
    rec = load_model(q).meta["quantization"]["layers"]
    for name, entry in rec.items():
        grid = LayerGrid(entry["bits"], torch.tensor(entry["scales"]))
        assert off_grid(back.layer(name).weight, grid) == 0
        assert torch.equal(back.layer(name).weight, load_model(q).net.layer(name).weight)


def test_pruned_model_stays_exactly_as_sparse(capsys, tmp_path, tiny):
    model = load_model(tiny)
    with torch.no_grad():
        w = model.net.ip1.weight
        w[w.abs() < w.abs().median()] = 0.0
    zeros = (model.net.ip1.weight == 0).clone()
    pruned = tmp_path / "pruned.pt"
    save_model(pruned, model.net, model.meta)
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", str(pruned), "--bits", "2", "-o", str(q)])[0] == 0
    after = load_model(q)
    assert bool((after.net.ip1.weight[zeros] == 0).all())
    assert {n: e["bits"] for n, e in after.meta["quantization"]["layers"].items()} == {"conv1": 2, "ip1": 2}


@pytest.mark.parametrize("bits", ["0", "9"])
def test_bits_out_of_range(capsys, tmp_path, tiny, bits):
    fails(capsys, tmp_path, ["quantize", tiny, "--bits", bits, "-o", str(tmp_path / "q.pt")],
          "bits must be an integer from 2 to 8", f"got {bits}")


def test_degenerate_layer(capsys, tmp_path, tiny):
    model = load_model(tiny)
    with torch.no_grad():
        model.net.ip1.weight.zero_()
    zero = tmp_path / "zero.pt"
    save_model(zero, model.net, model.meta)
    argv = ["quantize", str(zero), "--bits", "2", "--per-tensor", "-o", str(tmp_path / "q.pt")]
    fails(capsys, tmp_path, argv, "layer 'ip1'", "every weight is zero", "2-bit per-tensor grid has no range")


def test_already_quantized_is_refused(capsys, tmp_path, tiny):
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", tiny, "--bits", "4", "-o", str(q)])[0] == 0
    for bits in ("8", "4", "2"):
        fails(capsys, tmp_path, ["quantize", str(q), "--bits", bits, "-o", str(tmp_path / "q2.pt")],
              "already quantized (4-bit per-channel mse grid, ptq)",
              f"quantize the unquantized model instead ({tiny})")


def test_corrupt_model_file(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage" * 10)
    fails(capsys, tmp_path, ["quantize", str(bad), "--bits", "4", "-o", str(tmp_path / "q.pt")],
          "not a model file")


def test_corrupt_record_is_refused_on_export(capsys, tmp_path, tiny):
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", tiny, "--bits", "4", "-o", str(q)])[0] == 0
    model = load_model(q)
    meta = json.loads(json.dumps(model.meta))
    meta["quantization"]["layers"]["ip1"]["scales"] = [0.5]  # one scale for 5 channels
    broken = tmp_path / "broken.pt"
    save_model(broken, model.net, meta)
    fails(capsys, tmp_path, ["export", str(broken), "-o", str(tmp_path / "b.onnx")],
          "corrupt quantization record", "layer 'ip1'", "expected 5 positive finite scale(s)")
    with torch.no_grad():
        model.net.conv1.weight[0, 0, 0, 0] = 0.123456
    edited = tmp_path / "edited.pt"
    save_model(edited, model.net, model.meta)
    fails(capsys, tmp_path, ["export", str(edited), "-o", str(tmp_path / "e.onnx")],
          "layer 'conv1': 1 of 72 weights are not on the recorded 4-bit grid")


@pytest.mark.parametrize("argv, expected", [
    (["--method", "qgt"], "takes 2x8x8 inputs and has 5 classes: pass its data with --data DIR (an image "
                          "folder with one subfolder per class, or MNIST idx files) or --data synthetic"),
    (["--lr", "0.1", "--seed", "2"], "--lr, --seed apply to qgt and admm: ptq does not train"),
    (["--method", "qgt", "--rho", "0.1", "--data", "synthetic"], "--rho does not apply to qgt (it is a flag "
                                                                  "of admm)"),
    (["--method", "admm", "--qgt-lambda", "-1"], "--qgt-lambda does not apply to admm"),
    (["--method", "qgt", "--qgt-lambda", "-1", "--data", "synthetic"], "qgt: --qgt-lambda must be >= 0"),
    (["--method", "admm", "--resume", "nowhere.ckpt", "--data", "synthetic"], "checkpoint not found"),
    (["--resume", "nowhere.ckpt"], "--resume applies to qgt and admm: ptq does not train"),
    (["--layer", "fc9"], "no quantizable layer matches 'fc9'"),
])
def test_other_bad_options(capsys, tmp_path, tiny, argv, expected):
    fails(capsys, tmp_path, ["quantize", tiny, "--bits", "4", *argv, "-o", str(tmp_path / "q.pt")], expected)


def test_thin_of_a_quantized_model_keeps_the_scales_of_the_kept_filters(capsys, tmp_path, tiny):
    model = load_model(tiny)
    with torch.no_grad():
        model.net.conv1.weight[1].zero_()  # a dead filter: thinning removes it and ip1's inputs from it
    pruned = tmp_path / "pruned.pt"
    save_model(pruned, model.net, model.meta)
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", str(pruned), "--bits", "4", "--scale", "mse", "-o", str(q)])[0] == 0
    scales = load_model(q).meta["quantization"]["layers"]["conv1"]["scales"]
    out = tmp_path / "t.onnx"
    rc, text, err = run(capsys, ["export", str(q), "--thin", "-o", str(out)])
    assert rc == 0, err
    assert "thinned conv1: 4 -> 3 filters" in text
    from converters.onnx.quantized import decode_values

    stored = decode_values(onnx.load(out), ["conv1.weight_scale"])["conv1.weight_scale"]
    assert stored.reshape(-1).tolist() == [scales[0], scales[2], scales[3]]
    rc, text, err = run(capsys, ["verify", str(out), "--against", str(q), "--json"])
    assert rc == 0 and json.loads(text)["max_abs_err"] < 1e-5, err


def test_opset_too_old(capsys, tmp_path, tiny):
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", tiny, "--bits", "2", "-o", str(q)])[0] == 0
    fails(capsys, tmp_path, ["export", str(q), "--opset", "21", "-o", str(tmp_path / "o.onnx")],
          "opset 21 is too old for 2-bit weights")


def test_zoo_lenet_through_onnxruntime(capsys, tmp_path):
    q, onnx_path = tmp_path / "lenet_q4.pt", tmp_path / "lenet_q4.onnx"
    assert run(capsys, ["quantize", "lenet", "--bits", "4", "--keep-first-last-8bit", "-o", str(q)])[0] == 0
    rc, out, err = run(capsys, ["export", str(q), "-o", str(onnx_path)])
    assert rc == 0, err
    assert onnx_path.stat().st_size < 230_000  # 430.5K weights at 4 bits (8 for conv1, ip2) + biases
    rc, out, err = run(capsys, ["verify", str(onnx_path), "--against", str(q), "--json", "--batch-size", "8"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["max_abs_err"] < 1e-5 and result["top1_agreement"] == 1.0


def test_data_measures_and_records_top1(capsys, tmp_path, tiny):
    q = tmp_path / "q.pt"
    rc, out, err = run(capsys, ["quantize", tiny, "--bits", "8", "--data", "synthetic", "--limit", "64",
                                "-o", str(q)])
    assert rc == 0, err
    rec = load_model(q).meta["quantization"]
    assert rec["dataset"] == "synthetic" and 0 <= rec["accuracy"] <= 1 and 0 <= rec["accuracy_before"] <= 1
    assert "top-1: n/a (synthetic data has random labels: its accuracy means nothing; accuracy on the " \
           "first 64 test images only (--limit))" in out


def test_retrain_flags_are_not_offered(capsys, tmp_path, tiny):
    """Nothing is trained after the hard quantization: prune's retrain flags do not exist here."""
    rc, _, err = run(capsys, ["quantize", tiny, "--bits", "4", "--method", "qgt", "--retrain-epochs", "2",
                              "-o", str(tmp_path / "q.pt")])
    assert rc == 2 and "No such option '--retrain-epochs'" in err


def test_quantized_onnx_is_thinned_by_default(capsys, tmp_path, tiny):
    """A quantized model's ONNX export thins (dead filters' scales and biases are overhead there);
    --no-thin keeps them; a pruned float model is thinned too (what makes it faster)."""
    model = load_model(tiny)
    with torch.no_grad():
        model.net.conv1.weight[1].zero_()
    pruned = tmp_path / "pruned.pt"
    save_model(pruned, model.net, model.meta)
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", str(pruned), "--bits", "4", "-o", str(q)])[0] == 0
    sizes = {}
    for args, thinned in (([], True), (["--no-thin"], False)):
        out = tmp_path / f"q{len(args)}.onnx"
        rc, text, err = run(capsys, ["export", str(q), *args, "-o", str(out)])
        assert rc == 0 and ("thinned conv1: 4 -> 3 filters" in text) == thinned, err
        sizes[thinned] = out.stat().st_size
        assert run(capsys, ["verify", str(out), "--against", str(q)])[0] == 0
    assert sizes[True] < sizes[False]
    rc, text, _ = run(capsys, ["export", str(pruned), "-o", str(tmp_path / "f.onnx")])
    assert rc == 0 and "thinned conv1: 4 -> 3 filters" in text
    rc, text, _ = run(capsys, ["export", str(pruned), "--no-thin", "-o", str(tmp_path / "f.onnx")])
    assert rc == 0 and "thinned conv1" not in text
    rc, text, _ = run(capsys, ["export", str(pruned), "--dense", "-o", str(tmp_path / "d.onnx")])
    assert rc == 0 and "thinned conv1" not in text  # --dense: the baseline, nothing removed
    rc, text, _ = run(capsys, ["export", str(pruned), "--dense", "--thin", "-o", str(tmp_path / "d.onnx")])
    assert rc == 0 and "thinned conv1: 4 -> 3 filters" in text


@pytest.mark.parametrize("method, flags", [("qgt", ["--epochs", "2"]), ("admm", ["--admm-iters", "2"])])
def test_training_methods_end_to_end(capsys, tmp_path, tiny, method, flags):
    """qgt/admm fine-tune through the trainer on --data, hard-quantize, record the run; the result
    exports and verifies like a ptq model; the checkpoint is removed after success, the log stays."""
    q = tmp_path / "q.pt"
    rc, out, err = run(capsys, ["quantize", tiny, "--bits", "3", "--method", method, *flags, "--data",
                                "synthetic", "--limit", "64", "--batch-size", "16", "-o", str(q)])
    assert rc == 0, err
    assert "synthetic data has random labels" in out and f"wrote {q}" in out
    model = load_model(q)
    rec = model.meta["quantization"]
    assert rec["method"] == method and rec["bits"] == 3 and rec["dataset"] == "synthetic"
    assert len(rec["history"]) == 2 and rec["hyperparameters"]["lr"] == 0.01
    assert ("qgt_lambda" in rec["hyperparameters"]) == (method == "qgt")
    grids = read_grids(model.meta, model.net)  # every weight bit for bit on its recorded grid
    assert {n: off_grid(model.net.layer(n).weight, g) for n, g in grids.items()} == {"conv1": 0, "ip1": 0}
    assert not (tmp_path / "q.pt.ckpt").exists() and (tmp_path / "q.log.jsonl").exists()
    onnx_path = tmp_path / "q.onnx"
    assert run(capsys, ["export", str(q), "-o", str(onnx_path)])[0] == 0
    rc, out, err = run(capsys, ["verify", str(onnx_path), "--against", str(q), "--json"])
    assert rc == 0 and json.loads(out)["max_abs_err"] < 1e-5, err


@pytest.mark.parametrize("scale, shown", [
    (10 ** 400, "(scale 2: 1000000000"),  # an integer beyond any float: math.isfinite raised OverflowError
    (-10 ** 400, "(scale 2: -1000000000"),
    (1e300, "(scale 2: 1e+300)"),  # finite as a float64, infinite as the float32 the grid holds
    (float("inf"), "(scale 2: inf)"),
    (float("nan"), "(scale 2: nan)"),
    (0, "(scale 2: 0)"),
], ids=["huge-int", "huge-negative-int", "1e300", "inf", "nan", "zero"])
def test_a_scale_that_is_no_float32_is_a_corrupt_record(capsys, tmp_path, tiny, scale, shown):
    q = tmp_path / "q.pt"
    assert run(capsys, ["quantize", tiny, "--bits", "4", "-o", str(q)])[0] == 0
    model = load_model(q)
    meta = json.loads(json.dumps(model.meta))
    meta["quantization"]["layers"]["ip1"]["scales"][2] = scale
    broken = tmp_path / "broken.pt"
    save_model(broken, model.net, meta)
    fails(capsys, tmp_path, ["export", str(broken), "-o", str(tmp_path / "b.onnx")],
          "corrupt quantization record: layer 'ip1': expected 5 positive finite scale(s)", shown)

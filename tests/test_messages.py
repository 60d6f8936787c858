"""What the tool says: no accuracy on random labels, notes only where they apply, a quantized-only model not
called pruned, every output file named."""
from __future__ import annotations

import pytest

from compress.cli import main

SMOKE = ["--data", "synthetic", "--max-steps", "1", "--batch-size", "16", "--quiet"]


def test_synthetic_data_gives_no_top1_figures(tmp_path, capsys):
    code = main(["prune", "lenet", "--method", "magnitude", "--pcen", "50", "--retrain-epochs", "1",
                 "--data", "synthetic", "--max-steps", "1", "-o", str(tmp_path / "m.pt")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "top-1 before: n/a" in err and "top-1 before: 0" not in err
    assert "accuracy n/a (synthetic data has random labels" in out
    assert main(["report", str(tmp_path / "m.pt")]) == 0
    assert "Accuracy (top-1): n/a (synthetic data has random labels" in capsys.readouterr().out


@pytest.mark.parametrize(("limit", "said"), [("100000", False), ("64", True)])
def test_limit_is_named_only_where_it_cut_the_test_set(tmp_path, capsys, limit, said):
    out_file = tmp_path / "m.pt"
    code = main(["prune", "lenet", "--method", "magnitude", "--pcen", "50", "--retrain-epochs", "1",
                 "--data", "synthetic", "--limit", limit, "--batch-size", "512", "-o", str(out_file),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert ("--limit" in out) == said  # the synthetic test split has 128 images


def test_a_model_that_was_only_quantized_is_not_called_pruned(tmp_path, capsys):
    q = tmp_path / "q.pt"
    assert main(["quantize", "lenet", "--bits", "2", "-o", str(q)]) == 0
    capsys.readouterr()
    assert main(["report", str(q)]) == 0
    out = capsys.readouterr().out
    assert "Compression:" not in out and "pruned)" not in out
    assert "Not pruned:" in out and "are zero, rounded to zero by the quantization grid" in out
    assert "smaller than the dense float32 weights" in out


def test_report_says_where_the_plot_went(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "kept.png"
    assert main(["report", "lenet", "--plot", str(plot)]) == 0
    assert f"Wrote the plot {plot}" in capsys.readouterr().err and plot.is_file()


def test_report_json_flag_is_the_json_format_and_contradictions_are_refused(capsys):
    assert main(["report", "lenet", "--json"]) == 0
    assert capsys.readouterr().out.lstrip().startswith("{")
    assert main(["report", "lenet", "--json", "--format", "csv"]) == 2
    assert "--json contradicts --format csv" in capsys.readouterr().err


def test_a_solver_given_where_a_net_is_expected_is_named_with_its_net(tmp_path, capsys):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "train_val.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\n')
    for argv in (["convert", str(solver), "-o", str(tmp_path / "x.pt")], ["info", str(solver)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.strip() == (f"Error: {solver}: this is a Caffe solver, not a net definition; its net is "
                               "'train_val.prototxt' (net): give that (or the deploy prototxt) instead")
    assert not (tmp_path / "x.pt").exists()


# --- one set of conventions: --json and --threads wherever they apply -----------------------------------

COMPUTING = ("convert", "train", "prune", "quantize", "eval", "report", "export", "verify")


@pytest.mark.parametrize("argv", [["info", "lenet"], ["zoo", "list"]])
def test_info_and_zoo_list_print_json_too(argv, capsys):
    import json

    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] in ("compress.info/1", "compress.zoo/1")


@pytest.mark.parametrize("name", COMPUTING)
def test_every_computing_command_takes_threads_and_json(name):
    import click

    from compress.cli import cli

    command = cli.get_command(click.Context(cli), name)
    opts = {opt for p in command.params for opt in getattr(p, "opts", [])}
    assert {"--threads", "--json"} <= opts, name


def test_threads_sets_torch_and_onnxruntime_and_json_is_one_object(tmp_path, capsys, monkeypatch):
    import json
    import os

    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    try:
        assert main(["export", "lenet", "-o", str(tmp_path / "l.onnx"), "--threads", "1", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["schema"] == "compress.export/1" and str(tmp_path / "l.onnx") in out["files"]
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
    from converters.onnx.verify import _env_threads

    assert _env_threads() == 1  # onnxruntime sessions take the same count


def test_verify_on_a_device_that_is_not_there_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["export", "lenet", "-o", str(tmp_path / "l.onnx")]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "l.onnx"), "--against", "lenet", "--device", "cuda"]) == 1
    assert capsys.readouterr().err.strip() == "Error: --device cuda requested but no CUDA device is available"


def test_export_names_one_baseline_and_never_says_1x_smaller(tmp_path, capsys):
    from compress.commands.export import against_original

    assert main(["export", "lenet", "-o", str(tmp_path / "d.onnx")]) == 0
    out = capsys.readouterr().out
    assert "(the size of the original model's float32 weights: 1.72 MB)" in out and "1.00x" not in out
    assert against_original(1000, 4000) == "4.00x smaller than the original model's float32 weights: 4.00 kB"
    assert against_original(2000, 1000).startswith("2.00x larger than the original")


def test_prototxt_kind_reads_top_level_fields_in_one_pass():
    from converters.caffe.prototxt import prototxt_kind

    assert prototxt_kind('net: "a.prototxt"\nbase_lr: 0.1') == "solver"
    assert prototxt_kind('name: "n"\nlayer { name: "x" type: "ReLU" }') == "net"
    assert prototxt_kind('# net: "x"\nfoo: 1') is None  # comments and unknown fields say nothing
    assert prototxt_kind('weights: "net: x {" display: 1') == "solver"  # field names inside strings are text
    assert prototxt_kind('x: "' + "a" * 2_000_000) is None  # unterminated: linear, not quadratic (fuzz case)

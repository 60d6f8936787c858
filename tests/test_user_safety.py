"""A user's files and runs are safe: a pruning run never writes where the user's training run writes, two
runs never write one output, and ``compress train`` checks its outputs before the first iteration."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train_solver import NET, SOLVER, records, run, setup  # noqa: F401  (the fixture)


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_prune_with_a_solver_never_replaces_the_users_own_snapshots(setup, capsys):  # noqa: F811
    """The issue's journey: snapshot_prefix "snap/tiny", the user's own snap/tiny_iter_5.caffemodel, then a
    prune run with --max-iter 5 (whose solver snapshots at 5) must leave that file alone."""
    assert run(capsys, "train", "solver.prototxt", "--quiet")[0] == 0
    mine = {f: md5(Path("snap") / f) for f in os.listdir("snap")}
    assert "tiny_iter_5.caffemodel" in mine
    code, out, err = run(capsys, "prune", "snap/tiny_iter_5.caffemodel", "--solver", "solver.prototxt",
                         "--method", "magnitude", "--pcen", "50", "--max-iter", "5", "--retrain-epochs", "1",
                         "-o", "p.pt", "--quiet")
    assert code == 0, err
    assert {f: md5(Path("snap") / f) for f in os.listdir("snap")} == mine  # untouched, nothing added
    # the solver's snapshot at 5 (one-shot magnitude: 1 retrain run of 5 iterations), beside the output
    assert sorted(os.listdir("p.pt.snapshots")) == ["tiny_iter_5.caffemodel", "tiny_iter_5.solverstate.pt"]


def test_prune_with_a_solver_refuses_an_output_whose_caffe_files_are_its_inputs(setup, capsys):  # noqa: F811
    """-o net.pt would write net.prototxt (the deploy net) over the solver's own train_val net.prototxt."""
    assert run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet")[0] == 0
    before = md5("net.prototxt")
    code, _, err = run(capsys, "prune", "t.caffemodel", "--solver", "solver.prototxt", "--method",
                       "magnitude", "--pcen", "50", "--max-iter", "5", "-o", "net.pt", "--quiet")
    assert code == 1 and "net.prototxt" in err and "Traceback" not in err
    assert md5("net.prototxt") == before and not Path("net.pt").exists()


def test_train_checks_the_snapshot_folder_before_the_first_iteration(setup, capsys):  # noqa: F811
    Path("solver.prototxt").write_text(SOLVER.replace('"snap/tiny"', '"nowhere/tiny"'))
    code, _, err = run(capsys, "train", "solver.prototxt", "--log", "log.jsonl", "--quiet")
    assert code == 1 and "nowhere" in err and "Traceback" not in err
    assert not Path("log.jsonl").exists()  # refused before training, not after it


def test_train_says_it_overwrites_an_earlier_runs_snapshots(setup, capsys):  # noqa: F811
    assert run(capsys, "train", "solver.prototxt", "--quiet")[0] == 0
    code, _, err = run(capsys, "train", "solver.prototxt", "--quiet")
    assert code == 0
    notes = [line for line in err.splitlines() if "from an earlier run" in line]
    assert len(notes) == 1 and "snap/tiny_iter_5.caffemodel and 2 more" in notes[0]


def test_train_warns_when_test_layers_will_never_run(setup, capsys):  # noqa: F811
    Path("solver.prototxt").write_text(SOLVER.replace("test_iter: 3\n", ""))
    code, out, err = run(capsys, "train", "solver.prototxt", "--quiet", "--max-iter", "2")
    assert code == 0
    assert "TEST-phase layers but the solver gives no test_iter" in err
    assert "no test pass" in out


def test_train_summary_reports_the_iteration_0_test(setup, capsys):  # noqa: F811
    Path("solver.prototxt").write_text(SOLVER.replace("snapshot: 5", "snapshot: 0"))
    code, out, err = run(capsys, "train", "solver.prototxt", "--quiet", "--max-iter", "2", "--log", "l.jsonl")
    assert code == 0, err
    test0 = records("l.jsonl")[0]["test"]
    assert out.startswith(f"trained 2 iterations; accuracy = {test0['accuracy']:.6g}")


# --- one run per output --------------------------------------------------------------------------------

def test_a_second_run_on_a_locked_output_is_refused_naming_the_first(tmp_path, capsys):
    from compress.cli import main

    out = tmp_path / "p.pt"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Path(f"{out}.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                   "since": "2026-12-07T10:00:00+00:00",
                                                   "command": "compress prune lenet -o p.pt"}))
        code = main(["prune", "lenet", "--method", "magnitude", "--data", "synthetic", "--max-steps", "1",
                     "--retrain-epochs", "0", "-o", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 1 and f"pid {sleeper.pid}" in err and "compress prune lenet -o p.pt" in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()
        assert Path(f"{out}.lock").exists()  # the other run's lock is left alone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_is_taken_over_and_said(tmp_path, capsys):
    from compress.cli import main

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "p.pt"
    Path(f"{out}.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    code = main(["prune", "lenet", "--method", "magnitude", "--data", "synthetic", "--max-steps", "1",
                 "--pcen", "50", "--retrain-epochs", "0", "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "took over the stale lock" in err and out.exists()
    assert not Path(f"{out}.lock").exists()  # released at the end


def test_lock_is_released_when_the_run_fails(tmp_path):
    from compress.errors import CompressError
    from compress.lock import output_lock

    out = tmp_path / "x.pt"
    with pytest.raises(CompressError, match="boom"), output_lock([out]):
        assert Path(f"{out}.lock").exists()
        raise CompressError("boom")
    assert not Path(f"{out}.lock").exists()
    with output_lock([out]), pytest.raises(CompressError, match="being written by another run"), \
            output_lock([out], enabled=True):
        pass  # held by this very process... and a second holder of the same output is refused


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    from compress.errors import CompressError
    from compress.lock import output_lock

    out = tmp_path / "x.pt"
    Path(f"{out}.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(CompressError, match="on another host: it cannot be checked"), output_lock([out]):
        pass


# --- accuracy found by layer type --------------------------------------------------------------------

def test_accuracy_layers_are_found_by_type_and_top_k_not_by_name(setup, capsys):  # noqa: F811
    """Tops named acc2 (top_k 2) and acc (top_k 1): the top-1 accuracy is acc, for train and prune."""
    old = 'top: "accuracy"\n        include { phase: TEST } }'
    new = ('top: "acc2"\n        accuracy_param { top_k: 2 } include { phase: TEST } }\n'
           'layer { name: "a1" type: "Accuracy" bottom: "ip1" bottom: "label" top: "acc"\n'
           '        include { phase: TEST } }')
    net = NET.replace(old, new)
    assert net != NET
    Path("net.prototxt").write_text(net)
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet",
                       "--log", "t.jsonl")
    assert code == 0, err
    code, out, err = run(capsys, "prune", "t.caffemodel", "--solver", "solver.prototxt", "--method",
                         "magnitude", "--pcen", "50", "--max-iter", "5", "-o", "p.pt")
    assert code == 0, err
    tests = [r["test"] for r in records("t.jsonl") if "test" in r]
    assert all(t["acc2"] >= t["acc"] for t in tests)
    from compress.modelfile import load_model

    before = load_model("p.pt").meta["accuracy_before"]
    assert before is not None and f"top-1 before: {before:.2%}" in err
    last = json.loads(Path("p.log.jsonl").read_text().splitlines()[-1])
    assert last["test_acc"] == last["test"]["acc"] and last["test_acc"] is not None
    assert f"accuracy {before:.2%} -> {last['test_acc']:.2%}" in out
    assert " test acc " not in err  # shown once, as the epoch's test accuracy


# --- eval on data that does not fit the model -----------------------------------------------------------

THREE_CLASSES = """name: "three"
input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
"""


def test_eval_on_a_folder_whose_classes_are_not_the_models_outputs_is_one_line(tmp_path, capsys):
    """The issue's folder: imgs/ and Caffe list files, for a 3-class model (it printed 29.17% before)."""
    from PIL import Image

    from compress.cli import main
    from tests.nets import write_net

    _, caffemodel = write_net(tmp_path, THREE_CLASSES, name="three")
    root = tmp_path / "folder"
    (root / "imgs").mkdir(parents=True)
    for i in range(30):
        Image.new("RGB", (8, 8), (i * 8, 0, 0)).save(root / "imgs" / f"{i}.png")
    (root / "train.txt").write_text("".join(f"imgs/{i}.png {i % 3}\n" for i in range(24)))
    (root / "test.txt").write_text("".join(f"imgs/{i}.png {i % 3}\n" for i in range(24, 30)))
    code = main(["eval", str(caffemodel), "--data", str(root)])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "the data has 1 class (imgs" in err and "the model has 3 outputs" in err
    assert "Caffe ImageData lists" in err


# --- --resume alone continues the run ------------------------------------------------------------------

def test_prune_resume_alone_continues_with_the_stored_settings_bit_for_bit(tmp_path, capsys, monkeypatch):
    from compress.cli import main
    from tests.nets import ctrl_c_after_saves

    monkeypatch.chdir(tmp_path)
    args = ["prune", "lenet", "--method", "admm", "--targets", "admm-71x", "--admm-iters", "2",
            "--retrain-epochs", "1", "--data", "synthetic", "--max-steps", "2", "--batch-size", "16",
            "--limit", "64", "--checkpoint-every", "0", "--quiet"]
    assert main([*args, "-o", "a.pt"]) == 0
    with ctrl_c_after_saves(1):
        assert main([*args, "-o", "b.pt"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith("to continue: compress prune --resume b.pt.ckpt")
    assert main(["prune", "--resume", "b.pt.ckpt", "--quiet"]) == 0  # the command it printed, as given
    from compress.modelfile import load_model

    a, b = load_model("a.pt").net.state_dict(), load_model("b.pt").net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_quantize_resume_alone_continues_the_run(tmp_path, capsys, monkeypatch):
    from compress.cli import main
    from tests.nets import ctrl_c_after_saves

    monkeypatch.chdir(tmp_path)
    args = ["quantize", "lenet", "--bits", "4", "--method", "qgt", "--epochs", "2", "--data", "synthetic",
            "--max-steps", "2", "--limit", "64", "--checkpoint-every", "0", "--quiet"]
    assert main([*args, "-o", "a.pt"]) == 0
    with ctrl_c_after_saves(1):
        assert main([*args, "-o", "b.pt"]) == 130
    assert "to continue: compress quantize --resume b.pt.ckpt" in capsys.readouterr().err
    assert main(["quantize", "--resume", "b.pt.ckpt"]) == 0
    from compress.modelfile import load_model

    a, b = load_model("a.pt").net.state_dict(), load_model("b.pt").net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prune_resume_with_a_differing_flag_names_the_difference(tmp_path, capsys, monkeypatch):
    from compress.cli import main
    from tests.nets import ctrl_c_after_saves

    monkeypatch.chdir(tmp_path)
    with ctrl_c_after_saves(1):
        assert main(["prune", "lenet", "--method", "magnitude", "--pcen", "50", "--rounds", "2",
                     "--round-epochs", "1", "--retrain-epochs", "1", "--data", "synthetic",
                     "--max-steps", "1", "--limit", "32", "--checkpoint-every", "0", "--quiet",
                     "-o", "m.pt"]) == 130
    capsys.readouterr()
    assert main(["prune", "--resume", "m.pt.ckpt", "--lr", "0.05"]) == 1
    assert "hyperparameters.lr was 0.01, now 0.05" in capsys.readouterr().err
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert main(["prune", "--resume", str(tmp_path / "m.pt.ckpt")]) == 2
    assert "resume from that directory" in capsys.readouterr().err
    assert main(["prune"]) == 2 and "Missing argument 'MODEL'" in capsys.readouterr().err


# --- caffe test: eval --solver --------------------------------------------------------------------------

def test_eval_with_a_solver_gives_caffe_trains_own_test_outputs(setup, capsys):  # noqa: F811
    """test_iter 12 x batch 10 = 5 passes over the 24 test records, so every test pass reads the same
    records from the first one: eval --solver must give train's last test outputs exactly."""
    Path("solver.prototxt").write_text(SOLVER.replace("test_iter: 3", "test_iter: 12")
                                       .replace("max_iter: 12", "max_iter: 10"))
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--log", "l.jsonl",
                       "--quiet")
    assert code == 0, err
    last = [r for r in records("l.jsonl") if "test" in r][-1]
    assert last["iter"] == 10
    code, out, err = run(capsys, "eval", "t.caffemodel", "--solver", "solver.prototxt", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["nets"][0]["outputs"] == pytest.approx(last["test"], abs=1e-12)
    assert report["accuracy"] == last["test"]["accuracy"] and report["nets"][0]["iterations"] == 12
    code, out, _ = run(capsys, "eval", "t.caffemodel", "--solver", "solver.prototxt")
    assert f"Test net output #0: accuracy = {last['test']['accuracy']:.6g}" in out
    assert "loss = " in out and "(* 1 = " in out
    # the train_val net itself: its TEST phase over its records once (3 batches of 10, wrapping)
    code, out, err = run(capsys, "eval", "t.caffemodel", "--solver", "net.prototxt", "--iterations", "12",
                         "--json")
    assert code == 0 and json.loads(out)["nets"][0]["outputs"] == report["nets"][0]["outputs"]


def test_eval_reads_a_caffe_lmdb_folder_as_the_data_layer_does(setup, capsys):  # noqa: F811
    from compress.data.caffe import build_feeder  # noqa: F401  (the Data layer this must agree with)

    assert run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet")[0] == 0
    code, _, err = run(capsys, "eval", "t.caffemodel", "--data", "test_lmdb")
    assert code == 1 and "records no preprocessing" in err and "--solver" in err  # a raw caffemodel
    from compress.modelfile import load_model, save_model

    save_model("t.pt", load_model("t.caffemodel").net, {"preprocess": {"scale": 0.00390625, "mean": None,
                                                                        "channel_order": "gray"}})
    code, out, err = run(capsys, "eval", "t.pt", "--data", "test_lmdb", "--json")
    assert code == 0, err
    by_data = json.loads(out)
    code, out, _ = run(capsys, "eval", "t.pt", "--solver", "net.prototxt", "--iterations", "12", "--json")
    by_net = json.loads(out)["nets"][0]["outputs"]  # 5 passes over the 24 records: the same mean
    assert by_data["test_images"] == 24 and by_data["top1"] == pytest.approx(by_net["accuracy"], abs=1e-6)
    assert by_data["loss"] == pytest.approx(by_net["loss"], rel=1e-5)
    code, _, err = run(capsys, "prune", "t.pt", "--data", "test_lmdb", "-o", "p.pt", "--quiet")
    assert code == 1 and "holds one split" in err

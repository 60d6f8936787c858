"""``compress train SOLVER``: the Caffe front door of the shared loop, on LMDBs built from small arrays.

Checked: the fixed log records, tests at Caffe's iterations, snapshots and -o outputs that load again,
bit-exact resume from a snapshot's state, the lr of every iteration against the policy, iter_size, and
one-line errors. The real-Caffe LeNet reference (first 20 iterations, test at 0) runs where
../shared is present.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compress.cli import main
from compress.data.caffe import write_datum_lmdb

NET = """
name: "tinynet"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 }
        data_param { source: "train_lmdb" batch_size: 8 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 }
        data_param { source: "test_lmdb" batch_size: 10 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "drop" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param { dropout_ratio: 0.2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
test_iter: 3
test_interval: 5
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.01
power: 0.75
display: 2
max_iter: 12
snapshot: 5
snapshot_prefix: "snap/tiny"
random_seed: 7
"""


def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """64 images (uint8, 1x6x6) whose brightness says their class (0, 1 or 2), and the labels."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 64)
    images = (rng.integers(0, 60, (64, 1, 6, 6)) + labels[:, None, None, None] * 60).astype(np.uint8)
    return images, labels


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A train_val over two small LMDBs and its solver, in the working directory (as Caffe resolves)."""
    images, labels = tiny_data()
    write_datum_lmdb(tmp_path / "train_lmdb", images[:40], labels[:40])
    write_datum_lmdb(tmp_path / "test_lmdb", images[40:], labels[40:])
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    (tmp_path / "snap").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_train_logs_tests_snapshots_and_writes_a_loadable_caffemodel(setup, capsys):
    code, out, err = run(capsys, "train", "solver.prototxt", "-o", "tiny.caffemodel", "--log", "log.jsonl")
    assert code == 0, err
    recs = records("log.jsonl")
    steps = [r for r in recs if "loss" in r]
    assert [r["iter"] for r in steps] == list(range(12))
    assert all(set(r) == {"iter", "loss", "lr"} for r in steps)
    assert [r["iter"] for r in recs if "test" in r] == [0, 5, 10]  # 12 % 5 != 0: no test after the last
    assert all(set(r["test"]) == {"accuracy", "loss"} for r in recs if "test" in r)
    assert "Iteration 2" in err and "Iteration 3," not in err and "Test net output #0: accuracy" in err
    # the inv policy, base_lr * (1 + gamma * iter) ^ -power, at every iteration
    for r in steps:
        assert r["lr"] == pytest.approx(0.05 * (1 + 0.01 * r["iter"]) ** -0.75, rel=1e-6)
    assert sorted(os.listdir("snap")) == ["tiny_iter_10.caffemodel", "tiny_iter_10.solverstate.pt",
                                          "tiny_iter_12.caffemodel", "tiny_iter_12.solverstate.pt",
                                          "tiny_iter_5.caffemodel", "tiny_iter_5.solverstate.pt"]
    assert "wrote tiny.caffemodel" in out and "wrote tiny.prototxt" in out
    from compress.modelfile import load_model

    net = load_model("tiny.caffemodel").net  # its deploy prototxt is found beside it
    assert net.inputs == {"data": (10, 1, 6, 6)}
    assert net(torch.zeros(10, 1, 6, 6)).shape == (10, 3)


def test_the_test_net_runs_only_when_the_solver_says(setup, capsys, monkeypatch):
    """Tests at 0, 5 and 10 of 12 iterations, as Caffe: no extra pass after training (it cost start-up)."""
    from compress.solver.task import CaffeTask

    calls = []
    evaluate = CaffeTask.evaluate
    monkeypatch.setattr(CaffeTask, "evaluate", lambda self: calls.append(1) or evaluate(self))
    assert run(capsys, "train", "solver.prototxt")[0] == 0
    assert len(calls) == 3
    Path("solver.prototxt").write_text(SOLVER + "test_initialization: false\n")
    calls.clear()
    assert run(capsys, "train", "solver.prototxt", "--max-iter", "4")[0] == 0
    assert calls == []


def test_resume_from_a_snapshot_is_bit_exact(setup, capsys):
    assert run(capsys, "train", "solver.prototxt", "-o", "full.caffemodel", "--log", "full.jsonl")[0] == 0
    full = records("full.jsonl")
    for f in os.listdir("snap"):
        if "_iter_10" in f or "_iter_12" in f:
            os.unlink(Path("snap") / f)
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "resumed.caffemodel", "--log", "half.jsonl",
                       "--resume", "snap/tiny_iter_5.solverstate.pt")
    assert code == 0, err
    assert Path("full.caffemodel").read_bytes() == Path("resumed.caffemodel").read_bytes()
    later = [r for r in full if r["iter"] >= 5 and not ("test" in r and r["iter"] == 5)]
    assert records("half.jsonl") == later  # same losses, rates and test outputs after iteration 5


def test_iter_size_accumulates_and_reports_the_mean_loss(setup, capsys):
    """iter_size 2 against a float64 transcription in torch.nn.functional of the net (without its dropout)
    and of Caffe's SGD update: iteration 0 logs the mean loss of batches 0 and 1 (images 0-15 in LMDB
    order), its update uses the mean of their gradients (Normalize: diff / iter_size), and iteration 1
    logs the mean loss of batches 2 and 3 under the updated weights."""
    from converters.caffe.prototxt import parse_net_text
    from converters.caffe.writer import write_caffemodel

    Path("net.prototxt").write_text("".join(x for x in NET.splitlines(True) if '"Dropout"' not in x))
    Path("solver.prototxt").write_text(SOLVER.replace("max_iter: 12", "max_iter: 2\niter_size: 2"))
    rng = np.random.default_rng(3)
    init = {"conv1": [rng.normal(0, 0.3, (4, 1, 3, 3)), rng.normal(0, 0.1, 4)],
            "ip1": [rng.normal(0, 0.3, (3, 64)), rng.normal(0, 0.1, 3)]}
    init = {k: [a.astype(np.float32) for a in v] for k, v in init.items()}
    write_caffemodel("init.caffemodel", parse_net_text(NET), init)
    code, _, err = run(capsys, "train", "solver.prototxt", "--weights", "init.caffemodel",
                       "--log", "log.jsonl", "--quiet")
    assert code == 0, err

    images, labels = tiny_data()
    x = torch.from_numpy(images[:32]).double() * 0.00390625  # transform_param scale
    y = torch.from_numpy(labels[:32])
    w = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (*init["conv1"], *init["ip1"])]

    def loss(batch: int) -> torch.Tensor:  # conv1 -> ReLU -> ip1 -> SoftmaxWithLoss of batch size 8
        rows = slice(8 * batch, 8 * batch + 8)
        hidden = F.relu(F.conv2d(x[rows], w[0], w[1])).flatten(1)
        return F.cross_entropy(F.linear(hidden, w[2], w[3]), y[rows])

    first = loss(0) + loss(1)
    first.backward()
    gap = abs((loss(0) - loss(1)).item())
    with torch.no_grad():  # iteration 0: v = 0, rate 0.05; conv1's bias has lr_mult 2; decay_mult 1 all
        for p, lr_mult in zip(w, (1, 2, 1, 1), strict=True):
            p -= 0.05 * lr_mult * (p.grad / 2 + 0.0005 * p)
        second = loss(2) + loss(3)
    logged = [r for r in records("log.jsonl") if "loss" in r]
    assert [r["iter"] for r in logged] == [0, 1]
    assert logged[0]["loss"] == pytest.approx(first.item() / 2, rel=1e-5)
    assert logged[1]["loss"] == pytest.approx(second.item() / 2, rel=1e-5)
    assert gap > 1e-2  # the two batches' losses differ: the loss of either one alone would not pass


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace('lr_policy: "inv"', 'lr_policy: "cosine"'), "unknown policy 'cosine'"),
    (lambda s: s.replace('net: "net.prototxt"', 'net: "nowhere.prototxt"'), "nowhere.prototxt"),
    (lambda s: s.replace("type: SGD", "") + 'type: "Lion"\n', "Lion"),
])
def test_bad_solver_is_one_line(setup, capsys, edit, message):
    Path("solver.prototxt").write_text(edit(SOLVER))
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "x.caffemodel")
    assert code == 1 and err.startswith("Error: ") and message in err and "Traceback" not in err
    assert not Path("x.caffemodel").exists() and os.listdir("snap") == []


def test_missing_lmdb_and_wrong_output_suffix(setup, capsys):
    Path("net.prototxt").write_text(NET.replace('source: "train_lmdb"', 'source: "gone_lmdb"'))
    code, _, err = run(capsys, "train", "solver.prototxt")
    assert code == 1 and "gone_lmdb" in err and "Traceback" not in err
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "x.pt")
    assert code == 1 and "-o must name a .caffemodel" in err


def test_output_over_an_input_is_refused(setup, capsys):
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "net.caffemodel")  # its prototxt = the net
    assert code == 1 and "net.prototxt" in err and Path("net.prototxt").read_text() == NET


def test_lenet_reference_first_20_iterations(tmp_path, monkeypatch, capsys, caffe_lenet):
    """Real Caffe 1.0's LeNet run: loss at each of the first 20 iterations within 1e-4 relative, lr
    within 1e-5, the test outputs at iteration 0 within 1e-4, the weights after 20 iterations within
    1e-4 (max |diff| / max |w| per blob)."""
    pytest.importorskip("mnist")
    from compress.data.caffe.mnist_lmdb import mnist_uint8
    from converters.caffe.reader import read_caffemodel

    data = mnist_uint8()
    write_datum_lmdb(tmp_path / "train", *(a[:64 * 20] for a in data["train"]))  # 20 batches: no wrap
    write_datum_lmdb(tmp_path / "test", *data["test"])
    text = (caffe_lenet / "train_val.prototxt").read_text()
    (tmp_path / "train_val.prototxt").write_text(text.replace("@L/mnist_train_lmdb", "train")
                                                 .replace("@L/mnist_test_lmdb", "test"))
    (tmp_path / "solver.prototxt").write_text((caffe_lenet / "solver.prototxt").read_text())
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "train", "solver.prototxt", "--weights", str(caffe_lenet / "init.caffemodel"),
                       "--max-iter", "20", "-o", "w20.caffemodel", "--log", "log.jsonl", "--quiet")
    assert code == 0, err
    ref = json.loads((caffe_lenet / "reference.json").read_text())
    recs = records("log.jsonl")
    steps = [r for r in recs if "loss" in r]
    assert [r["iter"] for r in steps] == list(range(20))  # every iteration logged, so all 20 are compared
    for r in steps:
        assert r["loss"] == pytest.approx(ref["loss"][str(r["iter"])], rel=1e-4)
        assert r["lr"] == pytest.approx(ref["lr"][str(r["iter"])], rel=1e-5)
    assert [r["iter"] for r in recs if "test" in r] == [0]  # test_interval 500: only the test at 0
    test0 = next(r["test"] for r in recs if "test" in r and r["iter"] == 0)
    assert test0["accuracy"] == pytest.approx(ref["test"]["0"]["accuracy"], rel=1e-4)
    assert test0["loss"] == pytest.approx(ref["test"]["0"]["loss"], rel=1e-4)
    ours = read_caffemodel("w20.caffemodel").blobs
    want = read_caffemodel(caffe_lenet / "early_iter_20.caffemodel").blobs
    assert sorted(want) == sorted(ours) == ["conv1", "conv2", "ip1", "ip2"]
    for name, blobs in want.items():
        assert len(blobs) == 2, name
        for a, b in zip(ours[name], blobs, strict=True):
            assert np.abs(a - b).max() / np.abs(b).max() < 1e-4, name


def test_prune_with_a_solver_hits_the_targets_and_writes_caffe_files(setup, capsys):
    from compress.modelfile import load_model

    assert run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet")[0] == 0
    code, out, err = run(capsys, "prune", "t.caffemodel", "--solver", "solver.prototxt", "--method", "admm",
                         "--pcen", "50", "--admm-iters", "2", "--max-iter", "6", "-o", "p.pt", "--quiet")
    assert code == 0, err
    model = load_model("p.pt")
    kept = {n: int((model.net.layer(n).weight != 0).sum()) for n in ("conv1", "ip1")}
    assert kept == {"conv1": 18, "ip1": 96}
    meta = model.meta
    assert meta["solver"]["path"] == "solver.prototxt" and meta["solver"]["lr_policy"] == "inv"
    assert "one run of the solver's schedule (6 iterations" in meta["hyperparameters"]["schedule"]
    assert meta["history"][-1]["phase"] == "retrain" and meta["hyperparameters"]["retrain_epochs"] == 1
    assert meta["history"][-1]["step"] == 18  # 2 ADMM runs + 1 retrain run of 6 iterations
    again = load_model("p.caffemodel").net  # beside it: the deploy p.prototxt
    assert torch.equal(again.layer("ip1").weight, model.net.layer("ip1").weight)


def test_prune_with_a_solver_resumes_bit_exactly(setup, capsys):
    from tests.nets import ctrl_c_after_saves

    assert run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet")[0] == 0
    args = ["prune", "t.caffemodel", "--solver", "solver.prototxt", "--method", "admm", "--pcen", "50",
            "--admm-iters", "2", "--max-iter", "6", "--quiet", "--checkpoint-every", "0"]
    assert run(capsys, *args, "-o", "a.pt")[0] == 0
    with ctrl_c_after_saves(3):
        code, _, err = run(capsys, *args, "-o", "b.pt")
    assert code == 130 and "to continue: compress prune --resume b.pt.ckpt" in err
    assert run(capsys, *args, "-o", "b.pt", "--resume", "b.pt.ckpt")[0] == 0
    assert Path("a.caffemodel").read_bytes() == Path("b.caffemodel").read_bytes()


def test_prune_with_a_solver_refuses_flags_the_solver_decides(setup, capsys):
    code, _, err = run(capsys, "prune", "x.caffemodel", "--solver", "solver.prototxt", "--lr", "0.1",
                       "--data", "mnist", "-o", "p.pt")
    assert code == 2 and "--data, --lr cannot be combined with --solver" in err
    code, _, err = run(capsys, "prune", "lenet", "--max-iter", "5", "-o", "p.pt")
    assert code == 2 and "--max-iter applies with --solver only" in err


def test_a_label_outside_the_classes_is_one_line_and_writes_nothing(setup, capsys):
    rng = np.random.default_rng(1)
    write_datum_lmdb("bad_lmdb", rng.integers(0, 255, (16, 1, 6, 6)).astype(np.uint8), np.full(16, 7))
    Path("net.prototxt").write_text(NET.replace('source: "train_lmdb"', 'source: "bad_lmdb"'))
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "x.caffemodel", "--log", "log.jsonl")
    assert code == 1 and "label 7 is outside the 3 classes" in err and "Traceback" not in err
    assert os.listdir("snap") == [] and not Path("x.caffemodel").exists()


def test_a_diverging_solver_stops_with_one_line_naming_the_last_snapshot(setup, capsys):
    Path("solver.prototxt").write_text(SOLVER.replace("base_lr: 0.05", "base_lr: 1e30"))
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", "x.caffemodel", "--quiet")
    assert code == 1 and "loss became" in err and "last good checkpoint:" in err
    assert not Path("x.caffemodel").exists()


# -- issue 17 ---------------------------------------------------------------------------------------

def test_weights_holding_nan_are_refused_before_training(setup, capsys):
    from converters.caffe.reader import read_caffemodel

    assert run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet")[0] == 0
    model = read_caffemodel("t.caffemodel")
    model.blobs["ip1"][1][2] = np.inf
    from converters.caffe.writer import write_caffemodel

    write_caffemodel("inf.caffemodel", model.net, model.blobs)
    code, _, err = run(capsys, "train", "solver.prototxt", "--weights", "inf.caffemodel", "--quiet")
    assert code == 1 and err.startswith("Error: ") and len(err.splitlines()) == 1, err
    assert "layer 'ip1': param 1 of inf.caffemodel: 1 of 3 values are NaN or infinite" in err


NO_DROPOUT = NET.replace('layer { name: "drop" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param '
                         '{ dropout_ratio: 0.2 } }\n', "")


def test_iter_size_draws_each_micro_batch_only_when_it_is_trained(setup):
    """Caffe's memory: one batch at a time, however large iter_size (all were read up front before)."""
    from compress.solver.read import read_solver
    from compress.solver.session import build_session

    Path("solver.prototxt").write_text(SOLVER + "iter_size: 1000\n")
    s = build_session(read_solver("solver.prototxt"), torch.device("cpu"))
    feeder = s.batches.feeders[0]
    step = next(iter(s.batches.segment(0, 1)))
    assert len(step) == 1000 and feeder.position == 0  # nothing read yet
    parts = iter(step)
    next(parts)
    assert feeder.position == 8
    next(parts)
    assert feeder.position == 16


def _trained(solver_text: str, capsys, name: str) -> dict:
    from converters.caffe.reader import read_caffemodel

    Path("solver.prototxt").write_text(solver_text)
    code, _, err = run(capsys, "train", "solver.prototxt", "-o", f"{name}.caffemodel", "--quiet")
    assert code == 0, err
    return read_caffemodel(f"{name}.caffemodel").blobs


def test_iter_size_weights_are_those_of_reading_every_micro_batch_first(setup, capsys):
    """Bit for bit the weights of the former implementation, which read the iter_size batches of an
    update before its first forward pass (the same arithmetic in the same order)."""
    from compress.solver.read import read_solver
    from compress.solver.session import build_session
    from compress.solver.task import next_batch

    Path("net.prototxt").write_text(NO_DROPOUT)
    solver = SOLVER.replace("max_iter: 12", "max_iter: 4") + "iter_size: 3\ntest_initialization: false\n"
    ours = _trained(solver, capsys, "lazy")
    s = build_session(read_solver("solver.prototxt"), torch.device("cpu"))
    opt = s.optimizer()(None, None, None, None)
    for _ in range(4):
        parts = [next_batch(s.batches.feeders) for _ in range(3)]
        opt.zero_grad(set_to_none=True)
        for part in parts:
            s.train_net.run(part).objective.backward()
        opt.step()
    for name in ("conv1", "ip1"):
        module = s.train_net.layer(name)
        assert np.array_equal(ours[name][0], module.weight.detach().numpy().reshape(ours[name][0].shape))
        assert np.array_equal(ours[name][1], module.bias.detach().numpy())


def test_iter_size_2_trains_like_a_batch_twice_as_large(setup, capsys):
    """SoftmaxWithLoss averages over the batch and the solver divides the accumulated diffs by
    iter_size: two batches of 8 per update are one batch of 16, up to float rounding."""
    Path("net.prototxt").write_text(NO_DROPOUT)
    solver = SOLVER.replace("max_iter: 12", "max_iter: 4")
    two = _trained(solver + "iter_size: 2\n", capsys, "two")
    Path("net.prototxt").write_text(NO_DROPOUT.replace("batch_size: 8", "batch_size: 16"))
    one = _trained(solver, capsys, "one")
    for name in ("conv1", "ip1"):
        for a, b in zip(two[name], one[name], strict=True):
            assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max(), name


@pytest.mark.parametrize("method", [["--method", "admm", "--admm-iters", "2"],
                                    ["--method", "rvsm", "--epochs", "2"],
                                    ["--method", "rgsm", "--epochs", "2", "--lamb2", "0.01"]])
def test_prune_with_iter_size_2_prunes_like_a_batch_twice_as_large(setup, capsys, method):
    """A method's own gradient term (ADMM's rho (W - Z + U), RVSM's pull, RGSM's group lasso) keeps its
    strength under iter_size: the solver divides the accumulated sum by iter_size, not the method's term."""
    from compress.modelfile import load_model

    Path("net.prototxt").write_text(NO_DROPOUT)
    assert run(capsys, "train", "solver.prototxt", "-o", "t.caffemodel", "--quiet")[0] == 0
    args = ["prune", "t.caffemodel", "--solver", "solver.prototxt", "--pcen", "50", "--max-iter", "4",
            "--quiet", *method]
    Path("solver.prototxt").write_text(SOLVER + "iter_size: 2\n")
    assert run(capsys, *args, "-o", "two.pt")[0] == 0
    Path("solver.prototxt").write_text(SOLVER)
    Path("net.prototxt").write_text(NO_DROPOUT.replace("batch_size: 8", "batch_size: 16"))
    assert run(capsys, *args, "-o", "one.pt")[0] == 0
    two, one = load_model("two.pt").net, load_model("one.pt").net
    for name in ("conv1", "ip1"):
        a, b = two.layer(name).weight.detach(), one.layer(name).weight.detach()
        assert torch.equal(a == 0, b == 0), name
        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), name


def test_loss_weight_0_on_the_only_loss_trains_with_zero_gradients(setup, capsys):
    """Caffe trains such a net: the loss contributes nothing, weight decay alone moves the weights."""
    from compress.solver.read import read_solver
    from compress.solver.session import build_session

    Path("net.prototxt").write_text(NET.replace('top: "loss" }', 'top: "loss" loss_weight: 0 }'))
    start = build_session(read_solver("solver.prototxt"), torch.device("cpu")).train_net
    w0 = start.layer("ip1").weight.detach().numpy().copy()
    code, _, err = run(capsys, "train", "solver.prototxt", "--max-iter", "3", "-o", "z.caffemodel",
                       "--log", "log.jsonl", "--quiet")
    assert code == 0, err
    assert [r["loss"] for r in records("log.jsonl") if "loss" in r] == [0.0, 0.0, 0.0]
    from converters.caffe.reader import read_caffemodel

    w3 = read_caffemodel("z.caffemodel").blobs["ip1"][0].reshape(w0.shape)
    ratio = w3 / w0  # decay with momentum scales every weight by the same factor
    assert 0.99 < ratio.min() <= ratio.max() < 1 and ratio.max() - ratio.min() < 1e-5


def _set(path: tuple, value):
    def edit(state):
        d = state
        for k in path[:-1]:
            d = d[k]
        if value is KeyError:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


STATE_DEFECTS = {  # a mutated .solverstate.pt -> what the one line names
    "info not a dict": (_set(("info",), [1, 2]), "info: expected a dict, found a list of 2"),
    "no position": (_set(("batches", "data", "position"), KeyError), "batches.data.position: missing"),
    "position past the records": (_set(("batches", "data", "position"), 40),
                                  "batches.data.position: expected an integer from 0 to 39, found 40"),
    "rng position 10**30": (_set(("batches", "data", "rng", "pos"), 10 ** 30),
                            "batches.data.rng.pos: expected an integer from 0 to 624, found 10000000000"),
    "rng words": (_set(("batches", "data", "rng", "mt19937"), torch.zeros(5, dtype=torch.int64)),
                  "batches.data.rng.mt19937: expected a tensor of shape [624] of torch.int64"),
    "history shape": (lambda s: s["optimizer"]["state"][0].update(history=torch.zeros(3)),
                      "optimizer.state.0.history: expected a tensor of shape"),
    "history not a tensor": (lambda s: s["optimizer"]["state"][0].update(history="x"),
                             "optimizer.state.0.history: expected a tensor of shape [4, 1, 3, 3] of "
                             "torch.float32, found 'x'"),
    "empty batches": (_set(("batches",), {}), "batches: no data cursor for layer(s) data"),
    "empty optimizer state": (_set(("optimizer", "state"), {}),
                              "optimizer.state: empty, but the run has made 5 updates"),
    "solver iter": (_set(("optimizer", "solver", "iter"), -3), "optimizer.solver.iter: expected an integer"),
    "epoch": (_set(("epoch",), 7), "epoch: expected an integer from 0 to 3, found 7"),
    "step": (_set(("step",), 6), "step: expected an integer from 5 to 5, found 6"),
    "history length": (_set(("history",), []), "history: expected a list of 1, found a list of 0"),
    "weights NaN": (lambda s: s["model"]["ip1.weight"].fill_(float("nan")), "model.ip1.weight: holds NaN"),
    "weights int": (lambda s: s["model"].update({"ip1.bias": torch.zeros(3, dtype=torch.int64)}),
                    "model.ip1.bias: expected a tensor of shape [3] of torch.float32"),
    "weights missing": (lambda s: s["model"].pop("ip1.bias"), "model holds another model's weights (missing "
                                                              "ip1.bias)"),
    "rng": (_set(("rng", "cpu"), torch.zeros(3, dtype=torch.uint8)), "rng.cpu: expected a tensor of shape"),
    "losses": (_set(("observer", "losses"), ["a"]), "observer.losses: expected finite numbers, found 'a'"),
    "test cursor": (_set(("task", "tests"), []), "task.tests: 0 test nets' cursors, the solver has 1"),
    "a 100,000-character layer": (lambda s: s["batches"].update({"x" * 100000: s["batches"].pop("data")}),
                                  "batches: no data cursor for layer(s) data"),
}


@pytest.mark.parametrize("defect", list(STATE_DEFECTS))
def test_a_damaged_solver_state_is_refused_field_by_field(setup, capsys, defect):
    edit, message = STATE_DEFECTS[defect]
    assert run(capsys, "train", "solver.prototxt", "--quiet")[0] == 0
    state = torch.load("snap/tiny_iter_5.solverstate.pt", weights_only=True)
    edit(state)
    torch.save(state, "bad.solverstate.pt")
    code, _, err = run(capsys, "train", "solver.prototxt", "--resume", "bad.solverstate.pt", "--quiet")
    assert code == 1 and err.startswith("Error: checkpoint bad.solverstate.pt: "), err
    assert len(err.splitlines()) == 1 and message in err and len(err) < 400, err


@pytest.mark.parametrize("where", ["weights", "net", "source", "layer"])
def test_a_100000_character_name_from_a_file_is_cut_in_the_error(setup, capsys, where):
    long = "x" * 100000
    if where in ("weights", "net"):
        text = SOLVER + f'weights: "{long}"\n' if where == "weights" else \
            SOLVER.replace('net: "net.prototxt"', f'net: "{long}"')
        Path("solver.prototxt").write_text(text)
    else:
        old = 'source: "train_lmdb"' if where == "source" else 'layer { name: "data" type: "Data"'
        new = f'source: "{long}"' if where == "source" else f'layer {{ name: "{long}" type: "Data"'
        Path("net.prototxt").write_text(NET.replace(old, new, 1).replace("train_lmdb", "gone_lmdb"))
    code, _, err = run(capsys, "train", "solver.prototxt", "--quiet")
    assert code == 1 and err.startswith("Error: ") and len(err.splitlines()) == 1, err[:300]
    assert re.search(r"\(100,00\d characters\)", err) and len(err) < 1000, err[:300]


def test_the_cli_cuts_a_long_file_name_in_an_os_error(capsys, tmp_path):
    from compress.cli import _one_line

    line = _one_line(PermissionError(13, "Permission denied", "y" * 100000))
    assert line.startswith("Permission denied: 'yyy") and "(100,000 characters)" in line and len(line) < 200

"""Reading solver.prototxt: every field, Caffe's net and path rules, and one clear line for bad input."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from compress.errors import CompressError
from compress.solver import SolverConfig, read_solver
from compress.solver.read import SOLVER_TYPES, field_lines
from converters.errors import ConversionError

# ../shared/reference/caffe_train/lenet/solver.prototxt (BVLC's lenet_solver with display 1, snapshot 0
# and a random_seed), copied so the test does not need ../shared.
LENET_SOLVER = """\
net: "train_val.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 1
max_iter: 2000
snapshot: 0
snapshot_prefix: "snap"
solver_mode: CPU
random_seed: 20261201
"""

NET = """name: "N"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        param { lr_mult: 1 } param { lr_mult: 2 } inner_product_param { num_output: 2 } }
"""


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A working directory holding train_val.prototxt (paths in a solver are relative to it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train_val.prototxt").write_text(NET)
    return tmp_path


def _solver(here: Path, text: str, name: str = "solver.prototxt") -> SolverConfig:
    path = here / name
    path.write_text(text)
    return read_solver(name)


def test_lenet_reference_solver(here):
    cfg = _solver(here, LENET_SOLVER)
    assert (cfg.type, cfg.base_lr, cfg.lr_policy, cfg.gamma, cfg.power) == ("SGD", 0.01, "inv", 0.0001, 0.75)
    assert (cfg.momentum, cfg.weight_decay, cfg.regularization_type) == (0.9, 0.0005, "L2")
    assert (cfg.max_iter, cfg.iter_size, cfg.clip_gradients, cfg.stepsize) == (2000, 1, -1.0, None)
    assert (cfg.test_iter, cfg.test_interval, cfg.test_initialization, cfg.test_compute_loss) == (
        (100,), 500, True, False)
    assert (cfg.display, cfg.average_loss, cfg.snapshot, cfg.snapshot_prefix, cfg.snapshot_after_train) == (
        1, 1, 0, "snap", True)
    assert (cfg.random_seed, cfg.solver_mode, cfg.momentum2, cfg.delta, cfg.rms_decay) == (
        20261201, "CPU", 0.999, 1e-8, 0.99)
    train, (test,) = cfg.train_net, cfg.test_nets
    assert (train.field, train.path, train.phase) == ("net", "train_val.prototxt", "TRAIN")
    assert (test.source, test.phase, test.test_iter) == ("net file: train_val.prototxt", "TEST", 100)
    assert [layer.name for layer in train.param.layer] == ["data", "fc"]
    assert cfg.where("lr_policy") == "solver.prototxt:7" and cfg.where("type") == "solver.prototxt"
    json.dumps(cfg.hyperparameters())


def test_caffe_train_loop_questions(here):
    cfg = _solver(here, LENET_SOLVER.replace("snapshot: 0", "snapshot: 1000"))
    assert [it for it in range(2001) if cfg.test_now(it)] == [0, 500, 1000, 1500, 2000]
    assert not replace(cfg, test_initialization=False).test_now(0)
    assert replace(cfg, test_initialization=False).test_at_end(0) and not cfg.test_at_end(1999)
    assert cfg.display_now(7) and not replace(cfg, display=0).display_now(0)
    assert cfg.snapshot_now(1000) and not cfg.snapshot_now(999)
    assert not cfg.snapshot_at_end(2000) and cfg.snapshot_at_end(1999)
    assert not replace(cfg, snapshot_after_train=False).snapshot_at_end(1999)


def test_paths_are_relative_to_the_working_directory_not_the_solver(here):
    (here / "sub").mkdir()
    (here / "sub" / "net.prototxt").write_text(NET)
    (here / "sub" / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    with pytest.raises(CompressError) as e:
        read_solver("sub/solver.prototxt")
    msg = str(e.value)
    assert msg.startswith("sub/solver.prototxt:1: net: file 'net.prototxt' not found (working directory ")
    assert "it exists as sub/net.prototxt" in msg
    (here / "sub" / "solver.prototxt").write_text('net: "sub/net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    assert read_solver("sub/solver.prototxt").train_net.path == "sub/net.prototxt"


def test_snapshot_prefix_as_caffe_upgrades_it(here):
    text = LENET_SOLVER.replace('snapshot_prefix: "snap"\n', "")
    assert _solver(here, text, "lenet_solver.prototxt").snapshot_prefix == "lenet_solver"
    (here / "snaps").mkdir()
    text = LENET_SOLVER.replace('"snap"', '"snaps"')
    assert _solver(here, text, "lenet_solver.prototxt").snapshot_prefix == str(Path("snaps") / "lenet_solver")


@pytest.mark.parametrize("old", SOLVER_TYPES)
def test_old_solver_type_enum(here, old):
    text = LENET_SOLVER if old not in ("ADAGRAD", "RMSPROP") else LENET_SOLVER.replace("momentum: 0.9\n", "")
    cfg = _solver(here, text + f"solver_type: {old}\n")
    assert cfg.type == SOLVER_TYPES[old]


@pytest.mark.parametrize("solver_type", ["AdaGrad", "RMSProp"])
def test_momentum_with_adagrad_or_rmsprop_is_refused_as_caffe_does(here, solver_type):
    with pytest.raises(CompressError, match=rf":\d+: momentum: Momentum cannot be used with {solver_type}"):
        _solver(here, LENET_SOLVER + f'type: "{solver_type}"\n')


@pytest.mark.parametrize("decay", ["1.0", "1.5"])
def test_rms_decay_outside_zero_one_is_refused(here, decay):
    text = LENET_SOLVER.replace("momentum: 0.9\n", "") + f'type: "RMSProp"\nrms_decay: {decay}\n'
    with pytest.raises(CompressError, match="rms_decay should lie between 0 and 1"):
        _solver(here, text)


def test_test_nets_in_caffes_order(here):
    (here / "t.prototxt").write_text(NET)
    text = ('net: "train_val.prototxt" base_lr: 0.1 lr_policy: "fixed" test_interval: 10\n'
            'test_net: "t.prototxt"\n'
            'test_net_param { name: "inline" layer { name: "d" type: "Input" top: "d" '
            'input_param { shape { dim: 1 } } } }\n'
            "test_iter: 1 test_iter: 2 test_iter: 3 test_iter: 4\n")
    cfg = _solver(here, text)
    assert [(n.source, n.test_iter) for n in cfg.test_nets] == [
        ("test_net_param", 1), ("test_net file: t.prototxt", 2), ("net file: train_val.prototxt", 3),
        ("net file: train_val.prototxt", 4)]
    assert cfg.test_nets[0].param.name == "inline" and all(n.phase == "TEST" for n in cfg.test_nets)


def test_net_states_merge_as_in_caffe(here):
    (here / "train_val.prototxt").write_text('state { level: 2 stage: "x" }\n' + NET)
    text = ('net: "train_val.prototxt" base_lr: 0.1 lr_policy: "fixed" test_iter: 1 test_interval: 10\n'
            'train_state { stage: "y" } test_state { stage: "t" }\n')
    (here / "solver.prototxt").write_text(text)
    cfg = read_solver("solver.prototxt", level=3, stages=("z",))
    train, test = cfg.train_net.param.state, cfg.test_nets[0].param.state
    assert (train.phase, train.level, list(train.stage)) == (0, 3, ["x", "y", "z"])  # caffe train --level 3
    assert (test.phase, test.level, list(test.stage)) == (1, 2, ["x", "t"])
    (here / "train_val.prototxt").write_text("state { phase: TEST }\n" + NET)
    # the net's own state outranks the solver's default phase
    assert read_solver("solver.prototxt").train_net.phase == "TEST"


def _edit(old: str, new: str) -> str:
    assert old in LENET_SOLVER
    return LENET_SOLVER.replace(old, new)


def _add(text: str) -> str:  # appended fields start at line 16
    return LENET_SOLVER + text


# case -> (solver text, the start of the one-line message)
BAD = {
    "unknown type": (_add('type: "Foo"\n'),
                     "solver.prototxt:16: type: unknown solver type 'Foo'; expected one of SGD, Nesterov"),
    "unknown policy": (_edit('"inv"', '"cosine"'),
                       "solver.prototxt:7: lr_policy: unknown policy 'cosine'; expected one of fixed, step"),
    "no policy": (_edit('lr_policy: "inv"\n', ""), "solver.prototxt: lr_policy: missing"),
    "no base_lr": (_edit("base_lr: 0.01\n", ""), "solver.prototxt: base_lr: missing"),
    "no net": (_edit('net: "train_val.prototxt"\n', ""),
               "solver.prototxt: the solver must name exactly one train net with one of net, net_param, "
               "train_net, train_net_param; found none"),
    "two nets": ('train_net: "train_val.prototxt"\n' + LENET_SOLVER,
                 "solver.prototxt:1: the solver must name exactly one train net with one of net, net_param, "
                 "train_net, train_net_param; found net, train_net"),
    "missing net file": (_edit("train_val", "nope"),
                         "solver.prototxt:1: net: file 'nope.prototxt' not found"),
    "test_iter, no test net": (_edit("net:", "train_net:"),
                               "solver.prototxt:2: test_iter: given 1 time but there is no test net: "
                               "with train_net, name each with test_net or test_net_param"),
    "test net, no test_iter": (_edit("test_iter: 100\n", 'test_net: "train_val.prototxt"\n'),
                               "solver.prototxt: test_iter: given 0 times for 1 test net "),
    "no test_interval": (_edit("test_interval: 500\n", ""),
                         "solver.prototxt: test_interval: must be > 0 when there are test nets"),
    "test_state count": (_add("test_state { stage: 'a' } test_state { stage: 'b' }\n"),
                         "solver.prototxt:16: test_state: given 2 times for 1 test net;"),
    "step without stepsize": (_edit('"inv"', '"step"'),
                              "solver.prototxt: stepsize: missing: lr_policy 'step' needs stepsize"),
    "multistep without stepvalue": (_edit('"inv"', '"multistep"'),
                                    "solver.prototxt: stepvalue: missing: lr_policy 'multistep' needs"),
    "inv without power": (_edit("power: 0.75\n", ""), "solver.prototxt: power: missing: lr_policy 'inv'"),
    "poly without max_iter": (_edit('"inv"', '"poly"').replace("max_iter: 2000\n", ""),
                              "solver.prototxt: max_iter: must be > 0 for lr_policy 'poly'"),
    "negative gamma": (_edit("gamma: 0.0001", "gamma: -1"),
                       "solver.prototxt:8: gamma: must be >= 0 for lr_policy 'inv', found -1.0"),
    "zero stepsize": (_edit('"inv"', '"step"') + "stepsize: 0\n",
                      "solver.prototxt:16: stepsize: must be > 0 for lr_policy 'step', found 0"),
    "negative base_lr": (_edit("base_lr: 0.01", "base_lr: -0.01"),
                         "solver.prototxt:4: base_lr: must be >= 0, found -0.01"),
    "negative weight_decay": (_edit("0.0005", "-0.0005"), "solver.prototxt:6: weight_decay: must be >= 0"),
    "negative momentum": (_edit("momentum: 0.9", "momentum: -0.9"), "solver.prototxt:5: momentum: must be"),
    "negative max_iter": (_edit("max_iter: 2000", "max_iter: -1"), "solver.prototxt:11: max_iter: must be"),
    "negative test_iter": (_edit("test_iter: 100", "test_iter: -1"), "solver.prototxt:2: test_iter: must be"),
    "zero iter_size": (_add("iter_size: 0\n"), "solver.prototxt:16: iter_size: must be >= 1, found 0"),
    "zero average_loss": (_add("average_loss: 0\n"), "solver.prototxt:16: average_loss: must be >= 1"),
    "HDF5 snapshots": (_add("snapshot_format: HDF5\n"),
                       "solver.prototxt:16: snapshot_format: HDF5 snapshots (Caffe's .caffemodel.h5 and "
                       ".solverstate.h5) are not supported"),
    "L3": (_add('regularization_type: "L3"\n'),
           "solver.prototxt:16: regularization_type: expected L2 or L1, found 'L3'"),
    "type and solver_type": (_add('type: "SGD"\nsolver_type: ADAM\n'),
                             "solver.prototxt:17: solver_type: the old solver_type enum and the type string"),
    "Adam momentum 1": (_edit("momentum: 0.9", "momentum: 1") + 'type: "Adam"\n',
                        "solver.prototxt:5: momentum: must be below 1 for Adam"),
    "missing weights": (_add('weights: "a.caffemodel, b.caffemodel"\n'),
                        "solver.prototxt:16: weights: file 'a.caffemodel' not found"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_solver_is_one_clear_line(here, case):
    text, expected = BAD[case]
    with pytest.raises(CompressError) as e:
        _solver(here, text)
    assert str(e.value).startswith(expected), str(e.value)
    assert "\n" not in str(e.value)


def test_weights_as_caffe_train_takes_them(here):
    (here / "a.caffemodel").write_bytes(b"")
    (here / "b.caffemodel").write_bytes(b"")
    text = _add('weights: "a.caffemodel, b.caffemodel"\n')
    assert _solver(here, text).weights == ("a.caffemodel", "b.caffemodel")
    assert read_solver("solver.prototxt", weights=["b.caffemodel"]).weights == ("b.caffemodel",)
    assert read_solver("solver.prototxt", weights=()).weights == ()  # --snapshot clears them
    (here / "solver.prototxt").write_text(_add('weights: "gone.caffemodel"\n'))  # replaced: not looked for
    assert read_solver("solver.prototxt", weights=["a.caffemodel"]).weights == ("a.caffemodel",)
    with pytest.raises(CompressError, match="solver.prototxt:16: weights: file 'gone.caffemodel' not found"):
        read_solver("solver.prototxt")
    with pytest.raises(CompressError, match="--weights: file 'c.caffemodel' not found"):
        read_solver("solver.prototxt", weights=["c.caffemodel"])


def test_syntax_errors_and_unknown_fields_come_with_line_and_column(here):
    with pytest.raises(ConversionError, match=r"^solver\.prototxt:3:\d+: "):
        _solver(here, 'net: "train_val.prototxt"\nbase_lr: 0.01\nlr_policy: "inv\n')
    with pytest.raises(ConversionError, match=r"^solver\.prototxt:2:1: unknown field 'admm_rho' in Solver"):
        _solver(here, 'net: "train_val.prototxt"\nadmm_rho: 0.01\n')


def test_python_built_configs_are_validated_too():
    cfg = SolverConfig(base_lr=0.01, lr_policy="fixed")
    assert cfg.train_net is None and cfg.max_iter == 0
    with pytest.raises(CompressError, match=r"^<solver>: base_lr: expected a number, found '0.01'"):
        SolverConfig(base_lr="0.01", lr_policy="fixed")
    with pytest.raises(CompressError, match="iter_size: expected an integer, found True"):
        replace(cfg, iter_size=True)
    with pytest.raises(CompressError, match="momentum: expected a number, found nan"):
        replace(cfg, momentum=float("nan"))
    with pytest.raises(CompressError, match=r"stepvalue: expected integers, found \[1.5\]"):
        replace(cfg, lr_policy="multistep", gamma=0.1, stepvalue=(1.5,))
    with pytest.raises(CompressError, match="max_iter: must be >= 0"):
        replace(cfg, max_iter=-5)


def test_field_lines_skip_nested_fields_strings_and_comments():
    text = ('# base_lr: 1 in a comment\nnet_param {\n  name: "x"\n  layer { type: "a:b" }\n}\n'
            'base_lr: 0.1 lr_policy: "fixed"  # gamma: 2\ntype: "SGD"\n')
    assert field_lines(text) == {"net_param": 2, "base_lr": 6, "lr_policy": 6, "type": 7}

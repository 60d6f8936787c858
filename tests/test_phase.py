"""Phase nets (``converters/caffe/phase.py``) and learnable blobs (``converters/caffe/params.py``): Caffe's
``Net::Init`` filtering, loss weights, outputs, weight sharing, ``ParamSpec`` multipliers, fillers,
trained blobs, the deploy definition; and the real Caffe LeNet run of ``../shared/reference/caffe_train``
when present (the ``caffe_lenet`` fixture of ``tests/conftest.py``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from converters import caffe
from converters.caffe.params import copy_trained_layers, param_specs
from converters.caffe.phase import build_phase_net
from converters.caffe.proto import caffe_pb2
from converters.caffe.prototxt import parse_net_text, read_net_text
from converters.caffe.reader import read_caffemodel
from converters.errors import ConversionError

TRAIN_VAL = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "train_lmdb" batch_size: 4 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "test_lmdb" batch_size: 3 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" param { lr_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
SHAPES = {"TRAIN": {"data": (4, 2, 5, 5)}, "TEST": {"data": (3, 2, 5, 5)}}


def definition(text: str = TRAIN_VAL):
    return parse_net_text(text, filename="<test>")


def phase_nets(text: str = TRAIN_VAL, seed: int = 0, **kw):
    net = definition(text)
    g = torch.Generator().manual_seed(seed)
    train = build_phase_net(net, "TRAIN", input_shapes=SHAPES["TRAIN"], generator=g, **kw)
    test = build_phase_net(net, "TEST", input_shapes=SHAPES["TEST"], share_with=train, generator=g, **kw)
    return train, test


def batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(n, 2, 5, 5, generator=g),
            "label": torch.randint(0, 4, (n,), generator=g).float()}


# -- structure ------------------------------------------------------------------------------------------

def test_phase_nets_inputs_outputs_and_modes():
    train, test = phase_nets()
    assert train.inputs == {"data": (4, 2, 5, 5), "label": (4,)} and test.inputs["label"] == (3,)
    assert [n.name for n in train.nodes] == ["conv", "bn", "scale", "relu", "drop", "ip", "loss"]
    assert train.outputs == ["loss"] and test.outputs == ["accuracy", "loss"]  # Caffe's (sorted) order
    assert train.training and not test.training and train.phase == "TRAIN" and test.phase == "TEST"
    out = test.run(batch(3))
    assert set(out.outputs) == {"accuracy", "loss"} and out.objective.item() == out.outputs["loss"].item()


def test_deploy_netdef_from_train_val():
    train, test = phase_nets()
    deploy = parse_net_text(test.netdef, filename="<netdef>")
    assert [(layer.name, layer.type) for layer in deploy.layer] == [
        ("data", "Input"), ("conv", "Convolution"), ("bn", "BatchNorm"), ("scale", "Scale"), ("relu", "ReLU"),
        ("drop", "Dropout"), ("ip", "InnerProduct")]
    assert list(deploy.layer[0].top) == ["data"]
    assert list(deploy.layer[0].input_param.shape[0].dim) == [3, 2, 5, 5]  # the TEST batch
    assert not any(layer.include or layer.exclude for layer in deploy.layer)
    train_deploy = parse_net_text(train.netdef, filename="<netdef>")
    assert list(train_deploy.layer[0].input_param.shape[0].dim) == [4, 2, 5, 5]


def test_include_exclude_levels_and_stages():
    text = """
    name: "rules"
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "a" type: "ReLU" bottom: "x" top: "a" include { phase: TEST stage: "s1" } }
    layer { name: "b" type: "ReLU" bottom: "x" top: "b" exclude { min_level: 2 } }
    layer { name: "c" type: "ReLU" bottom: "x" top: "c"
            include { not_stage: "s1" } include { max_level: -1 } }
    layer { name: "d" type: "ReLU" bottom: "x" top: "d" include { stage: "s1" stage: "s2" } }
    """
    def names(phase, **state):
        st = caffe_pb2.NetState(**state)
        return [n.name for n in build_phase_net(definition(text), phase, state=st).nodes]

    assert names("TEST") == ["b", "c"]
    assert names("TEST", stage=["s1"]) == ["a", "b"]
    assert names("TRAIN", stage=["s1"]) == ["b"]
    assert names("TEST", stage=["s1"], level=2) == ["a"]
    assert names("TEST", stage=["s1", "s2"], level=-1) == ["a", "b", "c", "d"]
    # the definition's own state is merged with the one given (stages add up, as protobuf merges)
    net = definition(text)
    net.state.stage.append("s2")
    assert [n.name for n in build_phase_net(net, "TEST", state=caffe_pb2.NetState(stage=["s1"])).nodes] == \
        ["a", "b", "d"]
    with pytest.raises(ConversionError, match="'e'.*either include rules or exclude rules"):
        build_phase_net(definition(text + 'layer { name: "e" type: "ReLU" bottom: "x" top: "e" '
                                          'include { phase: TEST } exclude { phase: TRAIN } }'), "TEST")


# -- objective and outputs -------------------------------------------------------------------------------

LOSSES = """
name: "losses"
layer { name: "in" type: "Input" top: "x" top: "y" top: "t"
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" loss_weight: 2
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "softmax" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "l1" loss_weight: 0.5 }
layer { name: "euclid" type: "EuclideanLoss" bottom: "ip" bottom: "t" top: "l2" }
layer { name: "auto" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" }
"""


def test_objective_sums_weighted_tops_when_each_layer_runs():
    net = build_phase_net(definition(LOSSES), "TRAIN", generator=torch.Generator().manual_seed(1))
    feeds = {"x": torch.randn(2, 3), "y": torch.tensor([0.0, 2.0]), "t": torch.randn(2, 3)}
    out = net.run(feeds)
    blobs = net.layer("ip")(feeds["x"])  # before the in-place ReLU: Caffe counts the top as ip produced it
    relu = blobs.clamp_min(0)
    l1 = net.layer("softmax")(relu, feeds["y"])
    l2 = net.layer("euclid")(relu, feeds["t"])
    want = 2 * blobs.sum() + 0.5 * l1 + l2 + l1  # the automatic top of "auto" has weight 1
    assert out.objective.item() == pytest.approx(want.item(), rel=1e-6)
    assert sorted(out.outputs) == ["l1", "l2"]  # the automatic top is no output, ip is consumed
    assert net.loss_weights == {"ip": ((0, 2.0),), "softmax": ((0, 0.5),), "euclid": ((0, 1.0),),
                                "auto": ((0, 1.0),)}
    out.objective.backward()
    assert net.layer("ip").weight.grad is not None


@pytest.mark.parametrize("extra,message", [
    ('layer { name: "two" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "l" top: "p" }',
     r"'two'.*loss_weight must be unspecified or given once per top"),
    ('layer { name: "relu2" type: "ReLU" bottom: "x" top: "r" loss_weight: 1 loss_weight: 2 }',
     r"'relu2'.*2 weight\(s\)"),
    ('layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "y" top: "a" loss_weight: 1 }',
     r"'acc'.*cannot carry a loss_weight"),
])
def test_loss_weight_errors(extra, message):
    with pytest.raises(ConversionError, match=message):
        build_phase_net(definition(LOSSES + extra), "TRAIN")


def test_two_top_softmax_loss_with_weights_per_top():
    two = ('layer { name: "two" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "l3" top: "prob" '
           'loss_weight: 1 loss_weight: 0 }')
    net = build_phase_net(definition(LOSSES + two), "TRAIN")
    assert net.loss_weights["two"] == ((0, 1.0),)
    out = net.run({"x": torch.randn(2, 3), "y": torch.zeros(2), "t": torch.zeros(2, 3)})
    assert out.outputs["prob"].shape == (2, 3)


def test_an_unused_label_is_an_output_of_the_test_net():
    # Caffe's available blobs include the data layer's tops: a TEST net whose loss is TRAIN-only shows
    # its label.
    accuracy = TRAIN_VAL[TRAIN_VAL.index('layer { name: "accuracy"'):TRAIN_VAL.index('layer { name: "loss"')]
    text = TRAIN_VAL.replace(accuracy, "").replace('top: "loss" }', 'top: "loss" include { phase: TRAIN } }')
    net = build_phase_net(definition(text), "TEST", input_shapes=SHAPES["TEST"])
    assert net.outputs == ["ip", "label"]


# -- phase behaviour -------------------------------------------------------------------------------------

def test_train_net_masks_and_updates_statistics_test_net_does_not():
    train, test = phase_nets()
    feeds = batch(4)
    a, b = train.run(feeds).outputs["loss"], train.run(feeds).outputs["loss"]
    assert a.item() != b.item()  # dropout masks differ between passes
    bn = train.layer("bn")
    assert bn.scale_factor.item() == pytest.approx(1 + 0.999)  # two TRAIN passes: s = (0 * f + 1) * f + 1
    with torch.no_grad():
        c, d = test.run(batch(3)).outputs["loss"], test.run(batch(3)).outputs["loss"]
    assert c.item() == d.item() and bn.scale_factor.item() == pytest.approx(1.999)
    assert test.layer("bn").scale_factor is bn.scale_factor  # the TEST net reads the TRAIN net's statistics


def test_test_net_with_explicit_batch_statistics_updates_the_shared_blobs():
    text = TRAIN_VAL.replace('type: "BatchNorm" bottom: "conv" top: "conv" }',
                             'type: "BatchNorm" bottom: "conv" top: "conv" '
                             'batch_norm_param { use_global_stats: false } }')
    train, test = phase_nets(text)
    with torch.no_grad():
        test.run(batch(3))
    assert train.layer("bn").scale_factor.item() == 1.0  # Caffe's TEST forward updated the shared blobs


# -- shared weights and ParamSpec --------------------------------------------------------------------

def test_test_net_shares_the_train_net_parameters():
    train, test = phase_nets()
    for name in ("conv", "scale", "ip"):
        for p, q in zip(train.layer(name).parameters(), test.layer(name).parameters(), strict=True):
            assert p is q
    feeds = batch(3)
    with torch.no_grad():
        before = test.run(feeds).outputs["loss"].item()
        train.layer("scale").weight.mul_(3.0)  # an in-place solver step shows in the TEST net
        after = test.run(feeds).outputs["loss"].item()
    assert before != after
    train.layer("ip").weight = nn.Parameter(torch.zeros(4, 27))  # rebinding too: Caffe shares again per test
    with torch.no_grad():
        out = test.run(feeds)
    assert test.layer("ip").weight is train.layer("ip").weight
    assert out.outputs["loss"].item() == pytest.approx(np.log(4), rel=1e-6)


def test_param_specs_multipliers_and_coverage():
    train, _ = phase_nets()
    specs = param_specs(train)
    table = [(s.name, s.blob, s.lr_mult, s.decay_mult) for s in specs]
    assert table == [("conv", 0, 1.0, 1.0), ("conv", 1, 2.0, 0.0), ("bn", 0, 0.0, 1.0), ("bn", 1, 0.0, 1.0),
                     ("bn", 2, 0.0, 1.0), ("scale", 0, 1.0, 1.0), ("scale", 1, 1.0, 1.0), ("ip", 0, 0.0, 1.0),
                     ("ip", 1, 1.0, 1.0)]  # no param entry for the bias: 1, 1
    params = {id(p) for p in train.parameters()}
    assert params == {id(s.param) for s in specs if isinstance(s.param, nn.Parameter)}
    assert [s.param for s in specs[2:5]] == [train.layer("bn").mean_sum, train.layer("bn").var_sum,
                                             train.layer("bn").scale_factor]
    assert not train.layer("ip").weight.requires_grad  # lr_mult 0: Caffe computes no diff
    assert train.layer("conv").weight.requires_grad


SHARED = """
name: "shared"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } param { lr_mult: 2 }
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" lr_mult: 3 decay_mult: 0 }
        inner_product_param { num_output: 3 } }
"""


def test_params_shared_by_name():
    net = build_phase_net(definition(SHARED), "TRAIN")
    assert net.layer("a").weight is net.layer("b").weight
    assert net.layer("a").bias is not net.layer("b").bias
    table = [(s.name, s.blob, s.lr_mult, s.decay_mult, s.shared_name, s.shared_by) for s in param_specs(net)]
    assert table == [("a", 0, 3.0, 0.0, "w", ("b",)), ("a", 1, 2.0, 1.0, "", ()), ("b", 1, 1.0, 1.0, "", ())]
    assert len(list(net.parameters())) == 3


@pytest.mark.parametrize("old,new,message", [
    ('param { name: "w" } param { lr_mult: 2 }', 'param { name: "w" lr_mult: 1 } param { lr_mult: 2 }',
     r"'b'.*shared param 'w' has mismatched lr_mult \(3.0; 1.0"),
    ("inner_product_param { num_output: 3 } }", "inner_product_param { num_output: 4 } }",
     r"'b'.*cannot share param 'w' owned by layer 'a': shape mismatch"),
    ('param { name: "w" lr_mult: 3', 'param { name: "w" share_mode: PERMISSIVE lr_mult: 3', None),
])
def test_param_sharing_checks(old, new, message):
    text = SHARED.replace(old, new, 1)
    assert text != SHARED
    if message is None:
        assert param_specs(build_phase_net(definition(text), "TRAIN"))[0].lr_mult == 3.0
    else:
        with pytest.raises(ConversionError, match=message):
            build_phase_net(definition(text), "TRAIN")


def test_param_specs_of_a_deploy_net_read_its_netdef():
    deploy = caffe.load(definition(), input_shapes=SHAPES["TEST"])  # the builder's deploy net, no phase net
    assert [(s.name, s.blob, s.lr_mult, s.decay_mult) for s in param_specs(deploy)][:2] == \
        [("conv", 0, 1.0, 1.0), ("conv", 1, 2.0, 0.0)]
    with pytest.raises(ConversionError, match="'b': blob 0 should share param 'w' with layer 'a'"):
        param_specs(caffe.load(definition(SHARED)))  # the deploy builder does not share by name


def test_batchnorm_statistics_cannot_be_learned():
    text = TRAIN_VAL.replace('type: "BatchNorm" bottom: "conv" top: "conv" }',
                             'type: "BatchNorm" bottom: "conv" top: "conv" param { lr_mult: 0 } param { } }')
    with pytest.raises(ConversionError, match=r"'bn' \(BatchNorm\): blob 1 has lr_mult 1"):
        phase_nets(text)


# -- weights -----------------------------------------------------------------------------------------------

def test_fillers_are_repeatable_with_a_seeded_generator():
    a, _ = phase_nets(seed=5)
    b, _ = phase_nets(seed=5)
    c, _ = phase_nets(seed=6)
    assert torch.equal(a.layer("conv").weight, b.layer("conv").weight)
    assert not torch.equal(a.layer("conv").weight, c.layer("conv").weight)
    bound = float(np.sqrt(np.float32(3) / np.float32(2 * 3 * 3)))  # xavier: fan_in = 18
    assert a.layer("conv").weight.abs().max() <= bound
    assert torch.all(a.layer("conv").bias == torch.tensor(0.1))
    assert torch.equal(a.layer("scale").weight, torch.ones(3)) and not a.layer("scale").bias.any()
    assert not a.layer("bn").mean_sum.any()


def test_unnamed_weight_filler_is_caffes_constant_zero():
    text = SHARED.replace('param { name: "w" lr_mult: 3 decay_mult: 0 }', '')
    net = build_phase_net(definition(text), "TRAIN")
    assert not net.layer("b").weight.any() and not net.layer("b").bias.any()


def test_trained_blobs_are_copied_by_layer_name():
    rng = np.random.default_rng(0)
    conv = [rng.normal(size=(3, 2, 3, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    blobs = {"conv": conv, "loss": [], "gone": [np.zeros(2, np.float32)]}
    train, test = phase_nets(blobs=blobs)
    assert np.array_equal(train.layer("conv").weight.detach().numpy(), conv[0])
    assert train.layer("conv").weight is test.layer("conv").weight
    assert train.build_report.ignored == ["gone"]
    assert train.layer("ip").weight.abs().sum() > 0  # not covered: filled (gaussian)
    with pytest.raises(ConversionError, match=r"'conv': cannot copy param 0 weights.*\[3, 2, 3, 4\].*rename"):
        copy_trained_layers(train, {"conv": [np.zeros((3, 2, 3, 4), np.float32), conv[1]]})
    with pytest.raises(ConversionError, match=r"'conv': incompatible number of blobs"):
        copy_trained_layers(train, {"conv": conv[:1]})


def test_save_and_reload_through_caffemodel(tmp_path):
    train, test = phase_nets(seed=3)
    train.run(batch(4))  # moves the BatchNorm statistics
    caffe.save(train, tmp_path / "t.caffemodel", prototxt=tmp_path / "deploy.prototxt")
    deploy = caffe.load(tmp_path / "deploy.prototxt", tmp_path / "t.caffemodel")
    feeds = batch(3, seed=1)
    with torch.no_grad():
        want = test.run(feeds).outputs
        got = deploy(feeds["data"])
    assert torch.equal(got, test.forward_blobs(**feeds)["ip"])
    again = build_phase_net(definition(), "TEST", input_shapes=SHAPES["TEST"],
                            blobs=read_caffemodel(tmp_path / "t.caffemodel").blobs)
    with torch.no_grad():
        assert again.run(feeds).outputs["loss"].item() == want["loss"].item()


# -- the real Caffe LeNet run (shared/reference/caffe_train/lenet), when present -----------------------

def lenet(ref_dir):
    from compress.data.mnist import mnist_arrays

    net = read_net_text(ref_dir / "train_val.prototxt")
    blobs = read_caffemodel(ref_dir / "init.caffemodel").blobs
    train = build_phase_net(net, "TRAIN", blobs=blobs, input_shapes={"data": (64, 1, 28, 28)})
    test = build_phase_net(net, "TEST", blobs=blobs, input_shapes={"data": (100, 1, 28, 28)},
                           share_with=train)
    ref = json.loads((ref_dir / "reference.json").read_text())
    x, y, x_test, y_test = mnist_arrays()
    return train, test, ref, (x, y, x_test, y_test)


def caffe_data(x: torch.Tensor) -> torch.Tensor:
    """What Caffe's Data layer gives for the LMDB of these images: uint8 pixels times scale 1/256."""
    return torch.round(x * 256).to(torch.uint8).float() * 0.00390625


def test_lenet_init_weights_load_by_name_and_save_back(tmp_path, caffe_lenet):
    train, _, _, _ = lenet(caffe_lenet)
    caffe.save(train, tmp_path / "lenet.caffemodel")
    saved = read_caffemodel(tmp_path / "lenet.caffemodel").blobs
    init = read_caffemodel(caffe_lenet / "init.caffemodel").blobs
    assert sorted(saved) == sorted(init)
    for name, arrays in init.items():
        for want, got in zip(arrays, saved[name], strict=True):
            assert np.array_equal(got.reshape(want.shape), want)


def test_lenet_test_outputs_at_iteration_0_match_caffe(caffe_lenet):
    train, test, ref, (_, _, x_test, y_test) = lenet(caffe_lenet)
    acc = loss = 0.0
    with torch.no_grad():
        for i in range(100):  # test_iter 100 batches of 100, averaged per batch as Solver::Test does
            out = test.run({"data": caffe_data(x_test[i * 100:(i + 1) * 100]),
                            "label": y_test[i * 100:(i + 1) * 100].float()})
            acc += out.outputs["accuracy"].item() / 100
            loss += out.outputs["loss"].item() / 100
    assert acc == pytest.approx(ref["test"]["0"]["accuracy"], abs=1e-6)
    assert loss == pytest.approx(ref["test"]["0"]["loss"], rel=1e-4)


def test_lenet_first_losses_and_weights_after_20_sgd_iterations_match_caffe(caffe_lenet):
    # The net's objective and gradients, driven by a transcription of Caffe's SGD update (sgd_solver.cpp:
    # diff += weight_decay * decay_mult * w; v = momentum * v + lr * lr_mult * diff; w -= v), with the
    # reference solver's settings: base_lr 0.01, momentum 0.9, weight_decay 5e-4, inv(gamma 1e-4, power 0.75).
    train, _, ref, (x, y, _, _) = lenet(caffe_lenet)
    specs = param_specs(train)
    history = [torch.zeros_like(s.param) for s in specs]
    for it in range(20):
        rows = slice(it * 64, (it + 1) * 64)  # Caffe reads the LMDB in order: batch i is images 64i..64i+63
        out = train.run({"data": caffe_data(x[rows]), "label": y[rows].float()})
        assert out.objective.item() == pytest.approx(ref["loss"][str(it)], rel=1e-4)
        for s in specs:
            s.param.grad = None
        out.objective.backward()
        lr = 0.01 * (1 + 1e-4 * it) ** -0.75
        with torch.no_grad():
            for s, v in zip(specs, history, strict=True):
                v.mul_(0.9).add_(s.param.grad + 5e-4 * s.decay_mult * s.param, alpha=lr * s.lr_mult)
                s.param.sub_(v)
    after = read_caffemodel(caffe_lenet / "early_iter_20.caffemodel").blobs
    ours = caffe.caffe_blobs(train)
    for name, arrays in after.items():
        for i, want in enumerate(arrays):
            got = ours[name][i].reshape(want.shape)
            assert np.abs(got - want).max() / np.abs(want).max() < 1e-4, (name, i)


def test_test_net_follows_the_train_net_after_a_move():
    # nn.Module.to keeps Parameter objects but replaces buffers: the TEST net binds them again per run
    train, test = phase_nets()
    train.to(torch.float64)
    test.to(torch.float64)
    with torch.no_grad():
        test.run({k: v.double() for k, v in batch(3).items()})
    assert test.layer("bn").mean_sum is train.layer("bn").mean_sum
    assert test.layer("conv").weight is train.layer("conv").weight


@pytest.mark.parametrize("data,shapes,want", [
    ('type: "DummyData" top: "x" top: "y" dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 } }',
     {}, {"x": (2, 3), "y": (2,)}),
    ('type: "DummyData" top: "x" top: "y" '
     'dummy_data_param { num: 2 channels: 3 channels: 1 height: 1 width: 1 }',
     {}, {"x": (2, 3, 1, 1), "y": (2, 1, 1, 1)}),
    ('type: "MemoryData" top: "x" top: "y" '
     'memory_data_param { batch_size: 2 channels: 3 height: 1 width: 1 }',
     {}, {"x": (2, 3, 1, 1), "y": (2,)}),
    ('type: "HDF5Data" top: "x" top: "y" hdf5_data_param { source: "list.txt" batch_size: 2 }',
     {"x": (2, 3), "y": (2, 5)}, {"x": (2, 3), "y": (2, 5)}),
])
def test_label_inputs_of_each_data_layer(data, shapes, want):
    text = f'layer {{ name: "data" {data} }} layer {{ name: "r" type: "ReLU" bottom: "x" top: "r" }}'
    assert build_phase_net(definition(text), "TRAIN", input_shapes=shapes).inputs == want


def test_an_unknown_label_shape_must_be_given():
    text = ('name: "d" layer { name: "data" type: "HDF5Data" top: "x" top: "y" '
            'hdf5_data_param { source: "list.txt" batch_size: 2 } }')
    with pytest.raises(ConversionError, match=r"'data' \(HDF5Data\): the shape of top 'y' cannot be known"):
        build_phase_net(definition(text), "TRAIN", input_shapes={"x": (2, 3)})

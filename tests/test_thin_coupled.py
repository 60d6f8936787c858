"""Thinning coupled sets and folding BatchNorm (issue 19, item 3): every zero set removed exactly through
BatchNorm/Scale, residual sums, concats, depthwise convolutions and flattens; the thinned and folded nets
save, export (ONNX, .caffemodel) and reload; what stays is said, with the reason."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.cli import main
from compress.layers import prunable_layers
from compress.prune.coupling import coupling_for
from compress.prune.methods.base import hard_prune
from compress.prune.targets import resolve_targets
from compress.structure.check import max_rel_err
from compress.structure.fold import fold_batchnorm
from compress.thin import thin
from converters import caffe
from converters.onnx.export import export_onnx
from tests.nets import BN_AFTER_RELU, RESIDUAL, STRUCTURED, _conv, _head, _input, _relu, random_net
from tests.test_export import run_ort


def prune(net, pcen=50.0):
    layers = prunable_layers(net)
    targets = resolve_targets(layers, pcen=pcen, sparsity="channel")
    hard_prune(layers, targets, coupling_for(net, layers, "in"))
    return net


def logits(net, x):
    blobs = net.forward_blobs(x)
    return {k: blobs[k] for k in ("fc", *net.outputs) if k in blobs}


def assert_same(a, b, seed=3):
    x = torch.randn(3, *tuple(a.inputs["data"])[1:], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ya, yb = logits(a, x), logits(b, x)
    for k in ya:
        assert ya[k].shape == yb[k].shape, k
        assert float((ya[k] - yb[k]).abs().max() / ya[k].abs().max()) <= 1e-5, k


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_thinning_removes_every_pruned_set_exactly(name, tmp_path):
    net = prune(random_net(STRUCTURED[name]))
    r = thin(net)
    assert r.removed and r.max_rel_err <= 1e-5
    assert_same(net, r.net)
    caffe.save(r.net, tmp_path / "t.caffemodel", prototxt=tmp_path / "t.prototxt")
    back = caffe.load(tmp_path / "t.prototxt", tmp_path / "t.caffemodel")
    assert_same(r.net, back)
    e = export_onnx(r.net, tmp_path / "t.onnx")
    x = np.random.default_rng(0).standard_normal((2, *tuple(net.inputs["data"])[1:])).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x))
    ref = ref[net.outputs[0]] if isinstance(ref, dict) else ref
    assert np.abs(run_ort(e.path, x) - ref.numpy()).max() <= 1e-5 * max(1.0, float(ref.abs().max()))
    for layer, (before, after) in r.removed.items():  # every zeroed filter went (and ignored ones)
        w = net.layer(layer).weight
        assert after <= before - int((w.reshape(before, -1) == 0).all(dim=1).sum()), layer


def test_what_stays_is_said_per_layer_with_the_layer_type():
    text = (_input() + _conv("conv1", "data", 4) + _relu("relu1", "conv1")
            + 'layer { name: "r" type: "Reshape" bottom: "conv1" top: "r" '
              'reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 8 } } }\n'
            + _conv("conv2", "r", 4) + _head(bottom="conv2"))
    net = random_net(text)
    with torch.no_grad():
        net.conv1.weight[1] = 0
    r = thin(net)
    assert r.removed == {} and r.skipped["conv1"] == ("its channels flow into r (Reshape); thinning through "
                                                      "it is not supported")


def test_consumers_that_disagree_are_named():
    net = random_net(STRUCTURED["prelu_two_heads"])
    with torch.no_grad():
        net.head1.weight[:, 3] = 0  # head1 drops channel 3 of conv2, head2 still reads it
    r = thin(net)
    assert r.removed == {} and "still read by head2" in r.skipped["conv2"]


def test_a_zero_filter_through_batchnorm_folds_its_constant_into_the_next_bias():
    net = random_net(BN_AFTER_RELU)
    with torch.no_grad():
        net.conv1.weight[2] = 0  # relu(bias) -> BN -> Scale: a constant map, read by an unpadded conv
        net.conv1.bias[2] = 0.3
    r = thin(net)
    assert r.removed == {"conv1": (8, 7)} and r.folded == {"conv2": 1}
    assert r.net.layer("late/bn").mean_sum.shape == (7,)
    assert_same(net, r.net)


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_fold_bn_is_exact_and_leaves_no_batchnorm_after_a_filter(name, tmp_path):
    net = random_net(STRUCTURED[name])
    f = fold_batchnorm(net)
    assert f.max_rel_err <= 1e-5 and max_rel_err(net, f.net) <= 1e-5
    follows = {n.name: n for n in f.net.nodes}
    for node in f.net.nodes:
        if node.type in ("BatchNorm", "Scale"):
            assert node.name in f.kept
    if name == "bn_after_relu":
        assert set(f.kept) == {"late/bn", "late/scale"} and f.folded == {"conv2": ["conv2/bn", "conv2/scale"]}
        assert "follows relu1 (ReLU)" in f.kept["late/bn"]
    else:
        assert not f.kept
    assert all(n.type not in ("BatchNorm", "Scale") for n in follows.values() if n.name not in f.kept)
    caffe.save(f.net, tmp_path / "f.caffemodel", prototxt=tmp_path / "f.prototxt")
    back = caffe.load(tmp_path / "f.prototxt", tmp_path / "f.caffemodel")
    assert max_rel_err(net, back) <= 1e-5


def test_fold_keeps_a_batchnorm_whose_input_is_read_twice_and_batch_statistics():
    text = RESIDUAL.replace('layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }',
                            'layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" '
                            'batch_norm_param { use_global_stats: false } }')
    f = fold_batchnorm(random_net(text))
    assert "batch statistics" in f.kept["conv1/bn"]
    assert "follows conv1/bn (BatchNorm)" in f.kept["conv1/scale"]
    split = (_input() + _conv("conv1", "data", 4, top="c1")
             + 'layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "b" }\n'
             + 'layer { name: "add" type: "Eltwise" bottom: "c1" bottom: "b" top: "feat" }\n' + _head())
    f = fold_batchnorm(random_net(split))
    assert "read by other layers too" in f.kept["bn"] and not f.folded


def test_fold_renames_a_not_in_place_chain_and_adds_the_bias():
    text = (_input() + _conv("conv1", "data", 4, top="c1", bias=False)
            + 'layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "b1" }\n'
            + 'layer { name: "sc" type: "Scale" bottom: "b1" top: "s1" scale_param { bias_term: true } }\n'
            + _relu("relu", "s1") + _head(bottom="s1"))
    net = random_net(text)
    f = fold_batchnorm(net)
    assert f.folded == {"conv1": ["bn", "sc"]} and f.net.conv1.bias is not None
    assert f.net.node("conv1").tops == ("s1",) and 'top: "s1"' in f.net.netdef
    assert "bias_term: true" in f.net.netdef
    assert max_rel_err(net, f.net) <= 1e-5


def _model_file(tmp_path, net, meta=None):
    from compress.modelfile import save_model

    path = tmp_path / "m.pt"
    save_model(str(path), net, meta or {"method": "magnitude"})
    return str(path)


def test_cli_export_thin_fold_bn(tmp_path, capsys):
    net = prune(random_net(RESIDUAL))
    model = _model_file(tmp_path, net)
    out = tmp_path / "t.onnx"
    assert main(["export", model, "-o", str(out), "--thin", "--fold-bn", "--align", "1"]) == 0
    text = capsys.readouterr().out
    assert "thinned conv1: 8 -> 4 filters" in text and "folded 8 BatchNorm/Scale layers into 4" in text
    assert "kept zero channels of conv1: the zero input channels read net input data" in text
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(run_ort(str(out), x) - ref).max() <= 1e-5
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert '"folded_bn"' in props["compress_meta"] and '"thin_refused"' in props["compress_meta"]
    assert not [n for n in onnx.load(str(out)).graph.node if n.op_type in ("Div", "Sqrt")]  # no BN arithmetic
    cm = tmp_path / "t.caffemodel"
    assert main(["export", model, "-o", str(cm), "--thin", "--fold-bn", "--align", "1"]) == 0
    back = caffe.load(tmp_path / "t.prototxt", cm)
    assert all(n.type != "BatchNorm" for n in back.nodes)
    with torch.no_grad():
        assert np.abs(back(torch.from_numpy(x)).numpy() - ref).max() <= 1e-5


def test_cli_fold_bn_is_a_no_op_without_batchnorm(tmp_path, capsys):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["export", "lenet", "-o", str(a), "--fold-bn"]) == 0
    assert main(["export", "lenet", "-o", str(b)]) == 0
    assert "folded" not in capsys.readouterr().out
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(run_ort(str(a), x), run_ort(str(b), x))


def test_the_report_says_what_thinning_keeps(tmp_path, capsys):
    net = prune(random_net(RESIDUAL))
    model = _model_file(tmp_path, net, {"method": "magnitude", "sparsity": "channel"})
    assert main(["report", model, "--per-layer"]) == 0
    text = capsys.readouterr().out
    assert "| conv2b | 0.432K | 0.108K | 25% | 4/8 | 3/6 |" in text  # filters and channels before/after
    assert "Thinning keeps zero channels of conv1: the zero input channels read net input data" in text
    assert main(["report", model, "--format", "json"]) == 0
    assert '"thin_kept": [' in capsys.readouterr().out

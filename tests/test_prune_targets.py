"""No silent layer deaths (issue 11, item 1): a layer is emptied only when its own target is 0.

Counts are worked out by hand from the layer shapes (LeNet: conv1 20x1x5x5, conv2 50x20x5x5, ip1 500x800,
ip2 10x500); the masks come from the real hard prune and ADMM projection, not from the count function.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.layers import prunable_layers
from compress.modelfile import load_model
from compress.prune.methods import method_class
from compress.prune.methods.base import hard_prune
from compress.prune.targets import Adjustment, Targets, render_adjustments, resolve_targets
from tests.nets import Tiny


@pytest.fixture(scope="module")
def lenet_layers():
    return prunable_layers(load_model("lenet").net)


def kept(masks):
    return {n: int(m.sum()) for n, m in masks.items()}


def copies(layers):
    """The layers on copies of their modules (hard_prune zeroes weights in place)."""
    return {n: type(layer)(n, copy.deepcopy(layer.module)) for n, layer in layers.items()}


def test_seed_channel_example_keeps_conv1(lenet_layers):
    """`compress prune lenet --method admm --pcen 60 --sparsity channel`: conv1 has one input channel and
    round(0.4 * 1) = 0; it used to keep 0 of its 500 weights. Now it keeps its one group."""
    layers = copies(lenet_layers)
    t = resolve_targets(layers, pcen=60, sparsity="channel", model_name="lenet")
    m = method_class("admm")(layers, t)
    m.init(None)
    assert int((m.Z["conv1"] != 0).sum()) == 500  # the ADMM projection keeps the layer too
    masks = hard_prune(layers, t)
    # conv1: 1 of 1 groups (clamped); conv2: 8 of 20 channels x 50 x 25; ip1: 320 of 800 x 500; ip2: 200 x 10
    assert kept(masks) == {"conv1": 500, "conv2": 8 * 1250, "ip1": 320 * 500, "ip2": 200 * 10}
    (adj,) = t.adjustments(layers)
    assert (adj.layer, adj.action, adj.kept, adj.total, adj.unit) == ("conv1", "clamped", 1, 1, "groups")
    line = render_adjustments([adj])
    assert line.startswith("conv1: clamped, keeps 1 of 1 groups (--pcen 60 keeps 0.4 x 1 groups, which")


def test_pcen_99_99_elem_keeps_at_least_one_weight_per_layer(lenet_layers):
    t = resolve_targets(lenet_layers, pcen=99.99)
    masks = hard_prune(copies(lenet_layers), t)
    # 500 * 1e-4 = 0.05 -> 0 -> 1; 25000 -> round(2.5) = 3; 400000 -> 40; 5000 * 1e-4 = 0.5 -> 1 (half up)
    assert kept(masks) == {"conv1": 1, "conv2": 3, "ip1": 40, "ip2": 1}
    assert [(a.layer, a.kept, a.total) for a in t.adjustments(lenet_layers)] == [("conv1", 1, 500)]
    masks = hard_prune(copies(lenet_layers), resolve_targets(lenet_layers, pcen=100))
    assert kept(masks) == {"conv1": 1, "conv2": 1, "ip1": 1, "ip2": 1}  # a global ratio never empties


def test_a_layer_is_emptied_only_when_its_own_target_is_zero(tmp_path, lenet_layers):
    (tmp_path / "t.yaml").write_text("conv1: 0\nconv2: 0.00001\n")
    t = resolve_targets(lenet_layers, targets=str(tmp_path / "t.yaml"), keep=["ip2=0"])
    masks = hard_prune(copies(lenet_layers), t)
    assert kept(masks) == {"conv1": 0, "conv2": 1, "ip2": 0}  # conv2: 0.25 rounds to 0, not asked: 1
    assert [(a.layer, a.action) for a in t.adjustments(lenet_layers)] == [("conv2", "clamped")]
    assert t.asks_empty("conv1") and not t.asks_empty("conv2") and not t.asks_empty("ip1")


def test_group_out_excludes_the_classifier_unless_named(lenet_layers):
    names = list(lenet_layers)
    t = resolve_targets(names, pcen=60, sparsity="channel", group="out")
    assert "ip2" not in t.keep and list(t.excluded) == ["ip2"]
    (adj,) = [a for a in t.adjustments(lenet_layers) if a.action == "excluded"]
    assert adj.layer == "ip2" and "--keep ip2=RATIO" in adj.line()
    preset = resolve_targets(names, targets="admm-71x", sparsity="channel", group="out", model_name="lenet")
    assert set(preset.keep) == {"conv1", "conv2", "ip1"} and "ip2" in preset.excluded
    named = resolve_targets(names, targets="admm-71x", keep=["ip2=0.5"], sparsity="channel", group="out",
                            model_name="lenet")
    assert named.keep["ip2"] == 0.5 and not named.excluded
    for sparsity, group in (("elem", "out"), ("channel", "in")):  # classes are safe in these modes
        assert "ip2" in resolve_targets(names, pcen=60, sparsity=sparsity, group=group).keep


def test_targets_reject_a_layer_both_targeted_and_excluded():
    from compress.errors import CompressError

    with pytest.raises(CompressError, match="both targeted and excluded"):
        Targets({"fc": 0.5}, excluded={"fc": "why"})


def test_render_adjustments_one_line_per_layer():
    adjs = [Adjustment("ip2", "excluded", "the last layer"),
            Adjustment("conv1", "clamped", "rounds to 0", 1, 1, "groups")]
    assert render_adjustments(adjs).splitlines() == ["ip2: excluded (the last layer)",
                                                     "conv1: clamped, keeps 1 of 1 groups (rounds to 0)"]
    assert render_adjustments([]) == ""
    assert adjs[1].as_dict() == {"layer": "conv1", "action": "clamped", "reason": "rounds to 0", "kept": 1,
                                 "total": 1, "unit": "groups"}


# ---------------------------------------------------------------- thresholds that empty a layer


def test_rvsm_threshold_that_zeroes_every_weight_keeps_the_largest_one():
    torch.manual_seed(0)
    net = Tiny()
    layers = prunable_layers(net)
    m = method_class("rvsm")(layers, None, beta=1e-3, lamb=10.0)  # threshold sqrt(2e4): u = 0 everywhere
    m.init(net)
    assert not any(u.any() for u in m.u.values())
    w = {n: layer.weight.detach().clone() for n, layer in layers.items()}
    masks = m.finalize_masks(net, None)
    for n, layer in layers.items():
        top = w[n].abs().flatten().argmax()
        assert int(masks[n].sum()) == 1 and bool(masks[n].flatten()[top])
        assert layer.weight.flatten()[top] == w[n].flatten()[top]  # the trained value, not a zero
    assert [(a.layer, a.action, a.kept, a.total) for a in m.adjustments] == [("conv1", "rescued", 1, 36),
                                                                            ("fc", "rescued", 1, 192)]
    clone = method_class("rvsm")(layers, None, beta=1e-3, lamb=10.0)
    clone.load_state_dict(m.state_dict())  # the record survives a resume
    assert clone.adjustments == m.adjustments


def test_rgsm_threshold_that_removes_every_group_keeps_the_largest_group():
    torch.manual_seed(0)
    net = Tiny()
    m = method_class("rgsm")(prunable_layers(net), None, beta1=1.0, lamb1=1e4)  # group threshold sqrt(2e4)
    m.init(net)
    w = net.fc.weight.detach().clone()
    masks = m.finalize_masks(net, None)  # no targets: the sparse u is the model
    best = int(w.norm(dim=0).argmax())
    assert masks["fc"].any(0).tolist() == [c == best for c in range(64)]  # the largest column survives
    assert torch.equal(net.fc.weight[:, best], w[:, best])
    assert [(a.layer, a.action, a.unit) for a in m.adjustments] == [("conv1", "rescued", "groups"),
                                                                    ("fc", "rescued", "groups")]


def test_rgsm_with_targets_keeps_exactly_the_target_groups_even_when_u_is_empty():
    """The hard prune ranks the groups by the trained w, so a threshold that zeroed more groups than the
    target removes does not leave the kept ones empty (before: 32 columns "kept", 31 of them zero)."""
    torch.manual_seed(0)
    net = Tiny()
    t = Targets({"conv1": 0.0, "fc": 0.5}, "channel", "in")  # conv1's own target is 0: it may go
    m = method_class("rgsm")(prunable_layers(net), t, beta1=1.0, lamb1=1e4)  # u is all zero
    m.init(net)
    w = net.fc.weight.detach().clone()
    masks = m.finalize_masks(net, t)
    top = set(w.norm(dim=0).argsort(descending=True)[:32].tolist())
    assert int(masks["conv1"].sum()) == 0 and not net.conv1.weight.any()
    assert (net.fc.weight != 0).any(0).tolist() == [c in top for c in range(64)]
    assert torch.equal(net.fc.weight[:, sorted(top)], w[:, sorted(top)]) and m.adjustments == ()


def test_finalize_leaves_layers_the_threshold_did_not_empty_alone():
    net = nn.Sequential()
    net.add_module("fc", nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[0.5, -2.0, 0.1], [3.0, 0.0, -0.2]]))
    m = method_class("rvsm")(prunable_layers(net), None, beta=1.0, lamb=0.5)  # hard threshold 1
    m.init(net)
    masks = m.finalize_masks(net, None)
    assert masks["fc"].tolist() == [[False, True, False], [True, False, False]] and m.adjustments == ()


def test_prunable_layers_of_a_caffe_net_are_named_by_caffe_names(tmp_path):
    from converters import caffe
    from tests.nets import TINY

    (tmp_path / "t.prototxt").write_text(TINY.replace('"conv1"', '"c.1"').replace('"ip1"', '"forward"'))
    net = caffe.load(tmp_path / "t.prototxt")
    layers = prunable_layers(net)
    assert list(layers) == ["c.1", "forward"]
    assert layers["c.1"].module is net.layer("c.1") and layers["forward"].module is net.layer("forward")

"""Channel methods prune coupled sets (issue 19, item 2): one decision per channel set in every layer that
holds a slice of it, ranked by one importance, counted by the owners' ratio, rounded to multiples of 8;
plain chains (LeNet, AlexNet) exactly as before."""
from __future__ import annotations

import copy

import pytest
import torch

from compress.layers import prunable_layers
from compress.prune.coupling import Coupling, coupling_for
from compress.prune.methods import method_class
from compress.prune.methods.base import hard_prune
from compress.prune.targets import Targets, resolve_targets
from compress.thin import thin
from compress.train.trainer import TrainConfig, train
from tests.nets import CONCAT, DEPTHWISE, RESIDUAL, RESIDUAL_PROJ, _conv, _head, _input, _relu, random_net
from tests.test_export import ALEXNET, build


def pruned(text, pcen=50.0, group="in", seed=0, **keep):
    net = random_net(text, seed)
    layers = prunable_layers(net)
    given = {"keep": [f"{k}={v}" for k, v in keep.items()]} if keep else {"pcen": pcen}
    t = resolve_targets(layers, sparsity="channel", group=group, **given)
    c = coupling_for(net, layers, group)
    return net, hard_prune(layers, t, c), c, t


def zero_rows(w):
    return (w.reshape(w.shape[0], -1) == 0).all(dim=1)


def zero_cols(w):
    return (w.transpose(0, 1).reshape(w.shape[1], -1) == 0).all(dim=1)


def test_a_residual_sum_loses_the_same_channels_everywhere():
    net, masks, _, _ = pruned(RESIDUAL)
    gone = zero_rows(net.conv1.weight)
    assert int(gone.sum()) == 4  # round(0.5 * 8): 8 channels are too few to round
    for rows in (net.conv2b.weight,):
        assert torch.equal(zero_rows(rows), gone)
    for cols in (net.conv2a.weight, net.conv3.weight):
        assert torch.equal(zero_cols(cols), gone)
    assert int(zero_rows(net.conv2a.weight).sum()) == 3 and torch.equal(zero_rows(net.conv2a.weight),
                                                                        zero_cols(net.conv2b.weight))
    assert int(zero_cols(net.fc.weight).sum()) == 6 and not zero_rows(net.fc.weight).any()  # classes stay
    r = thin(net)
    assert r.removed == {"conv1": (8, 4), "conv2b": (8, 4), "conv2a": (6, 3), "conv3": (12, 6)}
    assert list(r.skipped) == ["conv1"] and "net input data" in r.skipped["conv1"]  # its zeroed RGB channel
    assert r.net.layer("conv1/bn").mean_sum.shape == (4,) and r.net.layer("conv2b/scale").weight.shape == (4,)
    assert r.max_rel_err <= 1e-5


def test_the_importance_is_the_norm_of_all_slices_with_the_batchnorm_folded_in():
    net = random_net(RESIDUAL)
    layers = prunable_layers(net)
    c = Coupling(net, layers, "in")
    stage = next(cs for cs in c.spaces if cs.space.layers("out") == ["conv1", "conv2b"])
    weights = {n: layer.weight.detach() for n, layer in layers.items()}
    expected = torch.zeros(8)
    for name in ("conv1", "conv2b"):
        _, var = net.layer(f"{name}/bn").statistics()
        f = net.layer(f"{name}/scale").weight.abs() / (var + net.layer(f"{name}/bn").eps).sqrt()
        expected += weights[name].reshape(8, -1).square().sum(1) * f.square()
    for name in ("conv2a", "conv3"):
        expected += weights[name].square().sum(dim=(0, 2, 3))
    assert torch.allclose(c.scores(stage, weights), expected.detach(), rtol=1e-6)
    with torch.no_grad():  # a large filter whose gamma is 0 contributes nothing: it is the first to go
        net.conv1.weight[5] *= 100
        net.conv2b.weight[5] = 0
        net.layer("conv1/scale").weight[5] = 0
        net.conv2a.weight[:, 5] = 0
        net.conv3.weight[:, 5] = 0
    t = Targets({n: 7 / 8 for n in layers}, "channel")
    hard_prune(layers, t, c)
    assert zero_rows(net.conv1.weight).nonzero().flatten().tolist() == [5]


@pytest.mark.parametrize("width,counts", [(64, ((30, 48), (50, 32), (60, 32), (100, 16))),
                                          (40, ((30, 32), (50, 16), (60, 16), (100, 16))),
                                          (16, ((50, 16), (100, 16)))])
def test_counts_round_to_multiples_of_sixteen(width, counts):
    # 64 channels: 44.8 -> 48, 25.6 -> 32, 0 -> 1 -> 16; 40: 28 -> 32, 20 -> 16; 16: stays whole
    text = RESIDUAL.replace("num_output: 8 ", f"num_output: {width} ")
    for pcen, kept in counts:
        net, _, _, _ = pruned(text, pcen=pcen)
        assert int((~zero_rows(net.conv1.weight)).sum()) == kept, pcen
        assert int((~zero_rows(net.conv2a.weight)).sum()) == max(1, round((1 - pcen / 100) * 6))  # 6: exact


def test_a_shared_set_takes_the_largest_ratio_of_its_owners():
    net, _, _, _ = pruned(RESIDUAL, conv2a=0.25, conv3=0.75)  # --group in: the consumers own the sum's set
    assert int((~zero_rows(net.conv1.weight)).sum()) == 6  # max(0.25, 0.75) * 8
    net, _, _, _ = pruned(RESIDUAL, group="out", conv1=0.25, conv2b=0.5)  # --group out: the producers
    assert int((~zero_rows(net.conv1.weight)).sum()) == 4
    assert int((~zero_rows(net.conv2a.weight)).sum()) == 6  # not targeted as a producer: whole


def test_depthwise_and_projection_sets():
    net, _, _, _ = pruned(DEPTHWISE)
    gone = zero_rows(net.conv1.weight)
    assert int(gone.sum()) == 4 and torch.equal(zero_rows(net.dw.weight), gone)
    assert torch.equal(zero_cols(net.pw.weight), gone)
    assert int((~zero_rows(net.pw.weight)).sum()) == 16  # 32 -> 16, a multiple of 16
    r = thin(net)
    assert r.removed == {"conv1": (8, 4), "dw": (8, 4), "pw": (32, 16)}
    assert r.net.dw.groups == 4 and "group: 4" in r.net.netdef
    net, _, _, _ = pruned(RESIDUAL_PROJ)
    assert torch.equal(zero_rows(net.proj.weight), zero_rows(net.conv2b.weight))
    assert torch.equal(zero_rows(net.proj.weight), zero_cols(net.fc.weight))


def copies(layers):
    return {n: type(x)(n, copy.deepcopy(x.module)) for n, x in layers.items()}


def test_plain_chains_prune_exactly_as_before():
    from compress.modelfile import load_model

    for net, pcen in ((load_model("lenet").net, 60), (build(ALEXNET), 50)):
        for group in ("in", "out"):
            layers = prunable_layers(net)
            t = resolve_targets(layers, pcen=pcen, sparsity="channel", group=group)
            c = coupling_for(net, layers, group)
            assert all(c.legacy(n) for n in t.keep) and not c.spaces
            a = hard_prune(copies(layers), t)
            b = hard_prune(copies(layers), t, c)
            assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_sets_the_graph_cannot_follow_stay_whole_and_are_named():
    text = (_input() + _conv("conv1", "data", 4) + _relu("relu1", "conv1") + _conv("conv1b", "conv1", 4)
            + 'layer { name: "add" type: "Eltwise" bottom: "conv1" bottom: "conv1b" top: "add" }\n'
            + 'layer { name: "r" type: "Reshape" bottom: "add" top: "r" '
              'reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 8 } } }\n'
            + _conv("conv2", "r", 4) + _head(bottom="conv2"))
    net, _, c, t = pruned(text)
    assert not zero_rows(net.conv1.weight).any() and not zero_rows(net.conv1b.weight).any()
    (adj,) = [a for a in c.adjustments(t) if a.layer == "conv1b"]
    assert adj.action == "kept whole" and "r (Reshape)" in adj.reason
    lrn = (_input() + _conv("conv1", "data", 8) + _relu("relu1", "conv1")
           + 'layer { name: "norm" type: "LRN" bottom: "conv1" top: "norm" lrn_param { local_size: 3 } }\n'
           + _conv("a", "norm", 4) + _conv("b", "norm", 4)
           + 'layer { name: "ab" type: "Eltwise" bottom: "a" bottom: "b" top: "feat" }\n' + _head())
    net, _, c, t = pruned(lrn)  # two consumers after an across-channel LRN: no zero it could remove
    assert not zero_rows(net.conv1.weight).any()
    assert "across-channel LRN norm" in next(a.reason for a in c.adjustments(t) if a.layer == "a")
    net, _, c, t = pruned(CONCAT)  # the data is read by two convolutions: a coupled net input
    assert [a.layer for a in c.adjustments(t)] == ["conv1"]
    assert "net input data" in c.adjustments(t)[0].reason


def batches(net, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = tuple(net.inputs["data"])[1:]
    return [(torch.randn(4, *shape, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("name,hp", [("magnitude", {}), ("default", {"epochs": 1}),
                                     ("admm", {"admm_iters": 2, "epochs_per_iter": 1}),
                                     ("admm", {"admm_iters": 1, "progressive": True, "stages": 2,
                                               "stage_retrain": 1}),
                                     ("rgsm", {"epochs": 2, "lamb1": 0.05}),
                                     ("magnitude", {"rounds": 2, "round_epochs": 1})])
def test_every_channel_method_prunes_coupled_sets(name, hp):
    net = random_net(RESIDUAL_PROJ)
    layers = prunable_layers(net)
    t = resolve_targets(layers, pcen=50, sparsity="channel")
    m = method_class(name)(layers, t, **hp)
    data = batches(net)
    train(net, m, data, data, TrainConfig(lr=0.01, retrain_epochs=1))
    gone = zero_rows(net.proj.weight)
    assert int(gone.sum()) == 16  # the 32-channel sum keeps 16
    assert torch.equal(zero_rows(net.conv2b.weight), gone) and torch.equal(zero_cols(net.fc.weight), gone)
    assert torch.equal(zero_rows(net.conv1.weight), zero_cols(net.conv2a.weight))
    assert torch.equal(zero_rows(net.conv1.weight), zero_cols(net.proj.weight))
    r = thin(net)
    assert r.removed["proj"] == (32, 16) and r.removed["conv1"] == (8, 4) and r.max_rel_err <= 1e-5


def test_admm_projection_zeroes_whole_sets_in_z():
    net = random_net(RESIDUAL)
    layers = prunable_layers(net)
    m = method_class("admm")(layers, resolve_targets(layers, pcen=50, sparsity="channel"))
    m.init(net)
    assert torch.equal(zero_rows(m.Z["conv1"]), zero_rows(m.Z["conv2b"]))
    assert torch.equal(zero_rows(m.Z["conv1"]), zero_cols(m.Z["conv3"]))
    assert int(zero_rows(m.Z["conv1"]).sum()) == 4


def test_rgsm_penalty_counts_each_coupled_set_once():
    net = random_net(RESIDUAL)
    layers = prunable_layers(net)
    m = method_class("rgsm")(layers, None, lamb2=1.0, group="in")
    loss = m.extra_loss(net)
    c = m.coupling(net)
    weights = {n: x.weight for n, x in layers.items()}
    expected = sum(torch.sqrt(c.scores(cs, weights) + 1e-8).sum() for cs in c.spaces)
    expected = expected + (net.conv1.weight.square().sum(dim=(0, 2, 3)) + 1e-8).sqrt().sum()  # legacy
    assert torch.allclose(loss, expected)
    loss.backward()
    assert net.conv2b.weight.grad is not None and net.conv2b.weight.grad.abs().sum() > 0


class Interrupt(Exception):
    pass


class StopAt:
    """The batches, but raising at the start of epoch ``stop`` (0-based), like a killed run. A BatchNorm
    net's epoch reads the training data twice: the epoch's batches, then the BatchNorm recalibration
    before its test (``passes`` = 2)."""

    def __init__(self, batches, stop, passes=2):
        self.batches, self.stop, self.passes, self.reads = batches, stop, passes, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        if self.reads == self.stop * self.passes:
            raise Interrupt
        self.reads += 1
        return iter(self.batches)


@pytest.mark.parametrize("name,stop,hp", [("admm", 1, {"admm_iters": 2, "epochs_per_iter": 1}),
                                          ("admm", 3, {"admm_iters": 2, "epochs_per_iter": 1}),
                                          ("rgsm", 1, {"epochs": 2})])
def test_coupled_runs_resume_bit_for_bit(tmp_path, name, stop, hp):
    def run(seed, data, **cfg):
        torch.manual_seed(seed)
        net = random_net(RESIDUAL_PROJ, seed)
        layers = prunable_layers(net)
        m = method_class(name)(layers, resolve_targets(layers, pcen=50, sparsity="channel"), **hp)
        return net, lambda **kw: train(net, m, data, batches(net, seed=5), TrainConfig(
            lr=0.02, retrain_epochs=2, seed=3, **cfg), **kw)

    net_a, go = run(0, batches(random_net(RESIDUAL_PROJ)))
    go()
    ckpt = str(tmp_path / "run.ckpt")
    data = batches(random_net(RESIDUAL_PROJ))
    _, go = run(0, StopAt(data, stop), checkpoint=ckpt)
    with pytest.raises(Interrupt):
        go()
    net_c, go = run(7, data, checkpoint=ckpt)  # another init: everything comes from the checkpoint
    go(resume=ckpt)
    for (k, a), (_, c) in zip(net_a.state_dict().items(), net_c.state_dict().items(), strict=True):
        assert torch.equal(a, c), k

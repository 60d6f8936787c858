"""Each method's update against its formula on a tiny model; targets; the ADMM once-per-iteration rule."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError
from compress.layers import prunable_layers
from compress.prune import ops
from compress.prune.methods import available, method_class
from compress.prune.targets import Targets, parse_keep, resolve_targets
from compress.train.trainer import TrainConfig, train
from tests.nets import Tiny


def batches(n=4, bs=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n * bs, 1, 6, 6, generator=g), torch.randint(0, 3, (n * bs,), generator=g)
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n * bs, bs)]


def grad_f(net, x, y):
    """Gradient of the task loss alone, on a copy (independent of the method code)."""
    clone = Tiny()
    clone.load_state_dict(net.state_dict())
    F.cross_entropy(clone(x), y).backward()
    return {n: p.grad.clone() for n, p in clone.named_parameters()}


def one_step(net, method, x, y, lr):
    """The trainer's step order, spelled out: loss (+extra), backward, before_step, SGD, after_step."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss = F.cross_entropy(net(x), y)
    extra = method.extra_loss(net)
    (loss if extra is None else loss + extra).backward()
    method.before_step(net)
    opt.step()
    method.after_step(net)


# ------------------------------------------------------------------------------------- RVSM


@pytest.mark.parametrize("penalty", ["l0", "l1", "tl1"])
def test_rvsm_step_matches_formula(penalty):
    net = Tiny()
    beta, lamb, lr, a = 0.5, 2e-3, 0.1, 1.0
    m = method_class("rvsm")(prunable_layers(net), None, beta=beta, lamb=lamb, penalty=penalty, tl1_a=a)
    mu = lamb / beta
    prox = {"l0": lambda w: ops.hard_threshold(w, math.sqrt(2 * mu)),
            "l1": lambda w: ops.soft_threshold(w, mu),
            "tl1": lambda w: ops.tl1_threshold(w, mu, a)}[penalty]
    m.init(net)
    w0 = net.conv1.weight.detach().clone()
    u0 = prox(w0)
    assert torch.equal(m.u["conv1"], u0)
    x, y = batches()[0]
    g = grad_f(net, x, y)["conv1.weight"]
    one_step(net, m, x, y, lr)
    w1 = w0 - lr * g - lr * beta * (w0 - u0)
    assert torch.allclose(net.conv1.weight, w1, atol=1e-6)
    assert torch.allclose(m.u["conv1"], prox(net.conv1.weight.detach()))
    assert not m.u["conv1"].requires_grad


def test_rvsm_evaluates_u_and_restores_w():
    net = Tiny()
    m = method_class("rvsm")(prunable_layers(net), None, beta=1.0, lamb=0.02)  # threshold 0.2
    m.init(net)
    w = net.fc.weight.detach().clone()
    with m.eval_weights(net):
        assert torch.equal(net.fc.weight, m.u["fc"]) and (net.fc.weight == 0).any()
    assert torch.equal(net.fc.weight, w)
    masks = m.finalize_masks(net, None)
    assert torch.equal(net.fc.weight, m.u["fc"]) and torch.equal(masks["fc"], m.u["fc"] != 0)


# ------------------------------------------------------------------------------------- RGSM


def test_rgsm_group_lasso_and_group_threshold_by_hand():
    net = nn.Sequential()
    net.add_module("fc", nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[3.0, 0.0, 12.0], [4.0, 0.0, 5.0]]))  # column norms 5, 0, 13
    m = method_class("rgsm")(prunable_layers(net), None, beta1=1.0, lamb1=18.0, lamb2=0.1)  # thr 6
    m.init(net)
    assert m.u["fc"].tolist() == [[0.0, 0.0, 12.0], [0.0, 0.0, 5.0]]
    assert float(m.extra_loss(net).detach()) == pytest.approx(0.1 * (5 + 1e-4 + 13), rel=1e-6)
    m_out = method_class("rgsm")(prunable_layers(net), None, beta1=1.0, lamb1=18.0, group="out")
    m_out.init(net)  # row norms sqrt(153) = 12.4 (kept), sqrt(41) = 6.4 (kept)
    assert torch.equal(m_out.u["fc"], net.fc.weight.detach())


def test_rgsm_step_matches_formula():
    net = Tiny()
    beta1, lamb1, lamb2, lr = 0.5, 1e-3, 1e-2, 0.1
    m = method_class("rgsm")(prunable_layers(net), None, beta1=beta1, lamb1=lamb1, lamb2=lamb2)
    m.init(net)
    w0 = net.fc.weight.detach().clone()
    thr = math.sqrt(2 * lamb1 / beta1)
    u0 = ops.group_hard_threshold(w0, thr, dim=1)
    x, y = batches()[0]
    g = grad_f(net, x, y)["fc.weight"]
    norms = torch.sqrt(w0.pow(2).sum(0) + 1e-8)  # input-channel groups of a Linear = columns
    g_lasso = lamb2 * w0 / norms
    one_step(net, m, x, y, lr)
    w1 = w0 - lr * (g + g_lasso) - lr * beta1 * (w0 - u0)
    assert torch.allclose(net.fc.weight, w1, atol=1e-6)
    assert torch.equal(m.u["fc"], ops.group_hard_threshold(net.fc.weight.detach(), thr, dim=1))


# ------------------------------------------------------------------------------------- ADMM


def admm_by_hand():
    net = nn.Sequential()
    net.add_module("fc", nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[1.0, -3.0], [0.5, 2.0]]))
    layers = prunable_layers(net)
    m = method_class("admm")(layers, Targets({"fc": 0.5}), rho=0.1, rho_growth=2.0)
    m.init(net)
    return net, m


def test_admm_init_penalty_gradient_and_zu_updates_by_hand():
    net, m = admm_by_hand()
    assert m.Z["fc"].tolist() == [[0.0, -3.0], [0.0, 2.0]] and m.U["fc"].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    net.fc.weight.grad = torch.ones(2, 2)
    m.before_step(net)  # += rho (W - Z + U), once
    assert torch.allclose(net.fc.weight.grad, torch.tensor([[1.1, 1.0], [1.05, 1.0]]))
    m.end_iteration(net, 0)  # Z = Proj(W + 0) = Z; U = W - Z
    assert m.U["fc"].tolist() == [[1.0, 0.0], [0.5, 0.0]] and m.rho["fc"] == pytest.approx(0.2)
    m.end_iteration(net, 1)  # W + U = [[2, -3], [1, 2]]: keep -3 and the first 2 (tie, lowest index)
    assert m.Z["fc"].tolist() == [[2.0, -3.0], [0.0, 0.0]]
    assert m.U["fc"].tolist() == [[0.0, 0.0], [1.0, 2.0]]
    assert not m.Z["fc"].requires_grad and not m.U["fc"].requires_grad
    state = m.state_dict()
    _, m2 = admm_by_hand()
    m2.load_state_dict(state)
    assert torch.equal(m2.U["fc"], m.U["fc"]) and m2.k == 2 and m2.rho["fc"] == pytest.approx(0.4)


def test_admm_channel_projection_keeps_largest_groups():
    net, _ = admm_by_hand()  # column norms sqrt(1.25) and sqrt(13)
    m = method_class("admm")(prunable_layers(net), Targets({"fc": 0.5}, "channel", "in"), rho=0.1)
    m.init(net)
    assert m.Z["fc"].tolist() == [[0.0, -3.0], [0.0, 2.0]]


class SpyADMM(method_class("admm")):
    name = "admm"

    def init(self, model):
        super().init(model)
        self.calls, self.steps = [], 0

    def before_step(self, model, lr=None):
        self.steps += 1
        super().before_step(model, lr)

    def end_iteration(self, model, k):
        self.calls.append((k, self.Z["fc"].clone(), self.U["fc"].clone()))
        super().end_iteration(model, k)


def test_admm_updates_z_u_once_per_iteration_never_per_epoch():
    torch.manual_seed(0)
    net = Tiny()
    layers = prunable_layers(net)
    m = SpyADMM(layers, Targets({"conv1": 0.25, "fc": 0.1}), rho=0.05, admm_iters=2, epochs_per_iter=2)
    class Probe(list):  # records Z at the start of each epoch
        def __iter__(self):
            probes.append(m.Z["fc"].clone())
            return super().__iter__()

    probes = []
    data = Probe(batches(n=3))
    train(net, m, data, None, TrainConfig(lr=0.05))
    z0 = probes[0]
    assert [k for k, _, _ in m.calls] == [0, 1]
    assert m.steps == 2 * 2 * 3  # the penalty gradient is added once per step
    assert torch.equal(probes[1], z0)  # epoch 2 of iteration 1: Z untouched after epoch 1
    assert not torch.equal(probes[2], z0)  # iteration 2 starts with the updated Z
    assert torch.equal(m.calls[0][2], torch.zeros_like(z0))  # U starts at 0 ...
    assert m.calls[1][2].abs().sum() > 0  # ... and is carried over, not reset


# ------------------------------------------------------------------------------ every method


@pytest.mark.parametrize("name", available())
def test_every_method_hits_targets_exactly_and_keeps_zeros(name):
    torch.manual_seed(0)
    net = Tiny()
    layers = prunable_layers(net)
    sparsity = "channel" if name == "rgsm" else "elem"
    targets = Targets({"conv1": 0.5, "fc": 0.1}, sparsity, "out")
    m = method_class(name)(layers, targets, epochs=1, admm_iters=1, epochs_per_iter=1)
    res = train(net, m, batches(), batches(seed=2), TrainConfig(lr=0.05, retrain_epochs=2))
    if sparsity == "elem":
        assert int((net.conv1.weight != 0).sum()) == 18  # round(0.5 * 36)
        assert int((net.fc.weight != 0).sum()) == 19  # round(0.1 * 192) = round(19.2)
    else:  # out-filter groups: 2 of 4 conv filters, 1 of 3 fc rows (round(0.3) = 0, never emptied: 1)
        assert int((ops.group_norms(net.conv1.weight, 0) != 0).sum()) == 2
        assert int((ops.group_norms(net.fc.weight, 0) != 0).sum()) == 1
    for n, mask in res.masks.items():
        assert torch.equal(layers[n].weight != 0, mask)
        assert not layers[n].weight[~mask].any()
    assert [h["phase"] for h in res.history][-2:] == ["retrain", "retrain"]


def test_default_without_targets_does_not_prune():
    net = Tiny()
    m = method_class("default")(prunable_layers(net), None, epochs=1)
    res = train(net, m, batches(), None, TrainConfig(retrain_epochs=3))
    assert res.masks is None and res.epochs == 1 and bool((net.fc.weight != 0).all())


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(CompressError, match="available: .*admm"):
        method_class("obd")


# ----------------------------------------------------------------------------------- targets


def test_targets_validation_and_sources(tmp_path):
    layers = ["conv1", "conv2", "ip1", "ip2"]
    with pytest.raises(CompressError, match=r"conv1.*\[0, 1\].*1.5"):
        Targets({"conv1": 1.5})
    with pytest.raises(CompressError, match="must be a number"):
        Targets({"conv1": "lots"})
    with pytest.raises(CompressError, match="unknown layer.*conv9.*prunable layers: conv1, conv2, ip1, ip2"):
        resolve_targets(layers, keep=["conv9=0.1"])
    with pytest.raises(CompressError, match="LAYER=RATIO"):
        parse_keep(["conv1"])
    with pytest.raises(CompressError, match="not found"):
        resolve_targets(layers, targets=str(tmp_path / "missing.yaml"))
    with pytest.raises(CompressError, match="not both"):
        resolve_targets(layers, pcen=80, keep=["conv1=0.2"])
    preset = resolve_targets(layers, targets="admm-71x", model_name="lenet")
    assert preset.as_dict() == {"conv1": 0.2, "conv2": 0.08, "ip1": 0.009, "ip2": 0.07}
    (tmp_path / "t.yaml").write_text("keep:\n  conv1: 0.3\n  ip1: 0.01\n")
    (tmp_path / "t.json").write_text(json.dumps({"conv2": 0.5}))
    assert resolve_targets(layers, targets=str(tmp_path / "t.yaml"), keep=["ip1=0.02"]).as_dict() == \
        {"conv1": 0.3, "ip1": 0.02}
    assert resolve_targets(layers, targets=str(tmp_path / "t.json")).as_dict() == {"conv2": 0.5}
    assert resolve_targets(layers, pcen=80).as_dict() == pytest.approx({n: 0.2 for n in layers})
    assert resolve_targets(layers) is None


def test_alexnet_preset():
    t = resolve_targets(["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"],
                        targets="admm-21x")
    assert t.keep["fc6"] == 0.028 and t.keep["conv1"] == 0.81

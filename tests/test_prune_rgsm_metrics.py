"""RGSM logs the groups it removed per layer (issue 11, item 5), counted as its papers count channels:
groups of the sparse ``u`` whose L2 norm is below 1e-15."""
from __future__ import annotations

import json

import torch

from compress.layers import prunable_layers
from compress.prune.methods import method_class
from compress.train.progress import render_groups_removed, summary_line
from compress.train.trainer import TrainConfig, train
from tests.nets import Tiny


def test_groups_removed_counts_groups_of_u_below_1e_15():
    torch.manual_seed(0)
    net = Tiny()  # conv1: 1 input channel; fc: 64 input columns (--group in), 3 rows (--group out)
    layers = prunable_layers(net)
    m = method_class("rgsm")(layers, None, lamb1=0.0)  # threshold 0: u = w, nothing removed
    m.init(net)
    assert m.metrics() == {"groups_removed": {"conv1": [0, 1], "fc": [0, 64]}}
    m.u["fc"][:, [2, 5, 9]] = 0.0  # removed
    m.u["fc"][:, 11] = torch.tensor([1e-16, 0.0, 0.0])  # norm 1e-16 < 1e-15: removed, as the papers count
    m.u["fc"][:, 12] = torch.tensor([1e-14, 0.0, 0.0])  # norm 1e-14: kept
    m.u["conv1"].zero_()
    metrics = m.metrics()
    assert metrics == {"groups_removed": {"conv1": [1, 1], "fc": [4, 64]}}
    assert json.loads(json.dumps(metrics)) == metrics
    assert render_groups_removed(metrics) == "groups removed: conv1 1/1, fc 4/64 (5/65)"
    assert render_groups_removed({"loss": 1.0}) == ""
    entry = {"loss": 0.5, "sparsity": 0.1, "lr": 0.01, "seconds": 2.0, **metrics}
    assert summary_line("epoch 1/2 rgsm", entry) == (
        "epoch 1/2 rgsm: loss 0.5000 sparsity 0.100 lr 0.01 2.0 s; groups removed: conv1 1/1, fc 4/64 (5/65)")
    out = method_class("rgsm")(layers, None, lamb1=0.0, group="out")
    out.init(net)
    assert out.metrics()["groups_removed"] == {"conv1": [0, 4], "fc": [0, 3]}


def test_groups_removed_is_in_every_method_epoch_of_the_log():
    torch.manual_seed(0)
    net = Tiny()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    m = method_class("rgsm")(prunable_layers(net), None, epochs=2, beta1=1.0, lamb1=0.005)  # threshold 0.1
    res = train(net, m, data, None, TrainConfig(lr=0.05))
    logged = [h["groups_removed"] for h in res.history if h["phase"] == "method"]
    assert len(logged) == 2 and all(set(r) == {"conv1", "fc"} and r["fc"][1] == 64 for r in logged)
    assert m.adjustments == ()  # no layer was emptied, so u is as the last epoch left it
    assert logged[-1]["fc"][0] == int((m.u["fc"].norm(dim=0) < 1e-15).sum())
    assert 0 < logged[-1]["fc"][0] < 64

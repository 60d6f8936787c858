"""The fast exact projection (issue 11, speed): the bracketed k-th largest and the in-place ADMM update
give bit for bit what a stable sort and the textbook formulas give, ties by lowest flat index included.

Sizes are above ``ops._SAMPLED_FROM`` so that the bracketed path runs, not the plain ``kthvalue``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.layers import prunable_layers
from compress.prune import ops
from compress.prune.methods import method_class
from compress.prune.targets import Targets

BIG = ops._SAMPLED_FROM + 4099


def reference_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest, ties by lowest flat index: a stable sort of the negated scores (independent)."""
    order = torch.sort(-scores.reshape(-1).double(), stable=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask.reshape(scores.shape)


def scores_with(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if kind == "distinct":
        return torch.randn(BIG, generator=g)
    if kind == "ties":  # 40 values only: every threshold falls on a huge tie
        return torch.randint(0, 40, (BIG,), generator=g).float() - 20
    x = torch.randn(BIG, generator=g)  # 90% exact zeros, as a pruned layer after masked retraining
    x[torch.randperm(BIG, generator=g)[: BIG * 9 // 10]] = 0
    return x


@pytest.mark.parametrize("kind", ["distinct", "ties", "zeros"])
@pytest.mark.parametrize("frac", [1e-5, 0.028, 0.2, 0.5, 0.97, 1 - 1e-5])
def test_topk_mask_is_exact_on_large_tensors(kind, frac):
    s = scores_with(kind).abs()
    k = max(1, round(frac * s.numel()))
    assert torch.equal(ops.topk_mask(s, k), reference_topk_mask(s, k))
    expected = s * reference_topk_mask(s, k)
    got = ops.keep_topk(scores_with(kind), k)
    signed = scores_with(kind) * reference_topk_mask(s, k)
    assert torch.equal(got, signed) and torch.equal(got.signbit(), signed.signbit())  # signed zeros too
    assert int((expected != 0).sum()) <= k


@pytest.mark.parametrize("threads", [1, 2])
def test_the_sweep_in_chunks_and_in_one_piece_agree(monkeypatch, threads):
    # one CPU thread sweeps by chunks; more threads (and accelerators) in one piece: same answer
    monkeypatch.setattr(ops.torch, "get_num_threads", lambda: threads)
    s = scores_with("zeros").abs()
    for k in (7, 20000, s.numel() - 3):
        assert torch.equal(ops.topk_mask(s, k), reference_topk_mask(s, k))
    above, index = ops._bracket(s, 0.5, 1.5)
    assert above == int((s > 1.5).sum()) and torch.equal(index, torch.nonzero((s > 0.5) & (s <= 1.5))[:, 0])


def test_large_selection_never_runs_kthvalue_over_everything(monkeypatch):
    sizes = []
    real = torch.kthvalue

    def spy(x, *a, **kw):
        sizes.append(x.numel())
        return real(x, *a, **kw)

    monkeypatch.setattr(ops.torch, "kthvalue", spy)
    s = scores_with("distinct").abs()
    ops.topk_mask(s, 12345)
    assert sizes and max(sizes) < s.numel() // 10  # only the bracket (a few % of the entries) is selected


def test_keep_topk_out_and_group_projection_match_the_mask_formulas():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(96, 40, 3, 3, generator=g)
    w[:, 7] = w[:, 3]  # two equal input channels: the tie goes to the lower index
    out = torch.full_like(w, float("nan"))  # scratch contents must not matter
    assert torch.equal(ops.keep_topk(w, 1000, out=out), w * ops.keep_topk_mask(w, 1000))
    for dim in (0, 1):
        for k in (0, 1, 17, ops.num_groups(w.shape, dim)):
            out = torch.full_like(w, float("nan"))
            ref = w * ops.keep_top_groups_mask(w, k, dim)
            assert torch.equal(ops.keep_top_groups(w, k, dim, out=out), ref)
    norms = ops.group_norms(w, 1)
    k = int((norms > norms[3]).sum()) + 1  # keep exactly one of the two tied channels
    kept = ops.keep_top_groups_mask(w, k, 1)[0, :, 0, 0]
    assert bool(kept[3]) and not bool(kept[7])


def test_grouped_conv_groups_scale_by_full_input_channel():
    w = torch.arange(1.0, 13.0).reshape(6, 2, 1, 1)  # groups=3: input channel b*2 + c feeds filters 2b, 2b+1
    s = torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0, 3.0])
    got = ops.scale_groups(w, s, 1, conv_groups=3)[:, :, 0, 0]
    assert got.tolist() == [[1.0, 0.0], [3.0, 0.0], [10.0, 0.0], [14.0, 0.0], [0.0, 30.0], [0.0, 36.0]]


def admm_net(shape=(700, 1100)):
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("fc", nn.Linear(shape[1], shape[0], bias=False))
    net.add_module("conv", nn.Conv2d(24, 16, 3, groups=2, bias=False))
    return net


@pytest.mark.parametrize("sparsity,group", [("elem", "in"), ("channel", "in"), ("channel", "out")])
def test_admm_in_place_update_is_the_formula_bit_for_bit(sparsity, group):
    net = admm_net()
    layers = prunable_layers(net)
    t = Targets({"fc": 0.03, "conv": 0.4}, sparsity, group)
    m = method_class("admm")(layers, t, rho=0.1)
    m.init(net)

    def proj(name, x):
        layer = layers[name]
        if sparsity == "elem":
            return x * reference_topk_mask(x.abs(), t.count(layer))
        dim, g = layer.group_args(group)
        keep = reference_topk_mask(ops.group_norms(x, dim, g), t.count(layer))
        return x * ops.expand_groups(keep, x.shape, dim, g)

    Z = {n: proj(n, layer.weight.detach()) for n, layer in layers.items()}
    U = {n: torch.zeros_like(z) for n, z in Z.items()}
    for it in range(3):
        assert all(torch.equal(m.Z[n], Z[n]) and torch.equal(m.U[n], U[n]) for n in layers)
        assert all(torch.equal(m._D[n], U[n] - Z[n]) for n in layers)
        with torch.no_grad():
            for layer in layers.values():
                layer.weight.add_(torch.randn_like(layer.weight), alpha=0.05)
        for n, layer in layers.items():
            w = layer.weight.detach()
            Z[n] = proj(n, w + U[n])
            U[n] = U[n] + w - Z[n]
        m.end_iteration(net, it)
    assert int((m.Z["fc"] != 0).sum()) == (23100 if sparsity == "elem" else
                                           t.count(layers["fc"]) * (700 if group == "in" else 1100))


def test_admm_state_loaded_is_not_shared_with_the_checkpoint():
    net = admm_net((8, 10))
    layers = prunable_layers(net)
    m = method_class("admm")(layers, Targets({"fc": 0.5}))
    m.init(net)
    state = m.state_dict()
    m2 = method_class("admm")(layers, Targets({"fc": 0.5}))
    m2.load_state_dict(state)
    before = state["U"]["fc"].clone()
    m2.end_iteration(net, 0)  # updates in place: must not write into the caller's state dict
    assert torch.equal(state["U"]["fc"], before)

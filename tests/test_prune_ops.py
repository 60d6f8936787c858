"""The shared thresholding/projection operators against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.prune import ops


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_keep_topk_uses_magnitudes_not_signed_values():
    w = t(-5.0, 1.0, 3.0, -0.5, 2.0)
    assert torch.equal(ops.keep_topk(w, 2), t(-5.0, 0.0, 3.0, 0.0, 0.0))
    assert torch.equal(ops.keep_topk(w, 0), torch.zeros(5))
    assert torch.equal(ops.keep_topk(w, 5), w)


def test_keep_topk_ties_give_the_exact_count_lowest_index_first():
    w = t(1.0, -2.0, 2.0, 0.5, -2.0, 2.0)
    mask = ops.keep_topk_mask(w, 3)  # four entries tie at |2|: keep indices 1, 2, 4
    assert mask.tolist() == [False, True, True, False, True, False]
    assert int(ops.keep_topk_mask(torch.ones(7, 3), 10).sum()) == 10
    with pytest.raises(ValueError):
        ops.keep_topk_mask(w, 7)


def test_keep_topk_matches_sort_on_a_large_random_tensor():
    w = torch.randn(300, 40)
    k = 1234
    mask = ops.keep_topk_mask(w, k)
    assert int(mask.sum()) == k
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_keep_count_rounds_half_up():
    assert ops.keep_count(0.009, 400000) == 3600
    assert ops.keep_count(0.5, 3) == 2
    assert ops.keep_count(0.2, 500) == 100
    assert ops.keep_count(1.0, 7) == 7 and ops.keep_count(0.0, 7) == 0


def test_hard_and_soft_threshold():
    w = t(-3.0, -1.0, 0.5, 1.0, 2.0)
    assert torch.equal(ops.hard_threshold(w, 1.0), t(-3.0, 0.0, 0.0, 0.0, 2.0))
    assert torch.equal(ops.soft_threshold(w, 1.0), t(-2.0, 0.0, 0.0, 0.0, 1.0))


def tl1_reference(x: float, mu: float, a: float) -> float:
    """The closed form of methods.md, written out in plain Python."""
    t = mu * (a + 1) / a if mu <= a * a / (2 * (a + 1)) else math.sqrt(2 * mu * (a + 1)) - a / 2
    if abs(x) <= t:
        return 0.0
    phi = math.acos(1 - 27 * mu * a * (a + 1) / (2 * (a + abs(x)) ** 3))
    return math.copysign(2 / 3 * (a + abs(x)) * math.cos(phi / 3) - 2 * a / 3 + abs(x) / 3, x)


def brute_prox(x: float, mu: float, a: float) -> float:
    """argmin_u (u - x)^2 / 2 + mu (a+1)|u| / (a+|u|) by a fine grid search."""
    u = torch.linspace(-abs(x) - 1, abs(x) + 1, 400001, dtype=torch.float64)
    obj = (u - x) ** 2 / 2 + mu * (a + 1) * u.abs() / (a + u.abs())
    return float(u[obj.argmin()])


@pytest.mark.parametrize("mu,a", [(0.1, 1.0), (2.0, 1.0)])  # small mu: t = mu(a+1)/a; large: sqrt branch
def test_tl1_threshold_both_branches(mu, a):
    t_val = ops.tl1_threshold_value(mu, a)
    if mu <= a * a / (2 * (a + 1)):
        assert t_val == pytest.approx(mu * (a + 1) / a)  # 0.2
    else:
        assert t_val == pytest.approx(math.sqrt(2 * mu * (a + 1)) - a / 2)  # 1.5
    xs = [-3.0, -t_val - 0.05, -t_val + 0.05, 0.0, t_val * 0.5, t_val + 0.05, 1.0, 4.0]
    got = ops.tl1_threshold(torch.tensor(xs, dtype=torch.float64), mu, a)
    for x, g in zip(xs, got.tolist(), strict=True):
        assert g == pytest.approx(tl1_reference(x, mu, a), abs=1e-12)
        if abs(x) > t_val + 0.01:  # away from the jump the closed form is the true prox
            assert g == pytest.approx(brute_prox(x, mu, a), abs=1e-4)
    assert got[3] == 0 and got[4] == 0
    assert got[0] < 0 and got[-1] > 0


def test_tl1_hand_value():
    # mu = 0.1, a = 1, x = 1: phi = acos(1 - 27*0.1*2 / (2*8)) = acos(0.6625)
    phi = math.acos(0.6625)
    expected = 2 / 3 * 2 * math.cos(phi / 3) - 2 / 3 + 1 / 3
    assert float(ops.tl1_threshold(t(1.0), 0.1, 1.0)) == pytest.approx(expected, rel=1e-6)


def tl1_decimal(x: float, mu: float, a: float) -> float:
    """The TL1 prox for |x| above the threshold, to ~40 digits: the largest root in [0, |x|] of the
    stationarity condition u - |x| + mu a (a+1) / (a+u)^2 = 0 (f < 0 at the minimum of f or at 0, f > 0
    at |x|), by bisection in decimal arithmetic: independent of the closed form and of floats."""
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 60
        X, M, A = Decimal(abs(x)), Decimal(mu), Decimal(a)
        c = M * A * (A + 1)

        def f(u):
            return u - X + c / (A + u) ** 2

        lo, hi = max(Decimal(0), (2 * c) ** (Decimal(1) / 3) - A), X
        assert f(lo) < 0 < f(hi)
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return math.copysign(float(lo), x)


@pytest.mark.parametrize("a", [0.01, 1.0, 1000.0, 1e6])
def test_tl1_is_accurate_in_float32_for_every_a(a):
    # mu = 1e-4 as in the issue (8e-5 error at a = 1000 against a threshold of 1e-4): a = 0.01 is on the
    # sqrt branch (t = 0.0092), the others on t = mu (a+1)/a. Points from 1.5 t (away from the jump).
    mu = 1e-4
    t_val = ops.tl1_threshold_value(mu, a)
    xs = [x for x in (1.5 * t_val, -3 * t_val, 1e-3, 0.01, -0.05, 0.1, 0.5, 2.0) if abs(x) >= 1.5 * t_val]
    w = torch.tensor(xs, dtype=torch.float32)
    for dtype, rel in ((torch.float32, 8 * 2.0**-24), (torch.float64, 8 * 2.0**-53)):
        got = ops.tl1_threshold(w.to(dtype), mu, a).tolist()
        for x, g in zip(w.tolist(), got, strict=True):
            assert abs(g - tl1_decimal(x, mu, a)) <= rel * abs(x), (x, g)
    below = torch.tensor([0.5 * t_val, -0.99 * t_val])
    assert ops.tl1_threshold(below, mu, a).tolist() == [0.0, 0.0]


def conv_weight():
    """(out=2, in=3, 1, 1): input channel norms 5, 0, 13; output filter norms sqrt(153), sqrt(41)."""
    return torch.tensor([[3.0, 0.0, 12.0], [4.0, 0.0, 5.0]]).reshape(2, 3, 1, 1)


def test_group_norms_in_and_out():
    w = conv_weight()
    assert ops.group_norms(w, 1).tolist() == [5.0, 0.0, 13.0]
    assert torch.allclose(ops.group_norms(w, 0), t(math.sqrt(153), math.sqrt(41)))


def test_group_projection_keeps_largest_groups_in_both_modes():
    w = conv_weight()
    m_in = ops.keep_top_groups_mask(w, 1, dim=1)
    assert m_in[:, :, 0, 0].tolist() == [[False, False, True], [False, False, True]]
    m_out = ops.keep_top_groups_mask(w, 1, dim=0)
    assert m_out[:, :, 0, 0].tolist() == [[True, True, True], [False, False, False]]


def test_group_hard_and_soft_threshold():
    w = conv_weight()
    hard = ops.group_hard_threshold(w, 6.0, dim=1)
    assert hard[:, :, 0, 0].tolist() == [[0.0, 0.0, 12.0], [0.0, 0.0, 5.0]]
    soft = ops.group_soft_threshold(w, 6.5, dim=1)  # channel 2 scaled by 1 - 6.5/13 = 0.5; channel 0 zero
    assert soft[:, :, 0, 0].tolist() == [[0.0, 0.0, 6.0], [0.0, 0.0, 2.5]]
    soft_out = ops.group_soft_threshold(w, 8.0, dim=0)  # filter 1 (norm 6.4) gone, filter 0 shrunk
    assert torch.equal(soft_out[1, :, 0, 0], torch.zeros(3))
    assert torch.allclose(soft_out[0, :, 0, 0], t(3.0, 0.0, 12.0) * (1 - 8.0 / math.sqrt(153)))


def test_grouped_conv_input_channels_are_the_full_input():
    # groups=2: weight (4, 1, 1, 1); input channel 0 feeds filters 0,1 and channel 1 feeds filters 2,3
    w = t(1.0, 2.0, 10.0, 20.0).reshape(4, 1, 1, 1)
    assert torch.allclose(ops.group_norms(w, 1, conv_groups=2), t(math.sqrt(5), math.sqrt(500)))
    mask = ops.keep_top_groups_mask(w, 1, 1, conv_groups=2)
    assert mask.flatten().tolist() == [False, False, True, True]


def test_group_args_per_layer_type():
    assert PrunableLayer("c", nn.Conv2d(4, 6, 3, groups=2)).group_args("in") == (1, 2)
    assert PrunableLayer("c", nn.Conv2d(4, 6, 3)).group_args("out") == (0, 1)
    assert PrunableLayer("d", nn.ConvTranspose2d(4, 6, 3)).group_args("in") == (0, 1)
    assert PrunableLayer("d", nn.ConvTranspose2d(4, 6, 3, groups=2)).group_args("out") == (1, 2)
    assert PrunableLayer("f", nn.Linear(3, 2)).group_args("in") == (1, 1)


def test_conv_transpose_out_groups_are_output_channels():
    m = nn.ConvTranspose2d(2, 3, 1, bias=False)  # weight (in=2, out=3, 1, 1)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, 0.0, 3.0], [1.0, 0.0, 4.0]]).reshape(2, 3, 1, 1))
    dim, g = PrunableLayer("d", m).group_args("out")
    assert torch.allclose(ops.group_norms(m.weight, dim, g), t(math.sqrt(2), 0.0, 5.0))

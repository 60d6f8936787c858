"""Quantization grids, scales, the config and PTQ, against hand-computed codes and brute force."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.errors import CompressError
from compress.quant import scale as scale_mod
from compress.quant.config import GridConfig
from compress.quant.grid import LayerGrid, dequantize, fake_quantize, off_grid, qmax, quantize_codes
from compress.quant.ptq import ptq
from compress.quant.scale import fit_grid, half_storable, quantization_mse


@pytest.mark.parametrize("bits, levels", [(2, 1), (3, 3), (4, 7), (5, 15), (6, 31), (7, 63), (8, 127)])
def test_symmetric_levels(bits, levels):
    assert qmax(bits) == levels
    g = LayerGrid(bits, torch.tensor([1.0]))
    w = torch.arange(-levels - 3, levels + 4, dtype=torch.float32)
    codes = quantize_codes(w, g)
    assert codes.min() == -levels and codes.max() == levels  # clamped symmetrically: no -2^(b-1)
    assert torch.equal(fake_quantize(torch.zeros(3), g), torch.zeros(3))  # zero is a level


@pytest.mark.parametrize("bits", [0, 1, 9, True, 4.0, "4"])
def test_bits_out_of_range(bits):
    with pytest.raises(CompressError, match="from 2 to 8"):
        qmax(bits)
    with pytest.raises(CompressError, match="from 2 to 8"):
        GridConfig(bits)


W = torch.tensor([[0.7, -0.33, 0.12, 0.0],
                  [2.0, -1.1, 0.49, -2.0]])


def test_per_channel_max_abs_by_hand():
    g = fit_grid(W, 4, per_channel=True, method="max")
    # max|row| / 7, rounded to the nearest float16 (what the export stores)
    assert torch.equal(g.scales, (torch.tensor([0.7, 2.0]) / 7).half().float())
    # row 0 / 0.1 = 7, -3.3, 1.2, 0; row 1 / (2/7) = 7, -3.85, 1.715, -7
    assert quantize_codes(W, g).tolist() == [[7, -3, 1, 0], [7, -4, 2, -7]]
    expected = torch.tensor([[7.0, -3, 1, 0], [7, -4, 2, -7]]) * g.scales[:, None]
    assert torch.equal(fake_quantize(W, g), expected)  # the float32 product q * s, bit for bit
    assert off_grid(fake_quantize(W, g), g) == 0 and off_grid(W, g) > 0


def test_scales_are_float16_values_unless_out_of_its_range():
    assert fit_grid(W, 4, method="mse").scales.half().float().equal(fit_grid(W, 4, method="mse").scales)
    tiny = fit_grid(W * 1e-4, 8, method="max").scales  # 7e-5 / 127 < 2^-14: float16 would lose bits
    assert torch.equal(tiny, (torch.tensor([0.7, 2.0]) * 1e-4) / 127)
    assert half_storable(torch.tensor([1.0, 70000.0])).tolist() == [1.0, 70000.0]
    assert half_storable(torch.tensor([0.1])).item() == torch.tensor(0.1).half().item()


def test_per_tensor_and_two_bits_by_hand():
    g = fit_grid(W, 4, per_channel=False, method="max")
    assert g.scales.tolist() == [pytest.approx(2.0 / 7, rel=2**-11)]  # float16-rounded
    assert quantize_codes(W, g)[0].tolist() == [2, -1, 0, 0]  # 2.45, -1.155, 0.42, 0
    g2 = fit_grid(W, 2, per_channel=True, method="max")  # ternary: -1, 0, 1 times max|row|
    assert quantize_codes(W, g2).tolist() == [[1, 0, 0, 0], [1, -1, 0, -1]]


def test_dead_channel_gets_the_tensor_scale_and_stays_zero():
    w = torch.tensor([[0.0, 0.0], [0.5, -0.25]])
    for method in ("max", "mse"):
        g = fit_grid(w, 4, per_channel=True, method=method)
        assert g.scales[0] == pytest.approx(0.5 / 7, rel=2**-11)
        assert torch.equal(fake_quantize(w, g)[0], torch.zeros(2))


@pytest.mark.parametrize("per_channel", [True, False])
def test_all_zero_layer_has_no_range(per_channel):
    with pytest.raises(CompressError, match="'ip9'.*every weight is zero.*no range"):
        fit_grid(torch.zeros(4, 3), 2, per_channel=per_channel, name="ip9")


def test_non_finite_weights_are_refused():
    with pytest.raises(CompressError, match="NaN or infinite"):
        fit_grid(torch.tensor([1.0, float("nan")]), 4, name="conv1")


def test_mse_beats_max_abs_on_heavy_tails():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4096, generator=gen)
    w[:, 0] = 40.0  # one outlier per channel: max-abs spends the grid on it, the bulk rounds to zero
    for bits in (2, 3, 4):
        e_max = quantization_mse(w, fit_grid(w, bits, method="max"))
        e_mse = quantization_mse(w, fit_grid(w, bits, method="mse"))
        assert e_mse < 0.6 * e_max, (bits, e_mse, e_max)  # measured: 0.55, 0.40, 0.35


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_mse_is_never_worse_than_max_abs(seed, bits):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 300, generator=gen) * torch.rand(6, 1, generator=gen)
    w[w.abs() < 0.3] = 0.0  # pruned-looking: zeros must not disturb the fit
    e_max = quantization_mse(w, fit_grid(w, bits, method="max"))
    e_mse = quantization_mse(w, fit_grid(w, bits, method="mse"))
    assert e_mse <= e_max * (1 + 1e-6)


def test_mse_is_close_to_a_brute_force_search():
    torch.manual_seed(1)
    w = torch.distributions.Laplace(0.0, 1.0).sample((1, 4000))
    L = qmax(3)
    peak = float(w.abs().max())
    ratios = torch.linspace(0.005, 1.0, 4000)
    s = ratios[:, None] * peak / L
    brute = float(((w - torch.round(w / s).clamp(-L, L) * s) ** 2).sum(dim=1).min())
    got = fit_grid(w, 3, per_channel=False, method="mse")
    err = float(((w - fake_quantize(w, got)) ** 2).sum())
    assert err <= brute * 1.005


def test_bucket_errors_match_a_direct_pass():
    gen = torch.Generator().manual_seed(2)
    rows = torch.randn(5, 257, generator=gen)
    b = scale_mod._Buckets(rows, qmax(4))
    s = torch.rand(5, 3, generator=gen) * 0.5 + 0.05
    direct = torch.stack([((rows - torch.round(rows / s[:, j:j + 1]).clamp(-7, 7) * s[:, j:j + 1]) ** 2)
                          .sum(dim=1, dtype=torch.float64) for j in range(3)], dim=1)
    assert torch.allclose(b.error(s), direct, rtol=1e-5, atol=0)  # float32 products in `direct`


def test_dequantize_is_the_float32_product():
    g = LayerGrid(8, torch.tensor([0.013, 0.7]))
    q = torch.tensor([[127, -5], [-127, 64]], dtype=torch.int8)
    assert torch.equal(dequantize(q, g), q.float() * g.scales[:, None])


def test_grid_rejects_bad_scales():
    with pytest.raises(CompressError, match="positive and finite"):
        LayerGrid(4, torch.tensor([0.1, 0.0]))
    with pytest.raises(CompressError, match="does not fit a weight"):
        LayerGrid(4, torch.tensor([0.1, 0.2, 0.3])).scale_for(torch.zeros(2, 5))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(16, 5)


def test_config_selects_layers_and_first_last_bits():
    names = ["conv1", "conv2", "fc"]
    assert GridConfig(4).layer_bits(names) == {"conv1": 4, "conv2": 4, "fc": 4}
    assert GridConfig(2, first_last_bits=8).layer_bits(names) == {"conv1": 8, "conv2": 2, "fc": 8}
    assert GridConfig(4, layers=("conv*",)).layer_bits(names) == {"conv1": 4, "conv2": 4}
    with pytest.raises(CompressError, match="no quantizable layer matches 'ip1'.*conv1, conv2, fc"):
        GridConfig(4, layers=("ip1",)).layer_bits(names)
    with pytest.raises(CompressError, match="unknown scale method 'l1'"):
        GridConfig(4, scale="l1")
    with pytest.raises(CompressError, match="first/last layer bits"):
        GridConfig(4, first_last_bits=1)


def test_ptq_keeps_zeros_and_biases_and_lands_on_the_grid():
    net = Tiny()
    with torch.no_grad():
        net.conv2.weight[net.conv2.weight.abs() < 0.1] = 0.0
    zeros = net.conv2.weight == 0
    bias = net.fc.bias.detach().clone()
    out = ptq(net, GridConfig(3, scale="mse", first_last_bits=8))
    assert {n: q.grid.bits for n, q in out.items()} == {"conv1": 8, "conv2": 3, "fc": 8}
    assert bool((net.conv2.weight[zeros] == 0).all())
    assert out["conv2"].nonzero_after <= out["conv2"].nonzero_before
    assert out["conv2"].nonzero_after == int((net.conv2.weight != 0).sum())
    assert torch.equal(net.fc.bias, bias)
    for name, q in out.items():
        assert off_grid(getattr(net, name).weight, q.grid) == 0

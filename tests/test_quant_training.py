"""The pieces QGT and ADMM-quantization training use: the regulariser (gradient against its formula),
its ramp, and the projection onto the grid; masked (zero) weights stay exactly zero throughout."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.errors import CompressError
from compress.quant.admm import admm_quant_step, project_to_grid
from compress.quant.grid import LayerGrid, fake_quantize, off_grid
from compress.quant.ptq import apply_grids
from compress.quant.regularizer import QGTRegularizer, Ramp, grid_penalty, grid_penalty_grad
from compress.quant.scale import fit_grid

GRID = LayerGrid(4, torch.tensor([0.1]))  # levels -0.7..0.7 in steps of 0.1


def test_penalty_and_gradient_by_hand():
    w = torch.tensor([0.26, -0.14, 0.0, 0.5, 0.9, -2.0], requires_grad=True)
    q = torch.tensor([0.3, -0.1, 0.0, 0.5, 0.7, -0.7])  # nearest levels; 0.9 and -2 clip to +-0.7
    expected_grad = (w.detach() - q)  # [-0.04, -0.04, 0, 0, 0.2, -1.3]
    p = grid_penalty(w, GRID)
    assert float(p.detach()) == pytest.approx(0.5 * float((expected_grad ** 2).sum()), rel=1e-6)
    p.backward()
    assert torch.allclose(w.grad, expected_grad, atol=1e-7)
    assert torch.allclose(grid_penalty_grad(w, GRID), expected_grad, atol=1e-7)
    assert w.grad[2] == 0  # a pruned weight is not pulled anywhere


@pytest.mark.parametrize("per_channel", [True, False])
def test_closed_form_gradient_matches_autograd_on_real_grids(per_channel):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 3, 3, generator=gen).requires_grad_()
    grid = fit_grid(w, 3, per_channel=per_channel, method="mse")
    grid_penalty(w, grid).backward()
    assert torch.allclose(w.grad, grid_penalty_grad(w, grid), atol=1e-7)
    assert torch.allclose(w.grad, w.detach() - fake_quantize(w, grid), atol=1e-7)


def test_ramp():
    r = Ramp(2.0, 10)
    assert [r(t) for t in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]
    c = Ramp(2.0, 10, shape="cosine", start=4)
    assert c(3) == 0.0 and c(4) == 0.0 and c(9) == pytest.approx(1.0) and c(14) == pytest.approx(2.0)
    assert Ramp(3.0, 0)(0) == 3.0
    with pytest.raises(CompressError, match="ramp"):
        Ramp(1.0, 10, shape="step")
    with pytest.raises(CompressError, match=">= 0"):
        Ramp(-1.0, 10)


def _layer(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    fc = nn.Linear(20, 8)
    with torch.no_grad():
        fc.weight[fc.weight.abs() < 0.1] = 0.0  # pruned
    return fc


def test_regulariser_penalty_and_add_grad_agree():
    fc = _layer()
    grids = {"fc": fit_grid(fc.weight, 2)}
    reg = QGTRegularizer({"fc": fc.weight}, grids, Ramp(4.0, 8))
    reg.penalty(6).backward()
    by_autograd = fc.weight.grad.clone()
    fc.weight.grad = None
    reg.add_grad_(6)
    assert torch.allclose(fc.weight.grad, by_autograd, atol=1e-7)
    assert torch.allclose(by_autograd, 3.0 * grid_penalty_grad(fc.weight, grids["fc"]), atol=1e-7)


def test_sgd_on_the_regulariser_converges_onto_the_grid_and_keeps_zeros():
    fc = _layer(1)
    zeros = fc.weight.detach() == 0
    grids = {"fc": fit_grid(fc.weight, 3)}
    target = fake_quantize(fc.weight, grids["fc"])
    reg = QGTRegularizer({"fc": fc.weight}, grids, Ramp(5.0, 10))
    opt = torch.optim.SGD([fc.weight], lr=0.1)
    for step in range(60):
        opt.zero_grad()
        reg.add_grad_(step)
        opt.step()
        assert bool((fc.weight[zeros] == 0).all())
    assert max(reg.distance().values()) < 1e-3  # in grid steps
    holder = nn.Module()
    holder.fc = fc
    apply_grids(holder, grids)  # the hard quantization at the end: exactly the nearest levels it started from
    assert torch.equal(fc.weight.detach(), target)


def test_regulariser_state_round_trip():
    fc = _layer()
    reg = QGTRegularizer({"fc": fc.weight}, {"fc": fit_grid(fc.weight, 4)}, Ramp(1.0, 5))
    other = QGTRegularizer({"fc": fc.weight}, {"fc": LayerGrid(4, torch.ones(8))}, Ramp(1.0, 5))
    other.load_state_dict(reg.state_dict())
    assert torch.equal(other.grids["fc"].scales, reg.grids["fc"].scales)
    with pytest.raises(CompressError, match="QGT state"):
        other.load_state_dict({"grids": {}})
    with pytest.raises(CompressError, match="no weight"):
        QGTRegularizer({}, {"fc": GRID}, Ramp(1.0, 5))


def test_projection_with_a_fixed_grid_is_the_nearest_level():
    v = torch.tensor([0.26, -0.14, 0.0, 0.9])
    z, grid = project_to_grid(v, 4, grid=GRID)
    assert grid is GRID
    assert torch.allclose(z, torch.tensor([0.3, -0.1, 0.0, 0.7]))


def test_projection_refits_the_scale_on_kept_entries_and_zeroes_masked_ones():
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(4, 30, generator=gen)
    mask = torch.rand(4, 30, generator=gen) > 0.6
    z, grid = project_to_grid(v, 2, mask=mask)
    assert bool((z[~mask] == 0).all()) and not bool(torch.signbit(z[~mask]).any())
    expected = fit_grid(v * mask, 2, method="mse")
    assert torch.equal(grid.scales, expected.scales)
    assert off_grid(z, grid) == 0
    # Leng et al.'s re-fitted scale is the least-squares one: no worse than max-abs on the same entries
    fixed, _ = project_to_grid(v, 2, grid=fit_grid(v * mask, 2, method="max"), mask=mask)
    assert float(((v * mask - z) ** 2).sum()) <= float(((v * mask - fixed) ** 2).sum())


def test_admm_step_updates_z_and_u():
    w = torch.tensor([[0.26, 0.0, -0.61], [0.05, 0.0, 0.33]])
    u = torch.tensor([[0.02, 0.0, 0.0], [-0.01, 0.0, 0.1]])
    mask = w != 0
    z, u2, grid = admm_quant_step(w, u, 4, grid=GRID, mask=mask)
    assert torch.allclose(z, torch.tensor([[0.3, 0.0, -0.6], [0.0, 0.0, 0.4]]))  # Proj(W + U)
    assert torch.allclose(u2, u + w - z)
    assert bool((z[~mask] == 0).all()) and bool((u2[~mask] == 0).all())  # masked entries stay zero


def test_grids_follow_thinning_in_order():
    from compress.quant.thin import regrid_after_thinning

    scales = torch.tensor([0.5, 0.25, 0.125, 1.0])
    grid = LayerGrid(4, scales)
    before = torch.tensor([[1.0, -0.5], [0.0, 0.0], [0.25, 0.375], [3.0, -7.0]])  # rows on their scales
    assert off_grid(before, grid) == 0
    holder = nn.Module()
    holder.fc = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        holder.fc.weight.copy_(before[[0, 2, 3]])  # row 1 (all zero) was removed
    got = regrid_after_thinning({"fc": grid}, holder)["fc"]
    assert got.scales.tolist() == [0.5, 0.125, 1.0]
    with torch.no_grad():
        holder.fc.weight[1, 0] = 0.3  # not a multiple of any later scale: thinning changed a weight
    with pytest.raises(CompressError, match="none of the remaining recorded scales"):
        regrid_after_thinning({"fc": grid}, holder)

"""ADMM quantization: the Z-step projects ``W + U`` onto the quantization grid.

Ye et al. 2018 ("A Unified Framework of DNN Weight Pruning and Weight Clustering/Quantization Using
ADMM", arXiv 1811.01907) and Leng et al. 2018 ("Extremely Low Bit Neural Network: Squeeze the Last Bit
Out with ADMM", AAAI) train ``W`` on ``f(W) + rho/2 ||W - Z + U||^2`` with ``Z`` constrained to the
quantized set; per ADMM iteration::

    Z = Proj_grid(W + U)          # this module
    U = U + W - Z

and a final hard quantization of ``W``. The same loop as ADMM pruning (``compress.prune.methods.admm``),
with the projection onto a grid instead of the top-k set.

The grid's scale: **re-fitted** at every Z-step by default, as Leng et al. do (their projection
alternates the scaling factor ``alpha = <V, Q> / <Q, Q>`` with the rounding ``Q = Proj(V / alpha)``:
exactly the MSE scale of :mod:`compress.quant.scale`, so ``scale_method="mse"`` is their projection).
Passing ``grid`` keeps it **fixed** instead (Ye et al. fix the levels beforehand); the last Z-step's grid
is the one the final hard quantization uses either way.

Pruned weights stay pruned: with ``mask`` (True = kept) the masked entries of ``Z`` are exactly zero
and the scale is fitted on the kept entries only. Zero is a level of every grid here, and masked
retraining keeps ``W`` zero there, so ``U`` stays zero there too.
"""
from __future__ import annotations

import torch

from compress.quant.grid import LayerGrid, fake_quantize
from compress.quant.scale import fit_grid


def project_to_grid(v: torch.Tensor, bits: int, *, grid: LayerGrid | None = None, per_channel: bool = True,
                    scale_method: str = "mse", mask: torch.Tensor | None = None,
                    name: str = "weight") -> tuple[torch.Tensor, LayerGrid]:
    """``Proj_grid(v)``: the nearest point of the ``bits``-bit grid, and that grid.

    ``grid`` given: that (fixed) grid. Otherwise the grid is fitted to ``v`` (masked entries zeroed)
    with ``scale_method``. Masked entries of the result are exactly zero.
    """
    v = v.detach()
    if mask is not None:
        v = torch.where(mask, v, torch.zeros((), dtype=v.dtype, device=v.device))
    if grid is None:
        grid = fit_grid(v, bits, per_channel=per_channel, method=scale_method, name=name)
    z = fake_quantize(v, grid).to(v.dtype)
    if mask is not None:
        z = torch.where(mask, z, torch.zeros((), dtype=z.dtype, device=z.device))  # -0.0 -> +0.0 too
    return z, grid


def admm_quant_step(w: torch.Tensor, u: torch.Tensor, bits: int, *, grid: LayerGrid | None = None,
                    per_channel: bool = True, scale_method: str = "mse", mask: torch.Tensor | None = None,
                    name: str = "weight") -> tuple[torch.Tensor, torch.Tensor, LayerGrid]:
    """One ADMM iteration's Z and U updates: ``Z = Proj(W + U)``, ``U = U + W - Z``; returns (Z, U, grid)."""
    w = w.detach()
    z, grid = project_to_grid(w + u, bits, grid=grid, per_channel=per_channel, scale_method=scale_method,
                              mask=mask, name=name)
    return z, u + w - z, grid

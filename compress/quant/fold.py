"""BatchNorm/Scale folded into a quantized model's filters with the codes unchanged.

Folding multiplies filter ``c`` of a convolution (or inner product) by a factor ``a_c``
(:func:`compress.structure.fold.fold_batchnorm`). On a per-channel grid that is a change of scale:
``q * s_c * a_c = (q * sign(a_c)) * |s_c * a_c|``, so the folded layer keeps its codes (negated where
``a_c < 0``, which the symmetric grid allows) and takes the scales ``|s_c a_c|`` rounded to float32; its
weights are then exactly ``float32(q) * s'_c``, what the ONNX export stores and decodes. A per-tensor grid
becomes a per-channel one (its single scale times each ``a_c``). A filter whose factor is 0 is all zeros
and keeps its scale. The folded net is checked against the unfolded one (relative error <= 1e-5).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from compress.errors import CompressError
from compress.layers import prunable_layers
from compress.quant.grid import LayerGrid, quantize_codes
from compress.quant.record import KEY
from compress.structure.check import max_rel_err
from compress.structure.fold import TOLERANCE, FoldResult, fold_batchnorm


def fold_quantized(net: nn.Module, meta: dict, grids: dict[str, LayerGrid]) -> tuple[FoldResult, dict]:
    """Fold BatchNorm/Scale into ``net`` (quantized on ``grids``, recorded in ``meta``); returns the fold
    and ``meta`` with the folded layers' scales."""
    result = fold_batchnorm(net)
    if not result.folded:
        return result, meta
    before, after = prunable_layers(net), prunable_layers(result.net)
    record = dict(meta[KEY])
    entries = dict(record["layers"])
    for name, factor in result.factors.items():
        if name not in grids:
            continue  # a float layer folds as float
        scales, codes = _regrid(before[name].weight.detach(), grids[name], factor)
        layer = after[name].module
        w = codes.to(torch.float32) * scales.reshape((-1,) + (1,) * (codes.dim() - 1))
        if getattr(layer, "transpose", False):
            w = w.t().contiguous().t()
        layer.weight = nn.Parameter(w)
        entries[name] = {**entries[name], "axis": 0, "scales": [float(s) for s in scales.tolist()]}
    err = max_rel_err(net, result.net)
    if err > TOLERANCE:
        raise CompressError(f"{net.name}: the quantized net with BatchNorm folded differs from the original "
                            f"(relative error {err:.2e} > {TOLERANCE:g}); this is a bug, please report it")
    record["layers"] = entries
    return replace(result, max_rel_err=err), {**meta, KEY: record}


def _regrid(w: torch.Tensor, grid: LayerGrid, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(float32 scales, integer codes)`` of ``w * factor`` (per filter) on ``w``'s grid, codes unchanged
    up to sign."""
    codes = quantize_codes(w, grid).to(torch.int64)
    s = grid.scales.double().expand(w.shape[0]) if grid.scales.numel() == 1 else grid.scales.double()
    new = s * factor.double()
    sign = torch.where(new < 0, -1, 1)
    scales = torch.where(new == 0, s, new.abs()).to(torch.float32)
    codes = codes * sign.reshape((-1,) + (1,) * (w.dim() - 1))
    codes[new == 0] = 0
    return scales, codes

"""Quantization grids that follow channel thinning (``compress export --thin`` of a quantized model).

Thinning (:mod:`compress.thin`) removes zero filters and the input channels they fed; it keeps the
order of what remains and never changes a remaining weight's value, so every remaining weight is still
on its original grid. Only the per-channel scales (one per slice along axis 0) have to follow the
removed slices. Thinning does not report which slices it removed, so they are matched in order: each
remaining nonzero slice takes the first not yet used original scale, at or after the previous match,
that reproduces all its values exactly (``float32(q) * s == w``, ``|q| <= L``); its true scale is
such a scale, so the match never runs past it, and whichever scale matches is exact for that slice.
An all-zero slice is exact under any scale and takes the next one. A layer whose slices cannot be
matched is an error (it would mean thinning changed weights).
"""
from __future__ import annotations

import torch

from compress.errors import CompressError
from compress.layers import prunable_layers
from compress.quant.grid import LayerGrid, qmax
from compress.quant.record import KEY


def regrid_after_thinning(grids: dict[str, LayerGrid], thinned) -> dict[str, LayerGrid]:
    """The grids of ``thinned`` (the net after :func:`compress.thin.thin`) from those of the net before."""
    layers = prunable_layers(thinned)
    out = {}
    for name, grid in grids.items():
        w = layers[name].weight.detach().float()
        if not grid.per_channel or w.shape[0] == grid.scales.numel():
            out[name] = grid
            continue
        out[name] = LayerGrid(grid.bits, _match(name, w.reshape(w.shape[0], -1), grid))
    return out


def _match(name: str, rows: torch.Tensor, grid: LayerGrid) -> torch.Tensor:
    scales, levels = grid.scales, qmax(grid.bits)
    picked, j = [], 0
    for row in rows:
        if not bool(row.any()):
            picked.append(scales[min(j, len(scales) - 1)])
            continue
        while j < len(scales) and not _exact(row, scales[j], levels):
            j += 1
        if j == len(scales):
            raise CompressError(f"layer {name!r}: after thinning, a slice's weights are on none of the "
                                "remaining recorded scales (thinning must not change weights)")
        picked.append(scales[j])
        j += 1
    return torch.stack(picked)


def _exact(row: torch.Tensor, s: torch.Tensor, levels: int) -> bool:
    q = torch.round(row / s)
    return bool((q.abs() <= levels).all()) and torch.equal(q * s, row)


def thinned_meta(meta: dict, grids: dict[str, LayerGrid], thinned) -> dict:
    """``meta`` with its quantization record's scales following ``thinned``."""
    new = regrid_after_thinning(grids, thinned)
    record = dict(meta[KEY])
    record["layers"] = {name: {**entry, "scales": [float(s) for s in new[name].scales.tolist()]}
                        for name, entry in record["layers"].items()}
    return {**meta, KEY: record}

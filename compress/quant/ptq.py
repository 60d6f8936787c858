"""Post-training quantization (PTQ): fit each selected weight's grid, replace the weight by ``Q(w)``.

No data and no training: every Conv/Deconv/InnerProduct weight chosen by the
:class:`~compress.quant.config.GridConfig` gets its grid (:func:`~compress.quant.scale.fit_grid`) and
is overwritten in place with its dequantized value ``q * s`` (float32, exactly on the grid), so the
model computes what the packed ONNX export computes. Zeros map to code 0 and stay zero; weights
that round to zero become new zeros (``nonzero_after`` counts them). Biases are left as they are.

The same two steps close QGT and ADMM-quantization training (the hard quantization at the end), with
the grids those methods kept fixed or re-fitted: :func:`apply_grids` takes any grids.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compress.layers import prunable_layers
from compress.quant.config import GridConfig
from compress.quant.grid import LayerGrid, fake_quantize
from compress.quant.scale import fit_grid


@dataclass(frozen=True)
class LayerQuant:
    """One quantized layer: its grid and what quantizing did to the weight."""

    name: str
    grid: LayerGrid
    weights: int
    nonzero_before: int
    nonzero_after: int
    rel_error: float  # ||w - Q(w)|| / ||w||


def fit_grids(net: nn.Module, config: GridConfig) -> dict[str, LayerGrid]:
    """The grid of every layer ``config`` selects, from the weights as they are now."""
    layers = prunable_layers(net)
    bits = config.layer_bits(layers)
    return {name: fit_grid(layers[name].weight, b, per_channel=config.per_channel, method=config.scale,
                           name=name) for name, b in bits.items()}


@torch.no_grad()
def apply_grids(net: nn.Module, grids: dict[str, LayerGrid]) -> dict[str, LayerQuant]:
    """Overwrite each layer's weight with ``Q(w)`` on its grid; what changed, per layer."""
    layers = prunable_layers(net)
    out = {}
    for name, grid in grids.items():
        w = layers[name].weight
        q = fake_quantize(w, grid).to(w.dtype)
        norm = float(torch.linalg.vector_norm(w.float()))
        err = float(torch.linalg.vector_norm(w.float() - q.float()))
        before = int(torch.count_nonzero(w))
        w.copy_(q)
        out[name] = LayerQuant(name, grid, w.numel(), before, int(torch.count_nonzero(w)),
                               err / norm if norm else 0.0)
    return out


def ptq(net: nn.Module, config: GridConfig) -> dict[str, LayerQuant]:
    """Post-training quantization of ``net`` in place: fit the grids, then apply them."""
    return apply_grids(net, fit_grids(net, config))

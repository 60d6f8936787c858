"""Per-layer bits and storage of a quantized model: what each layer costs in the packed ONNX export.

For each prunable layer: its bit width (32 for a layer left in float), how its weight is stored (the
encoding :func:`converters.onnx.lowbit.choose_encoding` picks, as the exporter does: dense packed, or
kept codes with small skips), and its bytes: the weight payload plus the float32 scales and bias.
A layer left in float counts as the exporter stores it: dense float32, or COO (12 bytes per nonzero)
where that is smaller. Graph structure and metadata are not counted: the exported file's size
(the quantization table, :mod:`compress.report.quant_table`) includes them. The layers are counted as
they are in the model file, i.e. as ``compress export --no-thin`` stores them; the default export of a
quantized model thins it first (dead filters, their scales and biases removed), which is smaller.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class QuantLayerRow:
    name: str
    bits: int  # 32: not quantized
    storage: str  # "INT4 dense", "INT4 values + UINT8 skips (3612 entries)", "float32", "float32 COO"
    weight_bytes: int
    scale_bytes: int
    bias_bytes: int
    float_bytes: int  # the same layer as dense float32 (weights + bias)

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.scale_bytes + self.bias_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes": self.bytes}


@dataclass(frozen=True)
class QuantInfo:
    description: str  # "4-bit per-channel mse grid (8-bit first/last), ptq"
    opset: int
    layers: tuple[QuantLayerRow, ...]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.layers)

    @property
    def float_bytes(self) -> int:
        return sum(r.float_bytes for r in self.layers)

    def as_dict(self) -> dict:
        return {"description": self.description, "opset": self.opset, "bytes": self.bytes,
                "float_bytes": self.float_bytes, "layers": [r.as_dict() for r in self.layers]}


def quant_info(net, meta: dict, *, where: str = "model") -> QuantInfo | None:
    """The per-layer storage of a quantized ``net`` (None when ``meta`` records no quantization)."""
    from compress.quant.export import onnx_grids

    grids = onnx_grids(net, meta, where=where)
    if grids is None:
        return None
    from compress.layers import typed_layers
    from compress.quant.record import KEY, describe
    from converters.onnx.lowbit import choose_encoding
    from converters.onnx.quantized import grid_codes, required_opset

    opset = required_opset(grids)
    rows = []
    for name, _, module in typed_layers(net):
        w = module.weight.detach().cpu().numpy()
        bias = getattr(module, "bias", None)
        bias_bytes = 4 * bias.numel() if bias is not None else 0
        float_bytes = 4 * w.size + bias_bytes
        grid = grids.get(name)
        if grid is None:
            nnz = int(np.count_nonzero(w))
            coo = 12 * nnz < 4 * w.size
            rows.append(QuantLayerRow(name, 32, "float32 COO" if coo else "float32",
                                      12 * nnz if coo else 4 * w.size, 0, bias_bytes, float_bytes))
            continue
        enc = choose_encoding(grid_codes(w, grid, name), grid.bits, opset)
        rows.append(QuantLayerRow(name, grid.bits, enc.describe(), enc.payload_bytes,
                                  4 * np.size(grid.scales), bias_bytes, float_bytes))
    return QuantInfo(describe(meta[KEY]), opset, tuple(rows))

"""Export a model to ONNX the way its model file asks: packed low-bit weights when it records a grid.

:func:`export_any` is what ``compress export`` (to ONNX) and the report's quantization table call: a
quantized model (``meta["quantization"]``, checked by :func:`~compress.quant.record.read_grids`) goes
through :func:`converters.onnx.quantized.export_quantized_onnx`, any other model through the ordinary
sparse-where-smaller :func:`converters.onnx.export.export_onnx`.
"""
from __future__ import annotations

import os

from compress.quant.record import KEY, describe, read_grids


def onnx_grids(net, meta: dict, *, where: str = "model") -> dict | None:
    """``{Caffe layer name: WeightGrid}`` of a quantized model (None when it is not quantized); the record
    is keyed by Caffe layer names, as ``prunable_layers`` and the exported initializers are."""
    grids = read_grids(meta, net, where=where)
    if grids is None:
        return None
    from converters.onnx.quantized import WeightGrid

    return {name: WeightGrid(g.bits, g.scales.cpu().numpy()) for name, g in grids.items()}


def export_any(net, meta: dict, path: str | os.PathLike, *, dense: bool = False, opset: int | None = None,
               where: str = "model", form: str = "fast", lrn: str = "fast"):
    """Write ``net`` as ONNX to ``path``: packed integers for a quantized model (``dense``: no sparse
    encoding; ``form`` "fast": run-time forms onnxruntime decodes at load, "pack": DequantizeLinear at
    every run, :mod:`converters.onnx.fast`; a model with calibrated activations: full QDQ,
    :mod:`converters.onnx.qdq`), else float initializers, sparse where smaller (``dense``:
    none); ``lrn`` "fast" or "native" (:func:`converters.onnx.lrn.rewrite_lrn`). Returns the exporter's
    result (``ExportResult``; ``QuantExportResult`` for a quantized model)."""
    grids = onnx_grids(net, meta, where=where)
    if grids is None:
        from converters.onnx.export import export_onnx

        return export_onnx(net, path, sparse=not dense, meta=meta, opset=opset, lrn=lrn)
    from converters.onnx.quantized import export_quantized_onnx

    record = meta[KEY]
    slim = {k: v for k, v in meta.items() if k != KEY}  # the scales are in the graph, not in the metadata
    slim[KEY] = describe(record)
    if record.get("activations") is not None:
        from converters.onnx.qdq import export_qdq_onnx

        return export_qdq_onnx(net, path, grids, activation_ranges(meta, where), meta=slim, lrn=lrn,
                               opset=opset)
    return export_quantized_onnx(net, path, grids, meta=slim, opset=opset, sparse=not dense, form=form,
                                 lrn=lrn)


def activation_ranges(meta: dict, where: str = "model") -> dict[str, tuple[float, float]]:
    """The calibrated activation ranges of an activation-quantized model (``{blob or layer: (lo, hi)}``),
    a convolution whose BatchNorm/Scale were folded into it taking the range of the last one folded (its
    output is theirs now)."""
    from compress.quant.activations import read_ranges

    ranges = read_ranges(meta[KEY], where)
    folded = (meta.get("folded_bn") or {}).get("folded") or {}
    for conv, after in folded.items():
        if after and after[-1] in ranges:
            ranges[conv] = ranges[after[-1]]
    return ranges

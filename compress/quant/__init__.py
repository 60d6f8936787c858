"""Quantization: symmetric low-bit grids for Conv/Deconv/InnerProduct weights, PTQ, and the pieces the
training methods use (QGT's regulariser, ADMM's projection onto the grid).

    grid.py         LayerGrid, quantize_codes / dequantize / fake_quantize (levels -L..L, zero point 0)
    scale.py        fit_grid: max-abs or MSE-optimal scales, per channel or per tensor
    config.py       GridConfig: bits, per_channel, scale, first_last_bits, layers
    ptq.py          fit_grids / apply_grids / ptq
    regularizer.py  QGT (Ghamari et al. 2021): lambda(t) * 1/2 ||W - Q(W)||^2, Ramp
    admm.py         project_to_grid / admm_quant_step (Ye et al. 2018, Leng et al. 2018)
    kept.py         Kept: the unpruned entries of a mostly pruned weight (per-step terms touch only those)
    methods/        ptq, qgt, admm: the trainer's hooks (grids, masks, pull, Z/U, hard quantization)
    record.py       meta["quantization"] and the check that the weights are on it
    thin.py         the grids' per-channel scales after channel thinning (export --thin)
    export.py       export_any: packed low-bit ONNX for a quantized model, else the ordinary export
    api.py          quantize(model, QuantizeConfig): what ``compress quantize`` calls

The packed ONNX itself (storage types, the sparse skip encoding, the decoding graph) is in
``converters/onnx/lowbit.py`` and ``converters/onnx/quantized.py``; per-layer sizes and the seed's
quantization table in ``compress/report/quant.py`` and ``quant_table.py``.
"""
from __future__ import annotations

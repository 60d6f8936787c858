"""The quantization record in a model file's meta, and the check that the weights are on it.

A quantized model file stores each quantized weight as its dequantized float32 values ``q * s``,
exactly on the grid (so the PyTorch model and the packed ONNX export compute on identical values),
and records the grid under ``meta["quantization"]``::

    {"method": "ptq", "bits": 4, "per_channel": true, "scale": "mse", "first_last_bits": 8 | null,
     "layers": {"conv1": {"bits": 8, "axis": 0 | null, "zero_point": 0, "scales": [float32 values]}, ...},
     "input": "lenet_admm.pt",                                     # what was quantized
     "accuracy_before": ..., "accuracy": ..., "dataset": ...}      # optional, when measured

``axis`` 0: one scale per slice along axis 0 of the PyTorch weight; null: one scale for the tensor.
Scales are float32 values written as JSON numbers (exact: a float32 is a float64, and JSON keeps
float64 exactly). :func:`read_grids` validates a record against the net it came with, every weight
bit for bit on its grid, so a model file edited after quantization is refused, not exported wrongly.
"""
from __future__ import annotations

import math

import torch

from compress.errors import CompressError
from compress.layers import prunable_layers
from compress.numbers import as_float32
from compress.quant.config import GridConfig
from compress.quant.grid import MAX_BITS, MIN_BITS, LayerGrid, off_grid
from converters.caffe.names import cut, listed, shown

KEY = "quantization"


def make_record(config: GridConfig, method: str, grids: dict[str, LayerGrid]) -> dict:
    """The ``meta["quantization"]`` record of ``grids``, made by ``method`` under ``config``."""
    return {"method": method, "bits": config.bits, "per_channel": config.per_channel, "scale": config.scale,
            "first_last_bits": config.first_last_bits,
            "layers": {name: {"bits": g.bits, "axis": 0 if config.per_channel else None, "zero_point": 0,
                              "scales": [float(s) for s in g.scales.tolist()]} for name, g in grids.items()}}


def is_quantized(meta: dict | None) -> bool:
    return isinstance(meta, dict) and meta.get(KEY) is not None


def describe(record: dict) -> str:
    """``4-bit per-channel mse grid (8-bit first/last), ptq``."""
    if not isinstance(record, dict):
        return "unreadable record"
    how = "per-channel" if record.get("per_channel") else "per-tensor"
    text = f"{record.get('bits')}-bit {how} {record.get('scale', '')} grid".replace("  ", " ")
    if record.get("first_last_bits"):
        text += f" ({record['first_last_bits']}-bit first/last)"
    act = record.get("activations")
    if isinstance(act, dict):
        text += f", {act.get('bits')}-bit activations ({act.get('calibration')} calibration)"
    return f"{text}, {record.get('method', '?')}"


def read_grids(meta: dict, net, *, where: str = "model") -> dict[str, LayerGrid] | None:
    """The recorded grid of each quantized layer (None when the model is not quantized), after checking
    the record's structure and that every recorded weight is exactly on its grid."""
    rec = meta.get(KEY) if isinstance(meta, dict) else None
    if rec is None:
        return None
    bad = f"{where}: corrupt quantization record"
    if not isinstance(rec, dict) or not isinstance(rec.get("layers"), dict) or not rec["layers"]:
        raise CompressError(f"{bad}: expected a dict with a non-empty 'layers' dict, found {_kind(rec)}")
    layers = prunable_layers(net)
    grids = {}
    for name, entry in rec["layers"].items():
        if name not in layers:
            raise CompressError(f"{bad}: layer {shown(name)} is not a Convolution/Deconvolution/InnerProduct "
                                f"layer of the net ({listed(layers)})")
        grids[name] = _grid(entry, layers[name].weight, f"{bad}: layer {shown(name)}")
    for name, grid in grids.items():
        w = layers[name].weight
        n = off_grid(w, grid)
        if n:
            raise CompressError(f"{where}: layer {shown(name)}: {n} of {w.numel()} weights are not on the "
                                f"recorded {grid.bits}-bit grid (the file was changed after quantization, "
                                "or is corrupt)")
    return grids


def _grid(entry: object, w: torch.Tensor, where: str) -> LayerGrid:
    if not isinstance(entry, dict):
        raise CompressError(f"{where}: expected a dict with bits and scales, found {_kind(entry)}")
    bits = entry.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise CompressError(f"{where}: bits must be an integer from {MIN_BITS} to {MAX_BITS}, "
                            f"found {_shown(bits)}")
    if entry.get("zero_point", 0) != 0:
        raise CompressError(f"{where}: zero_point must be 0 (symmetric grid), "
                            f"found {_shown(entry.get('zero_point'))}")
    scales = entry.get("scales")
    if not isinstance(scales, list) or not all(isinstance(s, int | float) and not isinstance(s, bool)
                                               for s in scales):
        raise CompressError(f"{where}: scales must be a list of numbers, found {_kind(scales)}")
    want = (1,) if entry.get("axis") is None else (w.shape[0],)
    values = as_float32(scales)
    bad = next((i for i, v in enumerate(values) if not (math.isfinite(v) and v > 0)), None)
    if len(scales) not in want or bad is not None:
        which = "" if bad is None else f" (scale {bad}: {_shown(scales[bad])})"
        raise CompressError(f"{where}: expected {want[0]} positive finite scale(s) for a weight of shape "
                            f"{tuple(w.shape)}, found {len(scales)}{which}")
    if entry.get("axis") not in (0, None):
        raise CompressError(f"{where}: axis must be 0 or null, found {_shown(entry.get('axis'))}")
    return LayerGrid(bits, torch.tensor(values, dtype=torch.float32))


def _shown(value: object) -> str:
    return cut(repr(value), 60)


def _kind(x: object) -> str:
    return type(x).__name__

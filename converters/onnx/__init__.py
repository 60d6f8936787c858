"""PyTorch (CaffeNet) -> ONNX: Caffe names kept, native LRN, sparse initializers only where smaller.

Names are re-exported lazily so that importing the package does not import torch or onnx.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "export_onnx": "converters.onnx.export",
    "ExportResult": "converters.onnx.export",
    "sparsify": "converters.onnx.sparse",
    "densify": "converters.onnx.sparse",
    "export_quantized_onnx": "converters.onnx.quantized",
    "WeightGrid": "converters.onnx.quantized",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

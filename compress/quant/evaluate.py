"""Top-1 of an exported ONNX file through onnxruntime on a dataset's test split.

The accuracy the quantization table reports is measured on the file a user ships, not on the PyTorch
model: the images go through the same Caffe preprocessing the model file records (``meta["preprocess"]``),
then through onnxruntime; the first output's argmax is the prediction.
"""
from __future__ import annotations

import os

import numpy as np


def onnx_top1(onnx_path: str | os.PathLike, data: str, input_shape: tuple[int, ...], *,
              preprocess: dict | None = None, num_classes: int | None = None, limit: int | None = None,
              batch_size: int = 500, threads: int | None = None) -> tuple[float, int]:
    """``(top-1, images)`` of ``onnx_path`` on ``data``'s test split (the first ``limit`` images)."""
    import onnxruntime as ort

    from compress.data import get_data

    splits = get_data(data, tuple(input_shape), batch_size=batch_size, preprocess=preprocess, limit=limit,
                      num_classes=num_classes)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(os.fspath(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = session.get_outputs()[0].name
    correct = seen = 0
    for x, y in splits.test:
        pred = session.run([out], {name: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        correct += int((pred.reshape(len(y), -1).argmax(axis=1) == y.numpy()).sum())
        seen += len(y)
    return (correct / seen if seen else float("nan")), seen

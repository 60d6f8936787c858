"""Activation quantization: calibrating the range of every layer's output on real images.

``compress quantize --activations 8`` records, beside the weight grids, the range ``[lo, hi]`` of the net's
input and of every layer's output, measured by **min-max calibration**: the smallest and largest value over
:data:`CALIBRATION_IMAGES` images of the data's *training* split (in loader order, no augmentation; the test
split stays unseen). Min-max keeps every calibration value representable; percentile, MSE or entropy
calibration clip outliers to refine the step, which matters for wide activation distributions (ImageNet
nets); on LeNet min-max loses no accuracy (docs/DEPLOY.md). The export
(:mod:`converters.onnx.qdq`) turns each range into a uint8 grid (``s = (hi - lo) / 255``, zero point
``round(-lo / s)``, 0 always inside the range) and writes the model in full QDQ form, which onnxruntime
runs on its int8 convolution and GEMM kernels.

The record, ``meta["quantization"]["activations"]``::

    {"bits": 8, "calibration": "minmax", "images": 1024, "dataset": "mnist",
     "ranges": {"data": [0.0, 0.996], "conv1": [-1.2, 3.4], ...}}   # blob/layer -> [lo, hi]

Calibration needs images of the real distribution: synthetic data is refused (the ranges would be
meaningless and the int8 model silently wrong on real inputs).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from compress.errors import CompressError

ACTIVATION_BITS = (8,)
CALIBRATION = "minmax"
CALIBRATION_IMAGES = 1024
NEEDS_REAL_DATA = ("--activations: calibration needs real data: give --data with real images (mnist, "
                   "fashion-mnist, an image folder or LMDB), not synthetic")


def check_bits(bits: int) -> None:
    if bits not in ACTIVATION_BITS:
        raise CompressError(f"--activations must be {' or '.join(map(str, ACTIVATION_BITS))} (uint8 "
                            f"activations, onnxruntime's int8 kernels), got {bits}")


@torch.no_grad()
def calibrate(net, batches: Iterable, images: int = CALIBRATION_IMAGES) -> tuple[dict[str, list[float]], int]:
    """``({input blob or layer: [lo, hi]}, images seen)``: min-max of the net's input and of every
    layer's output over the first ``images`` images of ``batches`` (``(x, y)`` pairs)."""
    ranges: dict[str, list[float]] = {}

    def seen(name: str, t) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return
        lo, hi = float(t.min()), float(t.max())
        old = ranges.get(name)
        ranges[name] = [lo, hi] if old is None else [min(old[0], lo), max(old[1], hi)]

    hooks = []
    for node in net.nodes:
        module = net.layer(node.name)
        hooks.append(module.register_forward_hook(
            lambda _m, _a, y, name=node.name: seen(name, y[0] if isinstance(y, tuple | list) else y)))
    inputs = list(getattr(net, "inputs", {}) or {"data": None})
    was = net.training
    net.eval()
    count = 0
    try:
        for x, _y in batches:
            x = x[:images - count].float()
            seen(inputs[0], x)
            net(x)
            count += len(x)
            if count >= images:
                break
    finally:
        for h in hooks:
            h.remove()
        net.train(was)
    if not count:
        raise CompressError("--activations: the calibration data holds no images")
    return ranges, count


def activation_record(bits: int, ranges: dict[str, list[float]], images: int, dataset: str) -> dict:
    return {"bits": bits, "calibration": CALIBRATION, "images": images, "dataset": dataset,
            "ranges": ranges}


def read_ranges(record: dict, where: str) -> dict[str, tuple[float, float]]:
    """The recorded ranges, checked: ``{blob or layer: (lo, hi)}``."""
    act = record.get("activations")
    ranges = act.get("ranges") if isinstance(act, dict) else None
    if not isinstance(ranges, dict) or not ranges:
        raise CompressError(f"{where}: corrupt activation record: expected a non-empty 'ranges' dict")
    out = {}
    for name, r in ranges.items():
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, int | float) for v in r)
                and r[0] <= r[1]):
            raise CompressError(f"{where}: activation range of {name!r} must be [lo, hi] with lo <= hi, "
                                f"found {r!r}")
        out[name] = (float(r[0]), float(r[1]))
    return out

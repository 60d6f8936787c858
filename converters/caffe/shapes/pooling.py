"""Pooling: the parameters Caffe's ``PoolingLayer::LayerSetUp`` checks, and its output size.

Caffe rounds up: ``out = ceil((H + 2p - k) / s) + 1``, less one when ``p > 0`` and the last window
would start at or past ``H + p``; global pooling gives ``1 x 1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import opt, spatial_pair
from converters.caffe.shapes.base import LayerShapes, Shape, cannot_build, register

METHODS = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


@dataclass(frozen=True)
class PoolGeometry:
    method: str  # "MAX" or "AVE"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    global_pooling: bool


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size along one axis (``PoolingLayer::Reshape``)."""
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_geometry(layer, bottoms: list[Shape]) -> PoolGeometry:
    """The checked pooling parameters of ``layer`` on ``bottoms`` (shapes); global pooling's kernel is
    the bottom's whole ``H x W``."""
    p = layer.pooling_param
    if len(bottoms) != 1 or len(bottoms[0]) != 4:
        raise layer_error(layer, f"expected one 4-D (N, C, H, W) bottom, found shapes "
                                 f"{[tuple(b) for b in bottoms]}")
    method = METHODS.get(int(p.pool), str(p.pool))
    if method not in ("MAX", "AVE"):
        raise layer_error(layer, f"pool: {method} is not supported (only MAX and AVE; STOCHASTIC pooling "
                                 f"is random at training and has no deterministic PyTorch equivalent)")
    h, w = (int(s) for s in bottoms[0][2:])
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            raise layer_error(layer, "with global_pooling the kernel size must not be set")
        kernel = (h, w)
    else:
        kernel = spatial_pair(layer, [p.kernel_size] if p.HasField("kernel_size") else [],
                              opt(p, "kernel_h"), opt(p, "kernel_w"), 0, "kernel")
        if min(kernel) <= 0:
            raise layer_error(layer, f"kernel size must be set and positive, found {kernel}")
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") or p.HasField("pad_w") else (p.pad, p.pad)
    if p.HasField("stride_h") or p.HasField("stride_w"):
        stride = (p.stride_h, p.stride_w)
    else:
        stride = (p.stride, p.stride)
    if min(stride) <= 0:
        raise layer_error(layer, f"stride must be positive, found {stride}")
    if p.global_pooling and (pad != (0, 0) or stride != (1, 1)):
        raise layer_error(layer, f"with global_pooling, pad must be 0 and stride 1 (found pad {pad}, "
                                 f"stride {stride})")
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise layer_error(layer, f"pad {pad} must be smaller than the kernel {kernel} (Caffe's rule)")
    return PoolGeometry(method, kernel, stride, pad, bool(p.global_pooling))


@register("Pooling")
def pooling(layer, bottoms: list[Shape]) -> LayerShapes:
    g = pool_geometry(layer, bottoms)
    n, c, h, w = bottoms[0]
    if g.global_pooling:
        return LayerShapes(((n, c, 1, 1),))
    out = tuple(caffe_pool_size(size, k, s, p)
                for size, k, s, p in zip((h, w), g.kernel, g.stride, g.pad, strict=True))
    if min(out) <= 0:
        raise cannot_build(layer, bottoms, f"the output would be {out[0]}x{out[1]} (the kernel "
                                           f"{g.kernel[0]}x{g.kernel[1]} is larger than the padded input)")
    return LayerShapes(((n, c, *out),))

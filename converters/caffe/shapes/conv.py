"""Convolution and Deconvolution: the geometry Caffe's ``BaseConvolutionLayer`` reads, and the output size.

Blobs: Convolution ``(out, in/group, kh, kw)``, Deconvolution ``(in, out/group, kh, kw)``, each with a
bias ``(out,)`` when ``bias_term``. Output size per spatial axis, ``d`` the dilation:
Convolution ``(size + 2p - (d (k - 1) + 1)) / s + 1`` (floor), Deconvolution
``(size - 1) s - 2p + d (k - 1) + 1``.
"""
from __future__ import annotations

from dataclasses import dataclass

from converters.caffe.layers.base import layer_error
from converters.caffe.layers.common import opt, spatial_pair
from converters.caffe.shapes.base import LayerShapes, Shape, cannot_build, register


@dataclass(frozen=True)
class ConvGeometry:
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    bias: bool


def conv_geometry(layer, bottoms: list[Shape]) -> ConvGeometry:
    """The checked geometry of a Convolution or Deconvolution layer on ``bottoms`` (shapes)."""
    p = layer.convolution_param
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    x = tuple(bottoms[0])
    if len(x) != 4:
        raise layer_error(layer, f"expected a 4-D (N, C, H, W) bottom, found shape {x}")
    if p.axis != 1:
        raise layer_error(layer, f"only axis 1 (channels) is supported, found axis {p.axis}")
    if not p.HasField("num_output") or p.num_output == 0:
        raise layer_error(layer, "convolution_param.num_output must be set to a positive number")
    kernel = spatial_pair(layer, p.kernel_size, opt(p, "kernel_h"), opt(p, "kernel_w"), 0, "kernel")
    if min(kernel) <= 0:
        raise layer_error(layer, f"kernel size must be positive, found {kernel}")
    stride = spatial_pair(layer, p.stride, opt(p, "stride_h"), opt(p, "stride_w"), 1, "stride")
    pad = spatial_pair(layer, p.pad, opt(p, "pad_h"), opt(p, "pad_w"), 0, "pad")
    dilation = spatial_pair(layer, p.dilation, None, None, 1, "dilation")
    if min(stride) <= 0 or min(dilation) <= 0:
        raise layer_error(layer, f"stride and dilation must be positive, found {stride} and {dilation}")
    channels, group = int(x[1]), int(p.group)
    if group <= 0 or channels % group or p.num_output % group:
        raise layer_error(layer, f"group {group} must divide both the input channels ({channels}) "
                                 f"and num_output ({p.num_output})")
    return ConvGeometry(channels, int(p.num_output), kernel, stride, pad, dilation, group, bool(p.bias_term))


@register("Convolution")
def convolution(layer, bottoms: list[Shape]) -> LayerShapes:
    g = conv_geometry(layer, bottoms)
    n, _, h, w = bottoms[0]
    extent = [d * (k - 1) + 1 for k, d in zip(g.kernel, g.dilation, strict=True)]
    padded = [size + 2 * p for size, p in zip((h, w), g.pad, strict=True)]
    if any(e > s for e, s in zip(extent, padded, strict=True)):
        raise cannot_build(layer, bottoms, f"the (dilated) kernel {extent[0]}x{extent[1]} is larger than "
                                           f"the padded input {padded[0]}x{padded[1]}")
    out = [(s - e) // st + 1 for s, e, st in zip(padded, extent, g.stride, strict=True)]
    weight = (g.out_channels, g.in_channels // g.groups, *g.kernel)
    return LayerShapes(((n, g.out_channels, *out),), (weight, *[(g.out_channels,)] * g.bias))


@register("Deconvolution")
def deconvolution(layer, bottoms: list[Shape]) -> LayerShapes:
    g = conv_geometry(layer, bottoms)
    n, _, h, w = bottoms[0]
    out = [(size - 1) * s - 2 * p + d * (k - 1) + 1
           for size, k, s, p, d in zip((h, w), g.kernel, g.stride, g.pad, g.dilation, strict=True)]
    if min(out) <= 0:
        raise cannot_build(layer, bottoms, f"the output would be {out[0]}x{out[1]} (the padding removes "
                                           f"more than the deconvolution adds)")
    weight = (g.in_channels, g.out_channels // g.groups, *g.kernel)
    return LayerShapes(((n, g.out_channels, *out),), (weight, *[(g.out_channels,)] * g.bias))

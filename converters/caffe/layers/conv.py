"""Convolution and Deconvolution: ``nn.Conv2d`` / ``nn.ConvTranspose2d`` with Caffe's blob layout.

Caffe's convolution blob is ``(out, in/group, kh, kw)`` and its deconvolution blob
``(in, out/group, kh, kw)``: exactly PyTorch's layouts, so the blobs are adopted as parameters as they
are. Geometry comes from ``kernel_size``/``pad``/``stride``/``dilation`` (one value or one per spatial
dimension) or the ``_h``/``_w`` fields. Only 2-D convolution over axis 1 is supported.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, layer_error, register
from converters.caffe.layers.common import opt, spatial_pair
from converters.caffe.layers.fillers import Filler, filler_of


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


def conv_geometry(layer, bottoms: list[torch.Tensor]) -> ConvGeometry:
    p = layer.convolution_param
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    x = bottoms[0]
    if x.dim() != 4:
        raise layer_error(layer, f"expected a 4-D (N, C, H, W) bottom, found shape {tuple(x.shape)}")
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
    channels, group = int(x.shape[1]), int(p.group)
    if group <= 0 or channels % group or p.num_output % group:
        raise layer_error(layer, f"group {group} must divide both the input channels ({channels}) "
                                 f"and num_output ({p.num_output})")
    return ConvGeometry(channels, int(p.num_output), kernel, stride, pad, dilation, group, bool(p.bias_term))


class _ConvBlobs(CaffeBlobs):
    """Blob mapping and Caffe fillers shared by both convolution modules (layouts already agree)."""

    weight_filler: Filler | None = None
    bias_filler: Filler | None = None

    def get_caffe_blobs(self) -> list[torch.Tensor]:
        blobs = [self.weight.detach()]
        if self.bias is not None:
            blobs.append(self.bias.detach())
        return blobs

    def set_caffe_blobs(self, blobs: list[torch.Tensor]) -> None:
        self.weight = nn.Parameter(blobs[0])
        if self.bias is not None:
            self.bias = nn.Parameter(blobs[1])

    def reset_parameters(self) -> None:
        """Caffe's fillers when the prototxt names them; else PyTorch's default weights, zero bias."""
        super().reset_parameters()
        if self.weight_filler is not None:
            self.weight_filler.fill_(self.weight.data)
        if self.bias is not None:
            (self.bias_filler or Filler()).fill_(self.bias.data)


class CaffeConvolution(_ConvBlobs, nn.Conv2d):
    pass


class CaffeDeconvolution(_ConvBlobs, nn.ConvTranspose2d):
    pass


def _fillers(module: _ConvBlobs, layer) -> _ConvBlobs:
    module.weight_filler = filler_of(layer.convolution_param, "weight_filler")
    module.bias_filler = filler_of(layer.convolution_param, "bias_filler")
    return module


@register("Convolution")
def build_convolution(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    g = conv_geometry(layer, bottoms)
    module = CaffeConvolution(g.in_channels, g.out_channels, g.kernel, stride=g.stride, padding=g.pad,
                              dilation=g.dilation, groups=g.groups, bias=g.bias, device="meta")
    return _fillers(module, layer)


@register("Deconvolution")
def build_deconvolution(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    g = conv_geometry(layer, bottoms)
    module = CaffeDeconvolution(g.in_channels, g.out_channels, g.kernel, stride=g.stride, padding=g.pad,
                                dilation=g.dilation, groups=g.groups, bias=g.bias, device="meta")
    return _fillers(module, layer)

"""Convolution and Deconvolution: ``nn.Conv2d`` / ``nn.ConvTranspose2d`` with Caffe's blob layout.

Caffe's convolution blob is ``(out, in/group, kh, kw)`` and its deconvolution blob
``(in, out/group, kh, kw)``: exactly PyTorch's layouts, so the blobs are adopted as parameters as they
are. Geometry comes from ``kernel_size``/``pad``/``stride``/``dilation`` (one value or one per spatial
dimension) or the ``_h``/``_w`` fields (checked by ``converters/caffe/shapes/conv.py``, shared with the
torch-free shape inference). Only 2-D convolution over axis 1 is supported.
"""
from __future__ import annotations

import torch
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, register
from converters.caffe.layers.fillers import Filler, filler_of
from converters.caffe.shapes.conv import conv_geometry


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
    g = conv_geometry(layer, [tuple(b.shape) for b in bottoms])
    module = CaffeConvolution(g.in_channels, g.out_channels, g.kernel, stride=g.stride, padding=g.pad,
                              dilation=g.dilation, groups=g.groups, bias=g.bias, device="meta")
    return _fillers(module, layer)


@register("Deconvolution")
def build_deconvolution(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    g = conv_geometry(layer, [tuple(b.shape) for b in bottoms])
    module = CaffeDeconvolution(g.in_channels, g.out_channels, g.kernel, stride=g.stride, padding=g.pad,
                                dilation=g.dilation, groups=g.groups, bias=g.bias, device="meta")
    return _fillers(module, layer)

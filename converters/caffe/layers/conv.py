"""Convolution and Deconvolution: ``nn.Conv2d`` / ``nn.ConvTranspose2d`` with Caffe's blob layout.

Caffe's convolution blob is ``(out, in/group, kh, kw)`` and its deconvolution blob
``(in, out/group, kh, kw)``: exactly PyTorch's layouts, so the blobs are adopted as parameters as they
are. Geometry comes from ``kernel_size``/``pad``/``stride``/``dilation`` (one value or one per spatial
dimension) or the ``_h``/``_w`` fields (checked by ``converters/caffe/shapes/conv.py``, shared with the
torch-free shape inference). Only 2-D convolution over axis 1 is supported.

On the CPU, a convolution whose input has more than 16 channels, not a multiple of 16 (LeNet's conv2: 20),
runs on channels-last copies of its input and weight (:func:`_channels_last`): for contiguous (N, C, H, W)
input oneDNN pads the channels to blocks of 16 (20 -> 32, 50 -> 64) and reorders every tensor in and out,
while channels-last takes them as they are. LeNet's conv2 forward+backward at one thread: 10.2-10.9 ms
against 13.6-15.7 (1.33-1.44x); 16, 32 or 64 channels (ResNet-20, the MobileNets), 8 channels, 1 or 3
and depthwise convolutions are as fast or faster on the plain path, so they stay there. The sums are taken in
another order, so the results differ in the last bits (within 1e-6 relative of float64, as close as the
plain path); still deterministic, and every check against real Caffe holds at its tolerance. Its output
stays channels-last, as MAX pooling's does (converters/caffe/net.py passes such blobs only to layers that
compute the same values from them, and makes the rest contiguous): LeNet's conv2 -> pool2 -> ip1 then
reorders nothing but the flatten, 5% of a training step, with the same weights to the bit. A one-channel
input (a grey image) whose convolution's readers all take channels-last blobs (LeNet's conv1, read by
pool1; the net decides, converters/caffe/net.py) runs channels-last as well, reading the same memory
(:func:`_one_channel`): another 4%, its sums again in another order.
"""
from __future__ import annotations

import torch
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, is_channels_last, register, tracing
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
    # Set by the net (converters/caffe/net.py) when every layer reading this one's output takes a
    # channels-last blob as it is: then a one-channel input runs channels-last too (:func:`_one_channel`).
    channels_last_out = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_out and _one_channel(x, self.groups):
            h, w = x.shape[2:]  # one channel: the same memory read channels-last, no copy
            return self._conv_forward(x.as_strided(x.shape, (h * w, 1, w, 1)), self.weight, self.bias)
        if _channels_last(x, self.groups):
            x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, self.weight))
            return self._conv_forward(x, w, self.bias)  # channels-last: the net passes it on as it is
        if is_channels_last(x):  # a channels-last blob into a convolution that runs the plain path
            x = x.contiguous()
        return super().forward(x)


class CaffeDeconvolution(_ConvBlobs, nn.ConvTranspose2d):
    pass


def _channels_last(x: torch.Tensor, groups: int) -> bool:
    """Whether a convolution of ``x`` runs channels-last: more than 16 channels, not a multiple of 16,
    contiguous or already channels-last (:func:`_fast_cpu` for the rest)."""
    return (_fast_cpu(x, groups) and x.shape[1] > 16 and x.shape[1] % 16 != 0
            and (x.is_contiguous() or is_channels_last(x)))


def _one_channel(x: torch.Tensor, groups: int) -> bool:
    """Whether a one-channel input (a grey image) runs channels-last: contiguous (:func:`_fast_cpu` for
    the rest). Its memory is already channels-last; oneDNN then writes the output so, and MAX pooling after
    it reads it without a reorder (LeNet's conv1 + pool1, forward and backward: 9.5-11.6 ms against
    16.8-21.6 ms at one thread)."""
    return _fast_cpu(x, groups) and x.shape[1] == 1 and x.is_contiguous()


def _fast_cpu(x: torch.Tensor, groups: int) -> bool:
    """What both channels-last paths need: a 4-d float32 CPU input, an ungrouped convolution, and no
    tracing or export (which must see the plain ``conv2d``; asked first, before reading a size, which a
    trace would record)."""
    return (not tracing() and groups == 1 and x.dim() == 4 and x.device.type == "cpu"
            and x.dtype == torch.float32)


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

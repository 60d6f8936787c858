"""Element-wise activations and Softmax: ReLU (``negative_slope``), PReLU, Sigmoid, TanH, Dropout, Softmax.

All are out-of-place: an in-place Caffe layer (top == bottom) simply rebinds the blob name in the
executor, which gives Caffe's semantics without mutating tensors other layers may still hold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, register
from converters.caffe.layers.fillers import Filler, filler_of
from converters.caffe.shapes.activation import dropout_ratio, prelu_channels, softmax_axis
from converters.caffe.shapes.base import one_bottom


def _one_bottom(layer, bottoms: list[torch.Tensor]) -> None:
    one_bottom(layer, [tuple(b.shape) for b in bottoms])


@register("ReLU")
def build_relu(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    _one_bottom(layer, bottoms)
    slope = layer.relu_param.negative_slope
    # Caffe: max(x, 0) + negative_slope * min(x, 0), which is LeakyReLU.
    return nn.LeakyReLU(slope) if slope != 0 else nn.ReLU()


@register("Sigmoid")
def build_sigmoid(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    _one_bottom(layer, bottoms)
    return nn.Sigmoid()


@register("TanH")
def build_tanh(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    _one_bottom(layer, bottoms)
    return nn.Tanh()


class CaffeDropout(nn.Dropout):
    """Caffe's Dropout (``dropout_layer.cpp``): the identity in eval mode (Caffe's TEST phase); in training
    each unit is kept with probability ``1 - ratio`` and kept units are scaled by ``1 / (1 - ratio)``
    (``top = bottom * mask * scale``; the gradient is masked and scaled the same way). The mask comes from
    ``generator`` when one is set (a ``torch.Generator`` on the input's device), else from torch's global
    generator: Caffe's own random stream cannot be reproduced, a seeded torch one makes runs repeatable."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * mask * (1.0 / (1.0 - self.p))


@register("Dropout")
def build_dropout(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    _one_bottom(layer, bottoms)
    return CaffeDropout(dropout_ratio(layer))


@register("Softmax")
def build_softmax(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    return nn.Softmax(dim=softmax_axis(layer, [tuple(b.shape) for b in bottoms]))


class CaffePReLU(nn.Module, CaffeBlobs):
    """PReLU over axis 1; one slope per channel, or one shared slope (Caffe blob of shape ``()``)."""

    def __init__(self, channels: int, channel_shared: bool, filler: Filler | None = None) -> None:
        super().__init__()
        self.channel_shared = channel_shared
        self.filler = filler
        self.weight = nn.Parameter(torch.empty(() if channel_shared else (channels,), device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(1) if self.channel_shared else self.weight
        return F.prelu(x, w)

    def get_caffe_blobs(self) -> list[torch.Tensor]:
        return [self.weight.detach()]

    def set_caffe_blobs(self, blobs: list[torch.Tensor]) -> None:
        self.weight = nn.Parameter(blobs[0])

    def reset_parameters(self) -> None:
        """Caffe's default PReLU filler is constant 0.25."""
        (self.filler or Filler(value=0.25)).fill_(self.weight.data)

    def extra_repr(self) -> str:
        return f"channel_shared={self.channel_shared}"


@register("PReLU")
def build_prelu(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    p = layer.prelu_param
    return CaffePReLU(prelu_channels(layer, [tuple(b.shape) for b in bottoms]), bool(p.channel_shared),
                      filler_of(p, "filler"))

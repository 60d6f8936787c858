"""Element-wise activations and Softmax: ReLU (``negative_slope``), PReLU, Sigmoid, TanH, Dropout, Softmax.

All are out-of-place: an in-place Caffe layer (top == bottom) simply rebinds the blob name in the
executor, which gives Caffe's semantics without mutating tensors other layers may still hold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, layer_error, register
from converters.caffe.layers.common import canonical_axis
from converters.caffe.layers.fillers import Filler, filler_of


def _one_bottom(layer, bottoms: list[torch.Tensor]) -> torch.Tensor:
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    return bottoms[0]


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
    ratio = layer.dropout_param.dropout_ratio
    if not 0.0 <= ratio < 1.0:
        raise layer_error(layer, f"dropout_ratio must be in [0, 1), found {ratio}")
    return CaffeDropout(ratio)


@register("Softmax")
def build_softmax(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    x = _one_bottom(layer, bottoms)
    return nn.Softmax(dim=canonical_axis(layer, layer.softmax_param.axis, x.dim()))


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
    x = _one_bottom(layer, bottoms)
    p = layer.prelu_param
    channels = int(x.shape[1]) if x.dim() >= 2 else 1
    return CaffePReLU(channels, bool(p.channel_shared), filler_of(p, "filler"))

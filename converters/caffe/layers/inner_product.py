"""InnerProduct: an ``nn.Linear`` over the bottom flattened from ``axis`` in NCHW order (no permutation).

``.weight`` is always PyTorch's ``(out, in)``. With ``transpose: true`` Caffe stores the blob as
``(in, out)``; the module then holds a transposed *view* of that blob, so a round trip writes the
very same bytes back and pruning code still sees ``(out, in)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, layer_error, register
from converters.caffe.layers.common import canonical_axis
from converters.caffe.layers.fillers import Filler, filler_of


class CaffeInnerProduct(nn.Linear, CaffeBlobs):
    weight_filler: Filler | None = None
    bias_filler: Filler | None = None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, axis: int = 1,
                 transpose: bool = False, device=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device)
        self.axis = axis
        self.transpose = transpose

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.flatten(x, self.axis), self.weight, self.bias)

    def get_caffe_blobs(self) -> list[torch.Tensor]:
        w = self.weight.detach()
        blobs = [w.t() if self.transpose else w]
        if self.bias is not None:
            blobs.append(self.bias.detach())
        return blobs

    def set_caffe_blobs(self, blobs: list[torch.Tensor]) -> None:
        self.weight = nn.Parameter(blobs[0].t() if self.transpose else blobs[0])
        if self.bias is not None:
            self.bias = nn.Parameter(blobs[1])

    def reset_parameters(self) -> None:
        """Caffe's fillers (on the Caffe-layout blob) when named; else PyTorch's default, zero bias."""
        super().reset_parameters()
        if self.weight_filler is not None:
            self.weight_filler.fill_(self.weight.data.t() if self.transpose else self.weight.data)
        if self.bias is not None:
            (self.bias_filler or Filler()).fill_(self.bias.data)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axis={self.axis}, transpose={self.transpose}"


@register("InnerProduct")
def build(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    p = layer.inner_product_param
    if len(bottoms) != 1:
        raise layer_error(layer, f"expected 1 bottom, found {len(bottoms)}")
    if not p.HasField("num_output") or p.num_output == 0:
        raise layer_error(layer, "inner_product_param.num_output must be set to a positive number")
    x = bottoms[0]
    axis = canonical_axis(layer, p.axis, x.dim())
    in_features = math.prod(x.shape[axis:])
    module = CaffeInnerProduct(in_features, int(p.num_output), bias=bool(p.bias_term), axis=axis,
                               transpose=bool(p.transpose), device="meta")
    module.weight_filler = filler_of(p, "weight_filler")
    module.bias_filler = filler_of(p, "bias_filler")
    return module

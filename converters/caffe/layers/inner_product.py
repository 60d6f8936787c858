"""InnerProduct: an ``nn.Linear`` over the bottom flattened from ``axis`` in NCHW order (no permutation).

``.weight`` is always PyTorch's ``(out, in)``. With ``transpose: true`` Caffe stores the blob as
``(in, out)``; the module then holds a transposed *view* of that blob, so a round trip writes the
very same bytes back and pruning code still sees ``(out, in)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, register
from converters.caffe.layers.fillers import Filler, filler_of
from converters.caffe.shapes.inner_product import inner_product_geometry


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
    g = inner_product_geometry(layer, [tuple(b.shape) for b in bottoms])
    p = layer.inner_product_param
    module = CaffeInnerProduct(g.in_features, g.out_features, bias=g.bias, axis=g.axis, transpose=g.transpose,
                               device="meta")
    module.weight_filler = filler_of(p, "weight_filler")
    module.bias_filler = filler_of(p, "bias_filler")
    return module

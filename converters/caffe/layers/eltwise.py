"""Eltwise: SUM (with per-bottom ``coeff``), PROD and MAX of equally shaped bottoms."""
from __future__ import annotations

import torch
from torch import nn

from converters.caffe.layers.base import register
from converters.caffe.shapes.eltwise import eltwise_params


class CaffeEltwise(nn.Module):
    def __init__(self, operation: str, coeff: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.operation = operation
        self.coeff = coeff

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            out = xs[0] * xs[1]
            for x in xs[2:]:
                out = out * x
        elif self.operation == "MAX":
            out = torch.maximum(xs[0], xs[1])
            for x in xs[2:]:
                out = torch.maximum(out, x)
        else:  # Caffe: top = 0, then top += coeff_i * bottom_i in bottom order
            c = self.coeff or (1.0,) * len(xs)
            out = xs[0] if c[0] == 1 else c[0] * xs[0]
            for ci, x in zip(c[1:], xs[1:], strict=True):
                out = out + x if ci == 1 else out + ci * x
        return out

    def extra_repr(self) -> str:
        return self.operation + (f", coeff={self.coeff}" if self.coeff else "")


@register("Eltwise")
def build(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    return CaffeEltwise(*eltwise_params(layer, [tuple(b.shape) for b in bottoms]))

"""Eltwise: SUM (with per-bottom ``coeff``), PROD and MAX of equally shaped bottoms."""
from __future__ import annotations

import torch
from torch import nn

from converters.caffe.layers.base import layer_error, register

_OPS = {0: "PROD", 1: "SUM", 2: "MAX"}


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
    p = layer.eltwise_param
    if len(bottoms) < 2:
        raise layer_error(layer, f"expected at least 2 bottoms, found {len(bottoms)}")
    shapes = [tuple(b.shape) for b in bottoms]
    if len(set(shapes)) != 1:
        raise layer_error(layer, f"all bottoms must have the same shape, found {shapes}")
    op = _OPS.get(int(p.operation))
    if op is None:
        raise layer_error(layer, f"unknown operation {p.operation} (expected PROD, SUM or MAX)")
    coeff = tuple(float(c) for c in p.coeff) or None
    if coeff is not None:
        if op != "SUM":
            raise layer_error(layer, f"coeff is only allowed with operation SUM, found {op}")
        if len(coeff) != len(bottoms):
            raise layer_error(layer, f"expected one coeff per bottom ({len(bottoms)}), found {len(coeff)}")
    return CaffeEltwise(op, coeff)

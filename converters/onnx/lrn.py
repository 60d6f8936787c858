"""LRN for export: Caffe's ACROSS_CHANNELS LRN as one native ONNX ``LRN`` node.

The TorchScript exporter turns ``F.local_response_norm`` into ~35 primitive nodes. ONNX's ``LRN`` is
exactly Caffe's ACROSS_CHANNELS form: ``y = x / (bias + alpha/size * sum_window x^2)^beta`` with the
window ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``, i.e. Caffe's ``pre_pad = (size-1)/2`` (Caffe
only allows odd sizes, where both conventions and PyTorch's agree). So the layer is replaced, for the
duration of the export, by a module whose autograd function carries an ONNX ``symbolic``.

WITHIN_CHANNEL LRN has no ONNX operator: the Caffe layer module itself is exported, as the primitives
its forward uses (x^2, AveragePool with ``count_include_pad``, Pow, Mul), the same decomposition Caffe
uses internally.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LRNParams:
    size: int
    alpha: float
    beta: float
    k: float
    across_channels: bool


def lrn_params(module: nn.Module) -> LRNParams | None:
    """The LRN parameters of a Caffe LRN module (or ``nn.LocalResponseNorm``); None if it is not one."""
    if isinstance(module, nn.LocalResponseNorm):
        return LRNParams(int(module.size), float(module.alpha), float(module.beta), float(module.k), True)
    names = ("size", "alpha", "beta")
    if not all(hasattr(module, n) for n in names):
        return None
    region = getattr(module, "region", "ACROSS_CHANNELS")
    if isinstance(region, str):
        across = region.upper() in ("ACROSS_CHANNELS", "ACROSS")
    else:  # the caffe.proto enum: ACROSS_CHANNELS = 0, WITHIN_CHANNEL = 1
        across = int(region) == 0
    k = getattr(module, "k", 1.0)
    return LRNParams(int(module.size), float(module.alpha), float(module.beta), float(k), across)


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float):  # noqa: D401
        return F.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)

    @staticmethod
    def symbolic(g, x, size: int, alpha: float, beta: float, k: float):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class NativeLRN(nn.Module):
    """ACROSS_CHANNELS LRN that exports as a single ONNX ``LRN`` node."""

    def __init__(self, p: LRNParams) -> None:
        super().__init__()
        if p.size % 2 != 1:
            raise ValueError(f"LRN local_size must be odd (as in Caffe), got {p.size}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.p.size, self.p.alpha, self.p.beta, self.p.k)

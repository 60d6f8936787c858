"""LRN (local response normalisation), both of Caffe's regions.

ACROSS_CHANNELS: ``y = x * (k + alpha / n * sum_{c' in window(c)} x_c'^2) ^ -beta``, the window of ``n``
channels centred on ``c`` with zeros beyond the edges (= ``F.local_response_norm``, k included).
WITHIN_CHANNEL: Caffe builds it from a square, an AVE pooling of ``n x n`` with pad ``(n - 1) / 2`` and a
power layer ``(1 + alpha * pooled) ^ -beta``; for odd ``n`` and stride 1 every AVE window is whole in the
padded input, so ``pooled = sum_window x^2 / n^2``. ``k`` is ignored there, as in Caffe.
``CaffeLRN`` keeps ``size, alpha, beta, k, region`` so that the ONNX exporter can emit a native ``LRN``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converters.caffe.layers.base import register
from converters.caffe.shapes.lrn import lrn_params


class CaffeLRN(nn.Module):
    def __init__(self, size: int, alpha: float, beta: float, k: float, region: str) -> None:
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.region == "ACROSS_CHANNELS":
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        pad = (self.size - 1) // 2
        pooled = F.avg_pool2d(x * x, self.size, 1, pad, count_include_pad=True)
        return x * (1.0 + self.alpha * pooled).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"{self.region}, size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


@register("LRN")
def build(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    p = layer.lrn_param
    size, region = lrn_params(layer, [tuple(b.shape) for b in bottoms])
    return CaffeLRN(size, float(p.alpha), float(p.beta), float(p.k), region)

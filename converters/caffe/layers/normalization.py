"""BatchNorm and Scale, as Caffe splits them: BatchNorm only normalises, Scale holds gamma (and beta).

Caffe's BatchNorm blobs are ``mean * s, var * s, s`` (moving sums and their weight). The module keeps
the three raw blobs as buffers, so a round trip writes the very same bytes, and derives the statistics
as Caffe does: ``blob * (1 / s)``, or 0 when ``s == 0``. ``y = (x - mean) / sqrt(var + eps)``.
``use_global_stats`` defaults to the phase (``batch_norm_layer.cpp``: ``use_global_stats_ = phase == TEST``
unless set): stored statistics in eval mode (Caffe's TEST), batch statistics (biased variance) in
training mode (TRAIN). Whenever Caffe normalizes with batch statistics it also updates its three blobs
(``s = s * f + 1``, ``mean_sum = mean_sum * f + mean``, ``var_sum = var_sum * f + m / (m - 1) * var``,
``m`` = elements per channel): in training mode, and in eval mode too when ``update_in_eval`` is set,
which TEST phase nets do (Caffe's TEST net with ``use_global_stats: false`` updates the blobs it
shares with the TRAIN net; a deploy net's evaluation never mutates it).
"""
from __future__ import annotations

import torch
from torch import nn

from converters.caffe.layers.base import CaffeBlobs, register
from converters.caffe.layers.fillers import Filler, filler_of
from converters.caffe.shapes.normalization import batchnorm_channels, scale_geometry


class CaffeBatchNorm(nn.Module, CaffeBlobs):
    update_in_eval = False  # see the module docstring: set on TEST phase nets

    def __init__(self, channels: int, eps: float = 1e-5, use_global_stats: bool | None = None,
                 moving_average_fraction: float = 0.999) -> None:
        super().__init__()
        self.num_features = channels
        self.eps = eps
        self.use_global_stats = use_global_stats
        self.moving_average_fraction = moving_average_fraction
        self.register_buffer("mean_sum", torch.empty(channels, device="meta"))
        self.register_buffer("var_sum", torch.empty(channels, device="meta"))
        self.register_buffer("scale_factor", torch.empty(1, device="meta"))

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored mean and variance, ``blob * (1 / s)`` (0 when ``s == 0``), exactly as Caffe."""
        s = self.scale_factor[0]
        inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
        return self.mean_sum * inv, self.var_sum * inv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        global_stats = self.use_global_stats if self.use_global_stats is not None else not self.training
        if global_stats:
            mean, var = self.statistics()
        else:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = (x - mean.view(shape)).square().mean(dim=dims)
            if self.training or self.update_in_eval:
                self._update(var, mean, x.numel() // x.shape[1])
        return (x - mean.view(shape)) / (var.view(shape) + self.eps).sqrt()

    @torch.no_grad()
    def _update(self, var: torch.Tensor, mean: torch.Tensor, m: int) -> None:
        # Caffe: s = s * f + 1; mean_sum = mean_sum * f + mean; var_sum = var_sum * f + m / (m - 1) * var.
        f = self.moving_average_fraction
        self.scale_factor.mul_(f).add_(1.0)
        self.mean_sum.mul_(f).add_(mean)
        self.var_sum.mul_(f).add_(var, alpha=m / (m - 1) if m > 1 else 1.0)

    def get_caffe_blobs(self) -> list[torch.Tensor]:
        return [self.mean_sum, self.var_sum, self.scale_factor]

    def set_caffe_blobs(self, blobs: list[torch.Tensor]) -> None:
        self.mean_sum, self.var_sum, self.scale_factor = blobs

    def reset_parameters(self) -> None:
        """Caffe initialises all three blobs to zero (statistics 0 until trained)."""
        for b in self.get_caffe_blobs():
            b.zero_()

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, use_global_stats={self.use_global_stats}"


@register("BatchNorm")
def build_batchnorm(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    channels = batchnorm_channels(layer, [tuple(b.shape) for b in bottoms])
    p = layer.batch_norm_param
    use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") else None
    return CaffeBatchNorm(channels, float(p.eps), use_global,
                          float(p.moving_average_fraction))


class CaffeScale(nn.Module, CaffeBlobs):
    """``y = x * scale + bias`` with ``scale`` broadcast over axes ``axis .. axis + scale.dim()``.

    With one bottom the scale is a learned blob; with two, the second bottom is the scale and the
    only blob is the optional bias.
    """

    def __init__(self, axis: int, shape: tuple[int, ...], learned_scale: bool, bias: bool,
                 filler: Filler | None = None, bias_filler: Filler | None = None) -> None:
        super().__init__()
        self.axis = axis
        self.filler = filler
        self.bias_filler = bias_filler
        self.weight = nn.Parameter(torch.empty(shape, device="meta")) if learned_scale else None
        self.bias = nn.Parameter(torch.empty(shape, device="meta")) if bias else None

    def _broadcast(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape((1,) * self.axis + tuple(t.shape) + (1,) * (ndim - self.axis - t.dim()))

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.weight if scale is None else scale
        y = x * self._broadcast(scale, x.dim())
        return y if self.bias is None else y + self._broadcast(self.bias, x.dim())

    def get_caffe_blobs(self) -> list[torch.Tensor]:
        return [p.detach() for p in (self.weight, self.bias) if p is not None]

    def set_caffe_blobs(self, blobs: list[torch.Tensor]) -> None:
        blobs = list(blobs)
        if self.weight is not None:
            self.weight = nn.Parameter(blobs.pop(0))
        if self.bias is not None:
            self.bias = nn.Parameter(blobs.pop(0))

    def reset_parameters(self) -> None:
        """Caffe's defaults: scale filled with 1, bias with 0, unless the prototxt names fillers."""
        if self.weight is not None:
            (self.filler or Filler(value=1.0)).fill_(self.weight.data)
        if self.bias is not None:
            (self.bias_filler or Filler()).fill_(self.bias.data)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, bias={self.bias is not None}"


@register("Scale")
def build_scale(layer, bottoms: list[torch.Tensor]) -> nn.Module:
    p = layer.scale_param
    axis, shape = scale_geometry(layer, [tuple(b.shape) for b in bottoms])
    return CaffeScale(axis, shape, learned_scale=len(bottoms) == 1, bias=bool(p.bias_term),
                      filler=filler_of(p, "filler"), bias_filler=filler_of(p, "bias_filler"))

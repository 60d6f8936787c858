"""Symmetric signed uniform grids: ``w ~ s * q`` with integer codes ``q`` in ``[-L, L]``, ``L = 2^(b-1) - 1``.

A ``b``-bit grid here has the ``2L + 1`` levels ``-L..L`` (2 bits: -1, 0, 1; 3 bits: -3..3; 4 bits: -7..7;
8 bits: -127..127), the "restricted range" of TensorRT and of Jacob et al. 2018's weight grids, not the
full two's-complement range ``-2^(b-1)..2^(b-1)-1``. Why: the grid is symmetric about zero, so zero is a
level (a pruned weight stays exactly zero and a pruned model stays exactly as sparse), ``|q| <= L`` makes
``-q`` a level too (no asymmetric extra negative level whose scale would be wasted on one side), and the
codes still fit the signed storage type of ``b`` bits (INT2/INT4/INT8). The cost is one level out of
``2^b`` (a quarter of the 2-bit levels, which is why 2 bits is ternary here).

The scale ``s`` is per output channel (axis 0 of the PyTorch weight, which is the output channel of
Conv2d/Linear and the input channel of ConvTranspose2d, whose weight is ``(in, out/groups, kh, kw)``)
or one per tensor; the zero point is always 0. Rounding is ``torch.round`` (half to even), the codes
are clamped to ``[-L, L]``, and the dequantized weight is the float32 product ``q * s``: the exact
value that the model file stores and that the ONNX ``DequantizeLinear`` computes, so PyTorch and
onnxruntime compute on identical weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.errors import CompressError
from compress.quant.bits import MAX_BITS, MIN_BITS, check_bits  # noqa: F401  (re-exported)


def qmax(bits: int) -> int:
    """The largest code ``L = 2^(bits-1) - 1`` of a ``bits``-bit symmetric grid (levels ``-L..L``)."""
    return (1 << (check_bits(bits) - 1)) - 1


@dataclass(frozen=True)
class LayerGrid:
    """The grid of one weight: ``bits``, float32 ``scales`` (one per slice along axis 0, or a single
    one when ``per_channel`` is False), zero point 0."""

    bits: int
    scales: torch.Tensor

    def __post_init__(self) -> None:
        check_bits(self.bits)
        s = self.scales
        if not isinstance(s, torch.Tensor) or s.dim() != 1 or s.numel() == 0:
            raise CompressError(f"grid scales must be a non-empty 1-D tensor, got {_describe(s)}")
        if s.dtype != torch.float32:
            object.__setattr__(self, "scales", s.to(torch.float32))
        if not bool(torch.isfinite(self.scales).all()) or bool((self.scales <= 0).any()):
            raise CompressError("grid scales must be positive and finite, got min "
                                f"{float(self.scales.min()):g}, max {float(self.scales.max()):g}")

    @property
    def levels(self) -> int:
        return qmax(self.bits)

    @property
    def per_channel(self) -> bool:
        return self.scales.numel() > 1

    def scale_for(self, w: torch.Tensor) -> torch.Tensor:
        """The scales shaped to broadcast against ``w`` (``(C, 1, ...)`` or a scalar)."""
        s = self.scales.to(w.device)
        if s.numel() == 1:
            return s.reshape(())
        if w.dim() == 0 or w.shape[0] != s.numel():
            raise CompressError(f"a grid with {s.numel()} channel scales does not fit a weight of shape "
                                f"{tuple(w.shape)} (axis 0 must have {s.numel()} slices)")
        return s.reshape((-1,) + (1,) * (w.dim() - 1))


def quantize_codes(w: torch.Tensor, grid: LayerGrid) -> torch.Tensor:
    """Integer codes ``clamp(round(w / s), -L, L)`` as int8 (no gradient)."""
    s = grid.scale_for(w)
    q = torch.round(w.detach().float() / s).clamp_(-grid.levels, grid.levels)
    return q.to(torch.int8)


def dequantize(q: torch.Tensor, grid: LayerGrid) -> torch.Tensor:
    """The float32 weight ``q * s`` (exactly what ONNX ``DequantizeLinear`` computes with zero point 0)."""
    return q.to(torch.float32) * grid.scale_for(q)


def fake_quantize(w: torch.Tensor, grid: LayerGrid) -> torch.Tensor:
    """``Q(w)``: the nearest grid point of every weight (clamped to the range), float32, no gradient."""
    return dequantize(quantize_codes(w, grid), grid)


def off_grid(w: torch.Tensor, grid: LayerGrid) -> int:
    """How many entries of ``w`` are not exactly (bit for bit) a level of ``grid``."""
    return int((fake_quantize(w, grid) != w.detach().float()).sum())


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__

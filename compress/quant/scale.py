"""How a grid's scale is chosen: max-abs, or the MSE-optimal clip (a search, then alternating least squares).

``max``: ``s = max|w| / L``, every weight inside the range (no clipping), the classic choice.

``mse``: the scale that minimizes ``||w - s * clamp(round(w / s), -L, L)||^2``, clipping outliers to
give the bulk of the weights finer steps. A search, then a refinement:
1. the errors of 48 clip ratios ``c = 2^(-i/8)`` (1, 0.917, ..., 0.017; ``s = c max|w| / L``) are computed
   exactly, each from the sorted magnitudes and their prefix sums (a binary search of the ``L`` rounding
   boundaries instead of a pass over the weights), and the best is kept;
2. from there, the closed-form alternating (Lloyd-style) least squares of Leng et al. 2018 ("Extremely
   Low Bit Neural Network: Squeeze the Last Bit Out with ADMM", the scaling-factor step of their
   projection): with the codes fixed the best scale is ``s = <w, q> / <q, q>``, with the scale fixed the
   best codes are the rounded, clamped ``w / s``; a step is kept only where it lowers the error.
Max-abs is the first candidate, so the result is never worse than max-abs (on heavy-tailed weights it
is much better). The search alone finds the basin (the error is piecewise quadratic in ``s``, with
many local minima); Lloyd alone, from max-abs, crawls and stops in a nearer local minimum. Zeros
(pruned weights) sit in code 0 and add nothing, so the fit is over the kept weights.

The scales are rounded to float16 values where they fit its normal range (:func:`half_storable`): the
export stores them in half the bytes. Per channel (axis 0) each slice gets its own scale; an all-zero
slice (a pruned filter) gets the whole tensor's max-abs scale (any positive scale represents its zeros
exactly). A tensor whose weights are all zero has no range at all: that is an error naming the layer.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from compress.errors import CompressError
from compress.quant.grid import LayerGrid, fake_quantize, qmax

MSE_ITERS, MSE_TOL = 12, 1e-6  # refinement rounds; stop early when a round gains less (relative)
CLIP_CANDIDATES, CLIP_STEP = 48, 2 ** (1 / 8)  # clip ratios 1, 0.917, 0.841, ..., 0.017 of max|w|

ScaleFit = Callable[[torch.Tensor, int], torch.Tensor]  # (weights as (C, K), bits) -> scales (C,)
SCALE_METHODS: dict[str, ScaleFit] = {}


def scale_method(name: str) -> Callable[[ScaleFit], ScaleFit]:
    def deco(fn: ScaleFit) -> ScaleFit:
        SCALE_METHODS[name] = fn
        return fn
    return deco


def fit_grid(w: torch.Tensor, bits: int, *, per_channel: bool = True, method: str = "max",
             name: str = "weight") -> LayerGrid:
    """The grid of ``w`` (``bits``, one scale per axis-0 slice or one per tensor, by ``method``)."""
    if method not in SCALE_METHODS:
        raise CompressError(f"unknown scale method {method!r}; choose from {', '.join(SCALE_METHODS)}")
    w = w.detach().float()
    if w.numel() == 0:
        raise CompressError(f"layer {name!r}: empty weight, nothing to quantize")
    if not bool(torch.isfinite(w).all()):
        raise CompressError(f"layer {name!r}: the weight has NaN or infinite values; cannot quantize it")
    rows = w.reshape(w.shape[0], -1) if per_channel and w.dim() > 0 else w.reshape(1, -1)
    peak = float(rows.abs().max())
    if peak == 0.0:
        how = "per-channel" if per_channel else "per-tensor"
        raise CompressError(f"layer {name!r}: every weight is zero, so its {bits}-bit {how} grid has no "
                            "range (the scale would be 0); leave the layer out of the quantized layers")
    scales = SCALE_METHODS[method](rows, bits).to(torch.float32)
    dead = rows.abs().amax(dim=1) == 0
    scales[dead] = peak / qmax(bits)
    scales = torch.where(scales > 0, scales, torch.full_like(scales, peak / qmax(bits)))
    return LayerGrid(bits, half_storable(scales))


FP16_NORMAL = (2.0 ** -14, 65504.0)  # the float16 normal range: 11 significant bits throughout


def half_storable(scales: torch.Tensor) -> torch.Tensor:
    """``scales`` rounded to the nearest float16 values (kept as float32) when every one of them lies in
    float16's normal range, so that the export stores them in 2 bytes instead of 4 (:mod:`converters.
    onnx.quantized`); otherwise unchanged. The rounding moves a scale by at most 2^-11 of itself (the
    weights by the same fraction of a level), far inside the quantization error, and the weights are then
    rounded onto the grid of the stored scales, so the model file and the export agree bit for bit."""
    low, high = FP16_NORMAL
    if bool(((scales >= low) & (scales <= high)).all()):
        return scales.to(torch.float16).to(torch.float32)
    return scales


@scale_method("max")
def max_abs_scales(rows: torch.Tensor, bits: int) -> torch.Tensor:
    """``max|w| / L`` of each row."""
    return rows.abs().amax(dim=1) / qmax(bits)


@scale_method("mse")
def mse_scales(rows: torch.Tensor, bits: int) -> torch.Tensor:
    """The row scales of least squared error: a search over clip ratios, refined by alternating least
    squares (see the module). Errors are exact sums over buckets of the sorted magnitudes."""
    L = qmax(bits)
    b = _Buckets(rows, L)
    peak = b.a[:, -1].clamp_min(torch.finfo(torch.float32).tiny)
    ratios = CLIP_STEP ** -torch.arange(CLIP_CANDIDATES, dtype=torch.float32)  # 1 (max-abs) first
    cands = peak[:, None] * ratios[None, :].to(peak.device) / L
    errs = torch.cat([b.error(cands[:, i:i + 8]) for i in range(0, CLIP_CANDIDATES, 8)], dim=1)
    best = errs.argmin(dim=1)  # the first (largest scale) of equal errors
    s = cands.gather(1, best[:, None]).squeeze(1)
    sums = b.sums(s[:, None])
    err = b.error(s[:, None], sums).squeeze(1)
    for _ in range(MSE_ITERS):  # Lloyd / Leng et al.: s = <|w|, q> / <q, q> with the codes of s
        num, den = (x.squeeze(1) for x in sums)
        new = torch.where(den > 0, num / den.clamp_min(1), s.double()).to(torch.float32)
        new = new.clamp_min(torch.finfo(torch.float32).tiny)
        new_sums = b.sums(new[:, None])
        new_err = b.error(new[:, None], new_sums).squeeze(1)
        better = new_err < err
        gain = float((err - new_err)[better].sum())
        if not bool(better.any()):
            break
        keep = better[:, None]
        s, err = torch.where(better, new, s), torch.where(better, new_err, err)
        sums = tuple(torch.where(keep, a, b_) for a, b_ in zip(new_sums, sums, strict=True))
        if gain <= MSE_TOL * float(err.sum()):
            break
    return s


class _Buckets:
    """Sorted magnitudes of each row with float64 prefix sums of ``a`` and ``a^2``: the error of any
    scale is then ``sum_k S2_k - 2 k s S1_k + k^2 s^2 n_k`` over the code buckets ``k = 0..L``, found
    by a binary search of the ``L`` rounding boundaries ``(k - 1/2) s`` (ties, which ``round`` sends to
    the even code, are counted upwards: they change no comparison that matters)."""

    def __init__(self, rows: torch.Tensor, L: int) -> None:
        self.a = _sorted_magnitudes(rows)
        n_rows, k = self.a.shape
        a64 = self.a.double()
        self.p1 = torch.zeros(n_rows, k + 1, dtype=torch.float64, device=rows.device)
        self.p2 = torch.zeros_like(self.p1)
        torch.cumsum(a64, dim=1, out=self.p1[:, 1:])
        torch.cumsum(a64.mul_(a64), dim=1, out=self.p2[:, 1:])
        self.k = torch.arange(1, L + 1, dtype=torch.float64, device=rows.device)
        self.L = L

    def sums(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``<|w|, q>`` and ``<q, q>`` of each row at each of its scales ``s`` (rows, M), from the
        count ``n_k`` and sum ``S1_k`` of each code bucket ``k = 1..L``."""
        rows, m = s.shape
        bounds = (self.k.float() - 0.5) * s[:, :, None]  # (rows, M, L)
        lo = torch.searchsorted(self.a, bounds.reshape(rows, m * self.L))
        hi = torch.cat([lo.reshape(rows, m, self.L)[:, :, 1:],
                        torch.full((rows, m, 1), self.a.shape[1], dtype=lo.dtype, device=lo.device)], dim=2)
        hi = hi.reshape(rows, m * self.L)
        s1 = (self.p1.gather(1, hi) - self.p1.gather(1, lo)).reshape(rows, m, self.L)
        n = (hi - lo).reshape(rows, m, self.L).double()
        return s1 @ self.k, n @ (self.k * self.k)

    def error(self, s: torch.Tensor, sums: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Squared error of each row at each of its scales ``s`` (rows, M): ``||w||^2 - 2 s <|w|, q> +
        s^2 <q, q>``."""
        wq, qq = self.sums(s) if sums is None else sums
        s64 = s.double()
        return self.p2[:, -1:] - 2 * s64 * wq + s64 * s64 * qq


def _sorted_magnitudes(rows: torch.Tensor) -> torch.Tensor:
    """``|rows|`` sorted ascending along dim 1 (numpy's sort on the CPU: several times torch's)."""
    a = rows.abs()
    if a.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.sort(a.numpy(), axis=1))
    return a.sort(dim=1).values.contiguous()


def quantization_mse(w: torch.Tensor, grid: LayerGrid) -> float:
    """Mean squared error of ``w`` against its nearest grid points (a diagnostic)."""
    return float(((w.detach().float() - fake_quantize(w, grid)) ** 2).mean(dtype=torch.float64))

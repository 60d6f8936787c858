"""The quantization-guided training (QGT) regulariser: pull every weight towards its grid point.

Ghamari et al. 2021, "Quantization-Guided Training for Compact TinyML Models" (arXiv 2103.06231):
fine-tune with a regulariser that drives the weights to a distribution with a small quantization
error, ramped up over the fine-tuning, then quantize. The paper's code and its exact term are not
public; this is the design used here:

    R_t(W) = lambda(t) * sum_layers 1/2 ||W_l - Q_l(W_l)||^2,      dR/dW_l = lambda(t) (W_l - Q_l(W_l))

- ``Q_l`` is the layer's grid projection (:func:`~compress.quant.grid.fake_quantize`), treated as a
  constant (it is piecewise constant: its true derivative is zero almost everywhere), so the gradient
  points from each weight straight to its nearest level (the clipped level for weights outside the
  range). Under plain SGD with learning rate ``eta`` one step moves a weight the fraction
  ``eta * lambda(t)`` of its distance to the grid, the same fraction in every layer whatever its scale.
  (Dividing by ``scale^2`` would make the term read in grid steps, but its gradient ``~ 1/scale^2``
  would pull a layer with small weights orders of magnitude harder than one with large weights.)
- ``lambda(t)`` ramps from ``lambda_min`` to ``lambda_max`` over ``ramp_steps`` optimizer steps
  (:class:`Ramp`: linear, cosine, or exponential, which spends as many steps in every decade), then
  stays: the loss first adapts the weights, then the pull wins. Training ends with the hard
  quantization of :func:`~compress.quant.ptq.apply_grids` on the same grids.
- The grids are fitted once, on the weights at the start (the configured scale method), and kept fixed:
  the weights converge onto exactly the grid they are finally rounded to. They live in the
  regulariser's ``state_dict`` so a resumed run uses the same grids.
- Zeros stay zero: ``Q(0) = 0``, so a pruned (masked) weight has zero distance and zero gradient; the
  trainer's masks keep the loss gradient off them as in masked retraining.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from compress.errors import CompressError
from compress.quant.grid import LayerGrid, fake_quantize
from compress.quant.kept import Kept

# shape -> lambda(lo, hi, x): the value a fraction x in [0, 1] of the way up the ramp
RAMPS: dict[str, Callable[[float, float, float], float]] = {
    "linear": lambda lo, hi, x: lo + (hi - lo) * x,
    "cosine": lambda lo, hi, x: lo + (hi - lo) * 0.5 * (1.0 - math.cos(math.pi * x)),  # flat start and end
    "exp": lambda lo, hi, x: lo * (hi / lo) ** x,  # the same time in every decade from lo to hi
}


@dataclass(frozen=True)
class Ramp:
    """``lambda(t)``: 0 before ``start``, then from ``lambda_min`` up to ``lambda_max`` over
    ``ramp_steps`` steps (``shape``: linear, cosine, or exponential), ``lambda_max`` from then on."""

    lambda_max: float
    ramp_steps: int
    shape: str = "linear"
    start: int = 0
    lambda_min: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lambda_max) and self.lambda_max >= 0):
            raise CompressError(f"QGT lambda must be finite and >= 0, got {self.lambda_max!r}")
        if not (math.isfinite(self.lambda_min) and 0 <= self.lambda_min <= self.lambda_max):
            raise CompressError(f"QGT lambda_min must be from 0 to lambda ({self.lambda_max:g}), "
                                f"got {self.lambda_min!r}")
        if self.ramp_steps < 0 or self.start < 0:
            raise CompressError(f"QGT ramp steps and start must be >= 0, got {self.ramp_steps}, {self.start}")
        if self.shape not in RAMPS:
            raise CompressError(f"unknown QGT ramp {self.shape!r}; choose from {', '.join(RAMPS)}")
        if self.shape == "exp" and self.lambda_min == 0 < self.lambda_max:
            raise CompressError("an exponential QGT ramp starts above 0: give lambda_min > 0")

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if self.ramp_steps == 0:
            return self.lambda_max
        x = min(1.0, (step - self.start) / self.ramp_steps)
        return RAMPS[self.shape](self.lambda_min, self.lambda_max, x) if x < 1.0 else self.lambda_max


def grid_penalty(w: torch.Tensor, grid: LayerGrid) -> torch.Tensor:
    """``1/2 ||w - Q(w)||^2`` with ``Q(w)`` constant: differentiable in ``w``, gradient ``w - Q(w)``."""
    return 0.5 * (w - fake_quantize(w, grid).to(w.dtype)).pow(2).sum()


def grid_penalty_grad(w: torch.Tensor, grid: LayerGrid) -> torch.Tensor:
    """The gradient of :func:`grid_penalty` in closed form, ``w - Q(w)`` (no autograd)."""
    return w.detach() - fake_quantize(w, grid).to(w.dtype)


class QGTRegularizer:
    """``lambda(t) * sum 1/2 ||W - Q(W)||^2`` over the given weights, on fixed grids.

    Use either :meth:`penalty` (add it to the loss before ``backward``) or :meth:`add_grad_` (after
    ``backward``: adds the same gradient in place, without autograd): not both.
    """

    def __init__(self, weights: Mapping[str, nn.Parameter], grids: Mapping[str, LayerGrid],
                 ramp: Ramp, kept: Mapping[str, Kept | None] | None = None) -> None:
        missing = [n for n in grids if n not in weights]
        if missing:
            raise CompressError(f"QGT: no weight for the grid(s) of {', '.join(missing)}")
        self.weights = {n: weights[n] for n in grids}
        self.grids = dict(grids)
        self.ramp = ramp
        self.kept = {n: k for n, k in (kept or {}).items() if k is not None and n in self.weights}
        self._entry_scales()

    def _entry_scales(self) -> None:
        self.kept_scales = {n: k.scales(self.grids[n]) for n, k in self.kept.items()}

    def set_grids(self, grids: Mapping[str, LayerGrid]) -> None:
        """Pull towards ``grids`` from now on (re-fitted scales)."""
        self.grids = {n: grids[n] for n in self.weights}
        self._entry_scales()

    def penalty(self, step: int) -> torch.Tensor:
        lam = self.ramp(step)
        total = sum(grid_penalty(w, self.grids[n]) for n, w in self.weights.items())
        return lam * total

    @torch.no_grad()
    def add_grad_(self, step: int) -> None:
        """``w.grad += lambda(step) (w - Q(w))`` for every weight: one temporary per layer, the same
        operations (and so the same values) as :func:`grid_penalty_grad`; on the kept entries only
        where ``kept`` names a layer's (elsewhere the term is zero)."""
        lam = self.ramp(step)
        if lam == 0.0:
            return
        for name, w in self.weights.items():
            grid, kept = self.grids[name], self.kept.get(name)
            x, s = (w, grid.scale_for(w)) if kept is None else (kept.gather(w), self.kept_scales[name])
            d = torch.div(x, s).round_().clamp_(-grid.levels, grid.levels).mul_(s)  # Q(w)
            torch.sub(x, d, out=d)
            if w.grad is None:
                w.grad = torch.zeros_like(w)
            if kept is None:
                w.grad.add_(d, alpha=lam)
            else:
                kept.add_(w.grad, d, alpha=lam)

    @torch.no_grad()
    def distance(self) -> dict[str, float]:
        """Root-mean-square distance of each layer's nonzero weights to the grid, in grid steps (a
        diagnostic: 0 when every weight is on its level, at most 0.5 inside the range; pruned zeros,
        always on the grid, are left out so that they do not dilute it)."""
        out = {}
        for name, w in self.weights.items():
            grid = self.grids[name]
            steps = (grid_penalty_grad(w, grid) / grid.scale_for(w))[w.detach() != 0]
            out[name] = float(steps.pow(2).mean().sqrt()) if steps.numel() else 0.0
        return out

    def state_dict(self) -> dict:
        return {"grids": {n: {"bits": g.bits, "scales": g.scales.clone()} for n, g in self.grids.items()}}

    def load_state_dict(self, state: dict) -> None:
        grids = {n: LayerGrid(int(d["bits"]), d["scales"]) for n, d in state["grids"].items()}
        if set(grids) != set(self.grids):
            raise CompressError(f"QGT state has grids for {sorted(grids)}, this run for {sorted(self.grids)}")
        self.grids = grids
        self._entry_scales()

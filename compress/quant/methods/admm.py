"""``admm``: ADMM quantization (Ye et al. 2018, "A Unified Framework of DNN Weight Pruning and Weight
Clustering/Quantization Using ADMM", arXiv 1811.01907; Leng et al. 2018, "Extremely Low Bit Neural
Network: Squeeze the Last Bit Out with ADMM", AAAI), then hard quantization.

    min f(W) s.t. W_i on its grid   ->   L = f(W) + sum_i rho_i/2 ||W_i - Z_i + U_i||^2
    W-step: SGD on L for one ADMM iteration (``epochs_per_iter`` epochs; the penalty gradient
            rho_i (W_i - Z_i + U_i) is added after backward)
    Z-step: Z_i = Proj_grid(W_i + U_i)        (:func:`compress.quant.admm.admm_quant_step`)
    U-step: U_i = U_i + W_i - Z_i

the same loop as ADMM pruning (:mod:`compress.prune.methods.admm`) with the projection onto the grid
instead of the top-k set. Z starts at Proj(W), U at 0; rho grows by ``rho_growth`` after every
iteration, and the learning-rate cycle restarts at each iteration. ``admm_scale``: ``refit`` fits the
grid's scales to ``W + U`` at every Z-step by the configured scale method (with ``--scale mse`` this is
Leng et al.'s projection, which alternates the scaling factor and the rounding), ``fixed`` keeps the
grid fitted at the start (Ye et al. fix the levels beforehand). The last Z-step's grid is the one the
final hard quantization of W uses. Pruned entries stay zero: their Z and U are exactly zero (the
projection is masked), and the masks keep W zero there.
"""
from __future__ import annotations

from typing import Any

import torch

from compress.quant.admm import admm_quant_step, project_to_grid
from compress.quant.method_params import PARAMS
from compress.quant.methods.base import QuantMethod


class ADMMQuant(QuantMethod):
    name = "admm"
    params = PARAMS["admm"]

    def total_epochs(self) -> int:
        return int(self.hp["admm_iters"]) * int(self.hp["epochs_per_iter"])

    def cycle_epochs(self) -> int:
        return int(self.hp["epochs_per_iter"])

    @torch.no_grad()
    def _start(self) -> None:
        self.Z = {}
        for n, layer in self.layers.items():
            self.Z[n], self.grids[n] = project_to_grid(layer.weight, self.bits[n], grid=self._fixed(n),
                                                       per_channel=self.grid.per_channel,
                                                       scale_method=self.grid.scale, mask=self._kept(n),
                                                       name=n)
        self.U = {n: torch.zeros_like(z) for n, z in self.Z.items()}
        self.rho = {n: float(self.hp["rho"]) for n in self.layers}
        self._refresh()

    def _kept(self, name: str) -> torch.Tensor | None:
        return ~self.zeros[name] if name in self.zeros else None

    def _refresh(self) -> None:
        """D = U - Z (the pull is rho (W + D)), gathered to the kept entries of a mostly pruned layer."""
        self._D = {}
        for n in self.layers:
            d = self.U[n] - self.Z[n]
            self._D[n] = d if self.kept[n] is None else self.kept[n].gather(d)

    def _fixed(self, name: str):
        return self.grids[name] if self.hp["admm_scale"] == "fixed" else None

    @torch.no_grad()
    def _pull(self) -> None:
        for n, layer in self.layers.items():
            w = layer.weight
            if w.grad is None:
                continue
            kept = self.kept[n]
            if kept is None:
                w.grad.add_(w.detach(), alpha=self.rho[n]).add_(self._D[n], alpha=self.rho[n])
            else:
                kept.add_(w.grad, kept.gather(w).add_(self._D[n]), alpha=self.rho[n])

    @torch.no_grad()
    def end_iteration(self, model, k: int) -> None:
        growth = float(self.hp["rho_growth"])
        for n, layer in self.layers.items():
            self.Z[n], self.U[n], self.grids[n] = admm_quant_step(
                layer.weight, self.U[n], self.bits[n], grid=self._fixed(n), per_channel=self.grid.per_channel,
                scale_method=self.grid.scale, mask=self._kept(n), name=n)
            self.rho[n] *= growth
        self._refresh()

    def metrics(self) -> dict[str, float]:
        num = sum(float((layer.weight.detach() - self.Z[n]).pow(2).sum()) for n, layer in self.layers.items())
        den = sum(float(layer.weight.detach().pow(2).sum()) for layer in self.layers.values())
        return {"admm_residual": (num / den) ** 0.5 if den else 0.0, "rho": max(self.rho.values())}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "Z": {n: z.clone() for n, z in self.Z.items()},
                "U": {n: u.clone() for n, u in self.U.items()}, "rho": dict(self.rho)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        dev = {n: layer.weight.device for n, layer in self.layers.items()}
        self.Z = {n: state["Z"][n].to(dev[n], copy=True) for n in self.layers}
        self.U = {n: state["U"][n].to(dev[n], copy=True) for n in self.layers}
        self.rho = {n: float(state["rho"][n]) for n in self.layers}
        self._refresh()

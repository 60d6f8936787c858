"""``qgt``: quantization-guided training (Ghamari et al. 2021, "Quantization-Guided Training for Compact
TinyML Models", arXiv 2103.06231), then hard quantization.

The paper fine-tunes with a regulariser that pulls the weights towards the quantization grid, ramped up
over the fine-tuning, and quantizes at the end; its code is not public. The design here:

- The regulariser (:mod:`compress.quant.regularizer`): ``lambda(t) * sum 1/2 ||W - Q(W)||^2``, its
  gradient ``lambda(t) (W - Q(W))`` added after backward (``Q`` held constant). ``lambda`` rises
  exponentially from ``qgt_lambda_min`` to ``qgt_lambda`` over ``qgt_ramp`` of the optimizer steps (the
  same number of steps in every decade: weak while the weights adapt, strong enough at the end to hold
  every weight on its level), then stays. A linear ramp to 20 pins the weights on their first levels
  within the first epoch (measured: 2-bit LeNet 71x stays at 97.4%).
- The grids: fitted at the start by the configured scale method and, by default, refitted to the
  weights after every epoch (``qgt_refit``), so a channel's scale follows its weights.
- The forward pass (``qgt_forward``): by default the net computes with the weights rounded onto the grid
  and the gradient found there updates the float weights ("straight-through", as in quantization-aware
  training; the regulariser then damps weights that oscillate across a rounding boundary, as Nagel et
  al. 2022 do with the same term). This is not in the QGT paper's description; it is what reaches the
  2-bit goal here: with ``qgt_forward float`` (the regulariser alone, the float weights in the forward
  pass) 2-bit LeNet 71x ends at 97.8%.

The learning rate runs one cycle over all ``epochs`` (``--lr-schedule``). At the end every selected
weight is rounded onto the last grids, the ones the weights were pulled to.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.quant.grid import fake_quantize
from compress.quant.method_params import PARAMS
from compress.quant.methods.base import QuantMethod
from compress.quant.regularizer import QGTRegularizer, Ramp
from compress.train.weights import weights_as


class QGT(QuantMethod):
    name = "qgt"
    params = PARAMS["qgt"]

    def _ramp(self) -> Ramp:
        spe = self.steps_per_epoch
        steps = round(float(self.hp["qgt_ramp"]) * self.total_epochs() * spe) if spe else 0
        return Ramp(float(self.hp["qgt_lambda"]), steps, shape=self.hp["qgt_ramp_shape"],
                    lambda_min=float(self.hp["qgt_lambda_min"]))

    @property
    def straight_through(self) -> bool:
        return self.hp["qgt_forward"] == "quantized"

    def validate(self) -> None:
        self._ramp()  # lambda_min <= lambda, an exponential ramp above 0: errors before any work

    def _start(self) -> None:
        weights = {n: layer.weight for n, layer in self.layers.items()}
        self.reg = QGTRegularizer(weights, self.grids, self._ramp(), self.kept)
        self.latent: dict[str, torch.Tensor] = {}
        if self.straight_through:
            self._to_grid()

    # --- straight-through: the float weights live in ``latent`` while the net holds Q(W) -------
    def _float_entries(self, n: str) -> torch.Tensor:
        w, kept = self.layers[n].weight, self.kept[n]
        return w.detach().clone() if kept is None else kept.gather(w)

    @torch.no_grad()
    def _to_grid(self) -> None:
        """Keep the float weights, give the net their rounded values for the next forward pass (on the
        kept entries of a mostly pruned layer: the same values as rounding the whole tensor)."""
        for n, layer in self.layers.items():
            kept, grid = self.kept[n], self.grids[n]
            self.latent[n] = self._float_entries(n)
            if kept is None:
                layer.weight.copy_(fake_quantize(layer.weight, grid))
                continue
            s = self.reg.kept_scales[n]
            q = torch.div(self.latent[n], s).round_().clamp_(-grid.levels, grid.levels).mul_(s)
            kept.put_(layer.weight, q)

    @torch.no_grad()
    def _restore(self) -> None:
        """The float weights back into the net (before the pull and the optimizer step)."""
        for n, layer in self.layers.items():
            kept = self.kept[n]
            if kept is None:
                layer.weight.copy_(self.latent[n])
            else:
                kept.put_(layer.weight, self.latent[n])

    # --- hooks ---------------------------------------------------------------------------------
    @torch.no_grad()
    def before_step(self, model: nn.Module, lr: float | None = None) -> None:
        if self.straight_through:
            self._restore()
        super().before_step(model, lr)

    def _pull(self) -> None:
        self.reg.add_grad_(self.t)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        super().after_step(model)
        spe = self.steps_per_epoch
        if self.hp["qgt_refit"] == "epoch" and spe and self.t % spe == 0:
            self.grids.update({n: self.fit(n, layer.weight) for n, layer in self.layers.items()})
            self.reg.set_grids(self.grids)
        if self.straight_through:
            self._to_grid()

    def finalize(self, model: nn.Module):
        """Round the float weights onto the last grids (the net held those very values already in
        straight-through mode; the relative error reported is the float weights')."""
        if self.straight_through:
            self._restore()
        return super().finalize(model)

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "latent": {n: t.clone() for n, t in self.latent.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        weights = {n: layer.weight for n, layer in self.layers.items()}
        self.reg = QGTRegularizer(weights, self.grids, self._ramp(), self.kept)
        dev = {n: layer.weight.device for n, layer in self.layers.items()}
        self.latent = {n: t.to(dev[n], copy=True) for n, t in state.get("latent", {}).items()}

    def metrics(self) -> dict[str, float]:
        if self.straight_through:  # the distance of the float weights, not of the rounded ones
            with torch.no_grad():
                full = {n: self.latent[n] if self.kept[n] is None else
                        self.kept[n].put_(torch.zeros_like(layer.weight), self.latent[n])
                        for n, layer in self.layers.items()}
            with weights_as(self.layers, full):
                dist = self.reg.distance()
        else:
            dist = self.reg.distance()
        return {"qgt_lambda": self.reg.ramp(self.t),
                "grid_distance": sum(dist.values()) / len(dist) if dist else 0.0}

"""``qgt``: quantization-guided training (Ghamari et al. 2021, "Quantization-Guided Training for Compact
TinyML Models", arXiv 2103.06231), then hard quantization.

The paper fine-tunes with a regulariser that pulls the weights towards the quantization grid, ramped up
over the fine-tuning, and quantizes at the end; its code is not public. The design here
(:mod:`compress.quant.regularizer`): the term ``lambda(t) * sum 1/2 ||W - Q(W)||^2`` on grids fitted once
at the start (the configured scale method) and kept fixed, whose gradient ``lambda(t) (W - Q(W))`` is
added after backward (``Q`` held constant); ``lambda`` rises from 0 to ``qgt_lambda`` over the first
``qgt_ramp`` of the optimizer steps (linear or cosine), then stays. The learning rate runs one cycle
over all ``epochs`` (``--lr-schedule``). At the end every selected weight is rounded onto the same
grids: the weights have converged onto exactly the levels they are finally rounded to.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.params import Param
from compress.quant.methods.base import QuantMethod
from compress.quant.regularizer import RAMPS, QGTRegularizer, Ramp


class QGT(QuantMethod):
    name = "qgt"
    # Measured on LeNet/MNIST (README "Quantization"): the ADMM 71.2x model at 4 and 2 bits.
    params = (
        Param("epochs", int, 10, "Fine-tuning epochs", low=1),
        Param("qgt_lambda", float, 20.0, "QGT: strength of the pull towards the grid once ramped up",
              low=0),
        Param("qgt_lambda_min", float, 1e-3, "QGT: strength of the pull at the first step", low=0),
        Param("qgt_ramp", float, 1.0, "QGT: fraction of the steps over which the pull rises", low=0, high=1),
        Param("qgt_ramp_shape", str, "exp", "QGT: shape of the rise", choices=tuple(RAMPS)),
        Param("qgt_refit", str, "epoch", "QGT: refit the grids' scales to the weights after every epoch, "
              "or keep the initial ones", choices=("epoch", "never")),
    )

    def _ramp(self) -> Ramp:
        spe = self.steps_per_epoch
        steps = round(float(self.hp["qgt_ramp"]) * self.total_epochs() * spe) if spe else 0
        return Ramp(float(self.hp["qgt_lambda"]), steps, shape=self.hp["qgt_ramp_shape"],
                    lambda_min=float(self.hp["qgt_lambda_min"]))

    def validate(self) -> None:
        self._ramp()  # lambda_min <= lambda, an exponential ramp above 0: errors before any work

    def _start(self) -> None:
        weights = {n: layer.weight for n, layer in self.layers.items()}
        self.reg = QGTRegularizer(weights, self.grids, self._ramp(), self.kept)

    def _pull(self) -> None:
        self.reg.add_grad_(self.t)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        super().after_step(model)
        spe = self.steps_per_epoch
        if self.hp["qgt_refit"] == "epoch" and spe and self.t % spe == 0:
            self.grids.update({n: self.fit(n, layer.weight) for n, layer in self.layers.items()})
            self.reg.set_grids(self.grids)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._start()

    def metrics(self) -> dict[str, float]:
        dist = self.reg.distance()
        return {"qgt_lambda": self.reg.ramp(self.t),
                "grid_distance": sum(dist.values()) / len(dist) if dist else 0.0}

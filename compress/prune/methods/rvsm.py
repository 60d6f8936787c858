"""``rvsm``: relaxed variable splitting (Dinh & Xin, "Convergence of a relaxed variable splitting
method for learning sparse neural networks via l1, l0, and transformed-l1 penalties", arXiv 1812.05719).

    L_beta(w, u) = f(w) + lamb P(u) + beta/2 ||w - u||^2,   per minibatch:
    w <- w - eta grad f(w) - eta beta (w - u)        (the pull is added to the gradient, once per step)
    u <- prox_{(lamb/beta) P}(w)                     (l0: hard, l1: soft, tl1: transformed-l1 threshold)

The sparse ``u`` is what is evaluated and, at the end, copied into the weights and exported.
Convergence needs ``eta < 2 / (beta + L)``.
"""
from __future__ import annotations

import math

import torch

from compress.params import Param
from compress.prune import ops
from compress.prune.methods import register
from compress.prune.methods.base import SplittingMethod
from compress.prune.targets import PrunableLayer

PENALTIES = ("l0", "l1", "tl1")


@register
class RVSM(SplittingMethod):
    name = "rvsm"
    params = (
        Param("epochs", int, 10, "Method-phase epochs", low=0),
        Param("beta", float, 1e-2, "RVSM relaxation (pull of w towards u)", low=0, low_open=True),
        Param("lamb", float, 1e-6, "RVSM penalty weight", low=0),
        Param("penalty", str, "l0", "Sparsity penalty (RGSM: of the group norms)", choices=PENALTIES),
        Param("tl1_a", float, 1.0, "Transformed-l1 parameter a", low=0, low_open=True),
    )

    def pull(self) -> float:
        return float(self.hp["beta"])

    def prox(self, layer: PrunableLayer, w: torch.Tensor) -> torch.Tensor:
        mu = float(self.hp["lamb"]) / float(self.hp["beta"])
        penalty = self.hp["penalty"]
        if penalty == "l0":
            return ops.hard_threshold(w, math.sqrt(2 * mu))
        if penalty == "l1":
            return ops.soft_threshold(w, mu)
        return ops.tl1_threshold(w, mu, float(self.hp["tl1_a"]))

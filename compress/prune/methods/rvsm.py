"""``rvsm``: relaxed variable splitting (Dinh & Xin, "Convergence of a relaxed variable splitting
method for learning sparse neural networks via l1, l0, and transformed-l1 penalties", arXiv 1812.05719).

    L_beta(w, u) = f(w) + lamb P(u) + beta/2 ||w - u||^2,   per minibatch:
    w <- optimizer step on grad f(w) + beta (w - u)   (``--pull optimizer``: the pull joins the gradient,
                                                      so momentum and weight decay act on it too)
    u <- prox_{(lamb/beta) P}(w)                     (l0: hard, l1: soft, tl1: transformed-l1 threshold)

The seed code's variants (tdinh15/rvsm-rgsm-admm): ``--pull seed`` moves ``w -= lr beta (w - u)`` before
an optimizer step on ``grad f(w)`` alone; ``--reset epoch`` sets ``w = u`` after every epoch. The
penalised layers are every prunable layer, fully connected ones included (the seed: conv layers only),
or the targeted ones when ``--targets``/``--keep``/``--pcen`` are given; with targets the hard prune
then keeps exactly each layer's count. Without targets the sparse ``u`` is what is evaluated and, at the
end, copied into the weights and exported. Convergence needs ``eta < 2 / (beta + L)``.
"""
from __future__ import annotations

import math

import torch

from compress.layers import PrunableLayer
from compress.prune import ops
from compress.prune.method_params import PARAMS
from compress.prune.methods.registry import register
from compress.prune.methods.splitting import SplittingMethod


@register
class RVSM(SplittingMethod):
    name = "rvsm"
    params = PARAMS["rvsm"]

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

"""``rgsm``: relaxed group-wise splitting for channel pruning (Yang, Lyu, Zhang, Qi, Xin, AI4I 2019,
"Channel Pruning for Deep Neural Networks via a Relaxed Group-wise Splitting Method").

    w <- optimizer step on grad( f(w) + lamb2 sum_g ||w_g|| ) + beta1 (w - u)   (``--pull optimizer``)
    u_g <- w_g 1{ ||w_g|| > sqrt(2 lamb1 / beta1) }        (group l0; ``--penalty l1``: group soft
                                                            threshold at lamb1 / beta1)

A group is an input channel ``W[:, c]`` (``--group in``, the paper's choice) or an output filter
``W[o]`` (``--group out``). The group-lasso term is part of the loss (autograd; ``eps`` inside the norm
keeps its gradient finite at zero). ``--pull seed`` / ``--reset epoch``: the seed code's pull outside the
optimizer and its ``w = u`` at every epoch end (:class:`~compress.prune.methods.splitting.SplittingMethod`).
Every prunable layer is penalised, fully connected ones included (the seed: conv layers only), unless
targets name the layers. Channel targets (``--pcen``, ``--keep``, ``--targets``; channel mode is RGSM's
default) make the hard prune after the method phase keep exactly each layer's count of groups, ranked
by the trained ``w`` (so RGSM meets a channel budget, comparable with ``admm --sparsity channel``).
Channel sparsity = fraction of groups of ``u`` that are zero; the per-epoch log counts, per layer, the
groups of ``u`` whose norm is below 1e-15 (how the RGSM papers count removed channels):
``metrics()["groups_removed"] = {layer: [removed, total]}``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.prune import ops
from compress.prune.method_params import PARAMS
from compress.prune.methods.registry import register
from compress.prune.methods.splitting import SplittingMethod

EPS = 1e-8
REMOVED_BELOW = 1e-15  # a group counts as removed when its norm is below this (the papers' count)


@register
class RGSM(SplittingMethod):
    name = "rgsm"
    params = PARAMS["rgsm"]
    default_sparsity = "channel"

    def hyperparameters(self) -> dict:
        return {**self.hp, "group": self.group}

    def pull(self) -> float:
        return float(self.hp["beta1"])

    def prox(self, layer: PrunableLayer, w: torch.Tensor) -> torch.Tensor:
        dim, g = layer.group_args(self.group)
        beta1, lamb1 = float(self.hp["beta1"]), float(self.hp["lamb1"])
        if self.hp["penalty"] == "l0":
            return ops.group_hard_threshold(w, math.sqrt(2 * lamb1 / beta1), dim, g)
        return ops.group_soft_threshold(w, lamb1 / beta1, dim, g)

    def set_factor(self, norms: torch.Tensor) -> torch.Tensor:
        """The same threshold on a coupled set's norm (all its slices, filters scaled by their BatchNorm)."""
        beta1, lamb1 = float(self.hp["beta1"]), float(self.hp["lamb1"])
        if self.hp["penalty"] == "l0":
            return (norms > math.sqrt(2 * lamb1 / beta1)).float()
        return torch.clamp(1 - (lamb1 / beta1) / norms.clamp_min(torch.finfo(norms.dtype).tiny), min=0)

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """lamb2 times the group lasso: each layer's own groups, and in channel mode on a CaffeNet each
        coupled set once (the L2 norm of all its slices)."""
        lamb2 = float(self.hp["lamb2"])
        if lamb2 == 0:
            return None
        coupling = self.coupling(model)
        total = 0.0
        for n, layer in self.layers.items():
            if coupling is None or coupling.legacy(n):
                dim, g = layer.group_args(self.group)
                total = total + ops.group_norms(layer.weight, dim, g, eps=EPS).sum()
        if coupling is not None:
            weights = {n: layer.weight for n, layer in self.all_layers.items()}
            for cs in coupling.active(self.targets):
                total = total + torch.sqrt(coupling.scores(cs, weights) + EPS).sum()
        return lamb2 * total

    @torch.no_grad()
    def metrics(self) -> dict[str, Any]:
        """Groups removed per layer in the sparse ``u``: ``{"groups_removed": {layer: [removed, total]}}``."""
        removed = {}
        for n, layer in self.layers.items():
            norms = ops.group_norms(self.u[n], *layer.group_args(self.group))
            removed[n] = [int((norms < REMOVED_BELOW).sum()), norms.numel()]
        return {"groups_removed": removed}


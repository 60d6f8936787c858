"""The relaxed splitting methods' shared machinery (RVSM: Dinh & Xin, arXiv 1812.05719; RGSM: Yang, Lyu,
Zhang, Qi, Xin, AI4I 2019): a sparse copy ``u`` per layer, the pull of ``w`` towards it, and the seed
code's two variants of that pull (tdinh15/rvsm-rgsm-admm, main.py)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.prune import ops
from compress.prune.methods.base import Method, prune_masks
from compress.prune.targets import Adjustment, Targets
from compress.train.weights import weights_as


class SplittingMethod(Method):
    """Shared by the relaxed splitting methods: a sparse copy ``u`` per layer, pulled on by
    ``coef * (w - u)`` each step, recomputed by ``prox`` after each step (Dinh & Xin; Yang et al.).

    The penalised layers are the targeted ones, else every prunable layer, fully connected ones
    included (the seed code penalises 4-D conv weights only). ``--pull seed`` applies the pull as the
    seed code does, ``w -= lr coef (w - u)`` before the optimizer step; ``--reset epoch`` sets ``w = u``
    after every epoch, as the seed code does (it also rebuilds its optimizer every epoch; this one keeps
    its momentum)."""

    def prox(self, layer: PrunableLayer, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pull(self) -> float:
        raise NotImplementedError

    def set_factor(self, norms: torch.Tensor) -> torch.Tensor | None:
        """The prox on coupled channel sets, from their norms: one factor per set (0 removes it; RGSM's
        group threshold), or None when the method's prox is not group-wise (RVSM)."""
        return None

    @torch.no_grad()
    def _prox_all(self, model: nn.Module | None) -> dict[str, torch.Tensor]:
        """``u`` of every penalised layer: its own prox, and in channel mode on a CaffeNet the coupled
        sets' prox on top (a set is kept, shrunk or removed in all its slices together)."""
        coupling = self.coupling(model) if self.set_factor(torch.ones(1)) is not None else None
        u = {}
        for n, layer in self.layers.items():
            w = layer.weight.detach()
            u[n] = self.prox(layer, w) if coupling is None or coupling.legacy(n) else w.clone()
        if coupling is not None:
            weights = {n: layer.weight.detach() for n, layer in self.all_layers.items()}
            factors = {cs.space.id: self.set_factor(coupling.scores(cs, weights).sqrt())
                       for cs in coupling.active(self.targets)}
            for n, f in coupling.expand(factors, weights, torch.float32).items():
                if n in u:
                    u[n].mul_(f.to(u[n].dtype))
        return u

    @property
    def prunes(self) -> bool:
        return True

    @torch.no_grad()
    def init(self, model: nn.Module) -> None:
        self.u = self._prox_all(model)

    @torch.no_grad()
    def before_step(self, model: nn.Module, lr: float | None = None) -> None:
        beta = self.pull()
        seed = self.hp["pull"] == "seed"
        if seed and lr is None:
            raise ValueError(f"{self.name} --pull seed needs the step's learning rate")
        for n, layer in self.layers.items():
            w = layer.weight
            if seed:
                w.sub_(w - self.u[n], alpha=lr * beta)
            elif w.grad is not None:
                w.grad.add_(w.detach() - self.u[n], alpha=beta * self.accumulated)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        self.u = self._prox_all(model)

    @torch.no_grad()
    def end_epoch(self, model: nn.Module) -> None:
        if self.hp["reset"] == "epoch":
            for n, layer in self.layers.items():
                layer.weight.copy_(self.u[n])

    @torch.no_grad()
    def finalize_masks(self, model: nn.Module, targets: Targets | None) -> dict[str, torch.Tensor]:
        """Without targets the sparse ``u`` is the model (a layer it emptied keeps its largest weight
        or group). With targets each layer keeps exactly its count, ranked by the trained ``w`` (the
        thresholds are monotone in ``|w|`` / ``||w_g||``, so where ``u`` is nonzero this is ``u``'s
        ranking): ``u``'s values where ``u`` kept them, ``w``'s where the target keeps more."""
        if targets is None:
            self.adjustments = (*self.adjustments, *self._keep_alive())
            for n, layer in self.layers.items():
                layer.weight.copy_(self.u[n])
            return {n: layer.weight.detach() != 0 for n, layer in self.layers.items()}
        masks = prune_masks(self.all_layers, targets, self.coupling(model))
        for n, mask in masks.items():
            w = self.all_layers[n].weight
            w.copy_((torch.where(self.u[n] != 0, self.u[n], w) if n in self.u else w) * mask)
        return masks

    def _keep_alive(self) -> Iterator[Adjustment]:
        """A layer whose ``u`` the threshold zeroed entirely gets back the largest weight (elem methods)
        or group (channel methods) of its trained ``w``, unless its own target is 0."""
        channel = self.default_sparsity == "channel"
        for n, layer in self.layers.items():
            if self.u[n].any() or (self.targets is not None and self.targets.asks_empty(n)):
                continue
            w = layer.weight.detach()
            if channel:
                dim, g = layer.group_args(self.group)
                mask, unit = ops.keep_top_groups_mask(w, 1, dim, g), "groups"
                total = ops.num_groups(w.shape, dim, g)
            else:
                mask, total, unit = ops.keep_topk_mask(w, 1), w.numel(), "weights"
            self.u[n] = w * mask
            yield Adjustment(n, "rescued", f"the {self.name} threshold zeroed all {total} {unit}; kept the "
                             f"largest {'group (L2 norm)' if channel else 'weight'} of the trained layer",
                             1, total, unit)

    def eval_weights(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return weights_as(self.layers, self.u)

    def sparse_weights(self) -> dict[str, torch.Tensor]:
        return dict(self.u)

    def state_dict(self) -> dict[str, Any]:
        return {"u": {n: t.clone() for n, t in self.u.items()},
                "adjustments": [a.as_dict() for a in self.adjustments]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.u = {n: state["u"][n].to(layer.weight.device) for n, layer in self.layers.items()}
        self.adjustments = tuple(Adjustment(**a) for a in state.get("adjustments", ()))

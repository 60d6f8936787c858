"""The base of every pruning method, and the hard prune they all end with.

A pruning method is a set of the training loop's hooks (:mod:`compress.train.hooks`: ``init``,
``extra_loss``, ``before_step``, ``after_step``, ``start_cycle``, ``end_epoch``, ``end_iteration``,
``finalize_masks``...) with targets: here they are

    before_step(model, lr)          ADMM's rho (W - Z + U), the relaxed pull beta (w - u), or the seed's
                                    move of the weights
    after_step(model)               RVSM/RGSM's u-update
    start_cycle(model, k)           a progressive stage's or a magnitude round's hard prune, a stage's
                                    fresh Z/U
    end_epoch(model)                the seed's w = u reset
    end_iteration(model, k)         ADMM's Z/U update
    finalize_masks(model, targets)  end of the method phase: hard prune to the targets, {layer: bool mask}

Auxiliary variables (Z, U, u, rho, a method's own masks between its stages) live in ``state_dict()`` so a
checkpoint resumes exactly.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.prune import ops
from compress.prune.coupling import Coupling, coupling_for
from compress.prune.targets import Adjustment, Targets
from compress.train.hooks import MethodHooks


def layer_mask(layer: PrunableLayer, targets: Targets, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Mask keeping ``targets.count(layer)`` entries (elem) or groups (channel) of ``scores`` (default W),
    the largest by magnitude or L2 norm: never none unless the layer's own target is 0."""
    w = layer.weight.detach() if scores is None else scores
    k = targets.count(layer)
    if targets.sparsity == "channel":
        dim, g = layer.group_args(targets.group)
        return ops.keep_top_groups_mask(w, k, dim, g)
    return ops.keep_topk_mask(w, k)


def project(layer: PrunableLayer, x: torch.Tensor, targets: Targets,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean projection of ``x`` (shaped like the layer's weight) onto the layer's sparse set, into
    ``out`` when given (a tensor like ``x``, not overlapping it, whose contents are scratch)."""
    k = targets.count(layer)
    if targets.sparsity == "channel":
        dim, g = layer.group_args(targets.group)
        return ops.keep_top_groups(x, k, dim, g, out)
    return ops.keep_topk(x, k, out)


@torch.no_grad()
def prune_masks(layers: dict[str, PrunableLayer], targets: Targets, coupling: Coupling | None = None,
                values: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``{layer: bool mask}`` of the hard prune to ``targets``, ranked on ``values`` (default: the weights):
    each targeted layer's own groups, except where ``coupling`` decides per coupled channel set
    (:mod:`compress.prune.coupling`; its masks cover every layer with a slice of a pruned set)."""
    values = values if values is not None else {n: layer.weight.detach() for n, layer in layers.items()}
    masks = {}
    for name in targets.keep:
        if coupling is None or coupling.legacy(name):
            masks[name] = layer_mask(layers[name], targets, values[name])
    if coupling is not None:
        for name, m in coupling.masks(values, targets).items():
            masks[name] = masks[name] & m if name in masks else m
    return masks


@torch.no_grad()
def hard_prune(layers: dict[str, PrunableLayer], targets: Targets,
               coupling: Coupling | None = None) -> dict[str, torch.Tensor]:
    """Zero every targeted layer (or coupled channel set) down to exactly its keep count, by magnitude;
    return the masks."""
    masks = prune_masks(layers, targets, coupling)
    for name, mask in masks.items():
        layers[name].weight.mul_(mask)
    return masks


class Method(MethodHooks):
    """Base of the pruning methods: plain training, hard prune to the targets (if any) at the end of the
    method phase. The targets choose and order the layers it acts on (``layers``); ``all_layers`` are
    every prunable layer."""

    #: percent pruned when no targets are given (None: no pruning unless asked)
    default_pcen: ClassVar[float | None] = None
    default_sparsity: ClassVar[str] = "elem"

    def __init__(self, layers: dict[str, PrunableLayer], targets: Targets | None = None, **hp: Any) -> None:
        self.targets: Targets | None = targets
        self.group = targets.group if targets is not None else hp.get("group") or "in"
        self.sparsity = targets.sparsity if targets is not None else self.default_sparsity
        self._coupling: dict[int, Coupling | None] = {}
        super().__init__(layers, **hp)

    def select(self, layers: dict[str, PrunableLayer]) -> dict[str, PrunableLayer]:
        """The targeted layers, in the targets' order (every layer without targets)."""
        if self.targets is None:
            return dict(layers)
        self.targets.check_layers(layers)
        return {n: layers[n] for n in self.targets.keep}

    def coupling(self, model: nn.Module | None) -> Coupling | None:
        """The coupled channel sets of ``model`` in channel mode (built once per model), else None: every
        layer is pruned on its own. Its adjustments (spaces left whole) join ``adjustments``."""
        if self.sparsity != "channel" or model is None:
            return None
        if id(model) not in self._coupling:
            c = coupling_for(model, self.all_layers, self.group)
            self._coupling[id(model)] = c
            if c is not None:
                new = [a for a in c.adjustments(self.targets) if a not in self.adjustments]
                self.adjustments = (*self.adjustments, *new)
        return self._coupling[id(model)]

    def finalize_masks(self, model: nn.Module, targets: Targets | None) -> dict[str, torch.Tensor] | None:
        """The hard prune to ``targets`` (the loop passes the method's own): {layer: bool mask}, None
        without targets."""
        return hard_prune(self.all_layers, targets, self.coupling(model)) if targets is not None else None

    #: layers ``finalize_masks`` kept alive against the method's own thresholds (reported with
    #: ``targets.render_adjustments``, like ``Targets.adjustments``)
    adjustments: tuple[Adjustment, ...] = ()

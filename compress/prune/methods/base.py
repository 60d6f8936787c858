"""The interface every pruning method implements, and the hard prune they all end with.

The trainer runs one loop for every method and calls these hooks (no ``if method == ...`` anywhere):

    init(model)                     once, before the first step (not again on resume: state is loaded)
    extra_loss(model)               a term added to the task loss (RGSM's group lasso), or None
    before_step(model, lr)          after backward, before the optimizer step (``lr``: this step's rate):
                                    add penalty gradients (ADMM's rho (W - Z + U), the relaxed pull
                                    beta (w - u)), or move the weights (the seed's pull)
    after_step(model)               after the optimizer step, once per minibatch (RVSM/RGSM u-update)
    start_cycle(model, k)           before the first step of learning-rate cycle ``k`` (a progressive
                                    stage's or a magnitude round's hard prune, a stage's fresh Z/U)
    end_epoch(model)                after every epoch of the method phase (the seed's w = u reset)
    end_iteration(model, k)         after learning-rate cycle ``k`` of the method phase (ADMM's Z/U
                                    update)
    finalize_masks(model, targets)  end of the method phase: hard prune, return {layer: bool mask}

The method phase is ``cycles()``: learning-rate cycles of so many epochs (equal ones of
``cycle_epochs()`` by default). Auxiliary variables (Z, U, u, rho, a method's own masks between its
stages) live in ``state_dict()`` so a checkpoint resumes exactly.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.params import Param, resolve
from compress.prune import ops
from compress.prune.coupling import Coupling, coupling_for
from compress.prune.targets import Adjustment, Targets


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


@torch.no_grad()
def mask_grads(layers: dict[str, PrunableLayer], masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradients of pruned weights (before the optimizer step)."""
    for name, mask in masks.items():
        grad = layers[name].weight.grad
        if grad is not None:
            grad.mul_(mask)


@torch.no_grad()
def apply_masks(layers: dict[str, PrunableLayer], masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights again (after the optimizer step: momentum and weight decay moved them)."""
    for name, mask in masks.items():
        layers[name].weight.mul_(mask)


@contextlib.contextmanager
def weights_as(layers: dict[str, PrunableLayer], values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block each layer's weight holds ``values[layer]`` (an evaluation of another view of
    the weights: RVSM's sparse u, a quantized copy); the weights are restored afterwards."""
    saved = {n: layer.weight.detach().clone() for n, layer in layers.items()}
    with torch.no_grad():
        for n, layer in layers.items():
            layer.weight.copy_(values[n])
    try:
        yield
    finally:
        with torch.no_grad():
            for n, layer in layers.items():
                layer.weight.copy_(saved[n])


class Method:
    """Base: plain training, hard prune to the targets (if any) at the end of the method phase."""

    name: ClassVar[str] = ""
    #: the hyperparameters this method reads: their flags, defaults and bounds (recorded in the meta)
    params: ClassVar[tuple[Param, ...]] = (Param("epochs", int, 1, "Method-phase epochs", low=0),)
    #: percent pruned when no targets are given (None: no pruning unless asked)
    default_pcen: ClassVar[float | None] = None
    #: masked retrain epochs after the hard prune when the caller gives none (no targets: no retrain)
    default_retrain_epochs: ClassVar[int] = 10
    #: weight decay of the masked retrain when --retrain-weight-decay is not given (None: --weight-decay)
    default_retrain_weight_decay: ClassVar[float | None] = None
    default_sparsity: ClassVar[str] = "elem"

    def __init__(self, layers: dict[str, PrunableLayer], targets: Targets | None = None, **hp: Any) -> None:
        self.hp = resolve(self.params, hp, self.name)
        self.given = {k for k, v in hp.items() if v is not None}  # the values not left to their default
        self.all_layers = dict(layers)
        self.targets = targets
        names = list(targets.keep) if targets is not None else list(layers)
        if targets is not None:
            targets.check_layers(layers)
        self.layers = {n: layers[n] for n in names}
        self.group = targets.group if targets is not None else hp.get("group") or "in"
        self.sparsity = targets.sparsity if targets is not None else self.default_sparsity
        self._coupling: dict[int, Coupling | None] = {}
        self.validate()

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

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {p.name: p.default for p in cls.params}

    # --- schedule ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check what the declared bounds cannot (relations between hyperparameters, targets)."""

    def total_epochs(self) -> int:
        """Epochs of the method phase (before the hard prune)."""
        return int(self.hp["epochs"])

    def cycle_epochs(self) -> int:
        """Epochs per learning-rate cycle / ``end_iteration`` call (an ADMM iteration)."""
        return max(1, self.total_epochs())

    def cycles(self) -> list[int]:
        """The method phase's learning-rate cycles, in epochs (the rate restarts at each; ``end_iteration``
        after each): ``total_epochs()`` in cycles of ``cycle_epochs()`` unless a method says otherwise."""
        full, rest = divmod(self.total_epochs(), self.cycle_epochs())
        return [self.cycle_epochs()] * full + ([rest] if rest else [])

    @property
    def prunes(self) -> bool:
        """Whether ``finalize_masks`` returns masks (and a masked retrain phase follows)."""
        return self.targets is not None

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.hp)

    # --- hooks -------------------------------------------------------------------------------
    def init(self, model: nn.Module) -> None:
        pass

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def before_step(self, model: nn.Module, lr: float | None = None) -> None:
        pass

    def after_step(self, model: nn.Module) -> None:
        pass

    def start_cycle(self, model: nn.Module, k: int) -> None:
        """Before the first step of learning-rate cycle ``k`` of the method phase (not on resuming
        inside it)."""

    def end_epoch(self, model: nn.Module) -> None:
        pass

    def end_iteration(self, model: nn.Module, k: int) -> None:
        pass

    def finalize_masks(self, model: nn.Module, targets: Targets | None) -> dict[str, torch.Tensor] | None:
        return hard_prune(self.all_layers, targets, self.coupling(model)) if targets is not None else None

    # --- views and state ---------------------------------------------------------------------
    @contextlib.contextmanager
    def eval_weights(self, model: nn.Module) -> Iterator[None]:
        """Weights to evaluate during the method phase (RVSM/RGSM: the sparse u)."""
        yield

    def sparse_weights(self) -> dict[str, torch.Tensor]:
        """The tensors whose zeros are the method's current sparsity (reported per epoch)."""
        return {n: layer.weight.detach() for n, layer in self.layers.items()}

    def metrics(self) -> dict[str, Any]:
        """Extra per-epoch numbers for the log (JSON-able)."""
        return {}

    #: layers ``finalize_masks`` kept alive against the method's own thresholds (reported with
    #: ``targets.render_adjustments``, like ``Targets.adjustments``)
    adjustments: tuple[Adjustment, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

"""The interface every pruning method implements, and the hard prune they all end with.

The trainer runs one loop for every method and calls these hooks (no ``if method == ...`` anywhere):

    init(model)                     once, before the first step (not again on resume: state is loaded)
    extra_loss(model)               a term added to the task loss (RGSM's group lasso), or None
    before_step(model)              after backward, before the optimizer step: add penalty gradients
                                    (ADMM's rho (W - Z + U), the relaxed pull beta (w - u))
    after_step(model)               after the optimizer step, once per minibatch (RVSM/RGSM u-update)
    end_iteration(model, k)         after every ``cycle_epochs`` epochs (ADMM's Z/U update)
    finalize_masks(model, targets)  end of the method phase: hard prune, return {layer: bool mask}

Auxiliary variables (Z, U, u, rho) live in ``state_dict()`` so a checkpoint resumes exactly.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from compress.params import Param, resolve
from compress.prune import ops
from compress.prune.targets import Adjustment, PrunableLayer, Targets


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
def hard_prune(layers: dict[str, PrunableLayer], targets: Targets) -> dict[str, torch.Tensor]:
    """Zero every targeted layer down to exactly its keep count, by magnitude; return the masks."""
    masks = {}
    for name in targets.keep:
        layer = layers[name]
        masks[name] = layer_mask(layer, targets)
        layer.weight.mul_(masks[name])
    return masks


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
    default_sparsity: ClassVar[str] = "elem"

    def __init__(self, layers: dict[str, PrunableLayer], targets: Targets | None = None, **hp: Any) -> None:
        self.hp = resolve(self.params, hp, self.name)
        self.all_layers = dict(layers)
        self.targets = targets
        names = list(targets.keep) if targets is not None else list(layers)
        if targets is not None:
            targets.check_layers(layers)
        self.layers = {n: layers[n] for n in names}
        self.group = targets.group if targets is not None else hp.get("group") or "in"
        self.validate()

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

    def before_step(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module) -> None:
        pass

    def end_iteration(self, model: nn.Module, k: int) -> None:
        pass

    def finalize_masks(self, model: nn.Module, targets: Targets | None) -> dict[str, torch.Tensor] | None:
        return hard_prune(self.all_layers, targets) if targets is not None else None

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


class SplittingMethod(Method):
    """Shared by the relaxed splitting methods: a sparse copy ``u`` per layer, pulled on by
    ``coef * (w - u)`` each step, recomputed by ``prox`` after each step (Dinh & Xin; Yang et al.)."""

    def prox(self, layer: PrunableLayer, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pull(self) -> float:
        raise NotImplementedError

    @property
    def prunes(self) -> bool:
        return True

    @torch.no_grad()
    def init(self, model: nn.Module) -> None:
        self.u = {n: self.prox(layer, layer.weight.detach()) for n, layer in self.layers.items()}

    @torch.no_grad()
    def before_step(self, model: nn.Module) -> None:
        beta = self.pull()
        for n, layer in self.layers.items():
            w = layer.weight
            if w.grad is not None:
                w.grad.add_(w.detach() - self.u[n], alpha=beta)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for n, layer in self.layers.items():
            self.u[n] = self.prox(layer, layer.weight.detach())

    @torch.no_grad()
    def finalize_masks(self, model: nn.Module, targets: Targets | None) -> dict[str, torch.Tensor]:
        self.adjustments = tuple(self._keep_alive())
        for n, layer in self.layers.items():  # the sparse u is the model
            layer.weight.copy_(self.u[n])
        if targets is not None:
            return hard_prune(self.all_layers, targets)
        return {n: layer.weight.detach() != 0 for n, layer in self.layers.items()}

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

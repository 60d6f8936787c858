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
from compress.prune.targets import PrunableLayer, Targets


def layer_mask(layer: PrunableLayer, ratio: float, sparsity: str, group: str,
               scores: torch.Tensor | None = None) -> torch.Tensor:
    """Mask keeping ``round(ratio * n)`` entries (elem) or groups (channel) of ``scores`` (default W)."""
    w = layer.weight.detach() if scores is None else scores
    if sparsity == "channel":
        dim, g = layer.group_args(group)
        return ops.keep_top_groups_mask(w, ops.keep_count(ratio, ops.num_groups(w.shape, dim, g)), dim, g)
    return ops.keep_topk_mask(w, ops.keep_count(ratio, w.numel()))


def project(layer: PrunableLayer, x: torch.Tensor, ratio: float, sparsity: str, group: str) -> torch.Tensor:
    """Euclidean projection of ``x`` (shaped like the layer's weight) onto the layer's sparse set."""
    return x * layer_mask(layer, ratio, sparsity, group, scores=x)


@torch.no_grad()
def hard_prune(layers: dict[str, PrunableLayer], targets: Targets) -> dict[str, torch.Tensor]:
    """Zero every targeted layer down to exactly its keep count, by magnitude; return the masks."""
    masks = {}
    for name, ratio in targets.keep.items():
        layer = layers[name]
        masks[name] = layer_mask(layer, ratio, targets.sparsity, targets.group)
        layer.weight.mul_(masks[name])
    return masks


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

    def metrics(self) -> dict[str, float]:
        """Extra per-epoch numbers for the log."""
        return {}

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
        for n, layer in self.layers.items():  # the sparse u is the model
            layer.weight.copy_(self.u[n])
        if targets is not None:
            return hard_prune(self.all_layers, targets)
        return {n: layer.weight.detach() != 0 for n, layer in self.layers.items()}

    @contextlib.contextmanager
    def eval_weights(self, model: nn.Module) -> Iterator[None]:
        saved = {n: layer.weight.detach().clone() for n, layer in self.layers.items()}
        with torch.no_grad():
            for n, layer in self.layers.items():
                layer.weight.copy_(self.u[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, layer in self.layers.items():
                    layer.weight.copy_(saved[n])

    def sparse_weights(self) -> dict[str, torch.Tensor]:
        return dict(self.u)

    def state_dict(self) -> dict[str, Any]:
        return {"u": {n: t.clone() for n, t in self.u.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.u = {n: state["u"][n].to(layer.weight.device) for n, layer in self.layers.items()}

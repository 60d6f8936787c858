"""The hooks the training loop calls on a *method*: the small protocol that pruning and quantization
methods implement (:class:`compress.prune.methods.base.Method`, :class:`compress.quant.methods.base.
QuantMethod`), so that one loop drives them all with no ``if method == ...`` anywhere.

    init(model)                     once, before the first step (not again on resume: state is loaded)
    extra_loss(model)               a term added to the task loss (RGSM's group lasso), or None
    before_step(model, lr)          after backward, before the optimizer step (``lr``: this step's rate):
                                    add penalty gradients, or move the weights
    after_step(model)               after the optimizer step, once per minibatch
    start_cycle(model, k)           before the first step of learning-rate cycle ``k`` of the method phase
    end_epoch(model)                after every epoch of the method phase
    end_iteration(model, k)         after learning-rate cycle ``k`` of the method phase
    finalize_masks(model, targets)  end of the method phase, with the method's own ``targets``: {layer:
                                    mask} when it ``prunes`` (the loop then retrains with the masks
                                    frozen), else None
    eval_weights(model)             a context: the weights each method-phase evaluation sees
    sparse_weights(), metrics()     what each epoch's log reports
    state_dict(), load_state_dict   the method's own state, in every checkpoint (exact resume)

The method phase is ``cycles()``: learning-rate cycles of so many epochs (equal ones of
``cycle_epochs()`` by default, ``epochs`` in all). :class:`MethodHooks` does nothing at each hook: with it
the loop is plain training (:class:`PlainTraining`, what ``compress train`` runs).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.params import Param, resolve


class MethodHooks:
    """Base of every method: its hyperparameters (``params``, resolved into ``hp``), the layers it trains,
    its schedule in epochs, and hooks that do nothing."""

    name: ClassVar[str] = ""
    #: what ``finalize_masks`` prunes to (pruning's ``Targets``; opaque to the loop, which hands it back);
    #: None: the method does not prune
    targets: Any = None
    #: the hyperparameters this method reads: their flags, defaults and bounds (recorded in the meta)
    params: ClassVar[tuple[Param, ...]] = (Param("epochs", int, 1, "Method-phase epochs", low=0),)
    #: masked retrain epochs after the hard prune when the caller gives none (a method that ``prunes``)
    default_retrain_epochs: ClassVar[int] = 10
    #: weight decay of the masked retrain when --retrain-weight-decay is not given (None: --weight-decay)
    default_retrain_weight_decay: ClassVar[float | None] = None

    def __init__(self, layers: dict[str, PrunableLayer], **hp: Any) -> None:
        self.hp = resolve(self.params, hp, self.name)
        self.given = {k for k, v in hp.items() if v is not None}  # the values not left to their default
        self.all_layers = dict(layers)
        self.layers = self.select(self.all_layers)
        self.validate()

    def select(self, layers: dict[str, PrunableLayer]) -> dict[str, PrunableLayer]:
        """The layers the method acts on, among all prunable ``layers`` (all of them by default)."""
        return dict(layers)

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

    #: The backward passes the gradients hold at ``before_step`` (set by the loop at every step): Caffe's
    #: ``iter_size``, whose sum the solver divides by it, so a method's own gradient term (and its
    #: ``extra_loss``) is multiplied by it to keep the same strength whatever ``iter_size`` is.
    accumulated = 1

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.hp)

    # --- hooks -------------------------------------------------------------------------------
    def init(self, model: nn.Module) -> None:
        pass

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def before_step(self, model: nn.Module, lr: float | None = None) -> None:
        """After the backward pass(es), before the optimizer's step. A term a method adds to the gradients
        is multiplied by :attr:`accumulated`."""

    def after_step(self, model: nn.Module) -> None:
        pass

    def start_cycle(self, model: nn.Module, k: int) -> None:
        """Before the first step of learning-rate cycle ``k`` of the method phase (not on resuming
        inside it)."""

    def end_epoch(self, model: nn.Module) -> None:
        pass

    def end_iteration(self, model: nn.Module, k: int) -> None:
        pass

    def finalize_masks(self, model: nn.Module, targets: Any) -> dict[str, torch.Tensor] | None:
        """The hard prune to ``targets``: the masks of the retrain (None: no retrain follows)."""
        return None

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

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class PlainTraining(MethodHooks):
    """No method: the loop trains and nothing else (``compress train``'s Caffe solver runs). Named
    ``default`` as ``compress prune --method default``'s method phase, which is the same plain training,
    and as the solver states ``compress train`` writes record it (their resume checks the name)."""

    name = "default"

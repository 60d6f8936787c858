"""``magnitude``: the classic baseline of Han et al. 2015 ("Learning both weights and connections for
efficient neural networks"): prune each layer by weight magnitude, retrain with the masks frozen.

``--rounds 1`` (the default) is one-shot: prune to the targets at once, then ``--retrain-epochs``.
``--rounds N`` is Han's iterative schedule: round ``j`` of ``N`` prunes each layer to ``t ** (j/N)`` of
its weights (``t`` its target keep ratio: geometric, each round removes the same fraction of what
the previous kept; :mod:`compress.prune.methods.stages`) and retrains with the masks frozen for
``--round-epochs`` (one learning-rate cycle each); the last round prunes to the targets exactly and
retrains for ``--retrain-epochs``. ``--epochs`` (0 by default) trains before the first prune.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.prune.method_params import PARAMS
from compress.prune.methods.base import Method, hard_prune
from compress.prune.methods.registry import register
from compress.prune.methods.stages import load_masks, masks_state, stage_targets
from compress.train.weights import apply_masks, mask_grads


@register
class Magnitude(Method):
    name = "magnitude"
    params = PARAMS["magnitude"]
    default_pcen = 80.0

    def validate(self) -> None:
        if "round_epochs" in self.given and int(self.hp["rounds"]) == 1:
            raise CompressError("magnitude: --round-epochs applies only with --rounds 2 or more")
        if int(self.hp["rounds"]) > 1 and self.targets is None:
            raise CompressError("magnitude --rounds needs targets (--targets, --keep or --pcen)")

    def cycles(self) -> list[int]:
        first = [int(self.hp["epochs"])] if int(self.hp["epochs"]) else []
        return first + [int(self.hp["round_epochs"])] * (int(self.hp["rounds"]) - 1)

    def total_epochs(self) -> int:
        return sum(self.cycles())

    @torch.no_grad()
    def init(self, model: nn.Module) -> None:
        self.pruned, self.masks = 0, None
        if int(self.hp["epochs"]) == 0:
            self._next_round(model)

    def _next_round(self, model: nn.Module) -> None:
        """Prune to the next intermediate ratio (the last round is the trainer's ``finalize_masks``)."""
        rounds = int(self.hp["rounds"])
        if self.pruned < rounds - 1:
            self.masks = hard_prune(self.all_layers, stage_targets(self.targets, rounds)[self.pruned],
                                    self.coupling(model))
            self.pruned += 1

    @torch.no_grad()
    def start_cycle(self, model: nn.Module, k: int) -> None:
        """A round's prune opens its cycle, so the epoch before it logs the previous round's model."""
        if k > 0:
            self._next_round(model)

    def before_step(self, model: nn.Module, lr: float | None = None) -> None:
        if self.masks is not None:
            mask_grads(self.all_layers, self.masks)

    def after_step(self, model: nn.Module) -> None:
        if self.masks is not None:
            apply_masks(self.all_layers, self.masks)

    def metrics(self) -> dict[str, Any]:
        return {"round": self.pruned} if int(self.hp["rounds"]) > 1 else {}

    def state_dict(self) -> dict[str, Any]:
        return {"pruned": self.pruned, "masks": masks_state(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pruned = int(state.get("pruned", 0))
        self.masks = load_masks(state.get("masks"), self.all_layers)

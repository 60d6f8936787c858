"""Intermediate targets for methods that prune in steps, and the masks they hold between steps.

Han et al. 2015 ("Learning both weights and connections for efficient neural networks") prune part of
the way, retrain, and repeat; progressive ADMM (Ye et al. 2019, "Progressive DNN Compression: A Key to
Achieve Ultra-High Weight Pruning and Quantization Rates using ADMM", arXiv 1903.09769) runs ADMM, hard
prunes and retrains towards an intermediate ratio, then starts ADMM again from the pruned model. Both
need the ratios of the steps in between, and both keep their own frozen masks until the trainer's final
hard prune.

The rule: step ``s`` of ``n`` keeps ``t ** (s / n)`` of a layer whose target keep ratio is ``t``
(geometric in the keep ratio: each step removes the same fraction of what the previous one kept); the
last step is the targets themselves. Counts go through :meth:`Targets.count` (never 0 unless the
layer's own target is 0), and they never grow from one step to the next.
"""
from __future__ import annotations

from typing import Any

import torch

from compress.layers import PrunableLayer
from compress.prune.targets import Targets


def stage_targets(targets: Targets, n: int) -> list[Targets]:
    """The targets of each of ``n`` steps; the last is ``targets`` itself."""
    out = []
    for s in range(1, n):
        keep = {name: t ** (s / n) for name, t in targets.keep.items()}
        out.append(Targets(keep, targets.sparsity, targets.group, f"step {s} of {n} towards {targets.source}",
                           targets.allow_empty, targets.excluded))
    return [*out, targets]


def masks_state(masks: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return None if masks is None else {n: m.clone() for n, m in masks.items()}


def load_masks(state: Any, layers: dict[str, PrunableLayer]) -> dict[str, torch.Tensor] | None:
    """Masks from :func:`masks_state`, on the device of their layer's weight."""
    if state is None:
        return None
    return {n: m.to(layers[n].weight.device) for n, m in state.items()}

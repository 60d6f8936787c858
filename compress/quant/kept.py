"""The entries of a pruned weight that may be nonzero, so that per-step terms touch only those.

A quantization method keeps every zero of a pruned model at zero; the QGT pull ``lambda (W - Q(W))`` and
ADMM's ``rho (W - Z + U)`` are exactly zero there (``W``, ``Q(W)``, ``Z`` and ``U`` all are). On a layer
that is mostly zeros (AlexNet's fc6 at 21x keeps 2.8%) computing them on the kept entries alone, gathered
by flat index and added back with ``index_add_``, is many times cheaper per step than on the whole
tensor, and gives the same values at every entry.
"""
from __future__ import annotations

import math

import torch

from compress.quant.grid import LayerGrid

DENSE_ABOVE = 0.5  # a layer keeping more than this fraction is handled whole


class Kept:
    """Flat indices of the entries of a weight that are not pruned (``zero`` False)."""

    def __init__(self, zero: torch.Tensor) -> None:
        self.shape = tuple(zero.shape)
        self.index = torch.nonzero(~zero.reshape(-1)).squeeze(1)

    @classmethod
    def of(cls, zero: torch.Tensor | None) -> Kept | None:
        """A :class:`Kept` for a mostly pruned weight; None (use the whole tensor) otherwise."""
        if zero is None or float(zero.float().mean()) < 1.0 - DENSE_ABOVE:
            return None
        return cls(zero)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The kept entries of ``t`` (shaped like the weight), as a 1-D tensor."""
        return t.detach().reshape(-1).index_select(0, self.index)

    def put_(self, target: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``target[kept] = values`` in place (``target`` shaped like the weight); returns ``target``."""
        target.view(-1).index_copy_(0, self.index, values)
        return target

    def add_(self, target: torch.Tensor, values: torch.Tensor, alpha: float = 1.0) -> None:
        """``target[kept] += alpha * values`` in place (``target`` shaped like the weight)."""
        target.view(-1).index_add_(0, self.index, values, alpha=alpha)

    def scales(self, grid: LayerGrid) -> torch.Tensor:
        """Each kept entry's scale (its channel's, axis 0), as a 1-D tensor."""
        s = grid.scales.to(self.index.device)
        if s.numel() == 1:
            return s.expand(self.index.numel())
        per_channel = math.prod(self.shape[1:])
        return s.index_select(0, torch.div(self.index, per_channel, rounding_mode="floor"))

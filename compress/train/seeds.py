"""Randomness as a function of (seed, epoch) only: what makes a resumed run the uninterrupted one."""
from __future__ import annotations

from typing import Any

import torch


def seed_epoch(loader: Any, seed: int, epoch: int) -> None:
    """Make the epoch's randomness a function of (seed, epoch) only, for exact resume: the global
    torch generator, any generator a loader or its sampler owns, and ``set_epoch`` of samplers."""
    s = (seed * 1_000_003 + epoch) % (2**63)
    torch.manual_seed(s)
    inner = getattr(loader, "loader", None)  # a sharding wrapper
    for obj in (loader, getattr(loader, "sampler", None), inner, getattr(inner, "sampler", None)):
        if isinstance(getattr(obj, "generator", None), torch.Generator):
            obj.generator.manual_seed(s)
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)

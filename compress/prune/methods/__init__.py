"""Pruning methods by name, one file each, registered on import (:mod:`.registry`).

    default     plain fine-tuning, then magnitude pruning to the targets
    magnitude   magnitude pruning (Han et al. 2015), one-shot or in rounds
    admm        ADMM pruning (Zhang et al. 2018), one-shot or progressive (Ye et al. 2019)
    rvsm        relaxed variable splitting (Dinh and Xin, arXiv 1812.05719)
    rgsm        relaxed group-wise splitting (Yang et al. 2019), channel groups
"""
from __future__ import annotations

from compress.prune.methods import admm, default, magnitude, rgsm, rvsm  # noqa: F401  (registers them)
from compress.prune.methods.registry import available, method_class, register  # noqa: F401

__all__ = ["available", "method_class", "register"]

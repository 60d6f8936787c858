"""Pruning engine: methods (``methods/``), shared operators (``ops.py``), targets, trainer.

    >>> from compress.prune import prune
    >>> result = prune("lenet", method="admm", targets="admm-71x", data="mnist", output="lenet_admm.pt")
"""
from __future__ import annotations


def prune(*args, **kwargs):
    """See :func:`compress.prune.api.prune` (imported lazily: it pulls in torch)."""
    from compress.prune.api import prune as _prune

    return _prune(*args, **kwargs)

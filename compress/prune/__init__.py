"""Pruning: methods (``methods/``), shared operators (``ops.py``), targets, coupled channels, the front
doors; trained by the engine (:mod:`compress.train`).

    >>> from compress.prune import prune
    >>> result = prune("lenet", method="admm", targets="admm-71x", data="mnist", output="lenet_admm.pt")
"""
from __future__ import annotations


def prune(*args, **kwargs):
    """See :func:`compress.prune.api.prune` (imported lazily: it pulls in torch)."""
    from compress.prune.api import prune as _prune

    return _prune(*args, **kwargs)

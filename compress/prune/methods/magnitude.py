"""``magnitude``: the classic baseline of Han et al. 2015 ("Learning both weights and connections for
efficient neural networks"): prune each layer to its target by weight magnitude at once, then retrain
with the masks frozen (``--retrain-epochs``). No method phase of its own (``--epochs`` defaults to 0)."""
from __future__ import annotations

from compress.params import Param
from compress.prune.methods import register
from compress.prune.methods.base import Method


@register
class Magnitude(Method):
    name = "magnitude"
    params = (Param("epochs", int, 0, "Method-phase epochs", low=0),)
    default_pcen = 80.0

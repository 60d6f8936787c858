"""``default``: plain SGD fine-tuning (how the zoo LeNet is trained). With targets, the weights are
then magnitude-pruned to them and retrained with the masks frozen, like ``magnitude``."""
from __future__ import annotations

from compress.prune.method_params import PARAMS
from compress.prune.methods.base import Method
from compress.prune.methods.registry import register


@register
class Default(Method):
    name = "default"
    params = PARAMS["default"]

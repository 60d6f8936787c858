"""The layers every technique acts on: each ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear``
submodule (the converters' Convolution, Deconvolution and InnerProduct modules subclass them), named by
its Caffe layer name in a CaffeNet. Pruning selects among them, quantization puts their weights on
grids, the training loop masks them, the report counts them."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

PRUNABLE_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclass(frozen=True)
class PrunableLayer:
    """A prunable submodule and how its weight splits into channel groups."""

    name: str
    module: nn.Module

    @property
    def weight(self):
        return self.module.weight

    def group_args(self, group: str) -> tuple[int, int]:
        """``(dim, conv_groups)`` for the ops' group functions: ``group`` is "in" or "out"."""
        g = getattr(self.module, "groups", 1) or 1
        transposed = isinstance(self.module, nn.ConvTranspose2d)  # weight (I, O/g, ...)
        if group == "in":
            return (0, 1) if transposed else (1, g)
        return (1, g) if transposed else (0, 1)


def prunable_layers(model: nn.Module) -> dict[str, PrunableLayer]:
    """Every Conv2d/ConvTranspose2d/Linear submodule with a weight, in module order, by its Caffe layer
    name for a CaffeNet (whose attribute may be an escaped form of it: ``c.1`` -> ``layer_c_1``)."""
    caffe = {n.attr: n.name for n in getattr(model, "nodes", ()) if getattr(n, "attr", "")}
    found = [(caffe.get(name, name), m) for name, m in model.named_modules()
             if isinstance(m, PRUNABLE_TYPES) and getattr(m, "weight", None) is not None]
    return {name: PrunableLayer(name, m) for name, m in found}


def typed_layers(net: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """``(Caffe name, Caffe type, module)`` of each prunable layer in execution order (what the report
    lists). A CaffeNet is walked through its ``nodes``; any other module through ``named_modules`` (type =
    class name)."""
    nodes = getattr(net, "nodes", None)
    if nodes is not None:
        out = []
        for node in nodes:
            module = getattr(net, node.attr)
            if isinstance(module, PRUNABLE_TYPES):
                out.append((node.name, node.type, module))
        return out
    return [(name, type(m).__name__, m) for name, m in net.named_modules()
            if name and isinstance(m, PRUNABLE_TYPES)]

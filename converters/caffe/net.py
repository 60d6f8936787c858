"""CaffeNet: a PyTorch module that runs a Caffe net definition layer by layer.

The net keeps Caffe's graph explicit (``nodes``: name, type, bottoms, tops) so that reports, ONNX
export and channel thinning can speak in Caffe's layer names and follow blobs between layers.
Every layer is a submodule registered under its Caffe name (``net.conv1``, ``net.fc6``), so
``named_modules()``/``named_parameters()`` use Caffe names too (a name containing '.' is stored
with '.' replaced by '_'; ``node.attr`` holds the attribute name).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerNode:
    name: str  # Caffe layer name
    type: str  # Caffe type name (current format, e.g. "Convolution")
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    attr: str  # submodule attribute name (the Caffe name, with '.' replaced by '_')


Tops = tuple[torch.Tensor, ...]


def module_attr(name: str) -> str:
    return name.replace(".", "_")


class CaffeNet(nn.Module):
    """Runs ``nodes`` in order. ``forward`` takes the input blobs positionally (in ``inputs`` order)
    or as keyword arguments by blob name, and returns the single output blob, or a dict keyed by blob
    name when the net has several outputs.

    Attributes:
        inputs:  ordered ``{blob name: shape}`` of the net's inputs (NCHW for images).
        nodes:   the layers in execution order.
        outputs: names of the output blobs (blobs produced and never consumed).
        netdef:  the deploy net definition as prototxt text (no blobs); written into model files
                 and ``.caffemodel`` exports so that the net can be rebuilt.
    """

    def __init__(self, name: str, inputs: dict[str, tuple[int, ...]], nodes: list[LayerNode],
                 modules: dict[str, nn.Module], outputs: list[str], netdef: str) -> None:
        super().__init__()
        self.name = name
        self.inputs = dict(inputs)
        self.nodes = list(nodes)
        self.outputs = list(outputs)
        self.netdef = netdef
        for node in self.nodes:
            self.add_module(node.attr, modules[node.name])

    def layer(self, name: str) -> nn.Module:
        """The submodule of the Caffe layer ``name``."""
        return getattr(self, module_attr(name))

    def node(self, name: str) -> LayerNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        blobs = self.forward_blobs(*args, **kwargs)
        if len(self.outputs) == 1:
            return blobs[self.outputs[0]]
        return {name: blobs[name] for name in self.outputs}

    def forward_blobs(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every blob of the net, keyed by blob name (in-place layers keep the last value)."""
        blobs = self._bind_inputs(args, kwargs)
        for _ in self.run_nodes(blobs):
            pass
        return blobs

    def run_nodes(self, blobs: dict[str, torch.Tensor]) -> Iterator[tuple[LayerNode, Tops]]:
        """Run the layers in order on ``blobs`` (updated as they go), yielding each node with its tops
        as it produced them (a later in-place layer may rebind the name: Caffe's losses count here)."""
        for node in self.nodes:
            out = getattr(self, node.attr)(*(blobs[b] for b in node.bottoms))
            if isinstance(out, torch.Tensor):
                out = (out,)
            blobs.update(zip(node.tops, out, strict=True))
            yield node, out

    def _bind_inputs(self, args, kwargs) -> dict[str, torch.Tensor]:
        names = list(self.inputs)
        if len(args) > len(names):
            raise TypeError(f"{self.name}: expected at most {len(names)} inputs ({names}), got {len(args)}")
        blobs = dict(zip(names, args, strict=False))
        blobs.update(kwargs)
        missing = [n for n in names if n not in blobs]
        if missing:
            raise TypeError(f"{self.name}: missing input blob(s) {missing}")
        return blobs

"""CaffeNet: a PyTorch module that runs a Caffe net definition layer by layer.

The net keeps Caffe's graph explicit (``nodes``: name, type, bottoms, tops) so that reports, ONNX
export and channel thinning can speak in Caffe's layer names and follow blobs between layers.
Every layer is a submodule registered under its Caffe name (``net.conv1``, ``net.fc6``), so
``named_modules()``/``named_parameters()`` use Caffe names too. A name that cannot be an attribute
(one containing '.', or equal to an attribute of the net such as ``forward`` or ``nodes``) is stored
under an escaped name, one to one (``converters/caffe/names.py: module_attrs``); ``node.attr`` holds
the attribute name and ``net.layer(name)`` finds a layer by its Caffe name in every case.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from converters.caffe.layers.base import is_channels_last
from converters.caffe.names import module_attrs, shown


@dataclass(frozen=True)
class LayerNode:
    name: str  # Caffe layer name
    type: str  # Caffe type name (current format, e.g. "Convolution")
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    attr: str = ""  # submodule attribute name: set by CaffeNet (the Caffe name unless it cannot be one)


Tops = tuple[torch.Tensor, ...]


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
        blob_shapes:  ``{blob: shape}`` inferred by the builder at the declared input shapes.
        build_report: what the builder did besides building (``builder.BuildReport``), or None.

    The nodes' ``attr`` are assigned here (whatever the caller put there) from the layer names and
    every attribute the net has at that point, so set any further instance attribute above them.
    """

    def __init__(self, name: str, inputs: dict[str, tuple[int, ...]], nodes: list[LayerNode],
                 modules: dict[str, nn.Module], outputs: list[str], netdef: str) -> None:
        super().__init__()
        self.name = name
        self.inputs = dict(inputs)
        self.nodes: list[LayerNode] = []
        self.outputs = list(outputs)
        self.netdef = netdef
        self.blob_shapes: dict[str, tuple[int, ...]] = {}
        self.build_report = None
        self._attrs: dict[str, str] = {}
        self._attrs = module_attrs([n.name for n in nodes], reserved=dir(self))
        self.nodes = [replace(n, attr=self._attrs[n.name]) for n in nodes]
        for node in self.nodes:
            self.add_module(node.attr, modules[node.name])
        readers: dict[str, list[str]] = {}
        for node in self.nodes:
            for b in node.bottoms:
                readers.setdefault(b, []).append(node.type)
        for node in self.nodes:  # a layer whose readers all take channels-last blobs may write one
            module = modules[node.name]
            if hasattr(module, "channels_last_out"):
                tops = [readers.get(t, []) for t in node.tops]
                module.channels_last_out = all(r and set(r) <= LAYOUT_FREE for r in tops) and \
                    not set(node.tops) & set(outputs)

    def layer(self, name: str) -> nn.Module:
        """The submodule of the Caffe layer ``name``."""
        try:
            return getattr(self, self._attrs[name])
        except KeyError:
            raise KeyError(f"{self.name}: no layer named {name!r}") from None

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
        """Every blob of the net, keyed by blob name (in-place layers keep the last value); the outputs
        contiguous."""
        blobs = self._bind_inputs(args, kwargs)
        for _ in self.run_nodes(blobs):
            pass
        for name in self.outputs:
            blobs[name] = _plain(blobs[name])
        return blobs

    def run_nodes(self, blobs: dict[str, torch.Tensor]) -> Iterator[tuple[LayerNode, Tops]]:
        """Run the layers in order on ``blobs`` (updated as they go), yielding each node with its tops
        as it produced them (a later in-place layer may rebind the name: Caffe's losses count here).
        A channels-last blob (a CPU fast path's output, converters/caffe/layers/conv.py) goes as it is
        only to the layers of :data:`LAYOUT_FREE`; every other layer gets it contiguous, as it was made
        before those paths existed, so its arithmetic (a reduction's order, a Dropout mask's draw) is
        unchanged."""
        for node in self.nodes:
            bottoms = (blobs[b] for b in node.bottoms)
            if node.type not in LAYOUT_FREE:
                bottoms = (_plain(b) for b in bottoms)
            out = getattr(self, node.attr)(*bottoms)
            if isinstance(out, torch.Tensor):
                out = (out,)
            blobs.update(zip(node.tops, out, strict=True))
            yield node, out

    @torch.no_grad()
    def first_nonfinite(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> str | None:
        """Where a forward pass on these inputs first holds a NaN or an infinity: ``input 'data'`` or
        ``layer 'conv1' (Convolution) top 'conv1'``; None when every blob stays finite."""
        blobs = self._bind_inputs(args, kwargs)
        for name, value in blobs.items():
            if not _finite(value):
                return f"input {shown(name)}"
        for node, tops in self.run_nodes(blobs):
            for top, value in zip(node.tops, tops, strict=True):
                if not _finite(value):
                    return f"layer {shown(node.name)} ({node.type}) top {shown(top)}"
        return None

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


# Layers that compute the same values from a channels-last blob as from a contiguous one, and take it as
# it is: element-wise, pure reshapes, and the layers whose fast paths made it (they decide for themselves).
LAYOUT_FREE = frozenset({"Convolution", "Pooling", "ReLU", "Split", "Flatten", "Reshape", "InnerProduct"})


def _plain(t):
    """``t`` contiguous if it is a channels-last 4-d tensor, else as it is."""
    return t.contiguous() if isinstance(t, torch.Tensor) and is_channels_last(t) else t


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())

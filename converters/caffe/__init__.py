"""Caffe <-> PyTorch: ``load`` a ``.prototxt`` (+ ``.caffemodel``) as a :class:`CaffeNet`, ``save`` one back.

    >>> from converters import caffe
    >>> net = caffe.load("deploy.prototxt", "bvlc_alexnet.caffemodel")
    >>> prob = net(torch.zeros(10, 3, 227, 227))
    >>> caffe.save(net, "out.caffemodel", prototxt="out.prototxt")

Layers and weights are matched by name as Caffe does; see ``builder.py`` for the rules.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from converters.caffe.net import CaffeNet


def __getattr__(name: str):
    # torch is imported only when a net is built or inspected, so that the file-level modules
    # (reader, writer, prototxt) can be used without it.
    if name == "CaffeNet":
        from converters.caffe.net import CaffeNet
        return CaffeNet
    if name == "supported_types":
        from converters.caffe.layers.base import supported_types
        return supported_types
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["CaffeNet", "LayerSummary", "load", "save", "summarize", "supported_types"]


def load(prototxt, caffemodel: str | os.PathLike | None = None, *, phase: str = "TEST",
         input_shapes: dict[str, tuple[int, ...]] | None = None) -> CaffeNet:
    """Build the net of ``prototxt`` (a path, or a ``caffe_pb2.NetParameter``) in eval mode.

    With ``caffemodel`` its weights are loaded (matched by layer name); without, weights are
    initialized (Caffe's fillers where the prototxt names them, PyTorch's defaults otherwise).
    Train_val definitions are filtered to ``phase`` and reduced to the deploy net.
    """
    from converters.caffe.builder import build_net
    from converters.caffe.prototxt import read_net_text

    net = read_net_text(prototxt) if isinstance(prototxt, (str, os.PathLike)) else prototxt
    if caffemodel is None:
        return build_net(net, None, phase, input_shapes=input_shapes)
    from converters.caffe.reader import read_caffemodel

    model = read_caffemodel(caffemodel)
    return build_net(net, model.blobs, phase, input_shapes=input_shapes, source=f"caffemodel {caffemodel}")


def save(net: CaffeNet, path: str | os.PathLike, prototxt: str | os.PathLike | None = None) -> None:
    """Write ``net``'s weights as a current-format ``.caffemodel`` (and its deploy ``prototxt``).

    Both paths are checked before anything is written; each file is written atomically.
    """
    from converters.atomic import atomic_write_text, check_output_path
    from converters.caffe.prototxt import parse_net_text
    from converters.caffe.writer import write_caffemodel

    check_output_path(path)
    if prototxt is not None:
        check_output_path(prototxt)
    netdef = parse_net_text(net.netdef, filename=f"<netdef of {net.name}>")
    write_caffemodel(path, netdef, caffe_blobs(net))
    if prototxt is not None:
        atomic_write_text(prototxt, net.netdef)


def caffe_blobs(net: CaffeNet) -> dict:
    """``{layer name: [float32 numpy arrays in Caffe layout]}`` of every layer that has blobs."""
    from converters.caffe.layers.base import CaffeBlobs

    out = {}
    for node in net.nodes:
        module = net.layer(node.name)
        if isinstance(module, CaffeBlobs):
            blobs = [b.detach().cpu().float().contiguous().numpy() for b in module.get_caffe_blobs()]
            if blobs:
                out[node.name] = blobs
    return out


@dataclass(frozen=True)
class LayerSummary:
    """One row of ``compress info``: a layer, the shapes of its tops and its parameter count."""

    name: str
    type: str
    tops: tuple[str, ...]
    top_shapes: tuple[tuple[int, ...], ...]
    params: int  # elements of the layer's Caffe blobs


def summarize(net: CaffeNet) -> list[LayerSummary]:
    """Per-layer rows in execution order, with top shapes at the net's declared input shapes."""
    from converters.caffe.layers.base import CaffeBlobs

    shapes = blob_shapes(net)
    rows = []
    for node in net.nodes:
        module = net.layer(node.name)
        params = sum(b.numel() for b in module.get_caffe_blobs()) if isinstance(module, CaffeBlobs) else 0
        rows.append(LayerSummary(node.name, node.type, node.tops,
                                 tuple(tuple(shapes[t]) for t in node.tops), int(params)))
    return rows


def blob_shapes(net: CaffeNet) -> dict[str, tuple[int, ...]]:
    """Every blob's shape at the declared input shapes, computed on the meta device: parameters are
    swapped for meta tensors of their shape (``torch.func.functional_call``), so nothing is computed."""
    import torch
    from torch.func import functional_call

    state = {f"net.{k}": torch.empty_like(v, device="meta")
             for k, v in [*net.named_parameters(), *net.named_buffers()]}
    try:
        with torch.no_grad():
            blobs = functional_call(_BlobsOf(net), state, args=(),
                                    kwargs={k: torch.empty(s, device="meta") for k, s in net.inputs.items()})
    except (RuntimeError, NotImplementedError):  # a module holding plain tensors: run it for real
        with torch.no_grad():
            blobs = net.forward_blobs(**{k: torch.zeros(s) for k, s in net.inputs.items()})
    return {k: tuple(v.shape) for k, v in blobs.items()}


def _BlobsOf(net):  # noqa: N802 - builds a module; torch is imported lazily
    from torch import nn

    class BlobsOf(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, **inputs):
            return self.net.forward_blobs(**inputs)

    return BlobsOf(net)

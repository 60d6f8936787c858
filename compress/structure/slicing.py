"""Removing channels from one layer: one function per member role of the channel graph.

``keep`` holds the channel indices that stay on that side of the layer, ascending (so the order of what
remains never changes). Every function updates the module's parameters, buffers and size attributes
together, so the Caffe blobs (``get_caffe_blobs``) follow; :func:`netdef_updates` says what the net
definition must change (``num_output``, a depthwise layer's ``group``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Slicer = Callable[[nn.Module, torch.Tensor, object], None]
SLICERS: dict[str, Slicer] = {}


def slicer(role: str) -> Callable[[Slicer], Slicer]:
    def deco(fn: Slicer) -> Slicer:
        SLICERS[role] = fn
        return fn
    return deco


def set_weight(m: nn.Module, w: torch.Tensor) -> None:
    if getattr(m, "transpose", False):  # Caffe stores (in, out): keep .weight a view of that blob
        w = w.t().contiguous().t()
    m.weight = nn.Parameter(w)


def _keep_param(m: nn.Module, name: str, keep: torch.Tensor) -> None:
    p = getattr(m, name, None)
    if p is not None:
        setattr(m, name, nn.Parameter(p.detach()[keep].clone()))


@slicer("out")
def producer(m: nn.Module, keep: torch.Tensor, member) -> None:
    """A Convolution's filters or an InnerProduct's outputs (rows), with their biases."""
    set_weight(m, m.weight.detach()[keep].clone())
    _keep_param(m, "bias", keep)
    if isinstance(m, nn.Linear):
        m.out_features = len(keep)
    else:
        m.out_channels = len(keep)


@slicer("dw")
def depthwise(m: nn.Conv2d, keep: torch.Tensor, member) -> None:
    """A depthwise convolution: filter ``c`` reads channel ``c`` only; the groups shrink with it."""
    producer(m, keep, member)
    m.in_channels = m.groups = len(keep)


@slicer("in")
def consumer(m: nn.Module, keep: torch.Tensor, member) -> None:
    """Input channels of a (grouped) Convolution, or an InnerProduct's blocks of columns."""
    w = m.weight.detach()
    if isinstance(m, nn.Linear):
        k = member.block
        cols = (keep[:, None] * k + torch.arange(k)[None, :]).reshape(-1)
        set_weight(m, w[:, cols].clone())
        m.in_features = len(cols)
        return
    g, n = m.groups, m.in_channels
    per, rows = n // g, w.shape[0] // g
    blocks = []
    for j in range(g):
        local = keep[(keep >= j * per) & (keep < (j + 1) * per)] - j * per
        blocks.append(w[j * rows:(j + 1) * rows][:, local])
    set_weight(m, torch.cat(blocks).clone())
    m.in_channels = len(keep)


@slicer("norm")
def batch_norm(m: nn.Module, keep: torch.Tensor, member) -> None:
    """Caffe's BatchNorm: the mean and variance sums per channel (the shared moving-average weight
    stays)."""
    m.mean_sum = m.mean_sum[keep].clone()
    m.var_sum = m.var_sum[keep].clone()
    m.num_features = len(keep)


@slicer("scale")
def scale(m: nn.Module, keep: torch.Tensor, member) -> None:
    """Caffe's Scale over axis 1: gamma and beta per channel."""
    _keep_param(m, "weight", keep)
    _keep_param(m, "bias", keep)


@slicer("prelu")
def prelu(m: nn.Module, keep: torch.Tensor, member) -> None:
    _keep_param(m, "weight", keep)


def netdef_updates(net, layers: set[str]) -> dict[str, dict[str, int]]:
    """``{layer: {field: value}}`` of the convolution/inner product parameters that changed."""
    out = {}
    for name in layers:
        m = net.layer(name)
        if isinstance(m, nn.Linear):
            out[name] = {"num_output": m.out_features}
        elif isinstance(m, nn.Conv2d):
            out[name] = {"num_output": m.out_channels, "group": m.groups}
    return out


def write_netdef(net, changes: dict[str, dict[str, int]]) -> str:
    """``net.netdef`` with the given fields of each layer's convolution/inner product parameters set."""
    from google.protobuf import text_format

    from compress.errors import CompressError
    from converters.caffe.prototxt import parse_net_text

    netdef = parse_net_text(net.netdef)
    found = set()
    for layer in netdef.layer:
        if layer.name in changes:
            param = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
            for key, value in changes[layer.name].items():
                if key == "group" and value == 1 and not param.HasField("group"):
                    continue
                setattr(param, key, value)
            found.add(layer.name)
    missing = sorted(set(changes) - found)
    if missing:
        raise CompressError(f"{net.name}: changed layers {missing} are not in the net definition")
    return text_format.MessageToString(netdef)

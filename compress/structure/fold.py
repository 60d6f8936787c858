"""Fold BatchNorm and Scale into the Convolution or InnerProduct they follow, exactly (what deployment
runtimes do; ``compress export --fold-bn``).

Caffe splits batch normalization into BatchNorm (``(x - mean) / sqrt(var + eps)``, stored statistics)
and Scale (``gamma * x + beta``). Right after a convolution both are per-output-channel affine maps, so
``W' = W * a``, ``b' = b * a + c`` per filter gives the same outputs with two layers fewer (computed in
float64, stored as float32). A layer folds when the blob it reads is written by a Convolution or
InnerProduct (or by a BatchNorm/Scale already folded into one) and read by nothing else, and it
normalizes with stored statistics. Where that does not hold the layer stays, and the reason says why:
after a ReLU, a pooling, an Eltwise or a Concat there is no filter to fold into; a BatchNorm that uses
batch statistics (``use_global_stats: false``) is not a fixed map; a Scale with a second bottom, or not
over the channels, is not per-channel. The net's nodes, modules, Caffe blobs and ``netdef`` change
together (a folded layer's convolution takes its top blob and gets a bias), so the folded net saves,
exports and reloads; it is checked against the unfolded one on a seeded random input.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from compress.errors import CompressError
from compress.structure.check import max_rel_err

TOLERANCE = 1e-5
FOLDABLE = ("BatchNorm", "Scale")


@dataclass(frozen=True)
class FoldResult:
    net: nn.Module  # the folded copy; the input net is not modified
    folded: dict[str, list[str]]  # convolution/inner product -> the BatchNorm/Scale layers folded into it
    kept: dict[str, str] = field(default_factory=dict)  # BatchNorm/Scale layer -> why it stays
    max_rel_err: float = 0.0
    # convolution/inner product -> the per-filter factor its weights were multiplied by (float64): what a
    # per-channel quantization grid's scales follow (compress.quant.fold)
    factors: dict[str, torch.Tensor] = field(default_factory=dict)


def fold_batchnorm(net: nn.Module, *, check: bool = True) -> FoldResult:
    """Fold every BatchNorm/Scale that directly follows a Convolution/InnerProduct into it."""
    out = copy.deepcopy(net).eval()
    folded: dict[str, list[str]] = defaultdict(list)
    kept: dict[str, str] = {}
    writer, readers = _writers_readers(out)
    into: dict[int, int] = {}  # folded node index -> the producer node it went into
    tops: dict[int, tuple[str, ...]] = {}  # producer node index -> its new tops
    factors: dict[str, torch.Tensor] = {}
    for i, node in enumerate(out.nodes):
        if node.type not in FOLDABLE:
            continue
        why, p = _target(out, i, node, writer, readers, into)
        if why:
            kept[node.name] = why
            continue
        a = _fold(getattr(out, out.nodes[p].attr), getattr(out, node.attr), node.type)
        name = out.nodes[p].name
        factors[name] = factors[name] * a if name in factors else a
        into[i] = p
        tops[p] = node.tops
        folded[out.nodes[p].name].append(node.name)
    if into:
        out = _rewrite(out, into, tops)
    err = max_rel_err(net, out) if check and into else 0.0
    if err > TOLERANCE:
        raise CompressError(f"{net.name}: the net with BatchNorm folded differs from the original (relative "
                            f"error {err:.2e} > {TOLERANCE:g}); this is a bug, please report it")
    return FoldResult(out, dict(folded), kept, err, factors)


def _writers_readers(net):
    """Which node wrote the version of each bottom (``writer[(i, k)]``: node index or None for a net
    input), and how many nodes read each version (``readers[(writer, blob)]``)."""
    last: dict[str, int | None] = {b: None for b in net.inputs}
    writer: dict[tuple[int, int], int | None] = {}
    readers: dict[tuple, int] = defaultdict(int)
    for i, node in enumerate(net.nodes):
        for k, b in enumerate(node.bottoms):
            writer[(i, k)] = last.get(b)
            readers[(last.get(b), b)] += 1
        for t in node.tops:
            last[t] = i
    for b in net.outputs:
        readers[(last.get(b), b)] += 1  # a net output is read from outside
    return writer, readers


def _target(net, i, node, writer, readers, into) -> tuple[str | None, int]:
    """``(None, producer index)`` when node ``i`` folds, else ``(reason, -1)``."""
    m = getattr(net, node.attr)
    if node.type == "BatchNorm" and getattr(m, "use_global_stats", None) is False:
        return "it normalizes with batch statistics (use_global_stats: false), not a fixed map", -1
    if node.type == "Scale" and (len(node.bottoms) != 1 or getattr(m, "axis", 1) != 1
                                 or m.weight is None or m.weight.dim() != 1):
        return "it is not one factor per channel (a second bottom, or another axis)", -1
    w = writer[(i, 0)]
    if w is None:
        return "it reads a net input", -1
    if readers[(w, node.bottoms[0])] != 1:
        return f"the blob it reads ({node.bottoms[0]}) is read by other layers too", -1
    p = into.get(w, w)
    prod = net.nodes[p]
    mod = getattr(net, prod.attr)
    conv = isinstance(mod, nn.Conv2d) and not isinstance(mod, nn.ConvTranspose2d)
    if not (conv or isinstance(mod, nn.Linear)):
        return f"it follows {prod.name} ({prod.type}), not a Convolution or InnerProduct", -1
    if getattr(mod, "axis", 1) != 1:
        return f"it follows {prod.name}, whose outputs are not one per channel", -1
    return None, p


@torch.no_grad()
def _fold(prod: nn.Module, layer: nn.Module, kind: str) -> torch.Tensor:
    """``prod``'s filters and bias times ``a`` plus ``c``: the per-channel affine map of ``layer``; returns
    ``a`` (float64)."""
    w = prod.weight.detach().double()
    b = prod.bias.detach().double() if prod.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if kind == "BatchNorm":
        mean, var = layer.statistics()
        a = 1.0 / (var.double() + layer.eps).sqrt()
        c = -mean.double() * a
    else:
        a = layer.weight.detach().double()
        c = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(a)
    new_w = (w * a.reshape(-1, *([1] * (w.dim() - 1)))).float()
    if getattr(prod, "transpose", False):
        new_w = new_w.t().contiguous().t()
    prod.weight = nn.Parameter(new_w)
    prod.bias = nn.Parameter((b * a + c).float())
    return a


def _rewrite(net, into: dict[int, int], tops: dict[int, tuple[str, ...]]):
    """The net without the folded nodes and modules: each producer writes its last folded layer's tops
    and has a bias; the netdef says the same."""
    from google.protobuf import text_format

    from converters.caffe.net import CaffeNet
    from converters.caffe.prototxt import parse_net_text

    gone = {net.nodes[i].name for i in into}
    renamed = {net.nodes[p].name: tops[p] for p in tops}
    nodes = [replace(node, tops=tuple(tops[i])) if i in tops else node
             for i, node in enumerate(net.nodes) if i not in into]
    modules = {node.name: getattr(net, node.attr) for node in nodes}
    netdef = parse_net_text(net.netdef)
    layers = [layer for layer in netdef.layer if layer.name not in gone]
    for layer in layers:
        if layer.name in renamed:
            del layer.top[:]
            layer.top.extend(renamed[layer.name])
            param = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
            param.bias_term = True
    del netdef.layer[:]
    netdef.layer.extend(layers)
    out = CaffeNet(net.name, net.inputs, nodes, modules, net.outputs, text_format.MessageToString(netdef))
    out.blob_shapes = dict(net.blob_shapes)
    out.build_report = net.build_report
    return out.eval()

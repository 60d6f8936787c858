"""The channel dependency graph of a Caffe net: the parameter slices that must be removed together.

After Torch-Pruning's ``DependencyGraph`` (Fang et al., "DepGraph: Towards Any Structural Pruning",
CVPR 2023). Every channel of every blob is a node; a layer either creates new channels (a Convolution's
or InnerProduct's output filters), passes them through one to one (ReLU, BatchNorm, a depthwise
convolution...), identifies the channels of several blobs (Eltwise: ``a_c + b_c`` needs both), or maps
offsets (Concat). Channels joined this way form one *channel set*: the slices of every layer that read
or write that channel (a producer's filter, the BatchNorm/Scale/PReLU entries, a depthwise filter, each
consumer's input channel or, for an InnerProduct after a flatten, its block of columns). Removing one
slice of a set without the others changes the net; removing all of them is exact.

Sets that start at the same producers form a :class:`Space` (a residual stage: the projection shortcut
and every block's last convolution write one space; a concat's output reads several). A space is what
a channel method selects in (keep ``k`` of its ``size`` sets) and what thinning removes from. Where the
channels reach something the graph cannot follow (a net output, a Softmax across channels, a Reshape, a
layer type without a rule in :mod:`compress.structure.rules`), the space is *blocked*: its sets stay
whole, and ``Space.blocked`` says why, naming the layer and its type.

The graph is built from the net's nodes alone (types, bottoms, tops, modules) and one forward pass at
batch 1 for the blob shapes; it never changes the net. Pruning (:mod:`compress.prune.coupling`),
thinning (:mod:`compress.structure.thin`) and BatchNorm folding all consult it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from compress.structure.rules import Walk, rule_for
from compress.structure.space import Member, Space


@dataclass(frozen=True)
class ChannelGraph:
    """The spaces of a net, and where each layer sits in them."""

    net: str
    spaces: tuple[Space, ...]
    _by_layer: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        by: dict[tuple[str, str], list[tuple[Space, Member]]] = defaultdict(list)
        for s in self.spaces:
            for m in s.members:
                by[(m.layer, m.role)].append((s, m))
        object.__setattr__(self, "_by_layer", dict(by))

    def of(self, layer: str, role: str) -> list[tuple[Space, Member]]:
        """The spaces where ``layer`` has a ``role`` member, with that member."""
        return self._by_layer.get((layer, role), [])


def channel_graph(net) -> ChannelGraph:
    """The channel graph of a CaffeNet (``nodes``, modules, ``inputs``, ``outputs``)."""
    shapes = _top_shapes(net)
    walk = Walk()
    last: dict[str, object] = {}
    for blob, shape in net.inputs.items():
        key = (None, blob)
        walk.new(key, int(shape[1]) if len(shape) > 1 else 1, ("input", blob))
        walk.tag(key, "input", blob)
        last[blob] = key
    for i, node in enumerate(net.nodes):
        module = getattr(net, node.attr)
        bottoms = [last[b] for b in node.bottoms]
        tops = [(i, t) for t in node.tops]
        for t, shape in zip(tops, shapes[i], strict=True):
            walk.shapes[t] = shape
        rule_for(node.type)(walk, node, module, bottoms, tops)
        for t in node.tops:
            last[t] = (i, t)
    for blob in net.outputs:
        walk.block(last[blob], f"net output {blob}")
    return ChannelGraph(net.name, tuple(walk.spaces()))


def _top_shapes(net) -> dict[int, list[tuple[int, ...]]]:
    """The shape of every top of every node, from one forward pass at batch 1 (zeros)."""
    p = next(iter(net.parameters()), None)
    kw = {"device": p.device, "dtype": p.dtype} if p is not None else {}
    blobs = {b: torch.zeros((1, *tuple(s)[1:]), **kw) for b, s in net.inputs.items()}
    out: dict[int, list[tuple[int, ...]]] = {}
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            for i, (_node, tops) in enumerate(net.run_nodes(blobs)):
                out[i] = [tuple(t.shape) for t in tops]
    finally:
        net.train(was)
    return out

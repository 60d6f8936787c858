"""How each Caffe layer type moves channels: one rule per type (STYLE.md: registries, not if-chains).

A rule sees the layer's node, its module, the versions of its bottom blobs (``(writer node, blob)``) and
of its tops, and tells the :class:`Walk` what the tops' channels are: new ones (a producer's filters),
the bottom's (``alias``: channel-local layers, a depthwise convolution, each bottom of an Eltwise,
joined), or slices of several (Concat). It also records the slices its layer owns (``member``), and what
stops the graph (``block``). A type without a rule is *opaque*: its bottoms' channels are blocked and its
tops' channels come from nowhere the graph can follow, both naming the layer and its type.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from torch import nn

from compress.structure.space import Member, Space

Key = tuple  # (writer node index | None, blob name): one version of a blob
Rule = Callable[..., None]
_RULES: dict[str, Rule] = {}


def rule(*types: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for t in types:
            if t in _RULES:
                raise RuntimeError(f"channel rule for {t!r} registered twice")
            _RULES[t] = fn
        return fn
    return deco


def rule_for(layer_type: str) -> Rule:
    return _RULES.get(layer_type, opaque)


def followed_types() -> list[str]:
    """The layer types the graph follows (every other type blocks the channels it touches)."""
    return sorted(_RULES)


class Walk:
    """Union-find over every channel of every blob version, and what is attached to each channel."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.origin: list[tuple] = []  # per channel id: ("out", layer) | ("input", blob) | ("opaque", layer)
        self.versions: dict[Key, np.ndarray] = {}  # blob version -> its channel ids
        self.shapes: dict[Key, tuple[int, ...]] = {}
        self.linear: dict[Key, str] = {}  # version -> the out/dw layer it is a per-channel affine map of
        self.attached: list[tuple] = []  # (kind, ids, payload)

    # --- channels ----------------------------------------------------------------------------
    def new(self, key: Key, n: int, origin: tuple) -> np.ndarray:
        start = len(self.parent)
        ids = np.arange(start, start + n, dtype=np.int64)
        self.parent.extend(range(start, start + n))
        self.origin.extend([origin] * n)
        self.versions[key] = ids
        return ids

    def alias(self, top: Key, bottom: Key) -> None:
        self.versions[top] = self.versions[bottom]

    def join(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)  # the earlier channel stays the root

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def channels(self, key: Key) -> int:
        return len(self.versions[key])

    def block_size(self, key: Key) -> int:
        """Elements per channel of one sample of the version (its spatial positions, or a flattened
        channel's columns)."""
        n = 1
        for d in self.shapes[key][1:]:
            n *= int(d)
        return max(1, n // max(1, self.channels(key)))

    # --- attachments -------------------------------------------------------------------------
    def member(self, role: str, layer: str, key: Key, total: int | None = None, *, index=None, block: int = 1,
               groups: int = 1, after: str | None = None) -> None:
        ids = self.versions[key]
        index = np.arange(len(ids)) if index is None else np.asarray(index)
        self.attached.append(("member", ids, (role, layer, index, total or len(ids), block, groups, after)))

    def block(self, key: Key, reason: str) -> None:
        self.attached.append(("block", self.versions[key], reason))

    def tag(self, key: Key, kind: str, value: str) -> None:
        self.attached.append((kind, self.versions[key], value))

    # --- the result --------------------------------------------------------------------------
    def spaces(self) -> list:
        roots = np.array([self.find(x) for x in range(len(self.parent))], dtype=np.int64)
        keys: dict[int, set] = defaultdict(set)
        for x, r in enumerate(roots.tolist()):
            keys[r].add(self.origin[x])
        order: dict[frozenset, list[int]] = defaultdict(list)  # space key -> roots in first-seen order
        seen = set()
        for r in roots.tolist():
            if r not in seen:
                seen.add(r)
                order[frozenset(keys[r])].append(r)
        space_of = np.full(len(roots), -1, dtype=np.int64)
        pos_of = np.full(len(roots), -1, dtype=np.int64)
        sizes = []
        for s, rs in enumerate(order.values()):
            space_of[rs] = s
            pos_of[rs] = np.arange(len(rs))
            sizes.append(len(rs))
        members: list[list] = [[] for _ in sizes]
        blocked: list[list[str]] = [[] for _ in sizes]
        inputs: list[list[str]] = [[] for _ in sizes]
        for kind, ids, payload in self.attached:
            r = roots[ids]
            sp, pos = space_of[r], pos_of[r]
            for s in dict.fromkeys(sp.tolist()):
                sel = sp == s
                if kind == "block":
                    blocked[s].append(payload)
                elif kind == "input":
                    inputs[s].append(payload)
                else:
                    role, layer, index, total, block, groups, after = payload
                    for idx, full in _occurrences(pos[sel], index[sel], sizes[s]):
                        if not full:
                            blocked[s].append(f"{layer} reads only some of its channels")
                            continue
                        members[s].append(Member(layer, role, idx, int(total), block, groups, after))
        return [Space(s, sizes[s], tuple(members[s]), tuple(dict.fromkeys(blocked[s])),
                      tuple(dict.fromkeys(inputs[s])))
                for s in range(len(sizes))]


def _occurrences(pos: np.ndarray, index: np.ndarray, size: int):
    """Split ``(position, layer index)`` pairs into full index maps, one per time a position recurs
    (a Concat of a blob with itself): yields ``(index tuple by position, whether every position is
    there)``."""
    pos, index = pos.copy(), index.copy()
    while len(pos):
        _, first = np.unique(pos, return_index=True)
        full = len(first) == size
        idx = np.full(size, -1, dtype=np.int64)
        idx[pos[first]] = index[first]
        yield tuple(int(i) for i in idx), full
        keep = np.ones(len(pos), dtype=bool)
        keep[first] = False
        pos, index = pos[keep], index[keep]


# ------------------------------------------------------------------------------------------- rules


def opaque(walk: Walk, node, module, bottoms: list[Key], tops: list[Key]) -> None:
    """A layer the graph cannot follow: whatever its channels touch stays whole."""
    why = f"{node.name} ({node.type})"
    for b in bottoms:
        walk.block(b, f"its channels flow into {why}")
    for t in tops:
        shape = walk.shapes[t]
        walk.new(t, int(shape[1]) if len(shape) > 1 else 1, ("opaque", node.name))
        walk.block(t, f"its channels come from {why}")


@rule("ReLU", "Sigmoid", "TanH", "AbsVal", "Power", "ELU", "BNLL", "Dropout", "Pooling", "Split")
def channel_local(walk: Walk, node, module, bottoms, tops) -> None:
    for t in tops:
        walk.alias(t, bottoms[0])


@rule("LRN")
def lrn(walk: Walk, node, module, bottoms, tops) -> None:
    walk.alias(tops[0], bottoms[0])
    if getattr(module, "region", "ACROSS_CHANNELS") == "ACROSS_CHANNELS":
        walk.member("lrn", node.name, bottoms[0])


@rule("Flatten")
def flatten(walk: Walk, node, module, bottoms, tops) -> None:
    ndim = len(walk.shapes[bottoms[0]])
    if getattr(module, "axis", 1) == 1 and getattr(module, "end_axis", ndim - 1) in (ndim - 1, -1):
        walk.alias(tops[0], bottoms[0])  # channel c becomes its block of block_size columns
    else:
        opaque(walk, node, module, bottoms, tops)


@rule("Convolution")
def convolution(walk: Walk, node, module: nn.Conv2d, bottoms, tops) -> None:
    g, c_in, c_out = module.groups, module.in_channels, module.out_channels
    if len(bottoms) != 1 or walk.channels(bottoms[0]) != c_in:
        return opaque(walk, node, module, bottoms, tops)
    if g > 1 and g == c_in == c_out:  # depthwise: channel c in, channel c out
        walk.alias(tops[0], bottoms[0])
        walk.member("dw", node.name, bottoms[0])
        walk.linear[tops[0]] = node.name
        return
    walk.member("in", node.name, bottoms[0], groups=g)
    walk.new(tops[0], c_out, ("out", node.name))
    walk.member("out", node.name, tops[0], groups=g)
    walk.linear[tops[0]] = node.name


@rule("InnerProduct")
def inner_product(walk: Walk, node, module: nn.Linear, bottoms, tops) -> None:
    b = bottoms[0]
    if getattr(module, "axis", 1) != 1 or walk.channels(b) * walk.block_size(b) != module.in_features:
        return opaque(walk, node, module, bottoms, tops)
    walk.member("in", node.name, b, block=walk.block_size(b))
    walk.new(tops[0], module.out_features, ("out", node.name))
    walk.member("out", node.name, tops[0])
    walk.linear[tops[0]] = node.name


@rule("BatchNorm")
def batch_norm(walk: Walk, node, module, bottoms, tops) -> None:
    _per_channel(walk, node, bottoms, tops, "norm")


@rule("Scale")
def scale(walk: Walk, node, module, bottoms, tops) -> None:
    if len(bottoms) != 1 or getattr(module, "axis", 1) != 1:
        return opaque(walk, node, module, bottoms, tops)
    _per_channel(walk, node, bottoms, tops, "scale")


@rule("PReLU")
def prelu(walk: Walk, node, module, bottoms, tops) -> None:
    walk.alias(tops[0], bottoms[0])
    if not getattr(module, "channel_shared", False):
        walk.member("prelu", node.name, bottoms[0])


def _per_channel(walk: Walk, node, bottoms, tops, role: str) -> None:
    """A layer with one entry per channel that maps each channel by itself, linearly (BatchNorm, Scale)."""
    walk.alias(tops[0], bottoms[0])
    after = walk.linear.get(bottoms[0])
    walk.member(role, node.name, bottoms[0], after=after)
    if after is not None:
        walk.linear[tops[0]] = after


@rule("Eltwise")
def eltwise(walk: Walk, node, module, bottoms, tops) -> None:
    """SUM, PROD, MAX: channel c of the top needs channel c of every bottom, so they are one set."""
    first = walk.versions[bottoms[0]]
    for b in bottoms[1:]:
        walk.join(first, walk.versions[b])
    walk.alias(tops[0], bottoms[0])


@rule("Concat")
def concat(walk: Walk, node, module, bottoms, tops) -> None:
    if getattr(module, "axis", 1) != 1:
        return opaque(walk, node, module, bottoms, tops)
    walk.versions[tops[0]] = np.concatenate([walk.versions[b] for b in bottoms])

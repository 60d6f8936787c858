"""The result of the channel graph: a *space* of channel sets and its *members*, the slices of each layer
that a set owns (:mod:`compress.structure.graph` builds them; :mod:`compress.structure.rules` records them
during its walk)."""
from __future__ import annotations

from dataclasses import dataclass

#: roles of a member: what slice of its layer a channel set owns
OUT, IN, DW, NORM, SCALE, PRELU, LRN = "out", "in", "dw", "norm", "scale", "prelu", "lrn"
PARAM_ROLES = (NORM, SCALE, PRELU)


@dataclass(frozen=True)
class Member:
    """One layer's part of a space. ``index[p]`` is the layer's channel (filter, input channel, entry)
    holding the space's set ``p``; ``total`` is how many such channels the layer has on that side.

    ``block``: columns per channel of an InnerProduct ``in`` member (the flattened spatial positions).
    ``groups``: convolution groups of a grouped (not depthwise) ``in``/``out`` member; its channel ``c``
    lies in group ``c // (total // groups)``. ``after``: for ``norm``/``scale`` entries (and a depthwise
    ``dw`` member's own BatchNorm), the ``out``/``dw`` layer whose output they transform linearly, with
    nothing else in between (what BatchNorm folding and the importance's BN factor use)."""

    layer: str
    role: str
    index: tuple[int, ...]
    total: int
    block: int = 1
    groups: int = 1
    after: str | None = None


@dataclass(frozen=True)
class Space:
    """Channel sets that share their producers. ``blocked``: why the sets cannot be removed (a net
    output, an untraceable layer; empty when they can). ``inputs``: net input blobs whose channels these
    are. Members with role ``lrn`` are the across-channel LRN layers the channels pass (their windows mix
    neighbouring channels; they own no slice)."""

    id: int
    size: int
    members: tuple[Member, ...]
    blocked: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()

    @property
    def lrn(self) -> tuple[str, ...]:
        return tuple(self.layers(LRN))

    def role(self, *roles: str) -> list[Member]:
        return [m for m in self.members if m.role in roles]

    def layers(self, *roles: str) -> list[str]:
        """Names of the layers with a member in one of ``roles`` (all roles when none given), in order."""
        return list(dict.fromkeys(m.layer for m in self.members if not roles or m.role in roles))

    @property
    def plain(self) -> bool:
        """One producer (or a net input) and one consumer, nothing else, with the channels one to one: a
        plain chain, pruned layer by layer as before (LeNet, AlexNet)."""
        outs, ins = self.role(OUT), self.role(IN)
        others = [m for m in self.members if m.role not in (OUT, IN, LRN)]
        return (len(outs) <= 1 and len(ins) == 1 and not others and len(outs) + len(self.inputs) == 1
                and all(m.total == self.size and m.index == tuple(range(self.size)) for m in outs + ins))

    def describe(self) -> str:
        """Its producers, for messages: ``conv_2a, conv_2c (+3)``."""
        names = self.layers(OUT) or [f"net input {b}" for b in self.inputs] or self.layers()
        return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")

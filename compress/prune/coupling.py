"""Channel pruning of coupled sets: one decision per channel set of the channel graph.

In a residual stage every convolution writing into the sum must lose the same channels; a BatchNorm or
Scale channel goes with its filter; a depthwise channel goes with the pointwise filters on both sides
(:mod:`compress.structure.graph`). Pruning each layer on its own would zero channels that nothing can
remove. Here a channel method decides per *space* (the sets that share producers): it keeps ``k`` of its
``size`` sets and zeroes every weight slice of the others, in every layer that has one (the producers'
filters, depthwise filters, the consumers' input channels or column blocks), so thinning removes them
exactly and the per-layer report shows what goes.

Which sets: the ``k`` of largest *importance*, the L2 norm of all the set's weight slices, where each
producer's (and depthwise) filter is first scaled by the BatchNorm and Scale right after it,
``|gamma| / sqrt(var + eps)``: the norm of the filter the folded, deployed net computes. BatchNorm makes
a raw filter's norm meaningless (it normalizes it away); after folding, ``|gamma|`` is what sets the
channel's size (network slimming, Liu et al. 2017, ranks by ``|gamma|`` alone). Ties keep the lowest
index. ADMM's Z-step is the projection onto "at most ``k`` sets" in these coordinates, RGSM's group
lasso and threshold act on the same norms.

How many: the space's *owners* are its targeted consumers under ``--group in`` (producers under
``--group out``; a depthwise layer both): ``k = round(r * size)`` with ``r`` the largest keep ratio among
them (so no owner loses more than its target asks), at least 1 (no layer ever loses all its channels).
A residual stage's space is one space, counted once however many convolutions write it. ``k`` is then
rounded to a channel count the convolution kernels handle well (``ALIGNMENT``): the nearest multiple of 16
in spaces of 16 channels or more (at least 16, at most the size: a space of 16 to 23 channels stays
whole), exact below 16. onnxruntime's CPU convolutions work in blocks of 16 channels on AVX-512 (8 on
AVX2, which multiples of 16 also suit); a count off the block pads to it or leaves the blocked kernels.
Measured here (docs/STRUCTURED.md): ResNet-50-1by2 at about half the MACs ran 1.89x faster than the folded
dense net with multiples of 16, 1.66x with multiples of 8, 1.42x with exact counts; MobileNet-v1 0.5 at
half the MACs 1.64x with multiples of 16 against 1.53x when its 16-channel layers went to 8 (their
kernels cost the same at 8 as at 16), and exact counts ran slower than the dense net. A grouped (not
depthwise) convolution in the space makes ``k`` a multiple of its groups and the choice balanced per group.

What stays as before: a *plain* space (one producer or a net input, one consumer, nothing else: LeNet,
AlexNet) is pruned layer by layer, the seed's rule (``Targets.count`` of the layer's own groups, ranked
by their own norms; an InnerProduct's single columns under ``--group in``), and so are layers the graph
does not place (a Deconvolution) and every net that is not a CaffeNet. A space the graph cannot follow to
its end (a net output, a Softmax, an unknown layer type), or that passes an across-channel LRN (whose
windows let only exactly-zero channels at the ends go), keeps all its sets; that is reported as an
adjustment naming the layer and its type.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from compress.layers import PrunableLayer
from compress.prune import ops
from compress.prune.targets import Adjustment, Targets
from compress.structure.graph import channel_graph
from compress.structure.space import DW, IN, NORM, OUT, SCALE, Member, Space

#: (smallest space, multiple): kept counts of a space of at least that many channels are rounded to the
#: nearest multiple (the first entry that applies); smaller spaces keep their exact count
ALIGNMENT = ((16, 16),)


@dataclass(frozen=True)
class Slice:
    """A weight slice per set: rows (``dim`` 0: filters, depthwise filters) or input channels (``dim`` 1;
    an InnerProduct's ``block`` columns each) of ``layer``, at ``index`` (one per set)."""

    layer: str
    dim: int
    index: torch.Tensor
    block: int
    groups: int
    scaled_by: tuple[Member, ...] = ()  # the BatchNorm/Scale entries folded into this filter


@dataclass(frozen=True)
class CoupledSpace:
    space: Space
    slices: tuple[Slice, ...]
    owners_in: tuple[str, ...]
    owners_out: tuple[str, ...]
    cells: int  # groups the choice is balanced over (1: none)


class Coupling:
    """The coupled spaces of a CaffeNet and the layers still pruned layer by layer."""

    def __init__(self, net: nn.Module, layers: Mapping[str, PrunableLayer], group: str) -> None:
        self.net, self.group = net, group
        self.graph = channel_graph(net)
        self.spaces: list[CoupledSpace] = []
        self.blocked: list[Space] = []
        side = (IN,) if group == "in" else (OUT,)
        coupled_side: set[str] = set()
        for s in self.graph.spaces:
            if not s.members or s.plain:
                continue
            coupled_side.update(m.layer for m in s.role(*side, DW))
            if s.blocked or s.inputs or s.lrn:
                self.blocked.append(s)
                continue
            self.spaces.append(_coupled(s, layers))
        self._legacy = {n for n in layers if n not in coupled_side}

    def legacy(self, layer: str) -> bool:
        """Whether ``layer``'s own groups (of the group mode's side) are pruned layer by layer."""
        return layer in self._legacy

    def owners(self, cs: CoupledSpace) -> tuple[str, ...]:
        return cs.owners_in if self.group == "in" else cs.owners_out

    # --- counts ------------------------------------------------------------------------------
    def keep(self, cs: CoupledSpace, targets: Targets) -> int | None:
        """Sets kept in ``cs`` under ``targets`` (None: no owner is targeted, the space is not pruned)."""
        ratios = [targets.keep[o] for o in self.owners(cs) if o in targets.keep]
        if not ratios:
            return None
        n = cs.space.size
        k = max(1, ops.keep_count(max(ratios), n))
        k = aligned(k, n)
        if cs.cells > 1:
            k = min(n, max(cs.cells, cs.cells * int(k / cs.cells + 0.5)))
        return k

    def adjustments(self, targets: Targets | None) -> list[Adjustment]:
        """Spaces left whole because the graph cannot follow them, one row per owning targeted layer."""
        out = []
        for s in self.blocked:
            side = s.layers(IN, DW) if self.group == "in" else s.layers(OUT, DW)
            owners = [n for n in side if targets is None or n in targets.keep]
            if not owners:
                continue
            why = (s.blocked[0] if s.blocked else f"they are the net input {s.inputs[0]}" if s.inputs else
                   f"they pass across-channel LRN {s.lrn[0]}, which mixes neighbouring channels")
            others = [n for n in s.layers(IN, OUT, DW) if n != owners[0]]
            more = " ..." if len(others) > 3 else ""
            shared = f" (shared with {', '.join(others[:3])}{more})" if others else ""
            out.append(Adjustment(owners[0], "kept whole",
                                  f"its {s.size} coupled channels{shared} stay: {why}", s.size, s.size,
                                  "channels"))
        return out

    # --- importance --------------------------------------------------------------------------
    def scores(self, cs: CoupledSpace, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Squared importance of every set: sum of the squared norms of its slices (filters scaled by
        their BatchNorm/Scale). Differentiable in ``values`` (RGSM's penalty)."""
        total = None
        for sl in cs.slices:
            w = values[sl.layer]
            sq = _slice_squares(w, sl)
            f = self.factor(sl)
            if f is not None:
                sq = sq * f.to(sq.dtype).square()
            total = sq if total is None else total + sq
        return total

    def factor(self, sl: Slice) -> torch.Tensor | None:
        """``|gamma| / sqrt(var + eps)`` per set of the BatchNorm and Scale after this filter (None: none)."""
        f = None
        for m in sl.scaled_by:
            mod = self.net.layer(m.layer)
            with torch.no_grad():
                if m.role == NORM:
                    _, var = mod.statistics()
                    v = 1.0 / (var.float() + mod.eps).sqrt()
                else:
                    v = mod.weight.detach().float().abs().reshape(-1) if mod.weight is not None else None
            if v is None:
                continue
            v = v[torch.as_tensor(m.index)]
            f = v if f is None else f * v
        return f

    def choose(self, cs: CoupledSpace, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Bool per set: the ``k`` of largest score (balanced over ``cs.cells`` equal cells)."""
        s = scores.detach().float()
        if cs.cells == 1:
            return ops.topk_mask(s, k)
        per = s.numel() // cs.cells
        return torch.cat([ops.topk_mask(s[c * per:(c + 1) * per], k // cs.cells) for c in range(cs.cells)])

    def active(self, targets: Targets | None) -> list[CoupledSpace]:
        """The spaces a method acts on: those with a targeted owner (every space without targets)."""
        if targets is None:
            return list(self.spaces)
        return [cs for cs in self.spaces if any(o in targets.keep for o in self.owners(cs))]

    # --- masks -------------------------------------------------------------------------------
    def kept_sets(self, values: Mapping[str, torch.Tensor], targets: Targets) -> dict[int, torch.Tensor]:
        """``{space id: bool per set}`` for every pruned space."""
        out = {}
        for cs in self.spaces:
            k = self.keep(cs, targets)
            if k is not None and k < cs.space.size:
                out[cs.space.id] = self.choose(cs, self.scores(cs, values), k)
        return out

    def masks(self, values: Mapping[str, torch.Tensor], targets: Targets) -> dict[str, torch.Tensor]:
        """``{layer: bool mask like its weight}`` zeroing every slice of the sets not kept."""
        kept = self.kept_sets(values, targets)
        return self.expand({cs.space.id: kept[cs.space.id].float() for cs in self.spaces
                            if cs.space.id in kept}, values)

    def expand(self, per_set: Mapping[int, torch.Tensor], values: Mapping[str, torch.Tensor],
               dtype: torch.dtype = torch.bool) -> dict[str, torch.Tensor]:
        """Per-set factors (1 kept, 0 pruned, or a shrink) as one tensor per layer, like its weight: the
        product of its row and column factors."""
        rows: dict[str, torch.Tensor] = {}
        cols: dict[str, tuple[torch.Tensor, Slice]] = {}
        for cs in self.spaces:
            f = per_set.get(cs.space.id)
            if f is None:
                continue
            for sl in cs.slices:
                w = values[sl.layer]
                if sl.dim == 0:
                    r = rows.setdefault(sl.layer, torch.ones(w.shape[0], device=w.device))
                    r[sl.index] = r[sl.index] * f.to(w.device, torch.float32)
                else:
                    n = _in_channels(w, sl)
                    c, _ = cols.setdefault(sl.layer, (torch.ones(n, device=w.device), sl))
                    c[sl.index] = c[sl.index] * f.to(w.device, torch.float32)
        out = {}
        for name in set(rows) | set(cols):
            w = values[name]
            m = torch.ones(w.shape, device=w.device)
            if name in rows:
                m = m * rows[name].reshape(-1, *([1] * (w.dim() - 1)))
            if name in cols:
                c, sl = cols[name]
                m = m * _expand_cols(c, w, sl)
            out[name] = (m != 0) if dtype == torch.bool else m.to(dtype)
        return out


def aligned(k: int, n: int) -> int:
    """``k`` of ``n`` channels rounded to the nearest multiple that ``ALIGNMENT`` gives ``n`` (within
    ``[multiple, n]``); unchanged when none applies or ``k == n``."""
    for smallest, multiple in ALIGNMENT:
        if n >= smallest:
            return k if k >= n else min(n, max(multiple, multiple * int(k / multiple + 0.5)))
    return k


def _coupled(s: Space, layers: Mapping[str, PrunableLayer]) -> CoupledSpace:
    slices = []
    for m in s.members:
        if m.role in (OUT, DW, IN) and m.layer in layers:
            scaled = tuple(x for x in s.role(NORM, SCALE) if x.after == m.layer) if m.role != IN else ()
            slices.append(Slice(m.layer, 1 if m.role == IN else 0, torch.tensor(m.index, dtype=torch.long),
                                m.block, m.groups, scaled))
    grouped = [m.groups for m in s.members if m.groups > 1 and m.total == s.size]
    cells = 1
    for g in grouped:
        cells = cells * g // _gcd(cells, g)
    if s.size % cells:
        cells = 1
    owners_in = tuple(dict.fromkeys(m.layer for m in s.members if m.role in (IN, DW) and m.layer in layers))
    owners_out = tuple(dict.fromkeys(m.layer for m in s.members if m.role in (OUT, DW) and m.layer in layers))
    return CoupledSpace(s, tuple(slices), owners_in, owners_out, cells)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _in_channels(w: torch.Tensor, sl: Slice) -> int:
    """Input channels of the layer whose weight is ``w`` (a grouped conv: all groups'; Linear: blocks)."""
    if w.dim() == 2:
        return w.shape[1] // sl.block
    return w.shape[1] * sl.groups


def _slice_squares(w: torch.Tensor, sl: Slice) -> torch.Tensor:
    """Squared L2 norm of each set's slice of ``w``."""
    if sl.dim == 0:
        sq = w.reshape(w.shape[0], -1).square().sum(dim=1)
    elif w.dim() == 2:
        sq = w.square().sum(dim=0).reshape(-1, sl.block).sum(dim=1)
    else:
        g = sl.groups
        sq = w.reshape(g, w.shape[0] // g, w.shape[1], -1).square().sum(dim=(1, 3)).reshape(-1)
    return sq[sl.index.to(sq.device)]


def _expand_cols(c: torch.Tensor, w: torch.Tensor, sl: Slice) -> torch.Tensor:
    """Per-input-channel factors ``c`` broadcast like ``w``."""
    if w.dim() == 2:
        return c.repeat_interleave(sl.block).reshape(1, -1)
    g = sl.groups
    o, per = w.shape[0], w.shape[1]
    per_group = c.reshape(g, 1, per).expand(g, o // g, per).reshape(o, per)
    return per_group.reshape(o, per, *([1] * (w.dim() - 2)))


def coupling_for(model: nn.Module | None, layers: Mapping[str, PrunableLayer], group: str) -> Coupling | None:
    """The coupling of a CaffeNet (None for any other module: every layer is pruned on its own)."""
    if model is None or not hasattr(model, "nodes") or not hasattr(model, "inputs"):
        return None
    return Coupling(model, layers, group)

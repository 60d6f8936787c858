"""Channel thinning: remove zero channel sets from a CaffeNet, exactly, along its channel graph.

Channel-pruned models keep their pruned channels as zeros: the file shrinks under sparse storage but
the net is no faster. Thinning removes them for real. It asks the channel graph
(:mod:`compress.structure.graph`) for every *space* (channels that share producers: a layer's output,
or a residual stage joined by Eltwise) and the slices each channel set owns: the producers' filters,
BatchNorm/Scale/PReLU entries, depthwise filters, and every consumer's input channel (an InnerProduct's
block of columns after a flatten; a Concat's consumers at their offsets). Set ``j`` of a space goes,
with all its slices, when for every consumer either

* the consumer ignores it (its weights for ``j`` are all zero), or
* every producer's filter ``j`` is zero, so the channel is a fixed map (biases through BatchNorm, Scale,
  ReLU, pooling, sums...; read off one forward pass, as every layer on the way is channel-local), and
  its contribution can be folded into the consumer's bias: always for an InnerProduct, and for a
  Convolution when it is spatially constant (zero padding makes the borders differ).

ACROSS_CHANNELS LRN mixes neighbouring channels: a removed channel must be exactly zero at the LRN input
(zero filters and a fixed map that is zero there), and every kept channel must keep the same kept
neighbours within its window (true when the removed channels sit at the ends of the range). Grouped
convolutions (not depthwise: those shrink with their channels) must lose the same number of channels from
every group: the largest such subset goes, the rest are kept and reported. A space the graph cannot
follow to its end (a net output, a Softmax or Reshape, an unknown layer type) keeps all its channels,
and the reason names the layer and its type. Removing input channels can leave a consumer's own filters
unused: thinning repeats until nothing changes. Modules, Caffe blobs and ``net.netdef`` (``num_output``,
a depthwise layer's ``group``) are updated together, so the thinned net saves, exports and reloads. The
thinned net is checked against the original on a seeded random input (relative error <= 1e-5).
"""
from __future__ import annotations

import bisect
import copy
import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError
from compress.structure.check import max_rel_err
from compress.structure.graph import ChannelGraph, channel_graph
from compress.structure.slicing import SLICERS, netdef_updates, write_netdef
from compress.structure.space import IN, LRN, OUT, Member, Space

TOLERANCE = 1e-5


@dataclass(frozen=True)
class ThinResult:
    net: nn.Module  # the thinned copy; the input net is not modified
    removed: dict[str, tuple[int, int]]  # producer (or depthwise) layer -> (filters before, after)
    inputs: dict[str, tuple[int, int]]  # consumer layer -> (input channels/features before, after)
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why its zero channels stay
    folded: dict[str, int] = field(default_factory=dict)  # consumer -> removed non-zero constant channels
    max_rel_err: float = 0.0  # thinned vs original output on a seeded random input


def thin(net: nn.Module, *, strict: bool = False, check: bool = True, align: int = 1) -> ThinResult:
    """Remove every zero channel set that can go exactly; ``strict`` raises instead of recording why
    some stay. ``align`` > 1 keeps enough zero channels back that every thinned width is a multiple of
    it where one fits (:func:`_align`)."""
    out = copy.deepcopy(net).eval()
    removed: dict[str, tuple[int, int]] = {}
    inputs: dict[str, tuple[int, int]] = {}
    skipped: dict[str, str] = {}
    folded: dict[str, int] = defaultdict(int)
    changed_layers: set[str] = set()
    while True:  # removing inputs can leave a consumer's filters unused: repeat to a fixed point
        graph = channel_graph(out)
        probe = _probe(out, graph)
        plans, skipped = [], {}
        for space in graph.spaces:
            try:
                plan = _plan(out, space, probe, align)
            except _Refusal as e:
                for layer in _owners(space):
                    skipped.setdefault(layer, str(e))
                continue
            if plan is not None:
                if plan.remove:
                    plans.append(plan)
                if plan.note:
                    for layer in _owners(space):
                        skipped.setdefault(layer, plan.note)
        if not plans:
            break
        changed_layers |= _apply(out, plans, removed, inputs, folded)
    if strict and skipped:
        raise CompressError("; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if changed_layers:
        out.netdef = write_netdef(out, netdef_updates(out, changed_layers))
    err = max_rel_err(net, out) if check and removed else 0.0
    if err > TOLERANCE:
        raise CompressError(f"{net.name}: thinned net differs from the original (relative error {err:.2e} "
                            f"> {TOLERANCE:g}); this is a bug, please report it")
    return ThinResult(out, removed, inputs, skipped, dict(folded), err)


class _Refusal(CompressError):
    pass


@dataclass
class _Plan:
    space: Space
    remove: list[int]  # set indices of the space
    fold: dict[str, list[int]]  # consumer -> removed sets whose fixed map is folded into its bias
    maps: dict[str, torch.Tensor]  # consumer -> its captured input (C, H, W) or (C, K), float64
    note: str | None = None


def _owners(space: Space) -> list[str]:
    """Who a refusal is reported under: the producers (or, for a net input, the consumers)."""
    return space.layers(OUT, "dw") or space.layers(IN)


# ------------------------------------------------------------------------------------ planning


def _probe(net, graph: ChannelGraph) -> dict[str, torch.Tensor]:
    """The input of every consumer and across-channel LRN on a batch-1 zero input (float64 copy)."""
    names = {m.layer for s in graph.spaces for m in s.role(IN)} | {n for s in graph.spaces for n in s.lrn}
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        def hook(_m, args, _y, name=name):
            seen[name] = args[0][0].detach().double().cpu()
        hooks.append(net.layer(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            p = next(iter(net.parameters()))
            net(*[torch.zeros((1, *tuple(s)[1:]), device=p.device, dtype=p.dtype)
                  for s in net.inputs.values()])
    finally:
        for h in hooks:
            h.remove()
    return seen


def _rows_zero(m: nn.Module, index: tuple[int, ...]) -> torch.Tensor:
    w = m.weight.detach()
    return (w.reshape(w.shape[0], -1) == 0).all(dim=1)[list(index)]


def _ignored(m: nn.Module, member: Member) -> torch.Tensor:
    """Per set of the space: whether this consumer's weights for it are all zero."""
    w = m.weight.detach()
    if isinstance(m, nn.Linear):
        per = (w.reshape(w.shape[0], member.total, member.block) == 0).all(dim=2).all(dim=0)
    else:
        g, n = m.groups, m.in_channels
        rows, per_g = w.shape[0] // g, n // g
        per = (w.reshape(g, rows, per_g, -1) == 0).all(dim=3).all(dim=1).reshape(n)
    return per[list(member.index)]


def _plan(net, space: Space, probe: dict, align: int = 1) -> _Plan | None:
    outs, ins = space.role(OUT), space.role(IN)
    n = space.size
    fixed = torch.zeros(n, dtype=torch.bool) if space.inputs else torch.ones(n, dtype=torch.bool)
    for m in outs:
        fixed &= _rows_zero(net.layer(m.layer), m.index)
    ignore = {id(m): _ignored(net.layer(m.layer), m) for m in ins}
    all_ignore = torch.ones(n, dtype=torch.bool)
    any_ignore = torch.zeros(n, dtype=torch.bool)
    for v in ignore.values():
        all_ignore &= v
        any_ignore |= v
    candidates = fixed | any_ignore
    if space.inputs:
        candidates &= all_ignore  # a net input's channels: report only what every consumer dropped
    if not candidates.any():
        return None
    if space.blocked:
        why = space.blocked[0]
        tail = "" if why.startswith("net output") else "; thinning through it is not supported"
        raise _Refusal(why + tail)
    if space.inputs:
        raise _Refusal(f"the zero input channels read net input {space.inputs[0]}, which keeps its channels")
    ok = torch.ones(n, dtype=torch.bool)
    folds: dict[str, list[int]] = {}
    maps: dict[str, torch.Tensor] = {}
    for m in ins:
        mod = net.layer(m.layer)
        amap = _per_channel(probe[m.layer], m.total)
        foldable = fixed & ~ignore[id(m)]
        fold = []
        for j in torch.nonzero(foldable).flatten().tolist():
            how = _fold_kind(mod, m.index[j], amap, m.total)
            if how is None:
                foldable[j] = False
            elif how:
                fold.append(j)
        ok &= ignore[id(m)] | foldable
        folds[m.layer], maps[m.layer] = fold, amap
    for m in space.role(LRN):  # exactly zero at the LRN input, for any input: zero filters and a zero map
        x = probe[m.layer].reshape(probe[m.layer].shape[0], -1)
        ok &= fixed & (x[list(m.index)] == 0).all(dim=1)
    remove = torch.nonzero(ok).flatten().tolist()
    if not remove:
        raise _Refusal(_why_not(space, fixed, all_ignore, any_ignore, ins, ignore))
    if len(remove) == n:
        raise _Refusal(f"all {n} channels are removable; a layer needs at least one")
    remove, note = _balance(space, remove)
    for m in space.role(LRN):
        if m.total != n or m.index != tuple(range(n)):
            raise _Refusal(f"across-channel LRN {m.layer} normalizes channels of several spaces together")
        _check_lrn_neighbours(net, m.layer, n, remove)
    if align > 1:
        remove, note = _align(net, space, remove, align, note)
    gone = set(remove)
    folds = {k: [j for j in v if j in gone] for k, v in folds.items()}
    return _Plan(space, remove, folds, maps, note)


def _per_channel(v: torch.Tensor, n: int) -> torch.Tensor:
    """(C, H, W) maps stay; a flattened (C*K,) or per-feature (C,) blob becomes (C, K)."""
    return v.reshape(n, -1) if v.dim() == 1 else v


def _why_not(space, fixed, all_ignore, any_ignore, ins, ignore) -> str:
    if space.lrn:
        return (f"its zero filters are not exactly zero at across-channel LRN {', '.join(space.lrn)} "
                f"(non-zero bias), which mixes neighbouring channels")
    partial = any_ignore & ~all_ignore & ~fixed
    if partial.any():
        readers = [m.layer for m in ins if not bool(ignore[id(m)][partial].all())]
        return (f"{int(partial.sum())} channels are dropped by some consumers but still read by "
                f"{', '.join(dict.fromkeys(readers))}")
    return ("its zero filters' constant outputs cannot be folded into the next layer's bias "
            "(zero padding makes them position-dependent, or the layer has no bias)")


def _contribution(m: nn.Module, c: int, amap: torch.Tensor, n: int) -> torch.Tensor:
    """What input channel ``c``'s fixed map adds to the consumer's output, (out, positions) float64."""
    w = m.weight.detach()
    if isinstance(m, nn.Linear):
        k = amap[0].numel()
        return (w[:, c * k:(c + 1) * k].double() @ amap[c].reshape(-1)).reshape(-1, 1)
    per, rows = n // m.groups, w.shape[0] // m.groups
    j, local = divmod(c, per)
    y = F.conv2d(amap[c][None, None], w[j * rows:(j + 1) * rows, local:local + 1].double(),
                 stride=m.stride, padding=m.padding, dilation=m.dilation)
    full = torch.zeros(w.shape[0], y.shape[2] * y.shape[3], dtype=torch.float64)
    full[j * rows:(j + 1) * rows] = y[0].reshape(rows, -1)
    return full


def _fold_kind(m: nn.Module, c: int, amap: torch.Tensor, n: int) -> bool | None:
    """How the fixed map of input channel ``c`` leaves the consumer: False (it adds nothing), True (a
    constant per output, folded into the bias), None (it cannot be folded)."""
    if (amap[c] == 0).all():
        return False
    contrib = _contribution(m, c, amap, n)
    if not contrib.abs().max() > 0:
        return False
    if m.bias is None:
        return None
    spread = (contrib - contrib[:, :1]).abs().max()
    return True if bool(spread <= 1e-9 * contrib.abs().max()) else None


def _balance(space: Space, remove: list[int]) -> tuple[list[int], str | None]:
    """The largest subset of ``remove`` that takes the same number of channels from every group of
    every grouped convolution in the space: equal counts in each cell of the finest common partition."""
    grouped = [m for m in space.members if m.groups > 1]
    if not grouped:
        return remove, None
    n = space.size
    for m in grouped:
        if m.total != n or m.index != tuple(range(n)):
            raise _Refusal(f"grouped layer {m.layer} (group {m.groups}) reads channels of several spaces; "
                           f"its groups cannot be kept equal")
    groups = [(m.layer, m.groups, "filters" if m.role == OUT else "input channels") for m in grouped]
    cells = math.lcm(*(g for _, g, _ in groups))
    if n % cells:
        raise _Refusal(f"{n} channels do not split into {cells} equal groups")
    per = n // cells
    by_cell = [[c for c in remove if c // per == k] for k in range(cells)]
    least = min(len(b) for b in by_cell)
    unequal = [(name, g, what) for name, g, what in groups
               if len({sum(1 for c in remove if c // (n // g) == j) for j in range(g)}) > 1]
    if least == 0:
        name, g, what = unequal[0]
        counts = [sum(1 for c in remove if c // (n // g) == j) for j in range(g)]
        raise _Refusal(f"grouped layer {name} (group {g}) would lose {counts} {what} per group; "
                       f"groups must stay equal")
    if least == per:
        name, _, what = groups[0]
        raise _Refusal(f"grouped layer {name} would lose all {what} of every group")
    chosen = sorted(c for b in by_cell for c in b[:least])
    note = None
    if len(chosen) < len(remove):
        names = ", ".join(sorted({name for name, _, _ in unequal}))
        note = (f"kept {len(remove) - len(chosen)} removable channels so that the groups of {names} "
                f"stay equal")
    return chosen, note


def _align(net, space: Space, remove: list[int], align: int,
           note: str | None) -> tuple[list[int], str | None]:
    """Keep some of the removable channels back so that the width left is a multiple of ``align``:
    onnxruntime's blocked convolution kernels (MLAS NCHWc: 8 channels a block with AVX2, 16 with
    AVX-512) run a width off their block on a slower path, so 29 channels cost more time than 32
    (docs/DEPLOY.md); a space no convolution reads or writes (InnerProduct to InnerProduct) is cut
    exactly. Where no multiple of ``align`` fits between the width left and the space's size,
    the halves of ``align`` down to 8 are tried (a multiple of 8 suits AVX2); where none fits either
    (a small layer), every removable channel goes. A channel kept back is exact as it was (a zero filter,
    or one every consumer ignores). Grouped convolutions keep equal groups (the same number kept back in
    every cell of :func:`_balance`); the channels kept back are those nearest a kept channel, so an
    across-channel LRN's removed channels stay at the ends (checked again; if not, the exact cut)."""
    if not any(isinstance(net.layer(m.layer), nn.Conv2d) for m in space.members):
        return remove, note  # fully connected only: matrix products take any width at the same speed
    n = space.size
    kept = n - len(remove)
    grouped = [m.groups for m in space.members if m.groups > 1]
    cells = math.lcm(*grouped) if grouped else 1
    for block in _blocks(align):
        target = next((t for t in range(-(-kept // block) * block, n + 1, block) if (t - kept) % cells == 0),
                      None)
        if target is not None:
            break
    else:
        return remove, note
    if target == kept:
        return remove, note
    back = target - kept
    gone = set(remove)
    alive = [c for c in range(n) if c not in gone]  # sorted, never empty (a space keeps >= 1 channel)
    per = n // cells

    def distance(c: int) -> int:  # to the nearest kept channel: its neighbours in the sorted list
        i = bisect.bisect(alive, c)
        return min(abs(c - alive[j]) for j in (i - 1, i) if 0 <= j < len(alive))

    returned: set[int] = set()
    for cell in range(cells):
        mine = sorted((c for c in remove if c // per == cell), key=lambda c: (distance(c), c))
        returned.update(mine[:back // cells])
    aligned = [c for c in remove if c not in returned]
    for m in space.role(LRN):
        try:
            _check_lrn_neighbours(net, m.layer, n, aligned)
        except _Refusal:
            return remove, note  # the exact cut (already checked) rather than none
    why = (f"kept {back} zero channels so that its width is {target}, a multiple of {block} (onnxruntime's "
           f"blocked kernels)")
    return aligned, (f"{note}; {why}" if note else why)


def _blocks(align: int):
    """``align``, then its halves while they are whole and at least 8."""
    yield align
    while align % 2 == 0 and align // 2 >= 8:
        align //= 2
        yield align


def _check_lrn_neighbours(net, name: str, n: int, remove: list[int]) -> None:
    """Removing channels renumbers the rest: each kept channel must keep the same kept neighbours."""
    half = (int(net.layer(name).size) - 1) // 2
    gone = set(remove)
    kept = [c for c in range(n) if c not in gone]
    for new, old in enumerate(kept):
        before = {c for c in range(old - half, old + half + 1) if 0 <= c < n and c not in gone}
        after = {kept[i] for i in range(new - half, new + half + 1) if 0 <= i < len(kept)}
        if before != after:
            raise _Refusal(f"removing channels would change which channels across-channel LRN "
                           f"{name} normalizes channel {old} with; only channels at the ends can go")


# ------------------------------------------------------------------------------------- applying


def _apply(net, plans: list[_Plan], removed: dict, inputs: dict, folded: dict) -> set[str]:
    """Fold the fixed maps into consumer biases, then cut every member's slices, one cut per layer side."""
    for p in plans:
        for m in p.space.role(IN):
            sets = p.fold.get(m.layer) or []
            if not sets:
                continue
            mod = net.layer(m.layer)
            extra = torch.zeros(mod.weight.shape[0], dtype=torch.float64)
            for j in sets:
                extra += _contribution(mod, m.index[j], p.maps[m.layer], m.total)[:, 0]
            mod.bias = nn.Parameter((mod.bias.detach().double() + extra).float())
            folded[m.layer] += len(sets)
    cuts: dict[tuple[str, str], tuple[Member, set[int]]] = {}
    for p in plans:
        for m in p.space.members:
            _, gone = cuts.setdefault((m.layer, m.role), (m, set()))
            gone.update(m.index[j] for j in p.remove)
    changed = set()
    for (layer, role), (m, gone) in cuts.items():
        if role not in SLICERS:
            continue
        mod = net.layer(layer)
        keep = torch.tensor([c for c in range(m.total) if c not in gone], dtype=torch.long)
        before = _size(mod, role)
        SLICERS[role](mod, keep, m)
        if role in (OUT, "dw"):
            removed[layer] = (removed.get(layer, (before,))[0], _size(mod, role))
            changed.add(layer)
        elif role == IN:
            inputs[layer] = (inputs.get(layer, (before,))[0], _size(mod, role))
    return changed


def _size(m: nn.Module, role: str) -> int:
    if role == IN:
        return m.in_features if isinstance(m, nn.Linear) else m.in_channels
    if role in (OUT, "dw"):
        return m.weight.shape[0]
    return 0

"""Channel thinning: remove zero filters and unused channels from a CaffeNet, exactly.

Channel-pruned models (RGSM, ADMM ``--sparsity channel``) keep their zero filters as zeros: the file
shrinks under sparse storage but the net is no faster. Thinning removes them for real. For each
producer P (a Convolution or InnerProduct) the channels of its output are followed through
channel-local layers (ReLU, Sigmoid, TanH, Pooling, Dropout, Split, Flatten, WITHIN_CHANNEL LRN;
ACROSS_CHANNELS LRN under the conditions below) to their consumers (Convolution, InnerProduct). A
channel c of P is removed when, for every consumer, either

* the consumer ignores c (its weights for c are all zero): P's filter c need not be zero, or
* P's filter c has all-zero weights, so the channel is a fixed map (its bias, passed through ReLU,
  pooling...; computed by running those very layers), and its contribution to the consumer can be
  folded into the consumer's bias: always for InnerProduct (W[:, cols] @ map), and for Convolution
  when the contribution is spatially constant (e.g. no padding; zero padding makes borders differ).

ACROSS_CHANNELS LRN mixes neighbouring channels: a removed channel must be exactly zero at the LRN
input (zero weights and a map that is zero there, e.g. zero bias or ReLU of a negative bias), and,
because removing a channel renumbers the others, every kept channel must keep the same set of kept
neighbours within its window (true when the removed channels sit at the ends of the channel range;
a zero channel removed from the middle would pull a farther channel into its neighbours' windows and
change their normalization). Otherwise P is left as it is, with the reason recorded.

Grouped convolutions (as producer or consumer) must lose the same number of channels from every
group: the largest such subset of the removable channels goes (the rest are kept and reported); if
that subset is empty the producer is refused, naming the grouped layer. Concat, Eltwise, net outputs and
other consumers stop thinning of the producer (recorded as a reason). Modules, Caffe blobs and
``net.netdef`` (``num_output``) are updated together, so the thinned net saves, exports and reloads.
The thinned net is checked against the original on a seeded random input (relative error <= 1e-5).
"""
from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError

PASSTHROUGH = {"ReLU", "Sigmoid", "TanH", "AbsVal", "Power", "ELU", "BNLL", "Dropout", "Pooling", "Split",
               "Flatten", "LRN"}
TOLERANCE = 1e-5


@dataclass(frozen=True)
class ThinResult:
    net: nn.Module  # the thinned copy; the input net is not modified
    removed: dict[str, tuple[int, int]]  # producer layer -> (filters before, after)
    inputs: dict[str, tuple[int, int]]  # consumer layer -> (input channels/features before, after)
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why its zero channels stay
    folded: dict[str, int] = field(default_factory=dict)  # consumer -> removed non-zero constant channels
    max_rel_err: float = 0.0  # thinned vs original output on a seeded random input


@dataclass
class _Use:
    index: int  # consumer node index
    key: tuple  # the blob version it reads
    lrns: list[int]  # ACROSS_CHANNELS LRN nodes on the way from the producer


def thin(net: nn.Module, *, strict: bool = False, check: bool = True) -> ThinResult:
    """Remove zero filters/unused channels; ``strict`` raises instead of recording a refusal."""
    out = copy.deepcopy(net).eval()
    removed: dict[str, tuple[int, int]] = {}
    inputs: dict[str, tuple[int, int]] = {}
    skipped: dict[str, str] = {}
    folded: dict[str, int] = defaultdict(int)
    changed = True
    while changed:  # removing inputs can leave a consumer's filters zero: repeat to a fixed point
        changed = False
        shapes = _output_shapes(out)
        for i, node in enumerate(out.nodes):
            module = getattr(out, node.attr)
            if not _is_producer(module) or len(node.tops) != 1:
                continue
            try:
                plan = _plan(out, i, shapes)
            except _Refusal as e:
                skipped[node.name] = str(e)
                continue
            if plan is None:
                continue
            skipped.pop(node.name, None)
            before = _channels_out(module)
            _apply(out, i, plan, inputs, folded)
            if plan.note:
                skipped[node.name] = plan.note
            removed[node.name] = (removed.get(node.name, (before,))[0], _channels_out(module))
            changed = True
    if strict and skipped:
        raise CompressError("; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if removed:
        out.netdef = _netdef_with(out, removed)
    err = _compare(net, out) if check and removed else 0.0
    if err > TOLERANCE:
        raise CompressError(f"{net.name}: thinned net differs from the original (relative error {err:.2e} "
                            f"> {TOLERANCE:g}); this is a bug, please report it")
    return ThinResult(out, removed, inputs, skipped, dict(folded), err)


class _Refusal(CompressError):
    pass


@dataclass
class _Plan:
    remove: list[int]
    uses: list[_Use]
    maps: dict[tuple, torch.Tensor]  # blob version -> per-channel fixed maps of zero filters (float64)
    note: str | None = None  # why some removable channels stay (groups kept equal)


def _is_producer(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and not isinstance(m, nn.ConvTranspose2d)) or isinstance(m, nn.Linear)


def _channels_out(m: nn.Module) -> int:
    return m.weight.shape[0]


def _plan(net, p: int, shapes: dict[int, tuple[int, ...]]) -> _Plan | None:
    """Which output channels of node ``p`` can go; None if none; _Refusal with the reason."""
    node = net.nodes[p]
    prod = getattr(net, node.attr)
    w = prod.weight.detach().reshape(prod.weight.shape[0], -1)
    n_out = w.shape[0]
    zero_w = (w == 0).all(dim=1)
    try:
        uses, tree = _trace(net, p)
    except _Refusal:
        if not zero_w.any():
            return None  # nothing to remove unless a consumer ignores channels, and none can be seen
        raise
    ignored = torch.ones(n_out, dtype=torch.bool)  # ignored by every consumer
    for u in uses:
        ignored &= _consumer_ignores(net, u, n_out)
    if not (zero_w | ignored).any():
        return None
    maps = _fixed_maps(net, p, tree, uses, shapes[p], zero_w)
    ok = ignored.clone()
    foldable = zero_w.clone()
    for u in uses:
        foldable &= _foldable(net, u, maps[u.key], zero_w)
    ok |= foldable
    for lrn_index in {i for u in uses for i in u.lrns}:
        ok &= zero_w & (maps[("lrn", lrn_index)].reshape(n_out, -1) == 0).all(dim=1)
    remove = [int(c) for c in torch.nonzero(ok).flatten()]
    if not remove:
        raise _Refusal(_why_not(net, node, zero_w, ignored, uses))
    if len(remove) == n_out:
        raise _Refusal(f"all {n_out} filters are removable; a layer needs at least one")
    groups = [(node.name, getattr(prod, "groups", 1), "filters")]
    groups += [(net.nodes[u.index].name, getattr(net, net.nodes[u.index].attr).groups, "input channels")
               for u in uses if isinstance(getattr(net, net.nodes[u.index].attr), nn.Conv2d)]
    remove, note = _balance(remove, n_out, [g for g in groups if g[1] > 1])
    for lrn_index in {i for u in uses for i in u.lrns}:
        _check_lrn_neighbours(net.nodes[lrn_index], getattr(net, net.nodes[lrn_index].attr), n_out, remove)
    return _Plan(remove, uses, maps, note)


def _why_not(net, node, zero_w, ignored, uses) -> str:
    lrns = sorted({net.nodes[i].name for u in uses for i in u.lrns})
    if lrns:
        return (f"its zero filters are not exactly zero at across-channel LRN {', '.join(lrns)} "
                f"(non-zero bias), which mixes neighbouring channels")
    return ("its zero filters' constant outputs cannot be folded into the next layer's bias "
            "(zero padding makes them position-dependent, or the layer has no bias)")


def _trace(net, p: int) -> tuple[list[_Use], list[int]]:
    """Consumers of node ``p``'s output through channel-local layers, and those layers (in order)."""
    readers, finals = _versions(net)
    top = net.nodes[p].tops[0]
    uses: list[_Use] = []
    tree: list[int] = []
    stack = [((p, top), [])]
    while stack:
        key, lrns = stack.pop()
        if key in finals:
            raise _Refusal(f"its output reaches the net output {key[1]!r}")
        for r in readers.get(key, []):
            node = net.nodes[r]
            m = getattr(net, node.attr)
            if len(node.bottoms) != 1:
                raise _Refusal(f"its channels flow into {node.name} ({node.type}) with several inputs; "
                               f"thinning through it is not supported")
            if _is_consumer(m):
                uses.append(_Use(r, key, list(lrns)))
            elif node.type in PASSTHROUGH and _channel_local(node, m):
                tree.append(r)
                across = node.type == "LRN" and getattr(m, "region", "ACROSS_CHANNELS") == "ACROSS_CHANNELS"
                for t in node.tops:
                    stack.append(((r, t), lrns + [r] if across else lrns))
            else:
                raise _Refusal(f"its channels flow into {node.name} ({node.type}); "
                               f"thinning through it is not supported")
    return uses, sorted(set(tree))


def _is_consumer(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return getattr(m, "axis", 1) == 1
    return isinstance(m, nn.Conv2d) and not isinstance(m, nn.ConvTranspose2d)


def _channel_local(node, m) -> bool:
    if node.type == "Flatten":
        return getattr(m, "axis", getattr(m, "start_dim", 1)) == 1
    return True


def _versions(net):
    """SSA view of the blobs: readers of each (writer node index | None, blob) and the net outputs."""
    last: dict[str, int | None] = {b: None for b in net.inputs}
    readers: dict[tuple, list[int]] = defaultdict(list)
    for i, node in enumerate(net.nodes):
        for b in node.bottoms:
            readers[(last.get(b), b)].append(i)
        for t in node.tops:
            last[t] = i
    finals = {(last.get(b), b) for b in net.outputs}
    return readers, finals


def _output_shapes(net) -> dict[int, tuple[int, ...]]:
    """Output shape of every producer node, from one batch-1 forward pass."""
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = []
    for i, node in enumerate(net.nodes):
        m = getattr(net, node.attr)
        if _is_producer(m):
            hooks.append(m.register_forward_hook(_recorder(shapes, i)))
    try:
        with torch.no_grad():
            net(*[torch.zeros((1, *tuple(s)[1:])) for s in net.inputs.values()])
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _recorder(shapes: dict, i: int):
    def hook(_module, _args, y):
        shapes[i] = tuple(y.shape)
    return hook


def _fixed_maps(net, p, tree, uses, shape, zero_w) -> dict[tuple, torch.Tensor]:
    """The maps of zero-weight filters (their bias, through the channel-local layers) at each consumer
    and each across-channel LRN input, per channel, float64; other channels are zero."""
    prod = getattr(net, net.nodes[p].attr)
    bias = torch.zeros(shape[1], dtype=torch.float64)
    if prod.bias is not None:
        bias = prod.bias.detach().double()
    x = torch.zeros(shape, dtype=torch.float64)
    x[0, zero_w] = bias[zero_w].reshape(-1, *([1] * (len(shape) - 2)))
    values = {(p, net.nodes[p].tops[0]): x}
    readers, _ = _versions(net)
    maps: dict[tuple, torch.Tensor] = {}
    with torch.no_grad():
        for r in tree:
            node = net.nodes[r]
            key = next(k for k in values if r in readers.get(k, []))
            y = getattr(net, node.attr)(values[key].clone())
            if node.type == "LRN":
                maps[("lrn", r)] = values[key][0]
            for t in node.tops:
                values[(r, t)] = y
    for u in uses:
        maps[u.key] = _per_channel(values[u.key][0], shape[1])
    return maps


def _per_channel(v: torch.Tensor, n: int) -> torch.Tensor:
    """(C, H, W) maps stay; a flattened (C*K,) or per-feature (C,) blob becomes (C, K)."""
    return v.reshape(n, -1) if v.dim() == 1 else v


def _consumer_ignores(net, u: _Use, n: int) -> torch.Tensor:
    """Channels whose consumer weights are all zero."""
    m = getattr(net, net.nodes[u.index].attr)
    w = m.weight.detach()
    if isinstance(m, nn.Linear):
        return (w.reshape(w.shape[0], n, -1) == 0).all(dim=2).all(dim=0)
    g, per = m.groups, n // m.groups
    out = torch.empty(n, dtype=torch.bool)
    rows = w.shape[0] // g
    for j in range(g):
        block = w[j * rows:(j + 1) * rows]  # (rows, per, kh, kw)
        out[j * per:(j + 1) * per] = (block == 0).all(dim=(0, 2, 3))
    return out


def _contribution(m: nn.Module, c: int, amap: torch.Tensor, n: int) -> torch.Tensor:
    """What channel ``c``'s fixed map adds to the consumer's output, (out, positions) float64."""
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


def _foldable(net, u: _Use, amap: torch.Tensor, zero_w: torch.Tensor) -> torch.Tensor:
    m = getattr(net, net.nodes[u.index].attr)
    n = amap.shape[0]
    ok = torch.zeros(n, dtype=torch.bool)
    for c in torch.nonzero(zero_w).flatten().tolist():
        if (amap[c] == 0).all():
            ok[c] = True
            continue
        contrib = _contribution(m, c, amap, n)
        if not contrib.abs().max() > 0:
            ok[c] = True
        elif m.bias is not None:
            spread = (contrib - contrib[:, :1]).abs().max()
            ok[c] = bool(spread <= 1e-9 * contrib.abs().max())
    return ok


def _balance(remove: list[int], n: int, groups: list[tuple[str, int, str]]) -> tuple[list[int], str | None]:
    """The largest subset of ``remove`` that takes the same number of channels from every group of
    every grouped layer involved: equal counts in each cell of the finest common partition (lcm)."""
    if not groups:
        return remove, None
    cells = math.lcm(*(g for _, g, _ in groups))
    if n % cells:
        raise _Refusal(f"{n} channels do not split into {cells} equal groups")
    per = n // cells
    by_cell = [[c for c in remove if c // per == k] for k in range(cells)]
    m = min(len(b) for b in by_cell)
    unequal = [(name, g, what) for name, g, what in groups
               if len({sum(1 for c in remove if c // (n // g) == j) for j in range(g)}) > 1]
    if m == 0:
        name, g, what = unequal[0]
        counts = [sum(1 for c in remove if c // (n // g) == j) for j in range(g)]
        raise _Refusal(f"grouped layer {name} (group {g}) would lose {counts} {what} per group; "
                       f"groups must stay equal")
    if m == per:
        name, _, what = groups[0]
        raise _Refusal(f"grouped layer {name} would lose all {what} of every group")
    chosen = sorted(c for b in by_cell for c in b[:m])
    note = None
    if len(chosen) < len(remove):
        names = ", ".join(sorted({name for name, _, _ in unequal}))
        note = (f"kept {len(remove) - len(chosen)} removable channels so that the groups of {names} "
                f"stay equal")
    return chosen, note


def _check_lrn_neighbours(node, m, n: int, remove: list[int]) -> None:
    """Removing channels renumbers the rest: each kept channel must keep the same kept neighbours."""
    half = (int(m.size) - 1) // 2
    gone = set(remove)
    kept = [c for c in range(n) if c not in gone]
    for new, old in enumerate(kept):
        before = {c for c in range(old - half, old + half + 1) if 0 <= c < n and c not in gone}
        after = {kept[i] for i in range(new - half, new + half + 1) if 0 <= i < len(kept)}
        if before != after:
            raise _Refusal(f"removing channels would change which channels across-channel LRN "
                           f"{node.name} normalizes channel {old} with; only channels at the ends can go")


def _apply(net, p: int, plan: _Plan, inputs: dict, folded: dict) -> None:
    prod = getattr(net, net.nodes[p].attr)
    n = _channels_out(prod)
    gone = set(plan.remove)
    keep = torch.tensor([c for c in range(n) if c not in gone])
    zero_w = (prod.weight.detach().reshape(n, -1) == 0).all(dim=1)
    for u in plan.uses:
        cons_node = net.nodes[u.index]
        m = getattr(net, cons_node.attr)
        amap = plan.maps[u.key]
        if m.bias is not None:
            extra = torch.zeros(m.weight.shape[0], dtype=torch.float64)
            count = 0
            for c in plan.remove:
                if zero_w[c] and (amap[c] != 0).any():
                    extra += _contribution(m, c, amap, n)[:, 0]
                    count += 1
            if count:
                m.bias = nn.Parameter((m.bias.detach().double() + extra).float())
                folded[cons_node.name] += count
        before = _in_size(m)
        _slice_inputs(m, keep, n, amap[0].numel())
        inputs[cons_node.name] = (inputs.get(cons_node.name, (before,))[0], _in_size(m))
    w = prod.weight.detach()[keep].clone()
    _set_weight(prod, w)
    if prod.bias is not None:
        prod.bias = nn.Parameter(prod.bias.detach()[keep].clone())
    if isinstance(prod, nn.Linear):
        prod.out_features = len(keep)
    else:
        prod.out_channels = len(keep)


def _in_size(m) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _slice_inputs(m, keep: torch.Tensor, n: int, k: int) -> None:
    w = m.weight.detach()
    if isinstance(m, nn.Linear):
        cols = (keep[:, None] * k + torch.arange(k)[None, :]).reshape(-1)
        _set_weight(m, w[:, cols].clone())
        m.in_features = len(cols)
        return
    g, per, rows = m.groups, n // m.groups, w.shape[0] // m.groups
    blocks = []
    for j in range(g):
        local = keep[(keep >= j * per) & (keep < (j + 1) * per)] - j * per
        blocks.append(w[j * rows:(j + 1) * rows][:, local])
    _set_weight(m, torch.cat(blocks).clone())
    m.in_channels = len(keep)


def _set_weight(m, w: torch.Tensor) -> None:
    if getattr(m, "transpose", False):  # Caffe stores (in, out): keep .weight a view of that blob
        w = w.t().contiguous().t()
    m.weight = nn.Parameter(w)


def _netdef_with(net, removed: dict[str, tuple[int, int]]) -> str:
    from google.protobuf import text_format

    from converters.caffe.prototxt import parse_net_text

    netdef = parse_net_text(net.netdef)
    found = set()
    for layer in netdef.layer:
        if layer.name in removed:
            param = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
            param.num_output = _channels_out(net.layer(layer.name))
            found.add(layer.name)
    missing = sorted(set(removed) - found)
    if missing:
        raise CompressError(f"{net.name}: thinned layers {missing} are not in the net definition")
    return text_format.MessageToString(netdef)


def _compare(a, b) -> float:
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn((2, *tuple(s)[1:]), generator=gen) for s in a.inputs.values()]
    with torch.no_grad():
        ya, yb = a.eval()(*xs), b(*xs)
    if isinstance(ya, dict):
        return max(_rel(ya[k], yb[k]) for k in ya)
    return _rel(ya, yb)


def _rel(ref: torch.Tensor, got: torch.Tensor) -> float:
    if ref.shape != got.shape:
        return float("inf")
    return float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-30))

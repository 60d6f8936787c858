"""Thresholding and projection operators shared by the pruning methods.

Elementwise: keep the ``k`` largest magnitudes (the cardinality projection of ADMM, Zhang et al. 2018),
hard threshold (prox of l0), soft threshold (prox of l1) and the transformed-l1 threshold (Zhang & Xin;
the closed form used by RVSM, Dinh & Xin 2018, arXiv 1812.05719).

Group-wise: a *group* is one slice of the weight along ``dim`` (``dim=1``: an input channel ``W[:, c]``
of a Conv2d/Linear; ``dim=0``: an output filter ``W[o]``). For grouped convolutions (``conv_groups > 1``)
``dim=1`` names the channel of the full input: the weight ``(O, I/g, ...)`` is viewed as
``(g, O/g, I/g, ...)`` and group ``b * I/g + c`` is ``[b, :, c]``. For ConvTranspose2d the caller
swaps the dims (its weight is ``(I, O/g, ...)``).

All functions return new tensors unless given an ``out``/``buf`` to write into (the projections
``keep_topk`` and ``keep_top_groups``, which ADMM uses to update Z and U in place) and run on the
tensor's device; none builds autograd state unless its input requires grad (``group_norms`` is
differentiable, for RGSM's group-lasso term). Every top-k is exact: ``kth_largest`` finds the cut from a
sampled bracket and one or two comparisons, ties go to the lowest flat index.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

# ---------------------------------------------------------------------------------------- top-k

_SAMPLE = 1 << 14  # scores sampled to bracket the k-th largest
_SAMPLED_FROM = 1 << 19  # below this many scores one kthvalue is as fast as the bracket
_SIGMAS = 6.0  # bracket half-width in standard deviations of the sampled rank: a miss is ~1e-9 likely
_ONE_SIDED = 0.1  # keeping fewer (more) than this fraction: one comparison, the candidates are the top
_CHUNK = 1 << 18  # entries per cache-sized piece of a CPU sweep


class Cut(NamedTuple):
    """Where the ``k`` largest scores end: ``value`` (0-d) is the k-th largest, ``above`` scores are
    larger and ``ties`` equal it; ``tie_index`` (flat, ascending) lists the ``k - above`` ties that are
    kept when not all of them are (None when ``k - above == ties``: every tie is kept)."""

    value: torch.Tensor
    above: int
    ties: int
    tie_index: torch.Tensor | None


def kth_largest(flat: torch.Tensor, k: int) -> Cut:
    """The cut of the ``k`` (1 <= k <= n) largest entries of the 1-D tensor ``flat``, exact.

    Large tensors: a fixed pseudo-random sample of ``_SAMPLE`` entries brackets the k-th largest between
    two of its order statistics (one when few or most entries are kept); one sweep counts the entries
    above the bracket and gathers the indices of those inside it (a few % of them), and the cut is
    found among those by the same means, recursively, down to one ``kthvalue`` over a small tensor.
    The entries outside the bracket are all larger or all smaller than every entry inside, so the
    answer is exact; a bracket that misses (the counts say so) falls back to ``kthvalue`` over
    everything. One or two comparisons and a compaction instead of a full selection.
    """
    n = flat.numel()
    if n >= _SAMPLED_FROM:
        inner = _candidates(flat, k)
        if inner is not None:
            index, above_out = inner
            cut = kth_largest(torch.index_select(flat, 0, index), k - above_out)  # 3x flat[index]
            tie_index = None if cut.tie_index is None else index[cut.tie_index]
            return Cut(cut.value, above_out + cut.above, cut.ties, tie_index)
    value = torch.kthvalue(flat, n - k + 1).values
    above = int(torch.count_nonzero(flat > value))
    ties = int(torch.count_nonzero(flat == value))
    tie_index = None
    if k - above < ties:
        tie_index = torch.nonzero(flat == value).squeeze(1)[: k - above]
    return Cut(value, above, ties, tie_index)


def _candidates(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, int] | None:
    """``(index, above)``: the ascending indices of the entries in a bracket ``(lo, hi]`` that holds the
    k-th largest, and how many entries are above ``hi``; None when the sample's bracket misses."""
    n = flat.numel()
    gen = torch.Generator().manual_seed(n)  # deterministic, and the global RNG is left alone
    sample = flat[torch.randint(n, (_SAMPLE,), generator=gen).to(flat.device)]
    desc = torch.sort(sample, descending=True).values
    p = k / n
    mean = _SAMPLE * p  # sampled entries expected above the k-th largest
    spread = _SIGMAS * math.sqrt(mean * (1 - p)) + 1
    j_hi, j_lo = math.floor(mean - spread) - 1, math.ceil(mean + spread)
    hi = float(desc[j_hi]) if j_hi >= 0 and p > _ONE_SIDED else math.inf
    lo = float(desc[j_lo]) if j_lo < _SAMPLE and p < 1 - _ONE_SIDED else -math.inf
    if not lo < hi:
        return None
    above, index = _bracket(flat, lo, hi)
    if not (above < k <= above + index.numel() and index.numel() < n):  # holds the k-th largest, is smaller
        return None
    return index, above


def _bracket(flat: torch.Tensor, lo: float, hi: float) -> tuple[int, torch.Tensor]:
    """``(count of flat > hi, ascending indices of lo < flat <= hi)`` in one sweep; an infinite bound
    costs no comparison. On one CPU thread the sweep goes by cache-sized chunks, so the comparisons and
    the compaction of a chunk run while it is in cache (~1.5x faster); with more threads, or on an
    accelerator, in one piece: thousands of small parallel regions would each wait for the slowest
    thread, which on a loaded machine costs seconds."""
    n = flat.numel()
    chunk = _CHUNK if flat.device.type == "cpu" and torch.get_num_threads() == 1 else n
    gt_hi = torch.empty(min(chunk, n), dtype=torch.bool, device=flat.device)
    band = torch.empty_like(gt_hi)
    above = torch.zeros((), dtype=torch.int64, device=flat.device)
    parts = []
    for start in range(0, n, chunk):
        part = flat[start:start + chunk]
        m = part.numel()
        if lo == -math.inf:
            torch.le(part, hi, out=band[:m])  # hi finite: everything above it is counted below
        else:
            torch.gt(part, lo, out=band[:m])
            if hi != math.inf:
                band[:m].bitwise_xor_(torch.gt(part, hi, out=gt_hi[:m]))  # part > hi is inside part > lo
                above += torch.count_nonzero(gt_hi[:m])
        parts.append(torch.nonzero(band[:m]).squeeze(1).add_(start))
    index = torch.cat(parts)
    return (n - index.numel() if lo == -math.inf else int(above)), index


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (same shape) of the ``k`` largest entries of ``scores``.

    The threshold comes from ``kth_largest`` (a bracketed selection, faster than ``kthvalue`` or
    ``topk`` on large tensors). Ties at the threshold are broken by flat index, lowest first, so
    exactly ``k`` entries are kept and the answer is deterministic on every device.
    """
    n = scores.numel()
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} entries")
    if k == n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    flat = scores.reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    cut = kth_largest(flat, k)
    if cut.tie_index is None:
        mask = flat >= cut.value
    else:
        mask = flat > cut.value
        mask[cut.tie_index] = True
    return mask.reshape(scores.shape)


def keep_topk_mask(w: torch.Tensor, k: int) -> torch.Tensor:
    """Mask keeping the ``k`` entries of largest magnitude |w| (never the signed values)."""
    return topk_mask(w.detach().abs(), k)


@torch.no_grad()
def keep_topk(w: torch.Tensor, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Projection onto ``{card(w) <= k}``: ``w`` with all but its ``k`` largest |entries| zeroed.

    Written into ``out`` when given (same shape and dtype as ``w``, not overlapping it; its old
    contents are used as scratch): the magnitudes go there, are thresholded in place and get their
    signs back, so no full-size temporary is made. Same result as ``w * keep_topk_mask(w, k)``,
    signed zeros included.
    """
    n = w.numel()
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} entries")
    out = torch.empty_like(w) if out is None else out
    if k == n:
        return out.copy_(w)
    s = torch.abs(w, out=out)
    if k == 0:
        return s.zero_().copysign_(w)
    flat = s.view(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        return out.copy_(w * keep_topk_mask(w, k))
    cut = kth_largest(flat, k)
    value = cut.value
    if cut.tie_index is None:  # keep every tie: flat >= value is flat > (the float just below value)
        value = torch.nextafter(value, torch.tensor(-math.inf, dtype=value.dtype, device=value.device))
    torch.nn.functional.threshold_(flat, float(value), 0.0)
    if cut.tie_index is not None:
        flat[cut.tie_index] = cut.value
    return s.copysign_(w)


def keep_count(ratio: float, n: int) -> int:
    """Entries (or groups) kept for a keep ratio: ``round(ratio * n)``, half up, within [0, n]."""
    return min(n, max(0, int(math.floor(ratio * n + 0.5))))


# ---------------------------------------------------------------------------------- thresholds


def hard_threshold(w: torch.Tensor, t: float) -> torch.Tensor:
    """prox of the l0 penalty: ``w * 1{|w| > t}``."""
    return w * (w.abs() > t)


def soft_threshold(w: torch.Tensor, t: float) -> torch.Tensor:
    """prox of the l1 penalty: ``sign(w) * max(|w| - t, 0)``."""
    return torch.sign(w) * torch.clamp(w.abs() - t, min=0)


def tl1_threshold_value(mu: float, a: float) -> float:
    """Where the transformed-l1 prox becomes non-zero (methods.md, two branches)."""
    if a <= 0:
        raise ValueError(f"transformed-l1 parameter a must be > 0, got {a}")
    if mu <= a * a / (2 * (a + 1)):
        return mu * (a + 1) / a
    return math.sqrt(2 * mu * (a + 1)) - a / 2


def tl1_threshold(w: torch.Tensor, mu: float, a: float) -> torch.Tensor:
    """prox of ``mu * P_a`` with ``P_a(x) = (a+1)|x| / (a+|x|)`` (transformed l1), closed form.

    methods.md writes the non-zero branch as ``g = 2/3 (a+x) cos(phi/3) - 2a/3 + x/3`` with
    ``phi = arccos(1 - 27 mu a (a+1) / (2 (a+x)^3))``, ``x = |w|``. In float32 that cancels two terms
    of size ``a`` (an error of ~1e-7 a: 8e-5 at a = 1000) and ``1 - d`` loses ``d`` when it is small.
    The same value is computed without either: with ``sin(phi/2) = sqrt(d/2)``,
    ``g = x - 4/3 (a+x) sin^2(phi/6)``, ``phi/6 = asin(sqrt(d/2)) / 3``, and ``sqrt(d/2)`` is formed as
    ``sqrt(27/4 mu (a/(a+x)) ((a+1)/(a+x))) / sqrt(a+x)`` so nothing overflows or underflows for any
    ``a`` the float type can hold. Relative error a few ulps of ``|w|`` for every ``a`` (tests: a in
    {0.01, 1, 1000, 1e6} against a 40-digit reference).
    """
    t = tl1_threshold_value(mu, a)
    x = w.abs()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    ax = x + a
    root = ax.sqrt()
    half_sin = (6.75 * mu * (a / ax) * ((a + 1) / ax)).sqrt_().div_(root).clamp_(max=1.0)  # sin(phi/2)
    shrink = torch.sin(torch.asin(half_sin).div_(3)).mul_(root).square_().mul_(4.0 / 3.0)
    g = (x - shrink).to(w.dtype)
    return torch.where(x > t, torch.sign(w) * g, torch.zeros_like(w))


# --------------------------------------------------------------------------------------- groups


def num_groups(shape: torch.Size | tuple[int, ...], dim: int, conv_groups: int = 1) -> int:
    """Number of groups along ``dim`` (for grouped convolutions with ``dim=1``: all input channels)."""
    return shape[0] if dim == 0 else conv_groups * shape[1]


def _grouped_shape(shape: torch.Size | tuple[int, ...], dim: int, conv_groups: int) -> tuple[int, ...]:
    """A view of the weight in which the groups are separate indices: ``(O, members)`` for ``dim=0``,
    ``(g, O/g, C, rest)`` for ``dim=1`` (group ``b * C + c`` is ``[b, :, c, :]``). Summing over the
    ``_MEMBER_DIMS`` of this view gives one value per group, in group order, without a permuted copy."""
    rest = math.prod(shape[2:])
    if dim == 0:
        return (shape[0], math.prod(shape[1:]))
    if dim != 1:
        raise ValueError(f"group dim must be 0 (output filters) or 1 (input channels), got {dim}")
    g = conv_groups
    if shape[0] % g:
        raise ValueError(f"weight of shape {tuple(shape)} cannot be split into {g} convolution groups")
    return (g, shape[0] // g, shape[1], rest)


_MEMBER_DIMS = {0: (1,), 1: (1, 3)}


def _per_group_shape(shape: torch.Size | tuple[int, ...], dim: int, conv_groups: int) -> tuple[int, ...]:
    """Shape of a per-group vector that broadcasts against ``_grouped_shape``."""
    return (shape[0], 1) if dim == 0 else (conv_groups, 1, shape[1], 1)


def expand_groups(s: torch.Tensor, shape: torch.Size, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Broadcast a per-group vector ``s`` back to a (contiguous) tensor of the weight's ``shape``."""
    grouped = _grouped_shape(shape, dim, conv_groups)
    return s.reshape(_per_group_shape(shape, dim, conv_groups)).expand(grouped).reshape(shape)


def group_norms(w: torch.Tensor, dim: int, conv_groups: int = 1, eps: float = 0.0,
                buf: torch.Tensor | None = None) -> torch.Tensor:
    """L2 norm of each group, ``sqrt(sum w_g^2 + eps)`` (``eps`` keeps the gradient finite at 0).

    ``buf`` (shaped like ``w``, no autograd) receives the squares instead of a new temporary.
    """
    v = w.reshape(_grouped_shape(w.shape, dim, conv_groups))
    sq = v.pow(2) if buf is None else torch.mul(v, v, out=buf.view(v.shape))
    return torch.sqrt(sq.sum(_MEMBER_DIMS[dim]) + eps).reshape(-1)


def scale_groups(w: torch.Tensor, s: torch.Tensor, dim: int, conv_groups: int = 1,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``w`` with group ``i`` multiplied by ``s[i]`` (broadcast, no expanded copy of ``s``), into ``out``."""
    v = w.reshape(_grouped_shape(w.shape, dim, conv_groups))
    s = s.to(w.dtype).reshape(_per_group_shape(w.shape, dim, conv_groups))
    if out is None:
        return (v * s).reshape(w.shape)
    torch.mul(v, s, out=out.view(v.shape))
    return out


def keep_top_groups_mask(w: torch.Tensor, k: int, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Mask keeping the ``k`` groups of largest L2 norm (ties: lowest group index first)."""
    keep = topk_mask(group_norms(w.detach(), dim, conv_groups), k)
    return expand_groups(keep, w.shape, dim, conv_groups)


@torch.no_grad()
def keep_top_groups(w: torch.Tensor, k: int, dim: int, conv_groups: int = 1,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Projection onto "at most ``k`` non-zero groups": ``w`` with all but its ``k`` largest-norm groups
    zeroed, into ``out`` when given (its old contents are scratch for the squares). Same result as
    ``w * keep_top_groups_mask(w, k, dim, conv_groups)``."""
    keep = topk_mask(group_norms(w, dim, conv_groups, buf=out), k)
    return scale_groups(w, keep, dim, conv_groups, out)


def group_hard_threshold(w: torch.Tensor, t: float, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Group l0 prox: ``w_g * 1{||w_g|| > t}``."""
    return scale_groups(w, group_norms(w, dim, conv_groups) > t, dim, conv_groups)


def group_soft_threshold(w: torch.Tensor, t: float, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Group l1 (group lasso) prox: ``w_g * max(1 - t / ||w_g||, 0)``."""
    n = group_norms(w, dim, conv_groups)
    scale = torch.clamp(1 - t / n.clamp_min(torch.finfo(w.dtype).tiny), min=0)
    return scale_groups(w, scale, dim, conv_groups)

"""Thresholding and projection operators shared by the pruning methods.

Elementwise: keep the ``k`` largest magnitudes (the cardinality projection of ADMM, Zhang et al. 2018),
hard threshold (prox of l0), soft threshold (prox of l1) and the transformed-l1 threshold (Zhang & Xin;
the closed form used by RVSM, Dinh & Xin 2018, arXiv 1812.05719).

Group-wise: a *group* is one slice of the weight along ``dim`` (``dim=1``: an input channel ``W[:, c]``
of a Conv2d/Linear; ``dim=0``: an output filter ``W[o]``). For grouped convolutions (``conv_groups > 1``)
``dim=1`` names the channel of the full input: the weight ``(O, I/g, ...)`` is viewed as
``(g, O/g, I/g, ...)`` and group ``b * I/g + c`` is ``[b, :, c]``. For ConvTranspose2d the caller
swaps the dims (its weight is ``(I, O/g, ...)``).

All functions are pure (return new tensors) and run on the tensor's device; none builds autograd state
unless its input requires grad (``group_norms`` is differentiable, for RGSM's group-lasso term).
"""
from __future__ import annotations

import math

import torch

# ---------------------------------------------------------------------------------------- top-k


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (same shape) of the ``k`` largest entries of ``scores``.

    Uses ``kthvalue`` (a selection, about 2x faster than ``topk`` on large tensors). Ties at the
    threshold are broken by flat index, lowest first, so exactly ``k`` entries are kept and the answer
    is deterministic on every device.
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
    thr = torch.kthvalue(flat, n - k + 1).values  # the k-th largest value
    mask = flat > thr
    need = k - int(mask.sum())
    if need > 0:
        eq = flat == thr
        mask |= eq & (torch.cumsum(eq, 0) <= need)
    return mask.reshape(scores.shape)


def keep_topk_mask(w: torch.Tensor, k: int) -> torch.Tensor:
    """Mask keeping the ``k`` entries of largest magnitude |w| (never the signed values)."""
    return topk_mask(w.detach().abs(), k)


def keep_topk(w: torch.Tensor, k: int) -> torch.Tensor:
    """Projection onto ``{card(w) <= k}``: ``w`` with all but its ``k`` largest |entries| zeroed."""
    return w * keep_topk_mask(w, k)


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


def group_view(w: torch.Tensor, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """``w`` as a ``(groups, members)`` matrix (a view or a copy; differentiable)."""
    if dim == 0:
        return w.reshape(w.shape[0], -1)
    if dim != 1:
        raise ValueError(f"group dim must be 0 (output filters) or 1 (input channels), got {dim}")
    g = conv_groups
    if w.shape[0] % g:
        raise ValueError(f"weight of shape {tuple(w.shape)} cannot be split into {g} convolution groups")
    v = w.reshape(g, w.shape[0] // g, w.shape[1], -1)  # (g, O/g, C, rest)
    return v.permute(0, 2, 1, 3).reshape(g * w.shape[1], -1)


def expand_groups(s: torch.Tensor, shape: torch.Size, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Broadcast a per-group vector ``s`` back to a tensor of the weight's ``shape``."""
    shape = torch.Size(shape)
    rest = math.prod(shape[2:]) if len(shape) > 2 else 1
    if dim == 0:
        return s.reshape(-1, 1).expand(shape[0], shape[1:].numel()).reshape(shape)
    g = conv_groups
    return s.reshape(g, 1, shape[1], 1).expand(g, shape[0] // g, shape[1], rest).reshape(shape)


def group_norms(w: torch.Tensor, dim: int, conv_groups: int = 1, eps: float = 0.0) -> torch.Tensor:
    """L2 norm of each group, ``sqrt(sum w_g^2 + eps)`` (``eps`` keeps the gradient finite at 0)."""
    return torch.sqrt(group_view(w, dim, conv_groups).pow(2).sum(1) + eps)


def keep_top_groups_mask(w: torch.Tensor, k: int, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Mask keeping the ``k`` groups of largest L2 norm (ties: lowest group index first)."""
    keep = topk_mask(group_norms(w.detach(), dim, conv_groups), k)
    return expand_groups(keep, w.shape, dim, conv_groups)


def group_hard_threshold(w: torch.Tensor, t: float, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Group l0 prox: ``w_g * 1{||w_g|| > t}``."""
    keep = group_norms(w, dim, conv_groups) > t
    return w * expand_groups(keep, w.shape, dim, conv_groups)


def group_soft_threshold(w: torch.Tensor, t: float, dim: int, conv_groups: int = 1) -> torch.Tensor:
    """Group l1 (group lasso) prox: ``w_g * max(1 - t / ||w_g||, 0)``."""
    n = group_norms(w, dim, conv_groups)
    scale = torch.clamp(1 - t / n.clamp_min(torch.finfo(w.dtype).tiny), min=0)
    return w * expand_groups(scale.to(w.dtype), w.shape, dim, conv_groups)

"""How far a transformed net's outputs are from the original's: the check thinning and folding end with.

A net whose output is a Softmax can hide a wrong logit behind a saturated probability (0 and 1 compare
equal), so the bottoms of output Softmax layers (the logits) are compared too. Relative error: the
largest absolute difference over the largest absolute reference value, per blob; the worst blob counts.
Both nets run in float64 (copies): what is compared is the transform and the float32 rounding of the
parameters it wrote, not float32 arithmetic in two orders, which over a deep net with random weights
reaches 1e-5 on its own (MobileNet-v1 0.5, 28 layers: 1.5e-5 in float32).
"""
from __future__ import annotations

import copy

import torch


def max_rel_err(ref_net, net, *, batch: int = 2, seed: int = 0) -> float:
    """Worst relative error of ``net`` against ``ref_net`` on a seeded random input (N(0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn((batch, *tuple(s)[1:]), generator=gen, dtype=torch.float64)
          for s in ref_net.inputs.values()]
    names = list(ref_net.outputs)
    outputs = set(ref_net.outputs)
    names += [n.bottoms[0] for n in ref_net.nodes if n.type == "Softmax" and set(n.tops) & outputs]
    ref64, net64 = (copy.deepcopy(n).eval().to(device="cpu", dtype=torch.float64) for n in (ref_net, net))
    with torch.no_grad():
        a, b = ref64.forward_blobs(*xs), net64.forward_blobs(*xs)
    return max(_rel(a[k], b.get(k)) for k in dict.fromkeys(names))


def _rel(ref: torch.Tensor, got: torch.Tensor | None) -> float:
    if got is None or ref.shape != got.shape:
        return float("inf")
    return float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-30))

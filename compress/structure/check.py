"""How far a transformed net's outputs are from the original's: the check thinning and folding end with.

A net whose output is a Softmax can hide a wrong logit behind a saturated probability (0 and 1 compare
equal), so the bottoms of output Softmax layers (the logits) are compared too. Relative error: the
largest absolute difference over the largest absolute reference value, per blob; the worst blob counts.
"""
from __future__ import annotations

import torch


def max_rel_err(ref_net, net, *, batch: int = 2, seed: int = 0) -> float:
    """Worst relative error of ``net`` against ``ref_net`` on a seeded random input (N(0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn((batch, *tuple(s)[1:]), generator=gen) for s in ref_net.inputs.values()]
    names = list(ref_net.outputs)
    outputs = set(ref_net.outputs)
    names += [n.bottoms[0] for n in ref_net.nodes if n.type == "Softmax" and set(n.tops) & outputs]
    was = ref_net.training
    ref_net.eval()
    try:
        with torch.no_grad():
            a, b = ref_net.forward_blobs(*xs), net.eval().forward_blobs(*xs)
    finally:
        ref_net.train(was)
    return max(_rel(a[k], b.get(k)) for k in dict.fromkeys(names))


def _rel(ref: torch.Tensor, got: torch.Tensor | None) -> float:
    if got is None or ref.shape != got.shape:
        return float("inf")
    return float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-30))

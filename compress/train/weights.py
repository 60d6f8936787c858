"""What the loop and the methods do to the weights of the layers they train: keep pruned weights at zero
through the optimizer's step (masks), and show an evaluation another view of the weights."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from compress.layers import PrunableLayer


@torch.no_grad()
def mask_grads(layers: dict[str, PrunableLayer], masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradients of pruned weights (before the optimizer step)."""
    for name, mask in masks.items():
        grad = layers[name].weight.grad
        if grad is not None:
            grad.mul_(mask)


@torch.no_grad()
def apply_masks(layers: dict[str, PrunableLayer], masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights again (after the optimizer step: momentum and weight decay moved them)."""
    for name, mask in masks.items():
        layers[name].weight.mul_(mask)


@contextlib.contextmanager
def weights_as(layers: dict[str, PrunableLayer], values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block each layer's weight holds ``values[layer]`` (an evaluation of another view of
    the weights: RVSM's sparse u, a quantized copy); the weights are restored afterwards."""
    saved = {n: layer.weight.detach().clone() for n, layer in layers.items()}
    with torch.no_grad():
        for n, layer in layers.items():
            layer.weight.copy_(values[n])
    try:
        yield
    finally:
        with torch.no_grad():
            for n, layer in layers.items():
                layer.weight.copy_(saved[n])

"""Training-time augmentation of preprocessed batches, by name: ``shift`` and ``mirror``.

    shift   each image moved by a random whole number of pixels in [-2, 2] along each axis, the
            uncovered border filled with 0 (the background of MNIST-style data; the mean colour
            after mean subtraction): a random crop of the image padded by 2
    mirror  each image flipped left-right with probability 1/2 (Caffe's ``transform_param
            { mirror: true }``; not for digits)

Only training batches are augmented (the trainer applies :func:`augmenter`'s result to them); test
batches and exported models never see it. Randomness comes from torch's global generator, which the
trainer re-seeds every epoch, so a resumed run draws the same shifts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from compress.errors import CompressError

SHIFT = 2  # pixels, each way

Augmentation = Callable[[torch.Tensor], torch.Tensor]


def shift(x: torch.Tensor, pixels: int = SHIFT) -> torch.Tensor:
    """Move every image of ``x`` (N, C, H, W) by its own random (dy, dx) in [-pixels, pixels]^2."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pixels, pixels, pixels, pixels))
    dy = torch.randint(0, 2 * pixels + 1, (n,)).to(x.device)
    dx = torch.randint(0, 2 * pixels + 1, (n,)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Flip a random half of the images of ``x`` (N, C, H, W) left-right."""
    flip = (torch.rand(len(x)) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


AUGMENTATIONS: dict[str, Augmentation] = {"shift": shift, "mirror": mirror}


def augmenter(names: Sequence[str]) -> Augmentation | None:
    """The composition of the named augmentations, in order; None for none."""
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise CompressError(f"unknown augmentation(s) {', '.join(unknown)}; "
                            f"choose from {', '.join(AUGMENTATIONS)}")
    if not names:
        return None
    steps = [AUGMENTATIONS[n] for n in names]

    def apply(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return apply

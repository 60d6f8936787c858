"""Synthetic data for smoke runs: deterministic images of the net's input shape, generated per sample.

Sample ``i`` is ``randn(C, H, W) + template[label]``, each drawn from its own seeded generator, so the
data costs no memory (AlexNet-sized inputs included), is identical on every run and every rank, and is
learnable (the class templates are linearly separable), which lets smoke tests see accuracy move.
Preprocessing does not apply: the samples stand for already preprocessed inputs.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from compress.data.base import Loaded, Preprocess, Request, parse_preprocess, register_name

TRAIN_SIZE, TEST_SIZE = 512, 128
DEFAULT_CLASSES = 10
MEANINGLESS = "synthetic data has random labels: its accuracy means nothing"  # a run's accuracy note


def meaningless(notes) -> bool:
    """Whether a run's accuracy notes say its accuracy means nothing (random labels)."""
    return MEANINGLESS in tuple(notes or ())


class SyntheticDataset(Dataset):
    """``n`` samples of shape ``chw``; ``stream`` separates the train and test draws."""

    def __init__(self, n: int, chw: tuple[int, int, int], num_classes: int, seed: int, stream: int):
        self.chw, self.seed, self.stream = chw, seed, stream
        g = torch.Generator().manual_seed(self._key(-1))
        self.labels = torch.randint(0, num_classes, (n,), generator=g)

    def _key(self, i: int) -> int:
        return (self.seed * 1_000_003 + self.stream * 10_000_019 + i) % (2**63)

    def _randn(self, key: int) -> torch.Tensor:
        return torch.randn(self.chw, generator=torch.Generator().manual_seed(key))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.labels[i]
        template = self._randn((self.seed * 1_000_003 + 7_000_000_007 + int(y)) % (2**63))  # both splits
        return self._randn(self._key(i)) + template, y


@register_name("synthetic", "seeded random images of the net's input shape (smoke runs)")
def load_synthetic(spec: str, req: Request) -> Loaded:
    n_cls = req.num_classes or DEFAULT_CLASSES
    pp = parse_preprocess(req.preprocess, Preprocess(channel_order="BGR" if req.chw[0] == 3 else "gray"),
                          "synthetic")
    return Loaded(SyntheticDataset(TRAIN_SIZE, req.chw, n_cls, req.seed, 0),
                  SyntheticDataset(TEST_SIZE, req.chw, n_cls, req.seed, 1),
                  "synthetic", n_cls, pp, {"source": "synthetic", "applied_preprocess": False})

"""A classifier's logits: what training's loss and evaluation's counts are computed on."""
from __future__ import annotations

import torch
from torch import nn


class Logits(nn.Module):
    """The net's logits: a Caffe net ending in Softmax is trained and evaluated on the Softmax's bottom
    blob; any other module's output is taken as it is."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        nodes = getattr(net, "nodes", None)
        self.blob = nodes[-1].bottoms[0] if nodes and nodes[-1].type == "Softmax" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blob is None:
            return self.net(x)
        return self.net.forward_blobs(x)[self.blob]

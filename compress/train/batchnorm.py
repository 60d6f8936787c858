"""BatchNorm statistics recomputed for the weights a net has now (*recalibration*).

Fine-tuning a BatchNorm net (QGT, ADMM, a pruned retrain) moves its weights faster than the stored
statistics follow: Caffe's moving averages forget with ``moving_average_fraction`` 0.999 (a memory of
~1,000 batches, more than an epoch of Fashion-MNIST at batch 64), PyTorch's with momentum 0.1. The test
pass then normalises today's activations with yesterday's statistics; measured on the zoo's
MobileNet-v1 0.5 under ADMM pruning, test top-1 fell 90.5 -> 84.5% over four epochs while training
top-1 stayed at 93.4%, and a 2-bit QGT run read 74.9% against 87.7% in training. The weights were fine;
the statistics were stale. After a quantizer or a pruner replaces the weights outright (the hard
projection at the end), no stored statistic describes them at all.

:func:`recalibrate` re-estimates them as PyTorch's ``swa_utils.update_bn`` and the channel-pruning
literature do (Li et al. 2020 "EagleEye": adaptive BN): the statistics are zeroed and re-accumulated
as an equal-weight average over ``batches`` training batches (no augmentation, no dropout: every other
module in eval mode), with the net's current weights and no gradient. For Caffe's BatchNorm that is its
own update rule with ``moving_average_fraction = 1`` (``s = N``, ``mean_sum`` = the sum of the batch
means, ``var_sum`` = the sum of the unbiased batch variances), so the blobs stay Caffe's and a written
``.caffemodel`` reads back the same statistics. A BatchNorm that uses stored statistics in training too
(``use_global_stats: true``, frozen) is left alone. The batches are the first ones of the training
loader in a fixed order (its own seed), so a resumed run computes the same statistics as the uninterrupted
run. Under torchrun each rank reads its own shard of the training data, and the ranks' statistics are then
combined (Caffe's sums and counts added, PyTorch's averages averaged), so every rank holds the same ones: the
average over all ranks' batches.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from compress.train.seeds import seed_epoch
from converters.caffe.layers.normalization import CaffeBatchNorm

CALIBRATION_SEED = 0x5EED_BA7C  # the calibration batches' own order, apart from any epoch's


def batchnorm_layers(net: nn.Module) -> list[nn.Module]:
    """The BatchNorm modules whose training-mode forward uses (and updates) batch statistics."""
    out = []
    for m in net.modules():
        if isinstance(m, CaffeBatchNorm) and m.use_global_stats is not True:
            out.append(m)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            out.append(m)
    return out


@torch.no_grad()
def recalibrate(net: nn.Module, loader: Iterable, device: torch.device, batches: int) -> int:
    """Recompute the statistics of every BatchNorm of ``net`` over the first ``batches`` batches of
    ``loader`` (``(x, y)`` or ``x``); returns the number of batches used (0: no BatchNorm, or none
    asked). The net's training flags are restored."""
    layers = batchnorm_layers(net)
    if not layers or batches <= 0:
        return 0
    modes = {m: m.training for m in net.modules()}
    saved = []
    for m in layers:
        if isinstance(m, CaffeBatchNorm):
            saved.append(m.moving_average_fraction)
            m.moving_average_fraction = 1.0
            m.reset_parameters()
        else:
            saved.append(m.momentum)
            m.momentum = None  # a cumulative (equal-weight) average
            m.reset_running_stats()
    net.eval()
    for m in layers:
        m.train()
    used = 0
    try:
        seed_epoch(loader, CALIBRATION_SEED, 0)
        for batch in loader:
            if used >= batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            net(x.to(device, non_blocking=True))
            used += 1
        _combine_ranks(layers)
    finally:
        for m, value in zip(layers, saved, strict=True):
            if isinstance(m, CaffeBatchNorm):
                m.moving_average_fraction = value
            else:
                m.momentum = value
        for m, training in modes.items():
            m.training = training
    return used


def _combine_ranks(layers: list[nn.Module]) -> None:
    """Under torch.distributed: every rank gets the statistics of all ranks' calibration batches."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for m in layers:
        if isinstance(m, CaffeBatchNorm):  # sums of batch statistics and their count: add them up
            for blob in m.get_caffe_blobs():
                dist.all_reduce(blob)
        else:
            for avg in (m.running_mean, m.running_var):
                dist.all_reduce(avg)
                avg.div_(world)

"""BatchNorm recalibration (compress.train.batchnorm): statistics re-estimated as an equal-weight average
over training batches, for Caffe's BatchNorm (its own blobs) and PyTorch's, against hand-computed values."""
from __future__ import annotations

import torch
from torch import nn

from compress.train.batchnorm import batchnorm_layers, recalibrate
from converters.caffe.layers.normalization import CaffeBatchNorm


def _caffe_bn(channels: int) -> CaffeBatchNorm:
    bn = CaffeBatchNorm(channels)
    bn.set_caffe_blobs([torch.full((channels,), 7.0), torch.full((channels,), 9.0), torch.ones(1)])
    return bn


def _batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 5, 5, generator=g) * (k + 1) + k, torch.zeros(4, dtype=torch.long))
            for k in range(n)]


def test_caffe_batchnorm_statistics_are_the_mean_of_the_batch_statistics():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), _caffe_bn(3), nn.Dropout(0.5)).eval()
    data = _batches(5)
    used = recalibrate(net, data, torch.device("cpu"), batches=3)
    assert used == 3
    outs = [net[0](x).detach() for x, _ in data[:3]]
    m = outs[0].numel() // 3
    means = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    vars_ = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    mean, var = net[1].statistics()
    assert m > 1
    torch.testing.assert_close(mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var, vars_, rtol=1e-5, atol=1e-6)
    assert float(net[1].scale_factor) == 3.0  # Caffe's blobs: sums over N batches and N
    assert net[1].moving_average_fraction == 0.999  # restored
    assert not net.training and not net[2].training  # modes restored (eval before)


def test_torch_batchnorm_gets_the_cumulative_average_and_its_momentum_back():
    bn = nn.BatchNorm2d(3)
    net = nn.Sequential(bn).train()
    data = _batches(4, seed=1)
    recalibrate(net, data, torch.device("cpu"), batches=4)
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x, _ in data]).mean(0)
    vars_ = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x, _ in data]).mean(0)
    torch.testing.assert_close(bn.running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, vars_, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and net.training


def test_frozen_batchnorm_and_nets_without_one_are_left_alone():
    frozen = _caffe_bn(3)
    frozen.use_global_stats = True
    net = nn.Sequential(nn.Conv2d(3, 3, 1), frozen)
    assert batchnorm_layers(net) == []
    assert recalibrate(net, _batches(2), torch.device("cpu"), batches=2) == 0
    assert float(frozen.mean_sum[0]) == 7.0
    assert recalibrate(nn.Sequential(nn.Conv2d(3, 3, 1)), _batches(2), torch.device("cpu"), 2) == 0


def test_the_same_batches_every_time():
    """A shuffling loader: the calibration order is its own seed's, whatever the global generator did."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(3)
    ds = TensorDataset(torch.randn(64, 3, 4, 4, generator=g), torch.zeros(64, dtype=torch.long))
    loader = DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator())
    stats = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        loader.generator.manual_seed(seed)
        net = nn.Sequential(_caffe_bn(3))
        recalibrate(net, loader, torch.device("cpu"), batches=2)
        stats.append(net[0].statistics()[0])
    torch.testing.assert_close(stats[0], stats[1], rtol=0, atol=0)


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        caffe = nn.Sequential(_caffe_bn(3)).eval()
        plain = nn.Sequential(nn.BatchNorm2d(3)).eval()
        shard = _batches(4, seed=10 + rank)  # each rank its own batches
        recalibrate(caffe, shard, torch.device("cpu"), batches=4)
        recalibrate(plain, shard, torch.device("cpu"), batches=4)
        torch.save({"caffe": caffe[0].statistics(), "plain": (plain[0].running_mean, plain[0].running_var)},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_end_with_the_statistics_of_all_their_batches(tmp_path):
    """Under torchrun every rank recalibrates on its own shard; the combined statistics are the average over
    both ranks' batches, the same on every rank (as one process over all the batches would compute them)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    data = _batches(4, seed=10) + _batches(4, seed=11)
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x, _ in data]).mean(0)
    vars_ = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x, _ in data]).mean(0)
    for r in got:
        for mean, var in (r["caffe"], r["plain"]):
            torch.testing.assert_close(mean, means, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(var, vars_, rtol=1e-5, atol=1e-6)

"""DistributedDataParallel on two CPU processes (gloo): every rank ends with identical weights."""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from tests.nets import Tiny


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from compress.layers import prunable_layers
    from compress.prune.methods import method_class
    from compress.prune.targets import Targets
    from compress.train.distributed import init_distributed
    from compress.train.trainer import TrainConfig, train

    dist = init_distributed(torch.device("cpu"))
    assert dist.enabled and dist.rank == rank
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    net = Tiny()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 6, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    data = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    method = method_class("admm")(prunable_layers(net), Targets({"conv1": 0.5, "fc": 0.2}),
                                  admm_iters=2, epochs_per_iter=1)
    res = train(net, method, data, data, TrainConfig(lr=0.05, retrain_epochs=1, seed=5,
                                                     checkpoint=os.path.join(out, "run.ckpt")), "cpu", dist)
    torch.save({"state": net.state_dict(), "steps": res.steps}, os.path.join(out, f"rank{rank}.pt"))
    dist.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 3 * 4  # 64 samples / 2 ranks / batch 8 = 4 steps per epoch
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    assert int((r0["state"]["fc.weight"] != 0).sum()) == round(0.2 * 192)
    assert (tmp_path / "run.ckpt").is_file()  # written by rank 0

"""Data-parallel training through ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N compress prune ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; this module
initialises the process group from them (gloo on CPU, nccl on CUDA), wraps the model, shards the
training data (a DistributedSampler for map-style DataLoaders, every N-th batch otherwise; all ranks
run the same number of steps), and lets only rank 0 write files. Every rank ends with identical
weights: DDP averages gradients and the methods' updates (Z/U, u, masks) are deterministic functions
of identical weights.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        if self.enabled and requested.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return requested

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def shard(self, loader: Iterable, seed: int) -> Iterable:
        if not self.enabled:
            return loader
        from torch.utils.data import DataLoader, DistributedSampler

        if isinstance(getattr(loader, "sampler", None), DistributedSampler):
            return loader  # already sharded (compress.data.get_data(distributed=True))
        if isinstance(loader, DataLoader) and hasattr(loader.dataset, "__getitem__") \
                and hasattr(loader.dataset, "__len__"):
            sampler = DistributedSampler(loader.dataset, num_replicas=self.world_size, rank=self.rank,
                                         shuffle=True, seed=seed, drop_last=False)
            return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                              num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                              pin_memory=loader.pin_memory, drop_last=loader.drop_last)
        return _EveryNth(loader, self.rank, self.world_size)

    def all_finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every rank (one tiny all-reduce per call under DDP)."""
        ok = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
        if self.enabled:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Replace every gradient by its mean over the ranks (one all-reduce of all of them), as Caffe's
        multi-GPU solvers do after the backward pass (``NCCL::on_gradients_ready``: sum, then scale by
        1 / solver_count). A parameter that got no gradient counts as zeros, so every rank sends the same
        buffer."""
        if not self.enabled:
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            mean = flat[offset:offset + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)
            offset += p.numel()

    def gather(self, obj):
        """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Barrier, then destroy the group (destroying right away aborted runs, environment.md)."""
        if self.initialised_here and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
            self.initialised_here = False


class _EveryNth:
    """Batches ``rank, rank + N, ...`` of an iterable; incomplete last rounds are dropped so that all
    ranks take the same number of steps."""

    def __init__(self, loader: Iterable, rank: int, world: int) -> None:
        self.loader, self.rank, self.world = loader, rank, world

    def __len__(self) -> int:
        return len(self.loader) // self.world

    def __iter__(self) -> Iterator:
        round_ = []
        for batch in self.loader:
            round_.append(batch)
            if len(round_) == self.world:
                yield round_[self.rank]
                round_ = []


def init_distributed(device: torch.device) -> DistContext:
    """A DistContext from torchrun's environment variables (single process when they are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        here = True
    return DistContext(rank, world, local, here)

"""One training loop for every pruning method: the method phase, the hard prune, the masked retrain.

    epochs [0, method.total_epochs())      the method's hooks shape the steps (penalties, u/Z updates);
                                            ``end_iteration`` after every ``method.cycle_epochs()``
    hard prune                              ``method.finalize_masks`` -> {layer: mask}, frozen
    epochs [.., + retrain_epochs)           masked gradients and the mask re-applied after every
                                            optimizer step, so zeros stay exactly zero through momentum
                                            and weight decay (fresh optimizer, learning-rate cycle restarts)

The learning rate follows a cosine from its base value within each cycle (an ADMM iteration, the
whole phase otherwise), computed from the step counters alone, so a resumed run sets the same values.
Every epoch re-seeds torch from ``(seed, epoch)`` (data order, dropout), and ends with an atomic
checkpoint: resuming from it reproduces the uninterrupted run bit for bit on CPU.
With ``cfg.distill`` the task loss of both phases takes soft targets from a frozen copy of the model as
it was given (``compress.prune.distill``); ``cfg.augment`` names augmentations of the training batches
(``compress.data.augment``).
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from compress.data.augment import augmenter
from compress.errors import CompressError, DivergenceError
from compress.prune.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from compress.prune.distill import Distill, distillation_loss, frozen_copy
from compress.prune.distributed import DistContext
from compress.prune.methods.base import Method
from compress.prune.targets import prunable_layers

# The W-step optimizer. SGD with momentum is Caffe's solver (the ADMM authors' AlexNet runs); Adam is
# what the authors' TensorFlow LeNet used. Weight decay is L2 added to the gradient in both.
OPTIMIZERS = {
    "sgd": lambda params, lr, wd, cfg: torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd),
    "adam": lambda params, lr, wd, cfg: torch.optim.Adam(params, lr=lr, weight_decay=wd),
}


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    retrain_epochs: int = 0
    retrain_lr: float | None = None  # default: lr
    retrain_weight_decay: float | None = None  # default: weight_decay
    lr_schedule: str = "cosine"  # or "constant"
    optimizer: str = "sgd"  # a key of OPTIMIZERS
    seed: int = 0
    max_steps: int | None = None  # per epoch (smoke runs); also caps evaluation batches
    amp: bool = False
    distill: Distill = field(default_factory=Distill)  # soft targets from the model as loaded
    augment: tuple[str, ...] = ()  # names in compress.data.augment, applied to training batches
    checkpoint: str | None = None
    log: str | None = None
    progress: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # stored in checkpoints, checked on resume

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise CompressError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise CompressError(f"lr schedule must be cosine or constant, got {self.lr_schedule!r}")
        augmenter(self.augment)  # validates the names
        if self.weight_decay < 0 or (self.retrain_weight_decay or 0) < 0:
            raise CompressError("weight decay must be >= 0")
        if not self.lr > 0 or self.retrain_epochs < 0 or (self.max_steps is not None and self.max_steps < 1):
            raise CompressError("need lr > 0, retrain epochs >= 0 and max steps >= 1")


@dataclass
class TrainResult:
    history: list[dict]
    accuracy: float | None
    masks: dict[str, torch.Tensor] | None
    epochs: int
    steps: int


class Logits(nn.Module):
    """The net's logits: a Caffe net ending in Softmax is trained on the Softmax's bottom blob."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        nodes = getattr(net, "nodes", None)
        self.blob = nodes[-1].bottoms[0] if nodes and nodes[-1].type == "Softmax" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blob is None:
            return self.net(x)
        return self.net.forward_blobs(x)[self.blob]


def autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable | None, device: torch.device, amp: bool = False,
             max_batches: int | None = None, dist: DistContext | None = None) -> float | None:
    """Top-1 accuracy of ``model`` (logits) on ``loader``; restores the train/eval flag after.
    Under DDP with a sharded test loader the counts are summed over the ranks."""
    if loader is None:
        return None
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                correct += (model(x).argmax(1) == y).sum()
            seen += len(y)
    finally:
        model.train(was_training)
    if dist is not None and dist.enabled and isinstance(getattr(loader, "sampler", None), DistributedSampler):
        counts = torch.stack([correct.double(), torch.tensor(float(seen), device=device, dtype=torch.double)])
        torch.distributed.all_reduce(counts)
        correct, seen = counts[0], int(counts[1])
    return float(correct) / seen if seen else None


def seed_epoch(loader: Any, seed: int, epoch: int) -> None:
    """Make the epoch's randomness a function of (seed, epoch) only, for exact resume: the global
    torch generator, any generator a loader or its sampler owns, and ``set_epoch`` of samplers."""
    s = (seed * 1_000_003 + epoch) % (2**63)
    torch.manual_seed(s)
    inner = getattr(loader, "loader", None)  # a sharding wrapper
    for obj in (loader, getattr(loader, "sampler", None), inner, getattr(inner, "sampler", None)):
        if isinstance(getattr(obj, "generator", None), torch.Generator):
            obj.generator.manual_seed(s)
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def sparsity(method: Method, masks: dict | None) -> float:
    """Fraction of zero weights over all prunable layers (the method's sparse view before the prune)."""
    view = method.sparse_weights() if masks is None else {}
    zeros = total = 0
    for name, layer in method.all_layers.items():
        w = view.get(name, layer.weight.detach())
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def train(net: nn.Module, method: Method, train_data: Iterable, test_data: Iterable | None,
          cfg: TrainConfig, device: torch.device | str = "cpu", dist: DistContext | None = None,
          resume: str | None = None) -> TrainResult:
    """Run the method phase, the hard prune and the masked retrain on ``net`` (in place)."""
    return _Trainer(net, method, train_data, test_data, cfg, torch.device(device), dist or DistContext(),
                    resume).run()


class _Trainer:
    def __init__(self, net, method, train_data, test_data, cfg, device, dist, resume) -> None:
        self.net, self.method, self.cfg, self.device, self.dist = net.to(device), method, cfg, device, dist
        self.logits = Logits(self.net)
        # the teacher is the model as given, before any step; a checkpoint carries it, so a resumed
        # run distills from the same teacher whatever model it was started from
        self.teacher = frozen_copy(self.logits) if cfg.distill.enabled else None
        self.augment = augmenter(cfg.augment)
        self.model = dist.wrap(self.logits, device)
        self.train_data = dist.shard(train_data, cfg.seed)
        self.test_data = test_data
        self.method_epochs = method.total_epochs()
        self.cycle = method.cycle_epochs()
        self.total_epochs = self.method_epochs + (cfg.retrain_epochs if method.prunes else 0)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
        self.masks: dict[str, torch.Tensor] | None = None
        self.epoch = self.step = 0
        self.history: list[dict] = []
        try:
            self.steps_per_epoch = len(self.train_data)
        except TypeError:
            self.steps_per_epoch = None
        if cfg.max_steps is not None:
            self.steps_per_epoch = min(cfg.max_steps, self.steps_per_epoch or cfg.max_steps)
        self.opt = self._optimizer(cfg.lr)
        if resume:
            self._resume(resume)
        else:
            method.init(self.net)

    # --- set-up ------------------------------------------------------------------------------
    def _optimizer(self, lr: float, weight_decay: float | None = None) -> torch.optim.Optimizer:
        wd = self.cfg.weight_decay if weight_decay is None else weight_decay
        return OPTIMIZERS[self.cfg.optimizer](self.net.parameters(), lr, wd, self.cfg)

    def _retrain_optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer(self.cfg.retrain_lr or self.cfg.lr, self.cfg.retrain_weight_decay)

    def _enter_retrain(self) -> None:
        self.masks = self.method.finalize_masks(self.net, self.method.targets)
        self.masks = {n: m.to(self.device) for n, m in (self.masks or {}).items()}
        self.opt = self._retrain_optimizer()

    def _resume(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        if ckpt["info"].get("method") != self.method.name:
            raise CompressError(f"checkpoint {path} is from method {ckpt['info'].get('method')!r}, "
                                f"not {self.method.name!r}")
        if (ckpt.get("teacher") is None) != (self.teacher is None):
            raise CompressError(f"checkpoint {path} was written {'without' if self.teacher else 'with'} "
                                f"--distill; resume with the same setting")
        self.net.load_state_dict(ckpt["model"])
        if self.teacher is not None:
            self.teacher.load_state_dict(ckpt["teacher"])
        self.method.load_state_dict(ckpt["method"])
        if ckpt["masks"] is not None:
            self.masks = {n: m.to(self.device) for n, m in ckpt["masks"].items()}
            self.opt = self._retrain_optimizer()
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step, self.history = int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["history"])
        set_rng_state(ckpt["rng"])

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        while self.epoch < self.total_epochs:
            self._epoch()
        if self.method.prunes and self.masks is None:  # no retrain phase: prune at the end
            self._enter_retrain()
        last = self.history[-1] if self.history else {}
        acc = last.get("test_acc") if last.get("phase") == "retrain" else None
        if acc is None:
            acc = evaluate(self.logits, self.test_data, self.device, self.cfg.amp, self.cfg.max_steps,
                           self.dist)
        self.net.train(False)
        return TrainResult(self.history, acc, self.masks, self.epoch, self.step)

    def _lr(self, retrain: bool, i: int) -> float:
        base = (self.cfg.retrain_lr or self.cfg.lr) if retrain else self.cfg.lr
        if self.cfg.lr_schedule == "constant" or not self.steps_per_epoch:
            return base
        if retrain:
            cycle, pos = self.cfg.retrain_epochs, self.epoch - self.method_epochs
        else:
            cycle, pos = self.cycle, self.epoch % self.cycle
        t, total = pos * self.steps_per_epoch + i, cycle * self.steps_per_epoch
        return base * 0.5 * (1 + math.cos(math.pi * t / total))

    def _epoch(self) -> None:
        retrain = self.epoch >= self.method_epochs
        if retrain and self.masks is None:
            self._enter_retrain()
        seed_epoch(self.train_data, self.cfg.seed, self.epoch)
        self.model.train()
        start, loss_sum, correct, seen, lr = time.perf_counter(), 0.0, 0, 0, self.cfg.lr
        with self._progress(retrain) as bar:
            for i, (x, y) in enumerate(self.train_data):
                if self.cfg.max_steps is not None and i >= self.cfg.max_steps:
                    break
                lr = self._lr(retrain, i)
                loss, hits = self._step(x, y, retrain, lr, i)
                loss_sum, correct, seen = loss_sum + loss * len(y), correct + hits, seen + len(y)
                bar.update(1, f"loss {loss:.4f} acc {correct / seen:.4f}")
        seconds = time.perf_counter() - start
        if not retrain and (self.epoch + 1) % self.cycle == 0:
            self.method.end_iteration(self.net, (self.epoch + 1) // self.cycle - 1)
        with (contextlib.nullcontext() if retrain else self.method.eval_weights(self.net)):
            test_acc = evaluate(self.logits, self.test_data, self.device, self.cfg.amp, self.cfg.max_steps,
                           self.dist)
            sp = sparsity(self.method, self.masks)
        self.epoch += 1
        entry = {"epoch": self.epoch, "phase": "retrain" if retrain else "method",
                 "loss": loss_sum / max(seen, 1),
                 "train_acc": correct / max(seen, 1), "test_acc": test_acc, "sparsity": sp, "lr": lr,
                 "seconds": seconds, "images_per_s": seen / seconds if seconds else 0.0,
                 **({} if retrain else self.method.metrics())}
        self.history.append(entry)
        self._log(entry)
        self._save()

    def _step(self, x, y, retrain: bool, lr: float, i: int) -> tuple[float, int]:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.augment is not None:
            x = self.augment(x)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.cfg.amp):
            logits = self.model(x)
            with torch.no_grad():
                teacher = None if self.teacher is None else self.teacher(x).float()
        loss = distillation_loss(logits.float(), teacher, y, self.cfg.distill)
        extra = None if retrain else self.method.extra_loss(self.net)
        total = loss if extra is None else loss + extra
        value = float(total.detach())
        finite = self.dist.all_finite(total) if self.dist.enabled else math.isfinite(value)
        if not finite:
            where = self.cfg.checkpoint if self.epoch > 0 and self.cfg.checkpoint else "none"
            raise DivergenceError(f"loss became {value} at epoch {self.epoch + 1} step {i + 1}; "
                                  f"last good checkpoint: {where}")
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.opt)
        else:
            total.backward()
        if retrain:
            self._mask_grads()
        else:
            self.method.before_step(self.net)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        if retrain:
            self._apply_masks()
        else:
            self.method.after_step(self.net)
        self.step += 1
        return value, int((logits.detach().argmax(1) == y).sum())

    @torch.no_grad()
    def _mask_grads(self) -> None:
        for name, mask in self.masks.items():
            w = self.method.all_layers[name].weight
            if w.grad is not None:
                w.grad.mul_(mask)

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for name, mask in self.masks.items():
            self.method.all_layers[name].weight.mul_(mask)

    # --- output ------------------------------------------------------------------------------
    def _progress(self, retrain: bool):
        if not (self.cfg.progress and self.dist.is_main):
            return contextlib.nullcontext(_NoBar())
        import click

        label = f"epoch {self.epoch + 1}/{self.total_epochs} {'retrain' if retrain else self.method.name}"
        sp = self.history[-1]["sparsity"] if self.history else sparsity(self.method, self.masks)
        return click.progressbar(length=self.steps_per_epoch or 0, label=label, file=sys.stderr,
                                 item_show_func=lambda s: f"{s} sparsity {sp:.3f}" if s else None)

    def _log(self, entry: dict) -> None:
        if self.dist.is_main and self.cfg.log:
            with open(self.cfg.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def _save(self) -> None:
        if self.cfg.checkpoint and self.dist.is_main:
            save_checkpoint(self.cfg.checkpoint, {
                "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "method": self.method.state_dict(), "masks": self.masks, "epoch": self.epoch,
                "teacher": self.teacher.state_dict() if self.teacher is not None else None,
                "step": self.step, "rng": rng_state(), "history": self.history,
                "info": {"method": self.method.name, **self.cfg.info}})
        self.dist.barrier()


class _NoBar:
    def update(self, n: int, item: Any = None) -> None:
        pass


def check_prunable(net: nn.Module) -> None:
    if not prunable_layers(net):
        raise CompressError("the model has no prunable layers (Conv2d, ConvTranspose2d or Linear)")

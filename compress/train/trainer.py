"""One training loop for every method (pruning, quantization, none) and every front door: the method
phase, the hard prune, the masked retrain. The method is a set of hooks (:mod:`compress.train.hooks`).

    method phase        the method's hooks shape the steps (penalties, u/Z updates); ``start_cycle``
                        before every learning-rate cycle (a magnitude round's prune), ``end_epoch``
                        after every epoch, ``end_iteration`` after every cycle (an ADMM iteration;
                        ``method.cycles()`` says how many epochs each)
    hard prune          ``method.finalize_masks`` -> {layer: mask}, frozen
    retrain             masked gradients and the mask re-applied after every optimizer step, so zeros
                        stay exactly zero through momentum and weight decay (fresh optimizer, the
                        learning-rate cycle restarts)

The run is a list of segments (:mod:`compress.train.schedule`): with data loaders one per epoch, with a
Caffe solver cut at its test interval. Each segment ends with an evaluation, a log entry and, at most
every ``checkpoint_every`` seconds, an atomic checkpoint; the last segment always checkpoints. The
learning rate is a function of the step counters alone, and every epoch re-seeds torch from
``(seed, epoch)`` (data order, dropout, augmentation), so resuming from a checkpoint reproduces the
uninterrupted run bit for bit on CPU. What is trained and scored comes from a *task*
(:mod:`compress.train.task`): a classifier on ``(x, y)`` batches by default.
"""
from __future__ import annotations

import contextlib
import json
import math
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress.data.augment import augmenter
from compress.errors import CompressError, DivergenceError, TrainingInterrupted
from compress.savedstate import Fields, load_module_state, load_optimizer_state
from compress.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from compress.train.distill import Distill
from compress.train.distributed import DistContext
from compress.train.hooks import MethodHooks
from compress.train.progress import Progress
from compress.train.schedule import SCHEDULES, Segment, cycle_segments, schedule
from compress.train.seeds import seed_epoch
from compress.train.task import ClassifierTask, top1
from compress.train.weights import apply_masks, mask_grads
from converters.caffe.names import cut

# The W-step optimizer. SGD with momentum is Caffe's solver (the ADMM authors' AlexNet runs); Adam is
# what the authors' TensorFlow LeNet used. Weight decay is L2 added to the gradient in both.
OPTIMIZERS = {
    "sgd": lambda params, lr, wd, cfg: torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd),
    "adam": lambda params, lr, wd, cfg: torch.optim.Adam(params, lr=lr, weight_decay=wd),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything the loop needs to know about a run, filled by command-line flags or a solver."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    retrain_epochs: int | None = 0  # None: the front door decides (prune: the method's default)
    retrain_lr: float | None = None  # default: lr
    retrain_weight_decay: float | None = None  # default: weight_decay
    lr_schedule: str = "cosine"  # a key of compress.train.schedule.SCHEDULES
    optimizer: str = "sgd"  # a key of OPTIMIZERS
    seed: int = 0
    max_steps: int | None = None  # per epoch (smoke runs); also caps evaluation batches
    amp: bool = False
    distill: Distill = field(default_factory=Distill)  # soft targets from the model as loaded
    augment: tuple[str, ...] | None = ()  # compress.data.augment names (None: the data's default)
    bn_recalibrate: int = 100  # training batches that re-estimate BatchNorm statistics before a test (0: off)
    final_test: bool = True  # test after the run when its last epoch did not (False: a solver's own tests)
    checkpoint: str | None = None
    checkpoint_every: float = 0.0  # seconds between checkpoints (0: after every epoch)
    log: str | None = None
    progress: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # what defines the run: stored, checked on resume
    command: dict[str, Any] = field(default_factory=dict)  # the command line's record (--resume alone)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise CompressError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in SCHEDULES:
            raise CompressError(f"lr schedule must be one of {', '.join(SCHEDULES)}, "
                                f"got {self.lr_schedule!r}")
        augmenter(self.augment or ())  # validates the names
        if self.weight_decay < 0 or (self.retrain_weight_decay or 0) < 0:
            raise CompressError("weight decay must be >= 0")
        if not self.lr > 0 or (self.retrain_epochs or 0) < 0 or (self.max_steps is not None
                                                                 and self.max_steps < 1):
            raise CompressError("need lr > 0, retrain epochs >= 0 and max steps >= 1")
        if not self.checkpoint_every >= 0:
            raise CompressError(f"checkpoint interval must be >= 0 seconds, got {self.checkpoint_every}")
        if self.bn_recalibrate < 0:
            raise CompressError(f"BatchNorm recalibration batches must be >= 0, got {self.bn_recalibrate}")

    @property
    def calibration_batches(self) -> int:
        """Batches of a BatchNorm recalibration (``bn_recalibrate``, at most ``max_steps``)."""
        return min(self.bn_recalibrate, self.max_steps or self.bn_recalibrate)


@dataclass
class TrainResult:
    history: list[dict]
    accuracy: float | None
    masks: dict[str, torch.Tensor] | None
    epochs: int
    steps: int


class MicroBatches:
    """The ``count`` batches of one optimizer step whose gradients accumulate (Caffe's ``iter_size``).
    ``draw()`` reads each as the loop comes to it, so every batch is forwarded and backpropagated before
    the next one is read: the memory of one batch, as in Caffe, whatever ``count``. The loss reported is
    their mean."""

    def __init__(self, count: int, draw: Callable[[], Any]) -> None:
        self.count, self.draw = count, draw

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator:
        for _ in range(self.count):
            yield self.draw()


class Observer:
    """Hooks of a front door into the loop (the Caffe one logs and displays every iteration and writes
    snapshots); the default does nothing. ``state_dict`` rides in checkpoints."""

    def step(self, trainer: _Trainer, it: int, loss: float, rate: float, info: dict) -> None:
        """After update number ``it`` (0-based) with its mean ``loss`` and the ``rate`` it used."""

    def segment_end(self, trainer: _Trainer, entry: dict) -> None:
        """After a segment's evaluation and log entry (``trainer.step`` updates done)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, where: str = "observer") -> None:
        Fields(state, where)


class LoaderBatches:
    """Batches of a data loader, one pass per segment, re-seeded from (seed, segment index)."""

    def __init__(self, loader: Iterable, seed: int, max_steps: int | None) -> None:
        self.loader, self.seed, self.max_steps = loader, seed, max_steps
        try:
            self.steps_per_epoch: int | None = len(loader)  # type: ignore[arg-type]
        except TypeError:
            self.steps_per_epoch = None
        if max_steps is not None:
            self.steps_per_epoch = min(max_steps, self.steps_per_epoch or max_steps)

    def segment(self, index: int, steps: int | None) -> Iterator:
        seed_epoch(self.loader, self.seed, index)
        for i, batch in enumerate(self.loader):
            if steps is not None and i >= steps:
                break
            yield batch

    def state_dict(self) -> dict:
        return {}  # a function of the segment index

    def load_state_dict(self, state: dict, where: str = "batches") -> None:
        Fields(state, where)


def sparsity(method: MethodHooks, masks: dict | None) -> float:
    """Fraction of zero weights over all prunable layers (the method's sparse view before the prune)."""
    view = method.sparse_weights() if masks is None else {}
    zeros = total = 0
    for name, layer in method.all_layers.items():
        w = view.get(name, layer.weight.detach())
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def train(net: nn.Module, method: MethodHooks, train_data: Iterable, test_data: Iterable | None,
          cfg: TrainConfig, device: torch.device | str = "cpu", dist: DistContext | None = None,
          resume: str | None = None, *, task=None, batches=None, segments: list[Segment] | None = None,
          optimizer=None, observer: Observer | None = None) -> TrainResult:
    """Run the method phase, the hard prune and the masked retrain on ``net`` (in place).

    By default a :class:`ClassifierTask` over ``(x, y)`` loaders, one segment per epoch, and the
    optimizer named by ``cfg.optimizer``; the Caffe front door passes its own ``task``, ``batches``,
    ``segments``, ``optimizer`` factory ``(params, lr, weight_decay, cfg) -> Optimizer`` and
    ``observer``. An optimizer with a ``last_rate`` attribute reports the rate it used itself."""
    device = torch.device(device)
    dist = dist or DistContext()
    net.to(device)
    if task is None:
        task = ClassifierTask(net, test_data, device, amp=cfg.amp, distill=cfg.distill,
                              augment=cfg.augment or (), max_eval_batches=cfg.max_steps,
                              calibration=(train_data, cfg.calibration_batches))
    if batches is None:
        batches = LoaderBatches(dist.shard(train_data, cfg.seed), cfg.seed, cfg.max_steps)
    if segments is None:
        retrain = (cfg.retrain_epochs or 0) if method.prunes else 0
        segments = cycle_segments(method.cycles(), retrain, batches.steps_per_epoch)
    return _Trainer(net, method, task, batches, segments, cfg, device, dist, optimizer,
                    observer or Observer(), resume).run()


class _Trainer:
    def __init__(self, net, method, task, batches, segments, cfg, device, dist, optimizer, observer,
                 resume) -> None:
        self.net, self.method, self.task, self.batches, self.observer = net, method, task, batches, observer
        self.segments, self.cfg, self.device, self.dist = segments, cfg, device, dist
        self.make_optimizer = optimizer or OPTIMIZERS[cfg.optimizer]
        # a task whose forward DDP cannot wrap (a Caffe phase net's run()) gets its gradients averaged
        # after the backward pass instead, as Caffe's own multi-GPU solvers do
        self.average_gradients = dist.enabled and getattr(task, "average_gradients", False)
        self.model = task.module if self.average_gradients else dist.wrap(task.module, device)
        self.schedule = schedule(cfg.lr_schedule)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
        self.progress = Progress(cfg.progress and dist.is_main,
                                 accuracy_key=getattr(task, "accuracy_key", "accuracy"))
        self.masks: dict[str, torch.Tensor] | None = None
        self.epoch = self.step = 0
        self.history: list[dict] = []
        self.saved: tuple[str, int] | None = None  # (path, epoch) of the newest checkpoint
        self.last_save = time.monotonic()
        self.opt = self._optimizer(cfg.lr)
        if resume:
            self._resume(resume)
        else:
            method.init(self.net)

    # --- set-up ------------------------------------------------------------------------------
    def _optimizer(self, lr: float, weight_decay: float | None = None) -> torch.optim.Optimizer:
        wd = self.cfg.weight_decay if weight_decay is None else weight_decay
        return self.make_optimizer(self.net.parameters(), lr, wd, self.cfg)

    def _retrain_optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer(self.cfg.retrain_lr or self.cfg.lr, self.cfg.retrain_weight_decay)

    def _enter_retrain(self) -> None:
        self.masks = self.method.finalize_masks(self.net, self.method.targets)
        self.masks = {n: m.to(self.device) for n, m in (self.masks or {}).items()}
        self.opt = self._retrain_optimizer()

    def _resume(self, path: str) -> None:
        """Continue the run saved at ``path``: every field of the checkpoint is checked against this run
        (its settings, its net, its optimizer, data cursors and counters) before training goes on; the
        first one that does not fit is one error naming the file and the field."""
        ckpt = load_checkpoint(path)
        try:
            self._load(Fields(ckpt, ""), path)
        except CompressError as e:
            text = str(e)
            raise CompressError(text if path in text else f"checkpoint {path}: {text}") from None

    def _load(self, ckpt: Fields, path: str) -> None:
        world = ckpt.integer("world_size", 1) if "world_size" in ckpt.state else 1
        if world != self.dist.world_size:
            raise CompressError(f"checkpoint {path} was written by a run of {world} process(es), this one "
                                f"has {self.dist.world_size}; resume it with {world}")
        check_same_run(ckpt.fields("info").state, {"method": self.method.name, **self.cfg.info}, path)
        segments = ckpt.integer("segments", 1)
        if segments != len(self.segments):
            raise CompressError(f"checkpoint {path} belongs to a run of {segments} epochs, "
                                f"this one has {len(self.segments)}")
        epoch = ckpt.integer("epoch", 0, segments)
        done = self.segments[:epoch]
        steps = sum(g.steps for g in done) if all(g.steps is not None for g in done) else None
        step = ckpt.integer("step", *((steps, steps) if steps is not None else (0, 2**62)))
        history = ckpt.sequence("history", epoch)
        for i, entry in enumerate(history):
            e = Fields(entry, f"history[{i}]")
            e.integer("epoch", i + 1, i + 1)
            e.number("sparsity")
            e.integer("step", 0, step)
        load_module_state(self.net, ckpt.get("model"), "model")
        task = ckpt.state.get("task")  # older checkpoints held the distillation teacher at the top
        self.task.load_state_dict({"teacher": ckpt.state.get("teacher")} if task is None else task, "task")
        self.method.load_state_dict(ckpt.fields("method").state)
        masks = ckpt.get("masks")
        if masks is not None:
            self.masks = {n: m.to(self.device) for n, m in self._masks(Fields(masks, "masks")).items()}
            self.opt = self._retrain_optimizer()
        load_optimizer_state(self.opt, ckpt.get("optimizer"), "optimizer", updates=step)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt.fields("scaler").state)
        self.batches.load_state_dict(ckpt.get("batches"), "batches")
        self.observer.load_state_dict(ckpt.get("observer"), "observer")
        if self.dist.enabled:
            ranks = ckpt.sequence("rng_ranks", self.dist.world_size)
            set_rng_state(ranks[self.dist.rank], f"rng_ranks[{self.dist.rank}]")
        else:
            set_rng_state(ckpt.get("rng"), "rng")
        self.epoch, self.step, self.history = epoch, step, history
        self.saved = (path, self.epoch)

    def _masks(self, masks: Fields) -> dict[str, torch.Tensor]:
        """The retrain masks: one 0/1 tensor of its weight's shape per prunable layer named."""
        layers = self.method.all_layers
        out = {}
        for name in masks.state:
            if name not in layers:
                raise CompressError(f"{masks.at(name)}: not a prunable layer of this net")
            m = masks.tensor(name, tuple(layers[name].weight.shape))
            if not bool(((m == 0) | (m == 1)).all()):
                raise CompressError(f"{masks.at(name)}: a mask holds only 0 and 1")
            out[name] = m
        return out

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            while self.epoch < len(self.segments):
                self._segment(self.segments[self.epoch])
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupted()) from None
        if self.method.prunes and self.masks is None:  # no retrain phase: prune at the end
            self._enter_retrain()
        last = self.history[-1] if self.history else {}
        acc = last.get("test_acc") if last.get("phase") == "retrain" else None
        if acc is None and self.cfg.final_test:
            acc = top1(self.task, self.task.evaluate())
        self.net.train(False)
        return TrainResult(self.history, acc, self.masks, self.epoch, self.step)

    def _interrupted(self) -> str:
        where = f"stopped in epoch {self.epoch + 1} of {len(self.segments)} (step {self.step})"
        if self.saved is None:
            return f"{where}; no checkpoint was written yet"
        path = self.saved[0]
        how = self.cfg.command.get("resume", "--resume {checkpoint}")
        how = how.replace("{checkpoint}", shlex.quote(path))
        return f"{where}; to continue: {how}"

    def _lr(self, seg: Segment, i: int) -> float:
        base = (self.cfg.retrain_lr or self.cfg.lr) if seg.phase == "retrain" else self.cfg.lr
        return self.schedule(base, seg.start + i, seg.cycle_steps)

    def _label(self, seg: Segment) -> str:
        name = self.method.name if seg.phase == "method" else "retrain"
        return f"epoch {self.epoch + 1}/{len(self.segments)} {name}"

    def _segment(self, seg: Segment) -> None:
        retrain = seg.phase == "retrain"
        if retrain and self.masks is None:
            self._enter_retrain()
        before = self.segments[self.epoch - 1] if self.epoch else None
        if not retrain and (before is None or (before.phase, before.cycle) != (seg.phase, seg.cycle)):
            self.method.start_cycle(self.net, seg.cycle)
        self.model.train()
        start, loss_sum, correct, seen, lr = time.perf_counter(), 0.0, 0, 0, self.cfg.lr
        label = self._label(seg)
        sp = self.history[-1]["sparsity"] if self.history else sparsity(self.method, self.masks)
        with self.progress.epoch(label, seg.steps or self.batches.steps_per_epoch, sp) as bar:
            for i, batch in enumerate(self.batches.segment(self.epoch, seg.steps)):
                loss, info, lr = self._step(batch, retrain, self._lr(seg, i), i)
                n = info["seen"]
                loss_sum, correct, seen = loss_sum + loss * n, correct + info.get("correct", 0), seen + n
                self.observer.step(self, self.step - 1, loss, lr, info)
                bar.update(1, f"loss {loss:.4f} acc {correct / max(seen, 1):.4f}")
        seconds = time.perf_counter() - start
        if not retrain and seg.ends_epoch:
            self.method.end_epoch(self.net)
        if not retrain and seg.ends_cycle:
            self.method.end_iteration(self.net, seg.cycle)
        test = None
        with (self.method.eval_weights(self.net) if not retrain else contextlib.nullcontext()):
            if seg.evaluate:
                test = self.task.evaluate()
            sp = sparsity(self.method, self.masks)
        self.epoch += 1
        entry = {"epoch": self.epoch, "phase": seg.phase, "step": self.step, "loss": loss_sum / max(seen, 1),
                 "train_acc": correct / max(seen, 1) if "correct" in info else None,
                 "test_acc": top1(self.task, test),
                 "test": test,
                 "sparsity": sp, "lr": lr, "seconds": seconds,
                 "images_per_s": seen / seconds if seconds else 0.0,
                 **({} if retrain else self.method.metrics())}
        self.history.append(entry)
        self._log(entry)
        self.progress.epoch_done(label, entry)
        self.observer.segment_end(self, entry)
        self._maybe_save()

    def _step(self, batch, retrain: bool, lr: float, i: int) -> tuple[float, dict, float]:
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        parts = batch if isinstance(batch, MicroBatches) else (batch,)
        value, info = 0.0, {}
        for k, part in enumerate(parts):
            loss, info = self.task.loss(self.model, part)
            if k == 0 and not retrain:
                extra = self.method.extra_loss(self.net)  # x parts: the solver divides their sum
                loss = loss if extra is None else loss + (extra if len(parts) == 1 else extra * len(parts))
            v = float(loss.detach())
            finite = self.dist.all_finite(loss) if self.dist.enabled else math.isfinite(v)
            if not finite:
                where = self.saved[0] if self.saved is not None else "none"
                raise DivergenceError(f"loss became {v} at epoch {self.epoch + 1} step {i + 1}; "
                                      f"last good checkpoint: {where}")
            value += v / len(parts)
            if not loss.requires_grad:  # no weighted loss reaches a parameter (loss_weight: 0): zero diffs
                continue
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        if self.average_gradients:
            self.dist.average_gradients(self.net.parameters())
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if retrain:
            mask_grads(self.method.all_layers, self.masks)
        else:
            self.method.accumulated = len(parts)
            self.method.before_step(self.net, lr)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        if retrain:
            apply_masks(self.method.all_layers, self.masks)
        else:
            self.method.after_step(self.net)
        self.step += 1
        used = getattr(self.opt, "last_rate", None)
        return value, info, lr if used is None else used

    # --- output ------------------------------------------------------------------------------
    def _log(self, entry: dict) -> None:
        if self.dist.is_main and self.cfg.log:
            with open(self.cfg.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def _maybe_save(self) -> None:
        due = time.monotonic() - self.last_save >= self.cfg.checkpoint_every
        if self.cfg.checkpoint and (due or self.epoch == len(self.segments)):
            self.save_state(self.cfg.checkpoint)

    def save_state(self, path: str) -> None:
        """Write a checkpoint to ``path`` (rank 0), from which ``resume`` continues this run exactly (every
        rank's random generators in it: each rank draws its own dropout masks)."""
        ranks = self.dist.gather(rng_state())
        if self.dist.is_main:
            save_checkpoint(path, {
                "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "method": self.method.state_dict(), "masks": self.masks, "epoch": self.epoch,
                "task": self.task.state_dict(), "batches": self.batches.state_dict(),
                "observer": self.observer.state_dict(),
                "segments": len(self.segments), "step": self.step, "rng": rng_state(),
                "history": self.history, "info": {"method": self.method.name, **self.cfg.info},
                "command": self.cfg.command or None, "world_size": self.dist.world_size,
                **({"rng_ranks": ranks} if self.dist.enabled else {})})
        self.saved, self.last_save = (path, self.epoch), time.monotonic()
        self.dist.barrier()


def check_same_run(stored: dict, current: dict, path: str) -> None:
    """A checkpoint resumes only the run that wrote it: every key that defines the run must match;
    the error names the first difference."""
    stored, current = _canon(stored), _canon(current)
    if not isinstance(stored, dict):
        raise CompressError(f"checkpoint {path}: info: {stored}")
    for key in sorted(set(stored) | set(current), key=lambda k: (k != "weights", k)):  # the model first
        a, b = stored.get(key), current.get(key)
        if a == b:
            continue
        if key == "weights":
            raise CompressError(f"checkpoint {path} is from a run that started from other weights (another "
                                "model or model file); resume with the model the run started from")
        if isinstance(a, dict) and isinstance(b, dict):
            sub = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            key, a, b = f"{key}.{sub}", a.get(sub), b.get(sub)
        raise CompressError(f"checkpoint {path} is from a different run: {cut(key, 80)} was {_short(a)}, "
                            f"now {_short(b)}; resume with the same settings or start afresh")


def _canon(value: Any) -> Any:
    """``value`` as JSON data (keys made strings, so keys of mixed types compare and sort)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError, RecursionError):  # a circular or too deeply nested value
        return f"<unreadable {type(value).__name__}>"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."

"""``prune(model, config)``: the library function behind ``compress prune``.

Loads the model and the data, builds the targets and the method, runs the trainer (method phase,
hard prune, masked retrain), and saves the pruned model with a ``meta`` record (method,
hyperparameters, targets, sparsity mode, dataset, accuracy before/after, per-epoch history).
Everything about the run comes in one :class:`PruneConfig`; the command line fills it from flags.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.data.synthetic import meaningless
from compress.device import resolve_device
from compress.errors import CompressError
from compress.layers import prunable_layers
from compress.lock import output_lock
from compress.prune.fronts import SolverFront
from compress.prune.methods import method_class
from compress.prune.targets import render_adjustments, resolve_targets
from compress.train.checkpoint import weights_digest
from compress.train.distributed import init_distributed
from compress.train.loaders import DataSpec, LoaderFront
from compress.train.trainer import TrainConfig, train

ZOO_NAMES = ("lenet", "alexnet")


@dataclass(frozen=True)
class TargetSpec:
    """The targets as given: a file or preset, ``LAYER=RATIO`` pairs, or the seed's global ``pcen``."""

    targets: str | None = None
    keep: tuple[str, ...] = ()
    pcen: float | None = None
    sparsity: str | None = None  # None: the method's default (elem; rgsm: channel)
    group: str = "in"


@dataclass(frozen=True)
class PruneConfig:
    """One pruning run. ``train.retrain_epochs`` / ``train.augment`` None: the method's / data's
    default; ``train.checkpoint`` / ``train.log`` default to ``<output>.ckpt`` / ``<output>.log.jsonl``."""

    method: str = "admm"
    hyper: Mapping[str, Any] = field(default_factory=dict)  # the method's Params, None = default
    targets: TargetSpec = field(default_factory=TargetSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    prototxt: str | None = None
    output: str | None = None
    resume: str | None = None
    keep_checkpoint: bool = False  # keep <output>.ckpt after a successful run
    checkpoints: bool = True  # False: write none (a killed run cannot be resumed)
    solver: str | None = None  # a Caffe solver.prototxt: its net, data and optimization (fronts.py)
    max_iter: int | None = None  # with ``solver``: iterations per epoch instead of its max_iter


@dataclass(frozen=True)
class PruneResult:
    output: str | None
    meta: dict
    history: list[dict]
    accuracy_before: float | None
    accuracy_after: float | None
    layers: dict[str, dict] = field(default_factory=dict)  # {layer: {"numel", "nonzero", "target"}}
    is_main: bool = True  # False on the other ranks of a torchrun job (they neither write nor print)
    notes: tuple[str, ...] = ()  # what the numbers mean (synthetic labels, a limited test set)


def prune(model: str | nn.Module, config: PruneConfig | None = None, **overrides: Any) -> PruneResult:
    """Prune ``model`` (zoo name, model file, ``.caffemodel``, or an ``nn.Module``) as ``config`` says.

    ``overrides`` replace top-level fields of ``config`` (``prune("lenet", method="magnitude")``).
    """
    cfg = dataclasses.replace(config or PruneConfig(), **overrides)
    tc = cfg.train
    if cfg.output is not None:
        from compress.outputs import check_outputs

        tc = dataclasses.replace(tc, checkpoint=tc.checkpoint or f"{cfg.output}.ckpt",
                                 log=tc.log or f"{os.path.splitext(cfg.output)[0]}.log.jsonl")
        extra = SolverFront.extra_outputs(cfg.output) if cfg.solver else []
        check_outputs([cfg.output, tc.log, tc.checkpoint, *extra],
                      models=[(model, cfg.prototxt)] if isinstance(model, str) else [],
                      files=[cfg.solver])
    if not cfg.checkpoints:
        tc = dataclasses.replace(tc, checkpoint=None)
    if cfg.resume is not None and not os.path.isfile(cfg.resume):
        raise CompressError(f"checkpoint not found: {cfg.resume}")
    cls = method_class(cfg.method)
    dev = resolve_device(cfg.device)
    dist = init_distributed(dev)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(output_lock([cfg.output], enabled=dist.is_main))
        dev = dist.device(dev)
        torch.manual_seed(tc.seed)
        front = (SolverFront if cfg.solver else LoaderFront)(model, cfg, dev, dist)
        net, meta, name = front.net, front.meta, front.name
        layers = prunable_layers(net)
        if not layers:
            raise CompressError(f"{name}: no prunable layers (Conv2d, ConvTranspose2d or Linear)")
        t = cfg.targets
        sparsity = t.sparsity or cls.default_sparsity
        pcen = t.pcen
        if t.targets is None and not t.keep and pcen is None:
            pcen = cls.default_pcen
        tgt = resolve_targets(layers, targets=t.targets, keep=t.keep, pcen=pcen, sparsity=sparsity,
                              group=t.group, model_name=meta.get("zoo") or Path(name).stem.lower())
        m = cls(layers, tgt, group=t.group, **dict(cfg.hyper))
        adjusted = tgt.adjustments(layers) if tgt is not None else []
        if adjusted and dist.is_main:
            print(render_adjustments(adjusted), file=sys.stderr, flush=True)
        augment = front.augment(tc.augment)
        retrain = tc.retrain_epochs if tc.retrain_epochs is not None else front.retrain_default(cls, tgt)
        tc = dataclasses.replace(tc, retrain_weight_decay=front.retrain_weight_decay(
            cls, tc.retrain_weight_decay))
        hyper = {**m.hyperparameters(), **front.hyperparameters(tc), "retrain_epochs": retrain,
                 "distill": tc.distill.alpha, "distill_temperature": tc.distill.temperature,
                 "augment": list(augment), "seed": tc.seed, "amp": tc.amp, "max_steps": tc.max_steps,
                 "world_size": dist.world_size}
        identity = {"weights": weights_digest(net), "data": front.dataset,
                    "limit": cfg.data.limit, "hyperparameters": hyper,
                    "targets": tgt.as_dict() if tgt else None, "sparsity": sparsity, "group": t.group}
        tc = dataclasses.replace(tc, retrain_epochs=retrain, augment=augment, info=identity)
        before = front.before(tc)
        if cfg.resume is None and tc.log and dist.is_main and os.path.exists(tc.log):
            os.unlink(tc.log)  # a fresh run starts a fresh log; a resumed one appends
        if tc.progress and dist.is_main:
            pct = "n/a" if before is None or meaningless(front.notes()) else f"{before:.2%}"
            steps = f" of at most {tc.max_steps} steps" if tc.max_steps else ""
            print(f"{name}: {cfg.method} on {front.describe()}, {m.total_epochs()} method + "
                  f"{retrain if m.prunes else 0} retrain epochs{steps}; top-1 before: {pct}",
                  file=sys.stderr, flush=True)
        kwargs = front.train_kwargs(m, tc)
        result = train(net, m, kwargs.pop("train_data"), kwargs.pop("test_data"), tc, dev, dist, cfg.resume,
                       **kwargs)
        net.cpu().eval()
        if m.adjustments and dist.is_main:
            print(render_adjustments(m.adjustments), file=sys.stderr, flush=True)
        adjusted = [*adjusted, *m.adjustments]
        layer_stats = {n: {"numel": layer.weight.numel(), "nonzero": int((layer.weight != 0).sum()),
                           "target": tgt.keep.get(n) if tgt else None} for n, layer in layers.items()}
        notes = front.notes()
        new_meta = {**meta, "source": meta.get("source", name), "method": cfg.method,
                    "hyperparameters": hyper,
                    "targets": tgt.as_dict() if tgt else None, "sparsity": sparsity, "group": t.group,
                    "dataset": front.dataset, "accuracy_before": before, "accuracy_after": result.accuracy,
                    "accuracy_notes": list(notes), "adjustments": [a.as_dict() for a in adjusted],
                    "history": result.history,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), **front.meta_extra()}
        if cfg.output is not None and dist.is_main:
            from compress.modelfile import save_model

            save_model(cfg.output, net, new_meta)
            front.save_extra(cfg.output, net)
            if tc.checkpoint and not cfg.keep_checkpoint and os.path.exists(tc.checkpoint):
                os.unlink(tc.checkpoint)  # the model file holds everything now
        dist.barrier()
        return PruneResult(cfg.output, new_meta, result.history, before, result.accuracy, layer_stats,
                           is_main=dist.is_main, notes=notes)
    finally:
        lock.close()
        dist.close()

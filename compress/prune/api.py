"""``prune(...)``: the library function behind ``compress prune``.

Loads the model and the data, builds the targets and the method, runs the trainer (method phase,
hard prune, masked retrain), and saves the pruned model with a ``meta`` record (method,
hyperparameters, targets, sparsity mode, dataset, accuracy before/after, per-epoch history).
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.prune.distill import Distill
from compress.prune.distributed import init_distributed
from compress.prune.methods import method_class
from compress.prune.targets import prunable_layers, resolve_targets
from compress.prune.trainer import Logits, TrainConfig, evaluate, train

ZOO_NAMES = ("lenet", "alexnet")


@dataclass(frozen=True)
class PruneResult:
    output: str | None
    meta: dict
    history: list[dict]
    accuracy_before: float | None
    accuracy_after: float | None
    layers: dict[str, dict] = field(default_factory=dict)  # {layer: {"numel", "nonzero", "target"}}
    is_main: bool = True  # False on the other ranks of a torchrun job (they neither write nor print)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CompressError("--device cuda requested but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise CompressError(f"--device must be auto, cpu or cuda[:N], got {device!r}") from None


def _load(model: str | nn.Module, prototxt: str | None) -> tuple[nn.Module, dict, str]:
    if isinstance(model, nn.Module):
        return model, {}, getattr(model, "name", type(model).__name__)
    from compress.modelfile import load_model

    loaded = load_model(model, prototxt)
    return loaded.net, dict(loaded.meta or {}), str(model)


def prune(model: str | nn.Module, *, method: str = "admm", data: str = "mnist", output: str | None = None,
          prototxt: str | None = None, targets: str | None = None, keep: tuple[str, ...] = (),
          pcen: float | None = None, sparsity: str | None = None, group: str = "in",
          hyper: dict[str, Any] | None = None, lr: float = 0.01, momentum: float = 0.9,
          weight_decay: float = 5e-4, batch_size: int = 64, retrain_epochs: int | None = None,
          retrain_lr: float | None = None, retrain_weight_decay: float | None = None,
          lr_schedule: str = "cosine", optimizer: str = "sgd",
          distill: float = 0.0, distill_temperature: float = 4.0, augment: tuple[str, ...] | None = None,
          seed: int = 0,
          device: str = "auto", amp: bool = False, max_steps: int | None = None,
          resume: str | None = None, log: str | None = None, checkpoint: str | None = None,
          progress: bool = False, data_limit: int | None = None) -> PruneResult:
    """Prune ``model`` (zoo name, model file, ``.caffemodel``, or an ``nn.Module``) with ``method``.

    ``hyper`` holds the method's hyperparameters (``rho``, ``beta``, ``lamb1``...; see each method's
    ``defaults``). ``distill`` > 0 adds soft targets from the model as loaded (knowledge distillation,
    weight ``distill``, temperature ``distill_temperature``); ``augment`` names training-batch
    augmentations (``shift``, ``mirror``: ``compress.data.augment``; None: the data source's default,
    ``shift`` for MNIST-style digits). ``retrain_epochs`` None: the method's default when it prunes to
    targets, else 0. ``checkpoint`` defaults to ``<output>.ckpt`` and ``log`` to ``<output>.log.jsonl``.
    """
    from converters.atomic import check_output_path

    if output is not None:
        check_output_path(output)
        checkpoint = checkpoint or f"{output}.ckpt"
        log = log or f"{os.path.splitext(output)[0]}.log.jsonl"
    if resume is not None and not os.path.isfile(resume):
        raise CompressError(f"checkpoint not found: {resume}")
    cls = method_class(method)
    kd = Distill(distill, distill_temperature)
    dev = resolve_device(device)
    dist = init_distributed(dev)
    try:
        dev = dist.device(dev)
        torch.manual_seed(seed)
        net, meta, name = _load(model, prototxt)
        layers = prunable_layers(net)
        if not layers:
            raise CompressError(f"{name}: no prunable layers (Conv2d, ConvTranspose2d or Linear)")
        sparsity = sparsity or cls.default_sparsity
        if targets is None and not keep and pcen is None:
            pcen = cls.default_pcen
        tgt = resolve_targets(layers, targets=targets, keep=keep, pcen=pcen, sparsity=sparsity,
                              group=group, model_name=meta.get("zoo") or Path(name).stem.lower())
        m = cls(layers, tgt, group=group, **(hyper or {}))
        splits = _data(data, net, batch_size, seed, dist.enabled, data_limit)
        if augment is None:
            augment = tuple(splits.meta.get("augment", ()))
        if retrain_epochs is None:
            retrain_epochs = cls.default_retrain_epochs if tgt is not None else 0
        cfg = TrainConfig(lr=lr, momentum=momentum, weight_decay=weight_decay, retrain_epochs=retrain_epochs,
                          retrain_lr=retrain_lr, retrain_weight_decay=retrain_weight_decay,
                          lr_schedule=lr_schedule, optimizer=optimizer, seed=seed,
                          max_steps=max_steps, amp=amp, distill=kd, augment=tuple(augment),
                          checkpoint=checkpoint,
                          log=log, progress=progress, info={"model": name, "data": data})
        net.to(dev)
        before = evaluate(Logits(net), splits.test, dev, amp, max_steps, dist)
        if resume is None and log and dist.is_main and os.path.exists(log):
            os.unlink(log)  # a fresh run starts a fresh log; a resumed one appends
        result = train(net, m, splits.train, splits.test, cfg, dev, dist, resume)
        net.cpu().eval()
        layer_stats = {n: {"numel": layer.weight.numel(), "nonzero": int((layer.weight != 0).sum()),
                           "target": tgt.keep.get(n) if tgt else None} for n, layer in layers.items()}
        new_meta = {**meta, "source": meta.get("source", name), "method": method,
                    "hyperparameters": {**m.hyperparameters(), "lr": lr, "momentum": momentum,
                                        "weight_decay": weight_decay, "batch_size": batch_size,
                                        "retrain_epochs": retrain_epochs, "retrain_lr": retrain_lr,
                                        "retrain_weight_decay": retrain_weight_decay,
                                        "lr_schedule": lr_schedule, "optimizer": optimizer,
                                        "distill": distill, "distill_temperature": distill_temperature,
                                        "augment": list(augment),
                                        "seed": seed, "amp": amp,
                                        "max_steps": max_steps, "world_size": dist.world_size},
                    "targets": tgt.as_dict() if tgt else None, "sparsity": sparsity, "group": group,
                    "dataset": data, "accuracy_before": before, "accuracy_after": result.accuracy,
                    "history": result.history, "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}
        if splits.meta.get("preprocess") and "preprocess" not in meta:
            new_meta["preprocess"] = splits.meta["preprocess"]
        if output is not None and dist.is_main:
            from compress.modelfile import save_model

            save_model(output, net, new_meta)
        dist.barrier()
        return PruneResult(output, new_meta, result.history, before, result.accuracy, layer_stats,
                           is_main=dist.is_main)
    finally:
        dist.close()


def _data(spec: str, net: nn.Module, batch_size: int, seed: int, distributed: bool, limit: int | None):
    from compress.data import get_data

    inputs = getattr(net, "inputs", None)
    if not inputs:
        raise CompressError("the model declares no input shape; cannot build its data loaders")
    shape = tuple(next(iter(inputs.values())))
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    classes = last[-1].out_features if last else None
    return get_data(spec, shape, batch_size=batch_size, seed=seed, num_classes=classes, limit=limit,
                    distributed=distributed)

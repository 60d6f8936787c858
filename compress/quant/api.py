"""``quantize(model, config)``: the library behind ``compress quantize``.

Loads the model (zoo name, model file, ``.caffemodel``; dense or pruned) and, when the method trains
or ``data`` is given, its data through the same front door as ``compress prune``
(:class:`compress.train.loaders.LoaderFront`: the model's dataset or MNIST by default, the same notes
about synthetic and limited test sets). A training method (``qgt``, ``admm``) fine-tunes with the
shared trainer (:func:`compress.train.trainer.train`: progress, checkpoints, exact resume, AMP, DDP);
then every method hard-quantizes the selected weights onto their grids, top-1 is measured before and
after (on the data's test split), and a model file is written whose meta records the grid
(:mod:`compress.quant.record`). Everything about the run comes in one :class:`QuantizeConfig`.

A model that is already quantized is refused, whatever the new bits or grid: its weights are already
rounded once, and rounding them onto another grid (or more bits, which cannot bring precision back)
would compound two roundings; quantize the unquantized model instead (the error names its source).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.lock import output_lock
from compress.quant.config import GridConfig
from compress.quant.ptq import LayerQuant
from compress.quant.record import KEY, describe, is_quantized, make_record
from compress.train.loaders import DataSpec
from compress.train.trainer import TrainConfig


@dataclass(frozen=True)
class QuantizeConfig:
    """One quantization run. ``data.spec`` None: ptq measures nothing, qgt/admm train on the model's
    dataset (MNIST for 1x28x28 nets); ``train.checkpoint`` / ``train.log`` default to
    ``<output>.ckpt`` / ``<output>.log.jsonl``. There is no retrain phase (``train.retrain_epochs``
    must be 0 or None): training after the hard quantization would move the weights off the grid."""

    grid: GridConfig
    method: str = "ptq"
    hyper: Mapping[str, Any] = field(default_factory=dict)  # the method's Params, None = default
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    prototxt: str | None = None
    output: str | None = None
    resume: str | None = None
    keep_checkpoint: bool = False
    checkpoints: bool = True
    activations: int | None = None  # bits of calibrated activations (compress.quant.activations), None: float

    def __post_init__(self) -> None:
        if self.train.retrain_epochs:
            raise CompressError("quantization has no retrain phase (it would move the weights off the grid); "
                                "train longer with the method's epochs instead")
        if self.activations is not None:
            from compress.quant.activations import NEEDS_REAL_DATA, check_bits

            check_bits(self.activations)
            if self.data.spec in (None, "synthetic"):
                raise CompressError(NEEDS_REAL_DATA)


@dataclass(frozen=True)
class QuantizeResult:
    output: str | None
    method: str
    config: GridConfig
    layers: tuple[LayerQuant, ...]
    accuracy_before: float | None  # top-1 on the data's test split (None without data)
    accuracy_after: float | None
    seconds: float  # training (if any) and quantization, without loading, evaluation or saving
    meta: dict
    net: nn.Module
    history: list[dict] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    is_main: bool = True  # False on the other ranks of a torchrun job (they neither write nor print)


def quantize(model: str | nn.Module, config: QuantizeConfig | None = None,
             **overrides: Any) -> QuantizeResult:
    """Quantize ``model`` as ``config`` says; ``overrides`` replace its top-level fields."""
    from compress.device import resolve_device
    from compress.quant.methods import method_class
    from compress.train.checkpoint import weights_digest
    from compress.train.distributed import init_distributed

    cfg = dataclasses.replace(config, **overrides) if config is not None else QuantizeConfig(**overrides)
    cls = method_class(cfg.method)
    tc = _outputs(model, cfg, cls.trains)
    dev = resolve_device(cfg.device)
    dist = init_distributed(dev)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(output_lock([cfg.output], enabled=dist.is_main))
        dev = dist.device(dev)
        torch.manual_seed(tc.seed)
        front = _front(model, cfg, dev, dist) if cls.trains or cfg.data.spec else None
        net, meta, name = (front.net, front.meta, front.name) if front else _load(model, cfg.prototxt)
        _refuse_quantized(meta, name)
        from compress.layers import prunable_layers

        method = cls(prunable_layers(net), cfg.grid, **dict(cfg.hyper))
        hyper = method.hyperparameters()
        before = front.before(tc) if front else None
        history: list[dict] = []
        t0 = time.perf_counter()
        if cls.trains:
            hyper, history = _train(net, method, front, cfg, tc, dev, dist, before, name,
                                    weights_digest(net))
        else:
            method.init(net)
        net.cpu().eval()
        layers = method.finalize(net)
        if cls.trains:  # the hard quantization replaced the weights: their own BatchNorm statistics
            front.recalibrate(net, tc)
        record = {**make_record(cfg.grid, cfg.method, {n: q.grid for n, q in layers.items()}), "input": name}
        if cfg.activations is not None:
            record["activations"] = _calibrate(net, front, cfg.activations)
        seconds = time.perf_counter() - t0
        if cfg.activations is not None:
            after = _onnx_accuracy(net, {**meta, KEY: record}, front, tc)
        else:
            after = front.before(tc) if front else None
        net.cpu().eval()
        if hyper:
            record["hyperparameters"] = hyper
        if front:
            record.update(dataset=front.dataset, accuracy_before=before, accuracy=after,
                          accuracy_notes=list(front.notes()))
        if history:
            record.update(history=history, created=_dt.datetime.now(_dt.timezone.utc).isoformat())
        extra = front.meta_extra() if front else {}
        new_meta = {**meta, **extra, "source": meta.get("source", name), KEY: record}
        if cfg.output is not None and dist.is_main:
            from compress.modelfile import save_model

            save_model(cfg.output, net, new_meta)
            if tc.checkpoint and not cfg.keep_checkpoint and os.path.exists(tc.checkpoint):
                os.unlink(tc.checkpoint)  # the model file holds everything now
        dist.barrier()
        return QuantizeResult(cfg.output, cfg.method, cfg.grid, tuple(layers.values()), before, after,
                              seconds, new_meta, net, history, front.notes() if front else (), dist.is_main)
    finally:
        lock.close()
        dist.close()


def _outputs(model, cfg: QuantizeConfig, trains: bool) -> TrainConfig:
    """The training config with the checkpoint and log beside the output; every output checked
    against the model's files before anything is loaded."""
    tc = cfg.train
    if cfg.output is not None:
        from compress.outputs import check_outputs

        if trains:
            tc = dataclasses.replace(tc, checkpoint=tc.checkpoint or f"{cfg.output}.ckpt",
                                     log=tc.log or f"{os.path.splitext(cfg.output)[0]}.log.jsonl")
        check_outputs([cfg.output, tc.log if trains else None],
                      models=[(model, cfg.prototxt)] if isinstance(model, str) else [])
    if not cfg.checkpoints or not trains:
        tc = dataclasses.replace(tc, checkpoint=None)
    if cfg.resume is not None:
        if not trains:
            raise CompressError(f"--resume applies to qgt and admm; {cfg.method} does not train")
        if not os.path.isfile(cfg.resume):
            raise CompressError(f"checkpoint not found: {cfg.resume}")
    return dataclasses.replace(tc, retrain_epochs=0)


def _front(model, cfg: QuantizeConfig, dev, dist):
    """prune's loader front door (model, data, preprocessing); quantize has no --solver, so the
    advice for a net without a default dataset does not offer it."""
    from compress.train.loaders import LoaderFront

    try:
        return LoaderFront(model, cfg, dev, dist)
    except CompressError as e:
        text = str(e)
        if cfg.data.spec is None and text.endswith(", or --solver SOLVER.prototxt"):
            text = text[:-len(", or --solver SOLVER.prototxt")]
            text = text.replace(", --data synthetic", " or --data synthetic")
            raise CompressError(text) from None
        raise


def _load(model, prototxt: str | None) -> tuple[nn.Module, dict, str]:
    from compress.train.loaders import load_net

    return load_net(model, prototxt)


def _calibrate(net, front, bits: int) -> dict:
    """The activation record: min-max ranges on the training split of real data."""
    from compress.quant.activations import NEEDS_REAL_DATA, activation_record, calibrate

    if front.splits.meta.get("source") == "synthetic":
        raise CompressError(NEEDS_REAL_DATA)
    ranges, images = calibrate(net.cpu().eval(), front.train_split())
    return activation_record(bits, ranges, images, front.dataset)


def _onnx_accuracy(net, meta: dict, front, tc) -> float | None:
    """Top-1 of the int8 model as it runs: its full QDQ export in onnxruntime, on the test split (integer
    kernels round differently from any float simulation of them)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    from compress.evaluate import evaluate
    from compress.quant.export import export_any

    with tempfile.TemporaryDirectory() as tmp:
        path = export_any(net, meta, os.path.join(tmp, "int8.onnx")).path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(path).graph
        last = next((n for n in graph.node if graph.output[0].name in n.output), None)
        softmax = last is not None and last.op_type == "Softmax"
        result = evaluate(session, front.splits.test, probabilities=softmax, where=path,
                          max_batches=tc.max_steps)
    return result.top1


def _refuse_quantized(meta: dict, name: str) -> None:
    if is_quantized(meta):
        source = meta[KEY].get("input") if isinstance(meta[KEY], dict) else None
        raise CompressError(f"{name} is already quantized ({describe(meta[KEY])}); quantizing it again would "
                            "round its weights a second time: quantize the unquantized model instead"
                            + (f" ({source})" if source else ""))


def _train(net, method, front, cfg: QuantizeConfig, tc: TrainConfig, dev, dist, before, name: str,
           digest: str) -> tuple[dict, list[dict]]:
    """Fine-tune ``net`` with ``method``'s hooks through the shared trainer; (hyperparameters, history)."""
    from compress.train.trainer import LoaderBatches, train

    augment = front.augment(tc.augment)
    hyper = {**method.hyperparameters(), **front.hyperparameters(tc), "distill": tc.distill.alpha,
             "distill_temperature": tc.distill.temperature, "augment": list(augment), "seed": tc.seed,
             "amp": tc.amp, "max_steps": tc.max_steps, "world_size": dist.world_size}
    for key in ("retrain_lr", "retrain_weight_decay"):
        hyper.pop(key, None)
    identity = {"weights": digest, "data": front.dataset, "limit": cfg.data.limit, "hyperparameters": hyper,
                "quantization": cfg.grid.as_dict()}
    tc = dataclasses.replace(tc, augment=augment, info=identity)
    batches = LoaderBatches(dist.shard(front.train_split(), tc.seed), tc.seed, tc.max_steps)
    method.plan(batches.steps_per_epoch)
    if cfg.resume is None and tc.log and dist.is_main and os.path.exists(tc.log):
        os.unlink(tc.log)  # a fresh run starts a fresh log; a resumed one appends
    if tc.progress and dist.is_main:
        from compress.data.synthetic import meaningless

        pct = "n/a" if before is None or meaningless(front.notes()) else f"{before:.2%}"
        steps = f" of at most {tc.max_steps} steps" if tc.max_steps else ""
        print(f"{name}: {cfg.method} {cfg.grid.bits}-bit on {front.describe()}, {method.total_epochs()} "
              f"epochs{steps}; top-1 before: {pct}", file=sys.stderr, flush=True)
    result = train(net, method, front.train_split(), front.splits.test, tc, dev, dist, cfg.resume,
                   batches=batches)
    return hyper, result.history

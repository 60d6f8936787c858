"""``quantize(model, config)``: the library behind ``compress quantize``.

Loads the model (zoo name, model file, ``.caffemodel``; dense or pruned), quantizes the selected
weights with a method from :data:`METHODS` (``ptq``; the training methods ``qgt`` and ``admm`` plug in
here with the trainer), optionally measures top-1 before and after on ``data``'s test split, and
writes a model file whose meta records the grid (:mod:`compress.quant.record`).

A model that is already quantized is refused, whatever the new bits or grid: its weights are already
rounded once, and rounding them onto another grid (or more bits, which cannot bring precision back)
would compound two roundings; quantize the unquantized model instead (the error names its source).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from compress.errors import CompressError
from compress.quant.config import QuantConfig
from compress.quant.ptq import LayerQuant, ptq
from compress.quant.record import KEY, describe, is_quantized, make_record

# name -> fn(net, config) -> per-layer results; the training methods join with the trainer
METHODS: dict[str, Callable[[nn.Module, QuantConfig], dict[str, LayerQuant]]] = {"ptq": ptq}


@dataclass(frozen=True)
class QuantizeResult:
    output: str | None
    method: str
    config: QuantConfig
    layers: tuple[LayerQuant, ...]
    accuracy_before: float | None  # top-1 on data's test split (None without data)
    accuracy_after: float | None
    seconds: float  # the quantization itself, without loading, evaluation or saving
    meta: dict
    net: nn.Module


def quantize(model: str, config: QuantConfig, *, method: str = "ptq", output: str | None = None,
             prototxt: str | None = None, data: str | None = None, batch_size: int = 256,
             limit: int | None = None, device: str = "cpu") -> QuantizeResult:
    """Quantize ``model`` with ``method`` under ``config``; write ``output`` (a model file) if given."""
    from compress.modelfile import load_model, save_model
    from converters.atomic import check_output_path

    if method not in METHODS:
        raise CompressError(f"unknown quantization method {method!r}; available: {', '.join(METHODS)}")
    if output is not None:
        check_output_path(output)
    loaded = load_model(model, prototxt)
    net, meta = loaded.net, dict(loaded.meta)
    name = loaded.path or str(model)
    if is_quantized(meta):
        source = meta[KEY].get("input") if isinstance(meta[KEY], dict) else None
        raise CompressError(f"{name} is already quantized ({describe(meta[KEY])}); quantizing it again would "
                            "round its weights a second time: quantize the unquantized model instead"
                            + (f" ({source})" if source else ""))
    evaluate = _evaluator(data, net, meta, batch_size, limit, device) if data else None
    before = evaluate() if evaluate else None
    t0 = time.perf_counter()
    layers = METHODS[method](net, config)
    seconds = time.perf_counter() - t0
    after = evaluate() if evaluate else None
    record = {**make_record(config, method, {n: q.grid for n, q in layers.items()}), "input": name}
    if data:
        record.update(dataset=data, accuracy_before=before, accuracy=after)
    meta = {**meta, "source": meta.get("source", name), KEY: record}
    if output is not None:
        save_model(output, net, meta)
    return QuantizeResult(output, method, config, tuple(layers.values()), before, after, seconds, meta, net)


def _evaluator(data: str, net: nn.Module, meta: dict, batch_size: int, limit: int | None, device: str):
    """A function returning ``net``'s top-1 on ``data``'s test split (as the model's meta preprocesses)."""
    from compress.data import get_data
    from compress.prune.api import resolve_device
    from compress.prune.trainer import Logits, evaluate

    shape = tuple(next(iter(net.inputs.values())))
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    splits = get_data(data, shape, batch_size=batch_size, preprocess=meta.get("preprocess"), limit=limit,
                      num_classes=linear[-1].out_features if linear else None)
    dev = resolve_device(device)

    def run() -> float | None:
        net.to(dev)
        try:
            return evaluate(Logits(net), splits.test, dev)
        finally:
            net.cpu()
    return run

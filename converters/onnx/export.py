"""Export a CaffeNet to ONNX with Caffe's names, a native LRN node and sparse initializers.

The TorchScript exporter (``dynamo=False``) writes everything into one file. Afterwards:
- nodes are named after their Caffe layer (``conv1``; ``fc6/Gemm`` when a layer emits several nodes),
  initializers keep ``<layer>.weight`` / ``<layer>.bias``, inputs/outputs are the Caffe blob names;
- ``metadata_props`` records per-layer sparsity (JSON), method, source and the tool's version;
- weights whose COO encoding is smaller move to ``sparse_initializer`` (``converters.onnx.sparse``).
``onnx.checker.check_model`` (plain: the full check's shape inference does not know sparse Conv/Gemm
weights) runs on the model before it is written, atomically.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import onnx
import torch
from torch import nn

from converters.atomic import atomic_write_bytes, check_output_path
from converters.errors import ConversionError
from converters.onnx import lrn
from converters.onnx.lrn import rewrite_lrn
from converters.onnx.sparse import sparsify

MIN_OPSET = 9
PRUNABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclass(frozen=True)
class ExportResult:
    path: str
    bytes: int  # size of the written file
    dense_bytes: int  # size the same model has with every initializer dense
    sparse_tensors: tuple[str, ...]  # initializers stored as sparse_initializer
    metadata: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # e.g. layers exported as primitives

    @property
    def ratio(self) -> float:
        """How many times smaller than the dense export."""
        return self.dense_bytes / self.bytes if self.bytes else float("inf")


def export_onnx(net, path: str | Path, *, sparse: bool = True, meta: dict | None = None,
                opset: int | None = None, batch_size: int = 1, dynamic_batch: bool = True,
                lrn: str = "native") -> ExportResult:
    """Export ``net`` (a CaffeNet) to ``path``; weights go sparse only where that is smaller; ``lrn``
    "fast" writes LRN as operators onnxruntime runs faster (:func:`converters.onnx.lrn.rewrite_lrn`)."""
    path = check_output_path(path)
    model, notes = to_onnx_model(net, opset=opset, batch_size=batch_size, dynamic_batch=dynamic_batch)
    notes = [*notes, *rewrite_lrn(model, lrn)]
    props = metadata_props(net, meta or {}, notes)
    onnx.helper.set_model_props(model, props)
    dense_bytes = model.ByteSize()
    moved = sparsify(model) if sparse else []
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ConversionError(f"{net.name}: exported ONNX fails onnx.checker: {_first_line(e)}") from None
    data = model.SerializeToString()
    atomic_write_bytes(path, data)
    return ExportResult(str(path), len(data), dense_bytes, tuple(moved), props, tuple(notes))


def to_onnx_model(net, *, opset: int | None = None, batch_size: int = 1, dynamic_batch: bool = True,
                  layer_values: dict[str, str] | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """The dense ONNX model of ``net`` (Caffe names, native LRN) and notes about the export;
    ``layer_values``, when given, is filled with each Caffe layer's output value in the graph (the output
    of its last node)."""
    max_opset = torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    if opset is not None and not MIN_OPSET <= opset <= max_opset:
        raise ConversionError(f"opset must be between {MIN_OPSET} and {max_opset}, got {opset}")
    if batch_size < 1:
        raise ConversionError(f"batch size must be >= 1, got {batch_size}")
    inputs = [torch.zeros((batch_size, *tuple(shape)[1:])) for shape in net.inputs.values()]
    in_names, out_names = list(net.inputs), list(net.outputs)
    axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None
    buf = io.BytesIO()
    was_training = net.training
    net.eval()
    try:
        with _export_layers(net) as notes, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(_Outputs(net), tuple(inputs), buf, input_names=in_names,
                              output_names=out_names, dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True, dynamo=False,
                              keep_initializers_as_inputs=True)  # no dedup: each layer keeps its names
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
        raise ConversionError(f"{net.name}: ONNX export failed: {_first_line(e)}") from None
    finally:
        net.train(was_training)
    model = onnx.load_from_string(buf.getvalue())
    inits = {i.name for i in model.graph.initializer}
    kept_inputs = [i for i in model.graph.input if i.name not in inits]  # only the Caffe input blobs
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    by_layer = _caffe_names(model, net)
    if layer_values is not None:
        layer_values.update({layer: nodes[-1].output[0] for layer, nodes in by_layer.items() if layer})
    model.producer_name = "compress"
    model.producer_version = _version()
    return model, notes


class _Outputs(nn.Module):
    """The net with its outputs as a tuple in ``net.outputs`` order (several outputs export cleanly).

    The net is registered under an empty-looking prefix that ``_caffe_names`` strips again."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, *xs):
        out = self.net(*xs)
        return tuple(out[n] for n in self.net.outputs) if isinstance(out, dict) else out


@contextlib.contextmanager
def _export_layers(net) -> Iterator[list[str]]:
    """Swap LRN layers for their export forms for the duration of the export; always restore."""
    saved: dict[str, nn.Module] = {}
    notes: list[str] = []
    try:
        for node in net.nodes:
            module = getattr(net, node.attr)
            if node.type != "LRN" and not isinstance(module, nn.LocalResponseNorm):
                continue
            p = lrn.lrn_params(module)
            if p is None:
                continue
            if not p.across_channels:  # the module's own forward is ONNX primitives already
                notes.append(f"{node.name}: WITHIN_CHANNEL LRN has no ONNX operator; exported as primitives")
                continue
            saved[node.attr] = module
            setattr(net, node.attr, lrn.NativeLRN(p))
        yield notes
    finally:
        for attr, module in saved.items():
            setattr(net, attr, module)


def _caffe_names(model: onnx.ModelProto, net) -> dict[str, list[onnx.NodeProto]]:
    """Strip the wrapper prefix; name nodes after Caffe layers; initializers ``<layer>.weight``. Returns
    each Caffe layer's nodes (key "": nodes of no layer)."""
    attr_to_name = {n.attr: n.name for n in net.nodes}
    renamed: dict[str, str] = {}
    for init in model.graph.initializer:
        name = init.name.removeprefix("net.")
        layer, _, rest = name.partition(".")
        if layer in attr_to_name and rest:
            name = f"{attr_to_name[layer]}.{rest}"
        if name != init.name:
            renamed[init.name] = name
            init.name = name
    for node in model.graph.node:  # intermediate values: "/net/conv1/Conv_output_0" -> "/conv1/..."
        for vals in (node.input, node.output):
            vals[:] = [renamed.get(v) or _strip(v) for v in vals]
    for v in model.graph.value_info:
        v.name = _strip(v.name)
    by_layer: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        parts = [p for p in node.name.split("/") if p and p != "net"]
        # the longest scope prefix that is a layer: a Caffe name may hold "/" ("conv1/bn" after "conv1")
        layer = next((attr_to_name[a] for k in range(len(parts) - 1, 0, -1)
                      if (a := "/".join(parts[:k])) in attr_to_name), None)
        by_layer.setdefault(layer or "", []).append(node)
    used: set[str] = set()
    for layer, nodes in by_layer.items():
        for node in nodes:
            if layer and len(nodes) == 1:
                base = layer
            elif layer:
                base = f"{layer}/{node.op_type}"
            else:
                base = node.name.strip("/") or node.op_type
            name, i = base, 1
            while name in used:
                name, i = f"{base}_{i}", i + 1
            used.add(name)
            node.name = name
    return by_layer


def _strip(value: str) -> str:
    return value[len("/net"):] if value.startswith("/net/") else value


def metadata_props(net, meta: dict, notes: list[str]) -> dict[str, str]:
    """``metadata_props`` of the export: per-layer sparsity (JSON), method, source, version, notes."""
    layers = {}
    for node in net.nodes:
        module = getattr(net, node.attr)
        if isinstance(module, PRUNABLE):
            w = module.weight.detach()
            nnz = int(torch.count_nonzero(w))
            layers[node.name] = {"weights": w.numel(), "nonzero": nnz,
                                 "sparsity": round(1.0 - nnz / max(w.numel(), 1), 6)}
    total = sum(v["weights"] for v in layers.values())
    nonzero = sum(v["nonzero"] for v in layers.values())
    props = {
        "layer_sparsity": json.dumps(layers),
        "sparsity": f"{1.0 - nonzero / max(total, 1):.6f}",
        "method": str(meta.get("method", "none")),
        "source": str(meta.get("source", net.name)),
        "caffe_net": net.name,
        "compress_version": _version(),
    }
    extra = {k: v for k, v in meta.items() if k not in ("history",)}
    if extra:
        props["compress_meta"] = json.dumps(extra, default=str)
    if notes:
        props["notes"] = "; ".join(notes)
    return props


def _version() -> str:
    try:
        return importlib_metadata.version("compress")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__

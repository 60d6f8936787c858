"""Per-layer sparsity rows: what was pruned, in Caffe's layer names (the ADMM paper's table, as data).

Zhang et al. 2018 (arXiv 1804.03294), Table 1: ``Layer | Weights | Weights after prune | %``. The rows
here hold exactly those numbers plus channel/filter and MAC counts; renderers (``render.py``) and the
plot turn them into text and pictures.

What is counted, and why:

- **Weights** are the ``.weight`` tensor of each prunable layer (``nn.Conv2d``, ``nn.ConvTranspose2d``,
  ``nn.Linear`` and their subclasses). Biases are *not* counted, as in the paper: LeNet's 430.5K is
  500 + 25K + 400K + 5K weights, without the 580 biases.
- **Nonzero** is ``(weight != 0).sum()``: zeros are the truth, there are no separate masks.
- **Filters** are output filters (Linear: output units); a filter is kept when any of its weights is
  nonzero. **Channels** are input channels (Linear: input features), kept when any weight reading them
  is nonzero. Grouped convolutions count each group's channels separately. These are per-layer counts:
  they do not follow the graph (a zero input channel of ``conv2`` would also let thinning drop the
  matching filter of ``conv1``, which ``conv1``'s row does not show). Channel pruning of coupled sets
  (:mod:`compress.prune.coupling`) zeroes every slice of a removed set, so there each row shows what
  thinning leaves; what thinning would keep against the zeros is ``Report.thin_kept``, per layer with
  the reason (a channel-pruned CaffeNet).
- **MACs** are multiply-accumulates per sample (batch 1), ignoring biases and padding:
  ``weights * positions``, where positions are the output pixels of a convolution (so a conv costs
  ``out_elems * in/groups * kh * kw``), the input pixels of a transposed convolution, and 1 for a
  Linear on a flat vector (``in * out``). The spatial sizes come from one forward pass at batch 1.
- **MACs after** comes in two flavours, both reported:
  ``macs_nonzero = nonzero * positions`` counts only the multiplications by nonzero weights. This is
  what the paper's tables imply (compression = weights / nonzero), and what sparse kernels could
  reach; dense runtimes such as onnxruntime do *not* get faster from it.
  ``macs_structured`` counts the weights that remain after removing this layer's zero filters and
  zero input channels (``kept filters x kept channels x kh x kw`` per group): what channel thinning
  turns into real speed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from compress.errors import CompressError
from compress.layers import typed_layers


@dataclass(frozen=True)
class LayerRow:
    """One prunable layer (or the ``Total`` row). Counts are raw integers; MACs are ``None`` when the
    net's input shape is unknown. ``baseline_nonzero`` is set when compared against a dense model."""

    name: str
    type: str
    shape: tuple[int, ...]
    weights: int
    nonzero: int
    filters: int
    filters_kept: int
    channels: int
    channels_kept: int
    macs: int | None = None
    macs_nonzero: int | None = None
    macs_structured: int | None = None
    baseline_nonzero: int | None = None

    @property
    def kept(self) -> float:
        """Fraction of weights that are nonzero (the paper's "Weights after prune %", as 0..1)."""
        return self.nonzero / self.weights if self.weights else 1.0

    @property
    def pruned(self) -> float:
        return 1.0 - self.kept

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["shape"] = list(self.shape)
        d["kept"] = self.kept
        return d


@dataclass(frozen=True)
class Report:
    """Rows plus what the model file records about how it was made (all optional)."""

    rows: tuple[LayerRow, ...]
    model: str | None = None
    source: str | None = None
    method: str | None = None
    sparsity: str | None = None
    group: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_notes: tuple[str, ...] = ()  # what the accuracy is measured on (synthetic labels, --limit)
    baseline: str | None = None
    quantization: object | None = None  # compress.report.quant.QuantInfo of a quantized model
    thin_kept: tuple[str, ...] = ()  # "layer: why" for zero channels `export --thin` would keep

    @property
    def total(self) -> LayerRow:
        return total_row(self.rows)

    @property
    def accuracy_meaningful(self) -> bool:
        """False where the accuracy was measured on random labels (synthetic data)."""
        from compress.data.synthetic import meaningless

        return not meaningless(self.accuracy_notes)

    @property
    def pruned(self) -> bool:
        """Whether the model file records a pruning run (a method); zeros of a dense model that was only
        quantized are weights rounded to zero, not pruned ones."""
        return self.method is not None

    @property
    def compression(self) -> float:
        """Weights / nonzero weights (71.2 for the paper's LeNet); ``inf`` when every weight is zero."""
        t = self.total
        return t.weights / t.nonzero if t.nonzero else float("inf")

    @property
    def baseline_compression(self) -> float | None:
        """Nonzero weights of the baseline / nonzero weights here."""
        t = self.total
        if t.baseline_nonzero is None:
            return None
        return t.baseline_nonzero / t.nonzero if t.nonzero else float("inf")


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


def total_row(rows: tuple[LayerRow, ...] | list[LayerRow]) -> LayerRow:
    """The ``Total`` row: sums of every count (a MAC total only when every layer has one)."""
    return LayerRow(
        name="Total", type="", shape=(),
        weights=sum(r.weights for r in rows), nonzero=sum(r.nonzero for r in rows),
        filters=sum(r.filters for r in rows), filters_kept=sum(r.filters_kept for r in rows),
        channels=sum(r.channels for r in rows), channels_kept=sum(r.channels_kept for r in rows),
        macs=_sum([r.macs for r in rows]), macs_nonzero=_sum([r.macs_nonzero for r in rows]),
        macs_structured=_sum([r.macs_structured for r in rows]),
        baseline_nonzero=_sum([r.baseline_nonzero for r in rows]),
    )


def _grouped(module: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """``w`` (the weight or its nonzero mask) as ``(groups, out per group, in per group, kernel)``."""
    if isinstance(module, nn.Linear):
        return w.reshape(1, w.shape[0], w.shape[1], 1)
    g = module.groups
    if isinstance(module, nn.ConvTranspose2d):  # (in, out/g, kh, kw)
        c_in, out_g = w.shape[0], w.shape[1]
        return w.reshape(g, c_in // g, out_g, -1).transpose(1, 2)
    return w.reshape(g, w.shape[0] // g, w.shape[1], -1)  # Conv2d: (out, in/g, kh, kw)


def _positions(net: nn.Module, layers: list[tuple[str, str, nn.Module]],
               input_shapes: dict[str, tuple[int, ...]] | None) -> dict[str, int] | None:
    """How many times each layer's weight is applied per sample, from one forward at batch 1."""
    if input_shapes is None:
        input_shapes = getattr(net, "inputs", None)
    if not input_shapes:
        return None
    counts: dict[str, int] = {name: 0 for name, _, _ in layers}
    hooks = []

    def hook_for(name: str, module: nn.Module):
        def hook(_m, args, out):
            if isinstance(module, nn.Conv2d):
                n = out.shape[-2] * out.shape[-1]
            elif isinstance(module, nn.ConvTranspose2d):
                n = args[0].shape[-2] * args[0].shape[-1]
            else:
                n = out.numel() // (out.shape[0] * out.shape[-1]) if out.dim() > 1 else 1
            counts[name] += n
        return hook

    for name, _, module in layers:
        hooks.append(module.register_forward_hook(hook_for(name, module)))
    try:
        dtype = next((p.dtype for p in net.parameters()), torch.float32)
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        xs = [torch.zeros((1, *tuple(s)[1:]), dtype=dtype, device=device) for s in input_shapes.values()]
        with torch.no_grad():
            net(*xs)
    finally:
        for h in hooks:
            h.remove()
    return counts


def layer_rows(net: nn.Module, baseline: nn.Module | None = None, *,
               input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[LayerRow]:
    """One row per prunable layer of ``net``.

    ``baseline`` (the dense model) must have the same prunable layers with the same weight shapes;
    its nonzero counts go into ``baseline_nonzero``. ``input_shapes`` (``{blob: NCHW}``) is needed for
    MACs when ``net`` is not a CaffeNet (which knows its ``inputs``).
    """
    layers = typed_layers(net)
    base = _baseline_weights(layers, baseline) if baseline is not None else {}
    positions = _positions(net, layers, input_shapes)
    rows = []
    for name, type_, module in layers:
        w = module.weight.detach()
        nz = w != 0
        v = _grouped(module, nz)
        g, out_g, in_g, k = v.shape
        pairs = v.any(dim=3) if k > 1 else v.squeeze(3)  # (g, out per group, in per group)
        out_alive = pairs.any(dim=2)
        in_alive = pairs.any(dim=1)
        structured = int((out_alive.sum(1) * in_alive.sum(1)).sum()) * k
        pos = positions[name] if positions is not None else None
        nonzero = int(torch.count_nonzero(w))
        rows.append(LayerRow(
            name=name, type=type_, shape=tuple(w.shape), weights=w.numel(), nonzero=nonzero,
            filters=g * out_g, filters_kept=int(out_alive.sum()),
            channels=g * in_g, channels_kept=int(in_alive.sum()),
            macs=None if pos is None else w.numel() * pos,
            macs_nonzero=None if pos is None else nonzero * pos,
            macs_structured=None if pos is None else structured * pos,
            baseline_nonzero=base.get(name),
        ))
    return rows


def _baseline_weights(layers: list[tuple[str, str, nn.Module]], baseline: nn.Module) -> dict[str, int]:
    theirs = {name: m for name, _, m in typed_layers(baseline)}
    ours = [name for name, _, _ in layers]
    missing = [n for n in ours if n not in theirs]
    extra = [n for n in theirs if n not in ours]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing in the baseline: {', '.join(missing)}")
        if extra:
            parts.append(f"only in the baseline: {', '.join(extra)}")
        raise CompressError(f"baseline does not have the same prunable layers ({'; '.join(parts)})")
    out = {}
    for name, _, module in layers:
        a, b = tuple(module.weight.shape), tuple(theirs[name].weight.shape)
        if a != b:
            raise CompressError(f"baseline layer {name!r} has weight shape {b}, the model has {a}")
        out[name] = int(torch.count_nonzero(theirs[name].weight.detach()))
    return out


def build_report(net: nn.Module | str, meta: dict | None = None, *, model: str | None = None,
                 baseline: nn.Module | str | None = None, baseline_name: str | None = None,
                 input_shapes: dict[str, tuple[int, ...]] | None = None) -> Report:
    """The report of ``net`` with what its model-file ``meta`` records (method, accuracy, source).

    ``net`` may be a model spec (a model file, ``.caffemodel`` or zoo name: ``build_report("x.pt")``), whose
    meta is then read from the file; ``baseline`` likewise."""
    if isinstance(net, str):
        from compress.modelfile import load_model

        loaded = load_model(net)
        net, meta, model = loaded.net, loaded.meta if meta is None else meta, model or loaded.path or net
    if isinstance(baseline, str):
        from compress.modelfile import load_model

        baseline_name, baseline = baseline_name or baseline, load_model(baseline).net
    meta = meta or {}
    rows = layer_rows(net, baseline, input_shapes=input_shapes)
    if not rows:
        raise CompressError(f"{model or 'model'}: no prunable layers "
                            "(Convolution, Deconvolution, InnerProduct)")

    def num(key: str) -> float | None:
        v = meta.get(key)
        return float(v) if isinstance(v, int | float) else None

    def text(key: str) -> str | None:
        v = meta.get(key)
        return str(v) if v is not None else None

    from compress.report.quant import quant_info

    return Report(rows=tuple(rows), model=model, source=text("source"), method=text("method"),
                  sparsity=text("sparsity"), group=text("group"), accuracy_before=num("accuracy_before"),
                  accuracy_after=num("accuracy_after"), baseline=baseline_name,
                  accuracy_notes=tuple(str(n) for n in meta.get("accuracy_notes") or ()),
                  quantization=quant_info(net, meta, where=model or "model"),
                  thin_kept=thin_kept(net) if meta.get("sparsity") == "channel" else ())


def thin_kept(net: nn.Module) -> tuple[str, ...]:
    """``"layer: why"`` for each layer whose zero channels thinning keeps (a CaffeNet; else empty)."""
    if not hasattr(net, "nodes"):
        return ()
    from compress.thin import thin

    return tuple(f"{layer}: {why}" for layer, why in thin(net, check=False).skipped.items())


__all__ = ["LayerRow", "Report", "build_report", "layer_rows", "total_row"]

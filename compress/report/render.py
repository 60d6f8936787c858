"""Renderers of a :class:`~compress.report.rows.Report`: Markdown (the paper's table), CSV, JSON.

Registered by format name (``RENDERERS``); each takes the report and ``per_layer`` (False: the Total
row only) and returns text. Markdown is for people and formats counts like the ADMM paper (0.5K, 25K,
430.5K, 37.7M); CSV and JSON are for scripts and carry raw integers. The JSON schema is versioned by
its ``"schema"`` key (``compress.report/1``): keys are only ever added under the same version.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

from compress.errors import CompressError
from compress.report.rows import LayerRow, Report

SCHEMA = "compress.report/1"

Renderer = Callable[[Report, bool], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    def deco(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn
    return deco


def render(report: Report, fmt: str = "markdown", *, per_layer: bool = True) -> str:
    try:
        fn = RENDERERS[fmt]
    except KeyError:
        raise CompressError(f"unknown report format {fmt!r}; choose from {', '.join(RENDERERS)}") from None
    return fn(report, per_layer)


# --- number formatting (the paper's style) -------------------------------------------------------

def _short(x: Decimal) -> str:
    """3 significant digits, at least one decimal kept when there is one (430.5, 37.7, 6.05, 0.35),
    half-up rounding, trailing zeros trimmed."""
    if x == 0:
        return "0"
    int_digits = len(str(int(x))) if x >= 1 else 0
    if int_digits:
        decimals = max(1, 3 - int_digits)
    else:  # 0.35 -> 2 leading places; keep 3 significant digits after the zeros
        decimals = 3 - x.adjusted() - 1
    q = x.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    s = f"{q:f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


_UNITS = (("K", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12))


def format_count(n: int) -> str:
    """A weight or MAC count as in the paper: 500 -> 0.5K, 430500 -> 430.5K, 37748736 -> 37.7M."""
    if n == 0:
        return "0"
    for i, (unit, scale) in enumerate(_UNITS):
        s = _short(Decimal(n) / Decimal(scale))
        last = i == len(_UNITS) - 1
        if last or Decimal(s) < 1000:
            return f"{s}{unit}"
    raise AssertionError("unreachable")


def format_percent(fraction: float) -> str:
    """0.2 -> "20%", 0.009 -> "0.9%", 0.08 -> "8%" (3 significant digits, trimmed); never rounds a
    nonzero share to 0% or a partial one to 100% (``<0.01%``, ``>99.9%``)."""
    p = fraction * 100
    if 0 < p < 0.01:
        return "<0.01%"
    s = _short(Decimal(repr(p)))
    return ">99.9%" if s == "100" and p < 100 else f"{s}%"


def format_ratio(ratio: float) -> str:
    return "all weights are zero" if math.isinf(ratio) else f"{ratio:.1f}x"


def _accuracy(a: float | None) -> str:
    return "-" if a is None else f"{a * 100:.2f}%"


# --- Markdown -------------------------------------------------------------------------------------

def _paper_cells(r: LayerRow) -> list[str]:
    return [r.name, format_count(r.weights), format_count(r.nonzero), format_percent(r.kept)]


def _extra_columns(report: Report) -> list[tuple[str, Callable[[LayerRow], str]]]:
    cols: list[tuple[str, Callable[[LayerRow], str]]] = [
        ("Filters kept", lambda r: f"{r.filters_kept}/{r.filters}"),
        ("Channels kept", lambda r: f"{r.channels_kept}/{r.channels}"),
    ]
    if report.total.macs is not None:
        cols += [
            ("MACs", lambda r: format_count(r.macs)),
            ("MACs after (nonzero)", lambda r: format_count(r.macs_nonzero)),
            ("MACs after (channels)", lambda r: format_count(r.macs_structured)),
        ]
    if report.baseline is not None:
        cols += [("Baseline nonzero", lambda r: format_count(r.baseline_nonzero)),
                 ("vs baseline", lambda r: format_percent(r.nonzero / r.baseline_nonzero)
                  if r.baseline_nonzero else "-")]
    if report.quantization is not None:
        q = {row.name: row for row in report.quantization.layers}
        total = report.quantization.bytes
        cols += [("Bits", lambda r: str(q[r.name].bits) if r.name in q else "-"),
                 ("Stored as", lambda r: q[r.name].storage if r.name in q else "-"),
                 ("Size (KB)", lambda r: format_kb(q[r.name].bytes if r.name in q else total))]
    return cols


def format_kb(n: int) -> str:
    """Bytes as kilobytes (1000 bytes), as the seed's quantization table: 0.25, 12.5, 215.3."""
    return "0" if n == 0 else _short(Decimal(n) / 1000)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


@renderer("markdown")
def render_markdown(report: Report, per_layer: bool = True) -> str:
    """The paper's ``Layer | Weights | Weights after prune | Weights after prune %`` table, a Total
    row, then the extra columns (filters/channels kept, MACs, baseline) and a summary."""
    extra = _extra_columns(report)
    header = ["Layer", "Weights", "Weights after prune", "Weights after prune %"] + [h for h, _ in extra]
    lines = [_md_row(header), _md_row(["---"] + ["---:"] * (len(header) - 1))]
    rows = list(report.rows) if per_layer else []
    for r in [*rows, report.total]:
        cells = _paper_cells(r) + [fn(r) for _, fn in extra]
        if r.name == "Total":
            cells = [f"**{c}**" for c in cells]
        lines.append(_md_row(cells))
    lines.append("")
    t = report.total
    if report.pruned:
        lines.append(f"Compression: {format_ratio(report.compression)} "
                     f"({format_count(t.nonzero)} of {format_count(t.weights)} weights kept, "
                     f"{format_percent(t.pruned)} pruned; biases not counted)")
    else:
        why = "rounded to zero by the quantization grid" if report.quantization is not None else "as trained"
        lines.append(f"Not pruned: {format_count(t.weights - t.nonzero)} of {format_count(t.weights)} "
                     f"weights ({format_percent(t.pruned)}) are zero, {why}")
    if report.baseline_compression is not None:
        lines.append(f"Against baseline {report.baseline}: {format_ratio(report.baseline_compression)}")
    if report.method:
        how = ", ".join(x for x in (report.sparsity, report.group and f"group {report.group}") if x)
        lines.append(f"Method: {report.method}" + (f" ({how})" if how else ""))
    if report.accuracy_before is not None or report.accuracy_after is not None:
        notes = f" ({'; '.join(report.accuracy_notes)})" if report.accuracy_notes else ""
        if report.accuracy_meaningful:
            lines.append(f"Accuracy (top-1): {_accuracy(report.accuracy_before)} before, "
                         f"{_accuracy(report.accuracy_after)} after{notes}")
        else:
            lines.append(f"Accuracy (top-1): n/a{notes}")
    if report.quantization is not None:
        q = report.quantization
        lines.append(f"Quantization: {q.description}; weights, scales and biases {format_kb(q.bytes)} KB "
                     f"packed vs {format_kb(q.float_bytes)} KB as dense float32 "
                     f"({format_ratio(q.float_bytes / q.bytes if q.bytes else float('inf'))} smaller than "
                     "the dense float32 weights)")
    for note in report.thin_kept:
        lines.append(f"Thinning keeps zero channels of {note}")
    if report.source:
        lines.append(f"Source: {report.source}")
    return "\n".join(lines) + "\n"


# --- CSV and JSON ----------------------------------------------------------------------------------

CSV_FIELDS = ("layer", "type", "weights", "nonzero", "kept", "filters", "filters_kept", "channels",
              "channels_kept", "macs", "macs_nonzero", "macs_structured", "baseline_nonzero")


QUANT_CSV_FIELDS = ("bits", "stored_as", "bytes")  # quantized models only


@renderer("csv")
def render_csv(report: Report, per_layer: bool = True) -> str:
    """One line per layer and a ``Total`` line; raw integers, ``kept`` as a fraction, empty = unknown."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    q = {row.name: row for row in report.quantization.layers} if report.quantization is not None else None
    w.writerow(CSV_FIELDS + (QUANT_CSV_FIELDS if q is not None else ()))
    for r in [*(report.rows if per_layer else ()), report.total]:
        d = r.as_dict()
        d["layer"] = d.pop("name")
        extra = []
        if q is not None:
            row = q.get(r.name)
            extra = [row.bits, row.storage, row.bytes] if row else ["", "", report.quantization.bytes]
        w.writerow(["" if d[k] is None else d[k] for k in CSV_FIELDS] + extra)
    return buf.getvalue()


def report_dict(report: Report, per_layer: bool = True) -> dict:
    ratio = report.compression
    base = report.baseline_compression
    return {
        "schema": SCHEMA,
        "model": report.model,
        "source": report.source,
        "method": report.method,
        "sparsity": report.sparsity,
        "group": report.group,
        "accuracy_before": report.accuracy_before,
        "accuracy_after": report.accuracy_after,
        "accuracy_notes": list(report.accuracy_notes),
        "baseline": report.baseline,
        "pruned": report.pruned,
        "compression": None if math.isinf(ratio) else ratio,
        "baseline_compression": None if base is None or math.isinf(base) else base,
        "layers": [r.as_dict() for r in report.rows] if per_layer else [],
        "total": {k: v for k, v in report.total.as_dict().items() if k not in ("name", "type", "shape")},
        "quantization": report.quantization.as_dict() if report.quantization is not None else None,
        "thin_kept": list(report.thin_kept),
    }


@renderer("json")
def render_json(report: Report, per_layer: bool = True) -> str:
    return json.dumps(report_dict(report, per_layer), indent=2) + "\n"

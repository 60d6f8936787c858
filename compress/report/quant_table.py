"""The seed's quantization table, one row per model, in its own columns:
``Method | alpha | num_bits | Size (KB) | Accuracy | AUC | AP | f1``.

The seed (Ghamari et al. 2021's table in the RVSM/RGSM README) compares a baseline with PTQ and QGT at
4 and 2 bits on MobileNet-v1 at width multipliers (alpha) 0.5 and 0.25, by the size of the model, its
accuracy and the AUC, AP and f1 of its two-class task. Here each row is one model given: alpha is the
model's width multiplier (its zoo entry's, recorded in its meta; "-" for other nets), num_bits 32 for a
float model, AUC/AP/f1 those of :mod:`compress.metrics` (the positive class's for two classes, the macro
one-vs-rest mean for more: the table says which), measured with the accuracy. Size is the
size of its exported ONNX file (written to a temporary directory by ``compress export``'s
:func:`~compress.commands.export.export_model` with its defaults: packed integers, thinned, for a
quantized model; float32 with sparse initializers where smaller otherwise),
and Accuracy is top-1 of that file through onnxruntime on ``data``'s test split when ``data`` is
given, else the accuracy the model file records (``meta["quantization"]["accuracy"]``, or a pruned
model's ``accuracy_after``; those are PyTorch measurements, and the row says so).
"""
from __future__ import annotations

import csv
import io
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.errors import CompressError

SCHEMA = "compress.quant-table/1"
FORMATS = ("markdown", "csv", "json")


COLUMNS = ("Method", "alpha", "num_bits", "Size (KB)", "Accuracy", "AUC", "AP", "f1")  # the seed's


@dataclass(frozen=True)
class QuantTableRow:
    model: str
    method: str  # "baseline", "PTQ", "QGT", "ADMM"
    bits: str  # "32" (float32), "4", "2 (8 first/last)"
    size_bytes: int  # the exported ONNX file
    accuracy: float | None  # top-1 in [0, 1]
    accuracy_source: str | None  # "onnxruntime, mnist test (10000)" or "recorded (PyTorch)"
    alpha: float | None = None  # the width multiplier of a MobileNet
    auc: float | None = None
    ap: float | None = None
    f1: float | None = None
    averaging: str | None = None  # whose AUC/AP/f1: "positive class (1)", "macro over 10 classes, ..."


def quant_table(models: list[str], *, data: str | None = None, limit: int | None = None,
                prototxt: str | None = None) -> list[QuantTableRow]:
    """One :class:`QuantTableRow` per model (zoo name, model file, ``.caffemodel``)."""
    from compress.commands.export import export_model
    from compress.evaluate import evaluate_model
    from compress.modelfile import load_model
    from compress.quant.record import KEY

    if not models:
        raise CompressError("the quantization table needs at least one MODEL")
    rows = []
    with tempfile.TemporaryDirectory(prefix="compress-quant-table-") as tmp:
        for i, spec in enumerate(models):
            loaded = load_model(spec, prototxt)
            meta = loaded.meta
            path = Path(tmp) / f"m{i}.onnx"
            export_model(spec, str(path), prototxt=prototxt)  # exactly as `compress export` writes it
            rec = meta.get(KEY)
            scores = {}
            if data:  # compress eval's machinery on the exported file (its metadata's preprocessing)
                ev = evaluate_model(str(path), data, limit=limit, device="cpu")
                acc = ev.result.top1 if ev.meaningful else None
                source = f"onnxruntime, {data} test ({ev.result.images})" + ("" if ev.meaningful else
                                                                              ": random labels, no accuracy")
                if ev.meaningful:
                    r = ev.result
                    scores = {"auc": r.auc, "ap": r.ap, "f1": r.f1, "averaging": r.averaging}
            else:
                acc = rec.get("accuracy") if rec else meta.get("accuracy_after")
                source = "recorded (PyTorch)" if acc is not None else None
            alpha = meta.get("alpha")
            rows.append(QuantTableRow(loaded.path or spec, _method(rec), _bits(rec), path.stat().st_size,
                                      acc, source, float(alpha) if isinstance(alpha, int | float) else None,
                                      **scores))
    return rows


def _method(rec: dict | None) -> str:
    return "baseline" if rec is None else str(rec.get("method", "?")).upper()


def _bits(rec: dict | None) -> str:
    """"32" for float32, else the recorded bits, with the first/last layers' width when it differs."""
    if rec is None:
        return "32"
    edge = rec.get("first_last_bits")
    return f"{rec.get('bits')}" + (f" ({edge} first/last)" if edge and edge != rec.get("bits") else "")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def _frac(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def render_quant_table(rows: list[QuantTableRow], fmt: str = "markdown") -> str:
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "| --- |" + " ---: |" * (len(COLUMNS) - 1)]
        for r in rows:
            cells = [r.method, "-" if r.alpha is None else f"{r.alpha:g}", r.bits,
                     f"{r.size_bytes / 1000:.1f}", _pct(r.accuracy), _frac(r.auc), _frac(r.ap), _frac(r.f1)]
            lines.append("| " + " | ".join(cells) + " |")
        sources = sorted({r.accuracy_source for r in rows if r.accuracy_source})
        averaging = sorted({r.averaging for r in rows if r.averaging})
        lines += ["", "Rows: " + "; ".join(f"{i + 1}. {r.model}" for i, r in enumerate(rows)) + ".",
                  "Size: the exported ONNX file. Accuracy: " + ("; ".join(sources) or "not measured") + "."]
        if averaging:
            lines.append(f"AUC, AP, f1: {'; '.join(averaging)}.")
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        fields = list(QuantTableRow.__dataclass_fields__)
        w.writerow(fields)
        for r in rows:
            w.writerow(["" if v is None else v for v in asdict(r).values()])
        return buf.getvalue()
    if fmt == "json":
        return json.dumps({"schema": SCHEMA, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    raise CompressError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")

"""``compress export MODEL -o FILE``: sparse ONNX (only where smaller), thinned nets, or .caffemodel."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

TARGETS = ("onnx", "caffemodel")


@dataclass(frozen=True)
class ExportSummary:
    files: dict[str, int]  # path -> bytes written
    dense_bytes: int | None  # ONNX: size of the dense export of the same net
    sparse_tensors: tuple[str, ...]
    thinned: dict[str, tuple[int, int]]  # layer -> (filters before, after)
    refused: dict[str, str]  # layer -> why its zero channels were kept
    notes: tuple[str, ...] = ()
    dense_requested: bool = False  # --dense
    quantized: bool = False  # packed low-bit weights (the notes say how each layer is stored)


def export_model(spec: str, output: str, *, to: str = "onnx", dense: bool = False, thin: bool = False,
                 opset: int | None = None, prototxt: str | None = None,
                 deploy: str | None = None) -> ExportSummary:
    """Load ``spec`` (model file, .caffemodel or zoo name), optionally thin it, and export it."""
    from compress.errors import CompressError
    from compress.modelfile import load_model
    from converters.atomic import check_output_path

    if to not in TARGETS:
        raise CompressError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    check_output_path(output)
    if to == "caffemodel":
        deploy = deploy or str(Path(output).with_suffix(".prototxt"))
        if Path(deploy).resolve() == Path(output).resolve():
            raise CompressError(f"the deploy prototxt would overwrite the output {output}; give --deploy")
        check_output_path(deploy)
    model = load_model(spec, prototxt)
    net, meta = model.net, dict(model.meta)
    meta.setdefault("source", model.path or spec)
    thinned: dict[str, tuple[int, int]] = {}
    refused: dict[str, str] = {}
    quantized = "quantization" in meta
    if thin:
        from compress.thin import thin as thin_net

        result = thin_net(net)
        if quantized:  # the per-channel scales follow the removed filters
            from compress.quant.record import read_grids
            from compress.quant.thin import thinned_meta

            meta = thinned_meta(meta, read_grids(meta, net, where=model.path or spec), result.net)
        net, thinned, refused = result.net, result.removed, result.skipped
        meta["thinned"] = {k: list(v) for k, v in thinned.items()}
    if to == "caffemodel":
        from converters import caffe

        caffe.save(net, output, prototxt=deploy)
        files = {output: Path(output).stat().st_size, deploy: Path(deploy).stat().st_size}
        return ExportSummary(files, None, (), thinned, refused)
    from compress.quant.export import export_any

    r = export_any(net, meta, output, dense=dense, opset=opset, where=model.path or spec)
    return ExportSummary({r.path: r.bytes}, r.dense_bytes, r.sparse_tensors, thinned, refused, r.notes,
                         dense_requested=dense, quantized=quantized)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def render(s: ExportSummary) -> str:
    lines = []
    for layer, (before, after) in s.thinned.items():
        lines.append(f"thinned {layer}: {before} -> {after} filters")
    for layer, why in s.refused.items():
        lines.append(f"kept zero channels of {layer}: {why}")
    for path, size in s.files.items():
        line = f"wrote {path}: {_size(size)}"
        if s.dense_bytes is not None:
            line += f" (dense export {_size(s.dense_bytes)}, {s.dense_bytes / size:.2f}x smaller)"
        lines.append(line)
    if s.dense_bytes is not None and not s.quantized:
        if s.sparse_tensors:
            lines.append(f"sparse initializers ({len(s.sparse_tensors)}): {', '.join(s.sparse_tensors)}")
        else:
            why = "--dense" if s.dense_requested else "sparse storage would not be smaller"
            lines.append(f"all initializers dense ({why})")
    lines.extend(f"note: {n}" for n in s.notes)
    return "\n".join(lines) + "\n"


@click.command("export")
@click.argument("model")
@click.option("-o", "--output", required=True, metavar="FILE", help="model.onnx, or model.caffemodel.")
@click.option("--to", "to", type=click.Choice(TARGETS), default="onnx", show_default=True)
@click.option("--dense", is_flag=True, help="ONNX: keep every initializer dense.")
@click.option("--thin", is_flag=True, help="Remove zero filters/channels first (exact; faster model).")
@click.option("--opset", type=int, help="ONNX opset (default: the exporter's).")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL.")
@click.option("--deploy", metavar="FILE",
              help="--to caffemodel: where to write the deploy prototxt (default: beside the output).")
def command(model: str, output: str, to: str, dense: bool, thin: bool, opset: int | None,
            prototxt: str | None, deploy: str | None) -> None:
    """Export MODEL (a model file, a .caffemodel or a zoo name) to ONNX or back to Caffe.

    ONNX weights go into sparse initializers only where that is smaller than dense (above ~67%
    zeros); the size is reported against the dense export. --thin removes zero filters exactly.
    """
    if dense and to != "onnx":
        raise click.UsageError("--dense applies to --to onnx only")
    if deploy and to != "caffemodel":
        raise click.UsageError("--deploy applies to --to caffemodel only")
    summary = export_model(model, output, to=to, dense=dense, thin=thin, opset=opset,
                           prototxt=prototxt, deploy=deploy)
    click.echo(render(summary), nl=False)

"""``compress export MODEL -o FILE``: sparse ONNX (only where smaller), thinned nets, or .caffemodel."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import click

from compress.commands._common import echo_json, human_size, json_option, threads_option


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
    folded: dict[str, list[str]] = field(default_factory=dict)  # --fold-bn: conv -> BatchNorm/Scale folded
    fold_kept: dict[str, str] = field(default_factory=dict)  # --fold-bn: BatchNorm/Scale -> why it stays
    original_bytes: int | None = None  # the model as loaded (before thinning/folding), all blobs as float32
    speed: object | None = None  # compress.speedcheck.SpeedCheck of a compressed model's ONNX export

# Thinned widths are kept at multiples of this: onnxruntime's blocked convolution kernels (MLAS NCHWc)
# take 8 channels a block with AVX2 and 16 with AVX-512, so 16 suits both (docs/DEPLOY.md has the timings).
ALIGN = 16


@dataclass(frozen=True)
class ExportOptions:
    """What to write and how; validated at construction (options that do not apply to the format
    are errors, not silently ignored). ``deploy`` defaults to the output with ``.prototxt``."""

    output: str
    to: str  # a key of WRITERS
    dense: bool = False
    thin: bool | None = None  # None: thin a pruned or quantized model's ONNX export
    opset: int | None = None
    deploy: str | None = None
    pack: bool = False  # quantized weights through DequantizeLinear (dequantized at every run)
    native_lrn: bool = False  # LRN as one ONNX LRN node
    speed_check: bool | None = None  # time a compressed model's ONNX against its dense export (None: yes)
    align: int | None = None  # thinning keeps widths at multiples of this (1: every zero channel goes;
    # None: ALIGN for ONNX, 1 for a .caffemodel, whose runtime is not known)

    def __post_init__(self) -> None:
        from compress.errors import CompressError

        if self.align is not None and self.align < 1:
            raise CompressError(f"--align must be at least 1, got {self.align}")
        if self.to not in WRITERS:
            raise CompressError(f"--to must be one of {', '.join(WRITERS)}, got {self.to!r}")
        for flag, value, applies in (("--dense", self.dense, "onnx"), ("--opset", self.opset, "onnx"),
                                     ("--pack", self.pack, "onnx"), ("--native-lrn", self.native_lrn, "onnx"),
                                     ("--speed-check", self.speed_check, "onnx"),
                                     ("--deploy", self.deploy, "caffemodel")):
            if value not in (None, False) and self.to != applies:
                raise CompressError(f"{flag} applies to {applies} output only, not to {self.to} "
                                    f"({self.output})")
        if self.to == "caffemodel" and self.deploy is None:
            deploy = str(Path(self.output).with_suffix(".prototxt"))
            if deploy == self.output:
                raise CompressError(f"the deploy prototxt would overwrite the output {self.output}; "
                                    "give --deploy")
            object.__setattr__(self, "deploy", deploy)

    def outputs(self) -> tuple[str, ...]:
        """Every file this export writes."""
        return tuple(p for p in (self.output, self.deploy) if p is not None)


Writer = Callable[[object, dict, ExportOptions], ExportSummary]
WRITERS: dict[str, Writer] = {}
SUFFIXES: dict[str, str] = {}  # output extension -> format it implies


def writer(name: str, *suffixes: str) -> Callable[[Writer], Writer]:
    """Register ``fn(net, meta, options)`` as the writer of format ``name``, implied by ``suffixes``."""

    def deco(fn: Writer) -> Writer:
        WRITERS[name] = fn
        SUFFIXES.update(dict.fromkeys(suffixes, name))
        return fn

    return deco


def export_format(output: str, to: str | None) -> str:
    """The format to write: ``to`` if given, else implied by the output's extension; a ``to`` that the
    extension contradicts (``--to caffemodel -o x.onnx``) is an error, as is an output whose extension
    implies nothing when ``to`` is not given."""
    from compress.errors import CompressError

    implied = SUFFIXES.get(Path(output).suffix.lower())
    if to is None:
        if implied is None:
            names = " or ".join(SUFFIXES)
            raise CompressError(f"cannot tell the export format from {output}: name it {names}, "
                                f"or give --to {'|'.join(WRITERS)}")
        return implied
    if implied is not None and implied != to:
        raise CompressError(f"--to {to} contradicts the output's extension: {output} names a {implied} file")
    return to


def export_model(spec: str, output: str, *, to: str | None = None, dense: bool = False,
                 thin: bool | None = None, opset: int | None = None, prototxt: str | None = None,
                 deploy: str | None = None, fold_bn: bool | None = None, pack: bool = False,
                 native_lrn: bool = False, speed_check: bool | None = None,
                 align: int | None = None) -> ExportSummary:
    """Load ``spec`` (model file, .caffemodel or zoo name), optionally thin it, and export it.
    ``thin`` None: thin a pruned or quantized model exported to ONNX, nothing else. ``fold_bn``: fold
    BatchNorm and Scale into the convolution before them, exactly (after thinning;
    :mod:`compress.structure.fold`; a quantized model's codes stay, its scales follow,
    :mod:`compress.quant.fold`); None: for ONNX, not
    for a .caffemodel (whose BatchNorm layers a Caffe user may still train).

    The format is ``to``, or the one the output's extension implies (:func:`export_format`). Every
    output is checked before the model is loaded: writable, and none of the files the model is read
    from (``compress.outputs.check_outputs``). ONNX: ``pack`` writes a quantized model's weights in the
    portable DequantizeLinear form (onnxruntime dequantizes them at every run), else in the fast form
    (:mod:`converters.onnx.fast`); ``native_lrn`` keeps LRN as one ONNX node; ``speed_check`` (None: for
    ONNX) times a compressed model's file against the dense float32 export of the model as loaded
    (:mod:`compress.speedcheck`); ``align`` (None: :data:`ALIGN` for ONNX, 1 for a .caffemodel): thinning
    keeps every width it cuts at a multiple of it (:func:`compress.thin.thin`)."""
    from compress.modelfile import load_model
    from compress.outputs import check_outputs
    from converters.caffe import caffe_blobs

    models = [(spec, prototxt)]
    check_outputs([output, deploy], models=models)  # first: never a word about formats for `-o MODEL`
    opts = ExportOptions(output, export_format(output, to), dense=dense, thin=thin, opset=opset,
                         deploy=deploy, pack=pack, native_lrn=native_lrn, speed_check=speed_check,
                         align=align)
    check_outputs(opts.outputs(), models=models)  # with the default deploy path
    model = load_model(spec, prototxt)
    net, meta = model.net, dict(model.meta)
    loaded = net
    meta.setdefault("source", model.path or spec)
    original = 4 * sum(int(b.size) for blobs in caffe_blobs(net).values() for b in blobs)
    thinned: dict[str, tuple[int, int]] = {}
    refused: dict[str, str] = {}
    grids = None
    if "quantization" in meta:  # the record is checked against the weights before any work
        from compress.quant.record import read_grids

        grids = read_grids(meta, net, where=model.path or spec)
    if thin is None:  # ONNX of a compressed model: removing dead filters is what makes it faster;
        # --dense is the baseline, the same net with nothing removed
        thin = opts.to == "onnx" and not opts.dense and (grids is not None or _has_zeros(net))
    if thin:
        from compress.thin import thin as thin_net

        result = thin_net(net, align=opts.align or (ALIGN if opts.to == "onnx" else 1))
        if grids is not None:  # the per-channel scales follow the removed filters
            from compress.quant.thin import thinned_meta

            meta = thinned_meta(meta, grids, result.net)
        net, thinned, refused = result.net, result.removed, result.skipped
        meta["thinned"] = {k: list(v) for k, v in thinned.items()}
        if refused:
            meta["thin_refused"] = dict(refused)
    folded: dict[str, list[str]] = {}
    fold_kept: dict[str, str] = {}
    if fold_bn is None:
        fold_bn = opts.to == "onnx"
    if fold_bn:
        if grids is not None:
            from compress.quant.fold import fold_quantized
            from compress.quant.record import read_grids

            result, meta = fold_quantized(net, meta, read_grids(meta, net, where=model.path or spec))
        else:
            from compress.structure.fold import fold_batchnorm

            result = fold_batchnorm(net)
        net, folded, fold_kept = result.net, result.folded, result.kept
        if folded or fold_kept:
            meta["folded_bn"] = {"folded": folded, "kept": fold_kept}
    summary = WRITERS[opts.to](net, meta, opts)
    speed = None
    compressed = summary.quantized or summary.sparse_tensors or thinned  # folding alone only gains
    if opts.to == "onnx" and opts.speed_check is not False and compressed:
        from compress.speedcheck import check_speed

        speed = check_speed(loaded, meta, opts.output, lrn="native" if opts.native_lrn else "fast")
    return replace(summary, thinned=thinned, refused=refused, folded=folded, fold_kept=fold_kept,
                   original_bytes=original, speed=speed)


def _has_zeros(net) -> bool:
    """Whether a Convolution/InnerProduct weight holds a zero (a pruned model, whose dead filters and
    channels thinning may remove)."""
    from compress.layers import prunable_layers

    return any(not bool(layer.weight.detach().all()) for layer in prunable_layers(net).values())


@writer("onnx", ".onnx")
def _write_onnx(net, meta: dict, opts: ExportOptions) -> ExportSummary:
    """Float ONNX (sparse initializers where smaller), or, for a model whose file records a quantization
    grid, packed low-bit integers (:func:`compress.quant.export.export_any` decides from ``meta``)."""
    from compress.quant.export import export_any
    from compress.quant.record import is_quantized

    quantized = is_quantized(meta)
    if quantized and not opts.pack:
        from converters.onnx.fast import check_onnxruntime

        problem = check_onnxruntime()
        if problem:
            from compress.errors import CompressError

            raise CompressError(problem)
    r = export_any(net, meta, opts.output, dense=opts.dense, opset=opts.opset,
                   form="pack" if opts.pack else "fast", lrn="native" if opts.native_lrn else "fast")
    notes = r.notes
    if quantized and opts.pack:
        notes = (*notes, PACK_COST)
    return ExportSummary({r.path: r.bytes}, r.dense_bytes, r.sparse_tensors, {}, {}, notes,
                         dense_requested=opts.dense, quantized=quantized)


PACK_COST = ("--pack: dense packed weights go through DequantizeLinear, which onnxruntime runs at every "
             "inference (measured on LeNet, onnxruntime 1.32, one thread: 1.6x slower than float32 at 8 "
             "bits, 5.4x at 4 bits); without --pack the file is as small and is decoded once, at load")


@writer("caffemodel", ".caffemodel")
def _write_caffemodel(net, meta: dict, opts: ExportOptions) -> ExportSummary:
    """The weights as a .caffemodel and its deploy prototxt (a quantized model's dequantized weights)."""
    from converters import caffe

    caffe.save(net, opts.output, prototxt=opts.deploy)
    files = {p: Path(p).stat().st_size for p in opts.outputs()}
    return ExportSummary(files, None, (), {}, {})


def against_original(size: int, original: int) -> str:
    """The file's size against the original model's float32 weights, the one baseline every ratio names."""
    base = f"the original model's float32 weights: {human_size(original)}"
    ratio = original / size if size else float("inf")
    if 0.995 <= ratio <= 1.005:
        return f"the size of {base}"
    return f"{ratio:.2f}x smaller than {base}" if ratio > 1 else f"{1 / ratio:.2f}x larger than {base}"


def render(s: ExportSummary) -> str:
    lines = []
    for layer, (before, after) in s.thinned.items():
        lines.append(f"thinned {layer}: {before} -> {after} filters")
    for layer, why in s.refused.items():
        lines.append(f"kept zero channels of {layer}: {why}")
    if s.folded:
        n = sum(len(v) for v in s.folded.values())
        lines.append(f"folded {n} BatchNorm/Scale layers into {len(s.folded)} convolutions/inner products")
    for layer, why in s.fold_kept.items():
        lines.append(f"kept {layer} unfolded: {why}")
    for path, size in s.files.items():
        baseline = f" ({against_original(size, s.original_bytes)})" if s.original_bytes and \
            path.endswith(".onnx") else ""
        lines.append(f"wrote {path}: {human_size(size)}{baseline}")
    if s.dense_bytes is not None and not s.quantized:
        if s.sparse_tensors:
            lines.append(f"sparse initializers ({len(s.sparse_tensors)}): {', '.join(s.sparse_tensors)}")
        else:
            why = "--dense" if s.dense_requested else "sparse storage would not be smaller"
            lines.append(f"all initializers dense ({why})")
    lines.extend(f"note: {n}" for n in s.notes)
    if s.speed is not None:
        lines.append(s.speed.describe())
        path = next(iter(s.files))
        warning = s.speed.warning(path)
        if warning:
            lines.append(f"warning: {warning}")
            odd = [f"{layer} {after}" for layer, (before, after) in s.thinned.items()
                   if before % 8 == 0 and after % 8 != 0]
            if odd:
                shown = ", ".join(odd[:4]) + (", ..." if len(odd) > 4 else "")
                lines.append(f"hint: thinning left {len(odd)} layer(s) at widths that are not multiples of 8 "
                             f"({shown}), which onnxruntime's blocked kernels run slower; --align 8 or 16 "
                             "keeps thinned widths at multiples of 8 or 16, --no-thin the original widths")
    return "\n".join(lines) + "\n"


@click.command("export")
@click.argument("model", metavar="MODEL")
@click.option("-o", "--output", required=True, metavar="FILE",
              help="File to write; its extension (.onnx, .caffemodel) sets the format")
@click.option("--to", "to", type=click.Choice(list(WRITERS)), show_default="from the output's extension",
              help="Output format, when the extension does not say it")
@click.option("--dense", is_flag=True,
              help="ONNX: keep every initializer dense, and (unless --thin) every channel: the baseline")
@click.option("--thin/--no-thin", default=None, show_default="on for a pruned or quantized model's ONNX",
              help="Remove zero filters and channels first (exact; a faster, smaller model)")
@click.option("--align", type=click.IntRange(min=1), default=None, metavar="N",
              show_default=f"{ALIGN} for ONNX, 1 for .caffemodel",
              help="Thinning keeps every width it cuts at a multiple of N (zero channels kept back; "
                   "onnxruntime's blocked kernels take 8 or 16 channels a block); 1: every zero channel goes")
@click.option("--fold-bn/--no-fold-bn", default=None, show_default="on for ONNX, off for .caffemodel",
              help="Fold BatchNorm and Scale into the convolution before them (exact; none left to run; a "
                   "quantized model keeps its codes)")
@click.option("--pack", is_flag=True,
              help="Quantized weights as DequantizeLinear of packed integers, the portable QDQ form: as "
                   "small, but onnxruntime dequantizes them at every run (LeNet: 1.6x slower than float32 at "
                   "8 bits, 5.4x at 4 bits)")
@click.option("--native-lrn", is_flag=True,
              help="Write LRN as one ONNX LRN node (portable; onnxruntime runs it 2-15x slower than squares "
                   "and a window convolution, the form written otherwise)")
@click.option("--speed-check/--no-speed-check", default=None, show_default="on for ONNX",
              help="Time a compressed model's ONNX file against the dense float32 export of the same model "
                   "and warn when it is slower")
@click.option("--opset", type=int, metavar="N", show_default="the exporter's", help="ONNX opset")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@click.option("--deploy", metavar="FILE", show_default="the output with .prototxt",
              help="Caffemodel: where to write the deploy prototxt")
@threads_option
@json_option
def command(model: str, output: str, to: str | None, dense: bool, thin: bool | None, align: int | None,
            fold_bn: bool | None, pack: bool, native_lrn: bool, speed_check: bool | None, opset: int | None,
            prototxt: str | None, deploy: str | None, as_json: bool) -> None:
    """Export to ONNX (sparse initializers where smaller), thinned, or .caffemodel.

    MODEL is a zoo name, a model file or a .caffemodel. ONNX weights go into sparse initializers
    only where that is smaller than dense (above ~67% zeros); the size is reported against the dense
    export. --thin removes zero filters exactly (by default for a pruned or quantized model's ONNX:
    what makes it faster). BatchNorm/Scale fold into the convolution before them, as deployment
    runtimes do (by default for ONNX; --no-fold-bn keeps them). Nothing is written over an input: -o
    must not name MODEL or a file it is read from.
    """
    summary = export_model(model, output, to=to, dense=dense, thin=thin, opset=opset,
                           prototxt=prototxt, deploy=deploy, fold_bn=fold_bn, pack=pack,
                           native_lrn=native_lrn, speed_check=speed_check, align=align)
    if as_json:
        from dataclasses import asdict

        echo_json({"schema": "compress.export/1", **asdict(summary)})
    else:
        click.echo(render(summary), nl=False)

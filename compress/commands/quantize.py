"""``compress quantize MODEL --bits N --method ptq|qgt|admm -o OUT``: weights onto symmetric low-bit grids.

The method flags (``--qgt-lambda``, ``--rho``...) are made from each quantization method's ``params``
(:mod:`compress.params`), the training flags are prune's (:mod:`compress.commands._training`, without
the retrain ones: nothing is trained after the hard quantization); ptq, which does not train, takes
only ``--data``, ``--limit``, ``--batch-size``, ``--device`` and ``--quiet`` of them. The method flags
are read from :mod:`compress.quant.method_params`, without importing torch."""
from __future__ import annotations

import click

from compress.commands._common import echo_json, json_option, threads_option
from compress.commands._training import (
    command_record,
    pop_training,
    resume_defaults,
    train_config,
    training_options,
)
from compress.params import click_options, refuse_foreign
from compress.quant.method_params import PARAMS as METHOD_PARAMS

RETRAIN = ("retrain_epochs", "retrain_lr", "retrain_weight_decay")
MEASURING = ("data", "limit", "batch_size", "device", "quiet")  # the training flags ptq reads


def result_dict(result) -> dict:
    """``compress quantize --json``: the grid, accuracy before/after (None on random labels), every layer."""
    from compress.data.synthetic import meaningless

    ok = not meaningless(result.notes)
    cfg = result.config
    return {"schema": "compress.quantize/1", "output": result.output, "method": result.method,
            "bits": cfg.bits, "per_channel": cfg.per_channel, "scale": cfg.scale,
            "accuracy_before": result.accuracy_before if ok else None,
            "accuracy_after": result.accuracy_after if ok else None, "notes": list(result.notes),
            "seconds": result.seconds,
            "layers": [{"name": q.name, "bits": q.grid.bits, "scales": int(q.grid.scales.numel()),
                        "weights": q.weights, "nonzero_before": q.nonzero_before,
                        "nonzero_after": q.nonzero_after, "rel_error": q.rel_error} for q in result.layers]}


def render(result) -> str:
    """Per-layer table (bits, scales, kept weights, relative error) and the accuracy line."""
    header = ("layer", "bits", "scales", "weights", "nonzero before", "nonzero after", "rel. error")
    rows = [(q.name, str(q.grid.bits), f"{q.grid.scales.numel()}", f"{q.weights:,}", f"{q.nonzero_before:,}",
             f"{q.nonzero_after:,}", f"{q.rel_error:.4f}") for q in result.layers]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                       for i, (v, w) in enumerate(zip(r, widths, strict=True))) for r in [header, *rows]]
    cfg = result.config
    how = "per-channel" if cfg.per_channel else "per-tensor"
    extra = f", first/last layer {cfg.first_last_bits}-bit" if cfg.first_last_bits else ""
    lines.append(f"{result.method}: {cfg.bits}-bit {how} grids, {cfg.scale} scales{extra}, "
                 f"{result.seconds:.2f} s")
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    from compress.data.synthetic import meaningless

    if meaningless(result.notes):
        lines.append(f"top-1: n/a{notes}")
    elif result.accuracy_after is not None:
        lines.append(f"top-1: {result.accuracy_before:.2%} before, {result.accuracy_after:.2%} after{notes}")
    if result.output:
        lines.append(f"wrote {result.output}")
    return "\n".join(lines) + "\n"


@click.command("quantize")
@click.argument("model", required=False)
@click.option("--bits", type=int, metavar="N",
              help="Weight bits, 2 to 8; exported as INT2 (2 bits), INT4 (3-4) or INT8 (5-8), so 5-7 bits "
                   "keep 5-7 bits of precision in an 8-bit file")
@click.option("--method", type=click.Choice(list(METHOD_PARAMS)), default="ptq", show_default=True,
              help="Method: ptq (no training), qgt or admm (fine-tune on --data: quantization-guided "
                   "training, ADMM)")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="One scale per output channel (axis 0), or one per layer")
@click.option("--scale", type=click.Choice(("mse", "max")), default="mse", show_default=True,
              help="Scale choice: mse = the clip of least squared error (never worse than max; far better at "
                   "2 bits), max = max|w| / L, no clipping")
@click.option("--keep-first-last-8bit", is_flag=True, help="Quantize the first and last layer to 8 bits")
@click.option("--activations", type=int, metavar="BITS",
              help="Quantize activations too (8: uint8, per tensor), calibrated by min-max over 1024 "
                   "training images of --data (real data only); the export is full QDQ, run by onnxruntime's "
                   "int8 convolution/GEMM kernels, and top-1 after is that file's, through onnxruntime")
@click.option("--layer", "layers", multiple=True, metavar="NAME", show_default="every Convolution, "
              "Deconvolution and InnerProduct layer", help="Quantize only these layers (names or patterns; "
              "repeatable)")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@click.option("-o", "--output", metavar="FILE", help="Quantized model file to write (.pt)")
@click_options(METHOD_PARAMS)
@training_options(without=RETRAIN)
@threads_option
@json_option
@click.pass_context
def command(ctx, model, bits, method, per_channel, scale, keep_first_last_8bit, activations, layers, prototxt,
            output, as_json, **options):
    """Quantize weights to 8/4/3/2-bit grids by PTQ, QGT or ADMM training.

    MODEL is a zoo name, a model file or a .caffemodel, dense or pruned. Weights go onto symmetric
    signed grids (zero stays exactly zero, so a pruned model stays as sparse); biases stay float32.
    qgt and admm fine-tune with prune's trainer and flags (no retrain: the last step is the hard
    quantization); ptq does not train, and --data only measures top-1 before and after. The model
    file records the grid; `compress export OUT.pt -o OUT.onnx` writes the weights packed at their
    bit width.

    \b
    compress quantize lenet_admm.pt --bits 4 --method qgt --data mnist -o lenet_qgt4.pt
    compress quantize lenet_admm.pt --bits 2 --method admm --data mnist -o lenet_admm2.pt
    compress quantize lenet --bits 8 --data mnist -o lenet_ptq8.pt
    compress quantize lenet --bits 8 --activations 8 --data mnist -o lenet_int8.pt
    """
    params = resume_defaults(ctx, {k: v for k, v in ctx.params.items() if k != "as_json"})
    (model, bits, method, per_channel, scale, keep_first_last_8bit, activations, layers, prototxt, output) = (
        params[k] for k in ("model", "bits", "method", "per_channel", "scale", "keep_first_last_8bit",
                            "activations", "layers", "prototxt", "output"))
    for value, what in ((model, "argument 'MODEL'"), (bits, "option '--bits'"), (output, "option '-o'")):
        if value is None:
            raise click.UsageError(f"Missing {what} (it may be left out with --resume only)")
    from compress.quant.bits import check_bits

    check_bits(bits, "--bits")  # before anything heavy is imported
    options = {k: params[k] for k in options}
    t = pop_training(options)
    refuse_foreign(METHOD_PARAMS, method, options)
    from compress.quant.api import QuantizeConfig, quantize
    from compress.quant.config import GridConfig
    from compress.quant.methods import METHODS
    from compress.train.loaders import DataSpec  # torch: after the usage checks

    if not METHODS[method].trains:
        given = [f"--{n.replace('_', '-')}" for n in t if n not in MEASURING and n not in RETRAIN
                 and ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given:
            from compress.errors import CompressError

            verb = "applies" if len(given) == 1 else "apply"
            raise CompressError(f"{', '.join(given)} {verb} to qgt and admm: {method} does not train")
    grid = GridConfig(bits, per_channel=per_channel, scale=scale,
                      first_last_bits=8 if keep_first_last_8bit else None, layers=layers)
    cfg = QuantizeConfig(grid=grid, method=method, hyper=options,
                         data=DataSpec(t["data"], t["batch_size"], t["limit"]),
                         train=train_config(t, command_record(ctx, params)),
                         device=t["device"], prototxt=prototxt, output=output, resume=t["resume"],
                         keep_checkpoint=t["keep_checkpoint"], checkpoints=not t["no_checkpoint"],
                         activations=activations)
    result = quantize(model, cfg)
    if result.is_main:
        if as_json:
            echo_json(result_dict(result))
        else:
            click.echo(render(result), nl=False)

"""``compress quantize MODEL --bits N --method ptq -o OUT``: weights onto symmetric low-bit grids."""
from __future__ import annotations

import click

METHODS = ("ptq", "qgt", "admm")
TRAINING = ("qgt", "admm")  # fine-tune on --data with the trainer: wired by the training integration


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
    if result.accuracy_after is not None:
        lines.append(f"top-1: {result.accuracy_before:.2%} before, {result.accuracy_after:.2%} after")
    if result.output:
        lines.append(f"wrote {result.output}")
    return "\n".join(lines) + "\n"


@click.command("quantize")
@click.argument("model")
@click.option("--bits", type=int, required=True, metavar="N", help="Weight bits: 8, 4, 3 or 2 (any of 2..8)")
@click.option("--method", type=click.Choice(METHODS), default="ptq", show_default=True,
              help="Method: ptq (no training), qgt or admm (fine-tune on --data: quantization-guided "
                   "training, ADMM)")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="One scale per output channel (axis 0), or one per layer")
@click.option("--scale", type=click.Choice(("mse", "max")), default="mse", show_default=True,
              help="Scale choice: mse = the clip of least squared error (never worse than max; far better at "
                   "2 bits), max = max|w| / L, no clipping")
@click.option("--keep-first-last-8bit", is_flag=True, help="Quantize the first and last layer to 8 bits")
@click.option("--layer", "layers", multiple=True, metavar="NAME", show_default="every Convolution, "
              "Deconvolution and InnerProduct layer", help="Quantize only these layers (names or patterns; "
              "repeatable)")
@click.option("--data", metavar="SPEC", help="Measure top-1 before and after on this test set (mnist, DIR)")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", show_default="the whole test set",
              help="Evaluate on the first N test images only")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
              help="Images per evaluation batch")
@click.option("--device", default="cpu", show_default=True, metavar="DEVICE",
              help="Evaluation device: cpu, cuda or auto")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@click.option("-o", "--output", required=True, metavar="FILE", help="Quantized model file to write (.pt)")
def command(model: str, bits: int, method: str, per_channel: bool, scale: str, keep_first_last_8bit: bool,
            layers: tuple[str, ...], data: str | None, limit: int | None, batch_size: int, device: str,
            prototxt: str | None, output: str) -> None:
    """Quantize weights to 8/4/3/2-bit grids by PTQ, QGT or ADMM training.

    MODEL is a zoo name, a model file or a .caffemodel, dense or pruned. Weights go onto symmetric
    signed grids (zero stays exactly zero, so a pruned model stays as sparse); biases stay float32. The
    model file records the grid, and `compress export OUT.pt -o OUT.onnx` writes the weights packed at
    their bit width.

    \b
    Example:
      compress quantize lenet_admm.pt --bits 4 --method ptq --scale mse --data mnist -o lenet_q4.pt
    """
    from compress.errors import CompressError
    from compress.quant.api import quantize
    from compress.quant.config import QuantConfig

    config = QuantConfig(bits, per_channel=per_channel, scale=scale,
                         first_last_bits=8 if keep_first_last_8bit else None, layers=layers)
    if method in TRAINING:
        raise CompressError(f"--method {method} fine-tunes with the trainer, which is not wired to "
                            "quantization yet in this version; use --method ptq")
    result = quantize(model, config, method=method, output=output, prototxt=prototxt, data=data,
                      batch_size=batch_size, limit=limit, device=device)
    click.echo(render(result), nl=False)

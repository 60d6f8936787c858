"""``compress report [MODEL] --per-layer``: the ADMM paper's per-layer table of a (pruned) model."""
from __future__ import annotations

import click

FORMATS = ("markdown", "csv", "json")


def report_model(spec: str, *, prototxt: str | None = None, baseline: str | None = None):
    """The :class:`~compress.report.rows.Report` of a model file, ``.caffemodel`` or zoo name."""
    from compress.modelfile import load_model
    from compress.report.rows import build_report

    model = load_model(spec, prototxt)
    base = load_model(baseline).net if baseline else None
    return build_report(model.net, model.meta, model=model.path or spec, baseline=base,
                        baseline_name=baseline)


@click.command("report")
@click.argument("models", metavar="[MODEL]...", nargs=-1)
@click.option("--per-layer", is_flag=True, help="One row per prunable layer (otherwise the Total row only).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True)
@click.option("--baseline", metavar="DENSE", help="Dense model to compare with, layer by layer.")
@click.option("--plot", "plot_path", metavar="FILE.png",
              help="Also write a bar chart of weights kept per layer.")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL.")
@click.option("-o", "--output", metavar="FILE", help="Write the report here instead of stdout.")
@click.option("--quant-table", is_flag=True,
              help="The quantization table (Method | bits | Size (KB) | Accuracy), one row per MODEL.")
@click.option("--data", metavar="mnist|DIR", help="--quant-table: top-1 of each exported ONNX file on this "
              "test split (default: the accuracy each model file records).")
@click.option("--limit", type=click.IntRange(min=1), help="--quant-table --data: the first N test images.")
def command(models: tuple[str, ...], per_layer: bool, fmt: str, baseline: str | None, plot_path: str | None,
            prototxt: str | None, output: str | None, quant_table: bool, data: str | None,
            limit: int | None) -> None:
    """Per-layer sparsity of MODEL: weights, nonzero weights and kept %, as in the ADMM paper's tables
    (biases not counted), plus filters/channels kept and MACs before/after.

    With no MODEL, reports the newest `compress prune` output in the current directory. A quantized
    model adds bits, storage and size per layer; --quant-table compares several models by the size of
    their exported ONNX files and their accuracy (the seed's quantization table).
    """
    from compress.report.render import render
    from converters.atomic import check_output_path

    for path in (output, plot_path):
        if path:
            check_output_path(path)
    if quant_table or data or limit:
        from compress.report.quant_table import quant_table as table
        from compress.report.quant_table import render_quant_table

        if not quant_table or not models or per_layer or baseline or plot_path:
            raise click.UsageError("--quant-table takes one or more MODELs, with --data/--limit/--format/-o "
                                   "only; --data and --limit apply to --quant-table")
        text = render_quant_table(table(list(models), data=data, limit=limit, prototxt=prototxt), fmt)
        _emit(text, output)
        return
    if len(models) > 1:
        raise click.UsageError("give one MODEL (several only with --quant-table)")
    model = models[0] if models else None
    if model is None:
        from compress.report.latest import latest_pruned

        model = str(latest_pruned("."))
        click.echo(f"Reporting the newest pruned model here: {model}", err=True)
    report = report_model(model, prototxt=prototxt, baseline=baseline)
    text = render(report, fmt, per_layer=per_layer)
    if plot_path:
        from compress.report.plot import plot_kept

        plot_kept(report, plot_path)
    _emit(text, output)


def _emit(text: str, output: str | None) -> None:
    from converters.atomic import atomic_write_text

    if output:
        atomic_write_text(output, text)
        click.echo(f"Wrote {output}", err=True)
    else:
        click.echo(text, nl=False)

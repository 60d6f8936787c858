"""``compress report [MODEL] --per-layer``: the ADMM paper's per-layer table of a (pruned) model."""
from __future__ import annotations

import click

from compress.commands._common import threads_option

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
@click.option("--per-layer", is_flag=True,
              help="One row per prunable layer in the Markdown table (otherwise the Total row only; CSV and "
                   "JSON always have every layer)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True,
              help="Output format")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same as --format json)")
@click.option("--baseline", metavar="MODEL", help="Dense model to compare with, layer by layer")
@click.option("--plot", "plot_path", metavar="FILE",
              help="Also write a bar chart of weights kept per layer (.png)")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@click.option("-o", "--output", metavar="FILE", show_default="stdout", help="Where to write the report")
@click.option("--quant-table", is_flag=True,
              help="The seed's quantization table (Method | alpha | num_bits | Size (KB) | Accuracy | AUC | "
                   "AP | f1), one row per MODEL")
@click.option("--data", metavar="SPEC", show_default="the accuracy each model file records",
              help="With --quant-table: top-1, AUC, AP and f1 of each exported ONNX file on this test set "
                   "(mnist, fashion-mnist, DIR)")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", show_default="the whole test set",
              help="With --quant-table --data: evaluate the first N test images only")
@threads_option
def command(models: tuple[str, ...], per_layer: bool, fmt: str, as_json: bool, baseline: str | None,
            plot_path: str | None, prototxt: str | None, output: str | None, quant_table: bool,
            data: str | None, limit: int | None) -> None:
    """Per-layer sparsity table (Markdown, CSV, JSON) of a pruned model.

    For each prunable layer of MODEL: weights, nonzero weights and kept %, as in the ADMM paper's
    tables (biases not counted), plus filters/channels kept and MACs before/after. A quantized model
    adds bits, storage and size per layer.

    With no MODEL, reports the newest `compress prune` output in the current directory. With
    --quant-table, one row per MODEL (several may be given): the size of its exported ONNX file and
    its accuracy, as the seed's quantization table.
    """
    from compress.outputs import check_outputs
    from compress.report.render import render

    if as_json:
        if click.get_current_context().get_parameter_source("fmt") == click.core.ParameterSource.COMMANDLINE \
                and fmt != "json":
            raise click.UsageError(f"--json contradicts --format {fmt}")
        fmt = "json"

    if quant_table or data or limit:
        if not quant_table or not models or per_layer or baseline or plot_path:
            raise click.UsageError("--quant-table takes one or more MODELs, with --data/--limit/--format/-o "
                                   "only; --data and --limit apply to --quant-table")
        from compress.report.quant_table import quant_table as table
        from compress.report.quant_table import render_quant_table

        check_outputs([output], models=[(m, prototxt) for m in models])
        _emit(render_quant_table(table(list(models), data=data, limit=limit, prototxt=prototxt), fmt), output)
        return
    if len(models) > 1:
        raise click.UsageError("give one MODEL (several only with --quant-table)")
    model = models[0] if models else None
    if model is None:
        from compress.report.latest import latest_pruned

        model = str(latest_pruned("."))
        click.echo(f"Reporting the newest pruned model here: {model}", err=True)
    inputs = [(model, prototxt)] + ([(baseline, None)] if baseline else [])
    check_outputs([output, plot_path], models=inputs)
    report = report_model(model, prototxt=prototxt, baseline=baseline)
    text = render(report, fmt, per_layer=per_layer or fmt != "markdown")
    if plot_path:
        from compress.report.plot import plot_kept

        plot_kept(report, plot_path)
        click.echo(f"Wrote the plot {plot_path}", err=True)
    _emit(text, output)


def _emit(text: str, output: str | None) -> None:
    """``text`` to ``output`` (atomically) or to stdout."""
    from converters.atomic import atomic_write_text

    if output:
        atomic_write_text(output, text)
        click.echo(f"Wrote {output}", err=True)
    else:
        click.echo(text, nl=False)

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
@click.argument("model", required=False)
@click.option("--per-layer", is_flag=True, help="One row per prunable layer (otherwise the Total row only)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown", show_default=True,
              help="Output format")
@click.option("--baseline", metavar="MODEL", help="Dense model to compare with, layer by layer")
@click.option("--plot", "plot_path", metavar="FILE",
              help="Also write a bar chart of weights kept per layer (.png)")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@click.option("-o", "--output", metavar="FILE", show_default="stdout", help="Where to write the report")
def command(model: str | None, per_layer: bool, fmt: str, baseline: str | None, plot_path: str | None,
            prototxt: str | None, output: str | None) -> None:
    """Per-layer sparsity table (Markdown, CSV, JSON) of a pruned model.

    For each prunable layer of MODEL: weights, nonzero weights and kept %, as in the ADMM paper's
    tables (biases not counted), plus filters/channels kept and MACs before/after.

    With no MODEL, reports the newest `compress prune` output in the current directory.
    """
    from compress.outputs import check_outputs
    from compress.report.render import render
    from converters.atomic import atomic_write_text

    if model is None:
        from compress.report.latest import latest_pruned

        model = str(latest_pruned("."))
        click.echo(f"Reporting the newest pruned model here: {model}", err=True)
    models = [(model, prototxt)] + ([(baseline, None)] if baseline else [])
    check_outputs([output, plot_path], models=models)
    report = report_model(model, prototxt=prototxt, baseline=baseline)
    text = render(report, fmt, per_layer=per_layer)
    if plot_path:
        from compress.report.plot import plot_kept

        plot_kept(report, plot_path)
    if output:
        atomic_write_text(output, text)
        click.echo(f"Wrote {output}", err=True)
    else:
        click.echo(text, nl=False)

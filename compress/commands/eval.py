"""``compress eval MODEL --data SPEC``: top-1/top-5 accuracy and loss over a whole test split."""
from __future__ import annotations

import json

import click


def render(report) -> str:
    """The text of ``compress eval``: what ran on how many images, then the figures (or why none)."""
    r = report.result
    backend = "onnxruntime" if report.backend == "onnxruntime" else "PyTorch"
    if report.limited:
        images = (f"the first {r.images:,} of {report.test_images:,} test images "
                  f"(--limit {report.limit}: not the whole test split)")
    else:
        images = f"{r.images:,} test images (the whole test split)"
    lines = [f"{report.model} ({backend}, {report.device}) on {report.data}: {images}"]
    if not report.meaningful:
        lines.append(f"  no accuracy reported: {report.note}")
        return "\n".join(lines) + "\n"
    lines.append(f"  top-1 accuracy  {r.top1 * 100:.2f}%")
    top5 = "-  (fewer than 5 classes)" if r.top5 is None else f"{r.top5 * 100:.2f}%"
    lines.append(f"  top-5 accuracy  {top5}")
    lines.append(f"  loss            {r.loss:.4f}  (mean cross-entropy, {r.classes} classes)")
    return "\n".join(lines) + "\n"


@click.command("eval")
@click.argument("model", metavar="MODEL")
@click.option("--data", required=True, metavar="SPEC",
              help="Test data: mnist, synthetic, a directory of MNIST idx files or an image folder")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", show_default="the whole test split",
              help="Evaluate the first N test images only")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="Images per forward pass")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help="Where to run: auto, cpu, cuda or cuda:N")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object")
def command(model: str, data: str, limit: int | None, batch_size: int, prototxt: str | None, device: str,
            as_json: bool) -> None:
    """Top-1/top-5 accuracy and loss of a model on a test set (PyTorch or onnxruntime).

    MODEL is a zoo name, a model file, a .caffemodel or an .onnx file (run by onnxruntime). The whole
    test split is evaluated unless --limit says otherwise; the loss is the mean cross-entropy of the
    logits. Synthetic data has random labels, so no accuracy is reported for it.
    """
    from compress.commands.convert import show_warnings
    from compress.evaluate import evaluate_model

    show_warnings()
    report = evaluate_model(model, data, limit=limit, batch_size=batch_size, prototxt=prototxt, device=device)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(render(report), nl=False)

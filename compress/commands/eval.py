"""``compress eval MODEL --data SPEC``: top-1/top-5 accuracy and loss over a whole test split."""
from __future__ import annotations

import json

import click

from compress.commands._common import threads_option


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
    if r.f1 is not None:
        auc = "-" if r.auc is None else f"{r.auc:.4f}"
        ap = "-" if r.ap is None else f"{r.ap:.4f}"
        lines.append(f"  AUC {auc}  AP {ap}  f1 {r.f1:.4f}  ({r.averaging})")
    return "\n".join(lines) + "\n"


@click.command("eval")
@click.argument("model", metavar="MODEL")
@click.option("--data", metavar="SPEC",
              help="Test data: mnist, fashion-mnist, synthetic, a directory of MNIST idx files, an image "
                   "folder or a Caffe LMDB folder")
@click.option("--solver", metavar="FILE",
              help="A Caffe solver.prototxt or train_val.prototxt: test on its TEST phase's own data layers, "
                   "as caffe test does (instead of --data)")
@click.option("--iterations", type=click.IntRange(min=1), metavar="N", show_default="the solver's test_iter",
              help="With --solver: batches per TEST net")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", show_default="the whole test split",
              help="Evaluate the first N test images only")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="Images per forward pass")
@click.option("--prototxt", metavar="FILE", help="Net definition for a .caffemodel MODEL")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help="Where to run: auto, cpu, cuda or cuda:N")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object")
@threads_option
def command(model: str, data: str | None, solver: str | None, iterations: int | None, limit: int | None,
            batch_size: int, prototxt: str | None, device: str, as_json: bool) -> None:
    """Top-1/top-5 accuracy and loss of a model on a test set (PyTorch or onnxruntime).

    MODEL is a zoo name, a model file, a .caffemodel or an .onnx file (run by onnxruntime). The whole
    test split is evaluated unless --limit says otherwise; the loss is the mean cross-entropy of the
    logits. Synthetic data has random labels, so no accuracy is reported for it.

    With --solver (caffe test): MODEL's weights go into the TEST net(s) of the solver (or of a train_val
    net) by layer name, and every output blob is averaged over test_iter batches of its own data layers.

    \b
    compress eval lenet --data mnist
    compress eval lenet_iter_10000.caffemodel --solver lenet_solver.prototxt
    """
    from compress.commands.convert import show_warnings

    if (data is None) == (solver is None):
        raise click.UsageError("give the test data: --data SPEC, or --solver FILE for a Caffe set-up's TEST "
                               "phase (not both)")
    if solver is not None:
        if limit is not None:
            raise click.UsageError("--limit applies with --data; with --solver give --iterations")
        from compress.solver.test import caffe_test
        from compress.solver.test import render as render_test

        show_warnings()
        report = caffe_test(model, solver, iterations=iterations, device=device, prototxt=prototxt)
        click.echo(json.dumps(report.as_dict(), indent=2) if as_json else render_test(report), nl=as_json)
        return
    if iterations is not None:
        raise click.UsageError("--iterations applies with --solver")
    from compress.evaluate import evaluate_model

    show_warnings()
    report = evaluate_model(model, data, limit=limit, batch_size=batch_size, prototxt=prototxt, device=device)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(render(report), nl=False)
